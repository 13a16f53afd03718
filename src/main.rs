//! The `kiln` command line: run a module, inspect the baked snapshot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;

/// kiln — a JavaScript/TypeScript runtime that starts from a baked V8 snapshot.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
  #[command(subcommand)]
  command: Command,
}

#[derive(Subcommand)]
enum Command {
  /// Run a module (.ts, .mts, .js, .mjs); the rest of the arguments become
  /// `Deno.args`. Exits 1 on an uncaught error, or with `Deno.exit(code)`.
  Run {
    /// The module to run.
    file: PathBuf,
    /// Arguments passed to the program as `Deno.args`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
  },
  /// Inspect the snapshot baked into this binary.
  Snapshot {
    #[command(subcommand)]
    command: SnapshotCommand,
  },
}

#[derive(Subcommand)]
enum SnapshotCommand {
  /// Print format version, fingerprint, extensions with op counts, sizes.
  Info,
}

fn main() -> ExitCode {
  let cli = Cli::parse();
  if matches!(cli.command, Command::Run { .. }) {
    // Decompress the snapshot while the rest of start-up happens.
    kiln::runtime::prefetch_snapshot();
  }
  let result = match cli.command {
    Command::Run { file, args } => run(file, args),
    Command::Snapshot {
      command: SnapshotCommand::Info,
    } => kiln::snapshot::info::print_embedded().map(|()| 0),
  };
  match result {
    Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
    Err(e) => {
      eprintln!("error: {e}");
      ExitCode::FAILURE
    }
  }
}

fn run(file: PathBuf, args: Vec<String>) -> Result<i32, kiln::Error> {
  let tokio = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .map_err(|e| kiln::Error::Init(format!("cannot start tokio: {e}")))?;
  let (runtime, result) = tokio.block_on(async move {
    let mut runtime = kiln::Runtime::new(kiln::RuntimeOptions { args })?;
    let result = runtime.run_main_module(&file).await;
    Ok::<_, kiln::Error>((runtime, result))
  })?;
  // The process is about to exit: tearing the isolate and the tokio runtime
  // down would only delay that (by about a millisecond).
  std::mem::forget(runtime);
  std::mem::forget(tokio);
  result
}
