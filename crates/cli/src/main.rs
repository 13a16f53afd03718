//! The `kiln` command line: run a module, serve functions, inspect the baked
//! snapshot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;

mod compile;
mod duration;

/// kiln — a JavaScript/TypeScript runtime that starts from a baked V8 snapshot.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
  #[command(subcommand)]
  command: Command,
}

// Parsed once per process: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
  /// Run a module (.ts, .mts, .js, .mjs); the rest of the arguments become
  /// `Deno.args`. Exits 1 on an uncaught error, or with `Deno.exit(code)`.
  Run {
    /// Where V8 code caches of the modules are kept, so the next run skips
    /// compiling them [default: $XDG_CACHE_HOME/kiln, else ~/.cache/kiln].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep no code cache.
    #[arg(long)]
    no_code_cache: bool,
    /// The module to run.
    file: PathBuf,
    /// Arguments passed to the program as `Deno.args`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
  },
  /// Serve every <name>.ts / <name>.js in DIR as a function at /<name>:
  /// its default export's fetch(request) answers HTTP requests, each
  /// instance in its own isolate. Functions load modules only from inside
  /// DIR. Each function's module graph, top level included, is baked into
  /// a snapshot of its own (cached in --cache-dir) and its instances thaw
  /// it; one that cannot be baked is served from its modules, with a
  /// warning. The port opens at once and functions load in the background;
  /// GET /_kiln/ready is 200 once all have loaded (or failed),
  /// /_kiln/health is liveness, /_kiln/metrics Prometheus text.
  /// SIGINT/SIGTERM close idle connections, drain in-flight requests and
  /// exit 0.
  Serve(ServeArgs),
  /// Compile a program into a standalone executable: this kiln binary with
  /// a snapshot of kiln plus the program appended. Every module the entry
  /// imports (statically, transitively) is evaluated now and baked; the
  /// entry's own body runs at each launch, or, if it exports a function
  /// `main`, the entry is baked too and `main()` runs at launch (a number
  /// it returns is the exit code). Modules are named relative to ROOT, so
  /// the executable runs anywhere, with the sources gone.
  Compile {
    /// The program's entry module.
    entry: PathBuf,
    /// Where to write the executable [default: the entry's name without
    /// its extension, in the current directory].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The directory the app's modules live in [default: the entry's
    /// directory]; imports from outside it are refused.
    #[arg(long)]
    root: Option<PathBuf>,
  },
  /// Inspect the snapshot baked into this binary.
  Snapshot {
    #[command(subcommand)]
    command: SnapshotCommand,
  },
}

#[derive(clap::Args)]
struct ServeArgs {
  /// Directory of function modules.
  dir: PathBuf,
  /// Address to listen on (port 0 picks a free port).
  #[arg(long, default_value = "127.0.0.1:8080")]
  listen: SocketAddr,
  /// Isolate instances per function [default: number of cores].
  #[arg(long)]
  max_instances: Option<usize>,
  /// Idle instances each function keeps thawed and ready beyond those
  /// serving (within --max-instances), so a request does not wait for one
  /// to start; a taken one is replaced in the background.
  #[arg(long, default_value_t = 1)]
  warm_instances: usize,
  /// Stop an instance after it has been idle this long (e.g. 90s, 5m);
  /// the warm ones stay.
  #[arg(long, default_value = "5m", value_parser = duration::parse_duration)]
  idle_timeout: Duration,
  /// V8 heap limit per instance, in MiB (at least 16); an instance that
  /// reaches it is discarded and its request gets 500. ArrayBuffer contents
  /// (outside the V8 heap) are capped at the same amount.
  #[arg(long, default_value_t = 128)]
  max_heap_mb: usize,
  /// Wall-time limit per request (and per module start-up), in ms; past it
  /// the instance is terminated and the request gets 504.
  #[arg(long, default_value_t = 30_000)]
  timeout_ms: u64,
  /// Largest request body accepted; larger ones get 413.
  #[arg(long, default_value_t = 10 << 20)]
  max_body_bytes: u64,
  /// Largest module file a function may import; larger ones fail to load.
  #[arg(long, default_value_t = kiln::runtime::DEFAULT_MAX_MODULE_BYTES)]
  max_module_bytes: u64,
  /// How long shutdown waits for in-flight requests.
  #[arg(long, default_value = "10s", value_parser = duration::parse_duration)]
  grace_period: Duration,
  /// A connection that has not sent a complete request head this long
  /// after connecting (or after its previous response) is closed.
  #[arg(long, default_value = "10s", value_parser = duration::parse_duration)]
  header_timeout: Duration,
  /// A connection with no request in progress for this long is closed.
  #[arg(long, default_value = "60s", value_parser = duration::parse_duration)]
  keep_alive_timeout: Duration,
  /// A WebSocket (Deno.upgradeWebSocket) on which nothing passed either way
  /// for this long is closed. Each open socket holds one instance of its
  /// function until it closes.
  #[arg(long, default_value = "2m", value_parser = duration::parse_duration)]
  websocket_idle_timeout: Duration,
  /// Run Deno.cron jobs through a PostgreSQL database shared by several
  /// hosts (postgres://user:password@host:port/db, or key=value form): each
  /// tick of each job runs on one host only. The tables (kiln_cron_runs,
  /// the run history) are created on first use. Without it every host runs
  /// every job.
  #[arg(
    long,
    env = "KILN_CRON_STORE",
    value_name = "URL",
    hide_env_values = true
  )]
  cron_store: Option<String>,
  /// With --cron-store: how long a host's claim on a running job lasts
  /// unless renewed (every third of it); a run whose host died is taken
  /// over by another host after this.
  #[arg(long, default_value = "30s", value_parser = duration::parse_duration)]
  cron_lease: Duration,
  /// Most open client connections; more wait in the listen backlog.
  /// [default: the file-descriptor limit less 256, at least half of it]
  #[arg(long)]
  max_connections: Option<usize>,
  /// Send the error message and stack in 500 bodies (for development). By
  /// default a 500 body is {"error":"internal error","request_id":...} and
  /// the detail goes to the log under that request id.
  #[arg(long)]
  expose_errors: bool,
  /// A dotenv file of variables for every function (`Deno.env` and the
  /// `env` argument of fetch(request, env, ctx)). `<DIR>/<name>.env` beside
  /// a function adds its own, overriding. Values are never logged.
  #[arg(long, value_name = "PATH")]
  env_file: Option<PathBuf>,
  /// Host environment variables that functions see (comma-separated);
  /// functions see none of the host's environment otherwise.
  #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
  inherit_env: Vec<String>,
  /// Where the baked snapshot of the functions and V8 code caches of
  /// modules loaded at run time are kept between runs [default:
  /// $XDG_CACHE_HOME/kiln, else ~/.cache/kiln].
  #[arg(long, value_name = "DIR")]
  cache_dir: Option<PathBuf>,
  /// Load every function's modules in each instance instead of starting
  /// instances from the function's own snapshot.
  #[arg(long)]
  no_snapshot: bool,
  /// Log level (error, warn, info, debug, trace) or a tracing filter
  /// directive; logs go to stderr, one line per request at info.
  #[arg(long, default_value = "info")]
  log_level: String,
}

#[derive(Subcommand)]
enum SnapshotCommand {
  /// Print format version, fingerprint, extensions with op counts, sizes.
  Info,
}

fn main() -> ExitCode {
  let mut argv = std::env::args_os();
  let _program = argv.next();
  // A compiled executable: every argument is the program's.
  if let Some(container) = compile::embedded_app() {
    // Its snapshot is the app's: kiln's embedded one is never thawed here.
    let args = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    let result = container
      .map_err(|e| format!("this executable's app cannot be read: {e}").into())
      .and_then(|container| compile::run_compiled(container, args));
    return finish(result);
  }
  // A bake in a child process (`kiln compile`, `kiln serve`).
  let mut rest = std::env::args_os().skip(1);
  if rest.next().as_deref() == Some(std::ffi::OsStr::new(kiln::app::BAKE_SUBCOMMAND)) {
    let args: Vec<_> = rest.collect();
    return ExitCode::from(kiln::app::bake_child_main(&args).clamp(0, 255) as u8);
  }
  let cli = Cli::parse();
  if matches!(cli.command, Command::Run { .. } | Command::Serve(_)) {
    // Decompress the snapshot while the rest of start-up happens.
    kiln::runtime::prefetch_snapshot();
  }
  let result = match cli.command {
    Command::Run {
      file,
      args,
      cache_dir,
      no_code_cache,
    } => {
      let code_cache_dir =
        (!no_code_cache).then(|| cache_dir.unwrap_or_else(kiln::runtime::default_cache_dir));
      run_program(Program::Module(file), args, code_cache_dir).map_err(Into::into)
    }
    Command::Serve(args) => serve(args),
    Command::Compile {
      entry,
      output,
      root,
    } => compile::compile(&entry, output, root).map_err(Into::into),
    Command::Snapshot {
      command: SnapshotCommand::Info,
    } => kiln_pipeline::info::describe(kiln::snapshot::load::EMBEDDED_SNAPSHOT)
      .map(|report| {
        print!("{report}");
        0
      })
      .map_err(Into::into),
  };
  finish(result)
}

/// The process's exit for a command's result.
fn finish(result: Result<i32, Box<dyn std::error::Error>>) -> ExitCode {
  match result {
    Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
    Err(e) if is_output_closed(e.as_ref()) => die_of_sigpipe(),
    Err(e) => {
      eprintln!("error: {e}");
      ExitCode::FAILURE
    }
  }
}

fn is_output_closed(e: &(dyn std::error::Error + 'static)) -> bool {
  matches!(
    e.downcast_ref::<kiln::Error>(),
    Some(kiln::Error::OutputClosed)
  )
}

/// Ends the process as `cat` or `yes` end when their reader goes away:
/// killed by SIGPIPE, no message (a shell reports status 141).
fn die_of_sigpipe() -> ExitCode {
  // SAFETY: restoring the default disposition and raising the signal only
  // affects this process, which is ending anyway.
  unsafe {
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    libc::raise(libc::SIGPIPE);
  }
  ExitCode::from(141)
}

/// What a program run executes.
pub(crate) enum Program {
  /// A module from disk (`kiln run`).
  Module(PathBuf),
  /// The app a runtime was thawed with (a compiled executable).
  App(kiln::app::AppImage),
}

/// Runs a program as a command-line tool does: its own arguments, the
/// process environment (as `deno run --allow-env` sees it), quiet death on a
/// closed stdout, the event loop to the end. Returns the exit code.
pub(crate) fn run_program(
  program: Program,
  args: Vec<String>,
  code_cache_dir: Option<PathBuf>,
) -> Result<i32, kiln::Error> {
  let tokio = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .map_err(|e| kiln::Error::Init(format!("cannot start tokio: {e}")))?;
  let (runtime, result) = tokio.block_on(async move {
    let options = kiln::RuntimeOptions {
      args,
      stop_on_closed_stdout: true,
      env: kiln::runtime::Env::Process,
      code_cache_dir,
    };
    let mut runtime = match &program {
      Program::Module(_) => kiln::Runtime::new(options)?,
      Program::App(image) => kiln::Runtime::builder()
        .app(image.clone())
        .options(options)
        .build()?,
    };
    let result = match &program {
      Program::Module(file) => runtime.run_main_module(file).await,
      Program::App(_) => runtime.run_app().await,
    };
    Ok::<_, kiln::Error>((runtime, result))
  })?;
  // The process is about to exit: tearing the isolate and the tokio runtime
  // down would only delay that (by about a millisecond).
  std::mem::forget(runtime);
  std::mem::forget(tokio);
  result
}

fn serve(args: ServeArgs) -> Result<i32, Box<dyn std::error::Error>> {
  let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
    .map_err(|e| format!("invalid --log-level '{}': {e}", args.log_level))?;
  tracing_subscriber::fmt()
    .with_env_filter(filter)
    .with_writer(std::io::stderr)
    .with_ansi(color_stderr())
    .with_target(false)
    .init();
  let mut options = kiln_host::HostOptions::new(&args.dir);
  if let Some(n) = args.max_instances {
    if n == 0 {
      return Err("--max-instances must be at least 1".into());
    }
    options.max_instances = n;
  }
  options.idle_timeout = args.idle_timeout;
  options.warm_instances = args.warm_instances;
  options.max_heap_bytes = args.max_heap_mb.saturating_mul(1 << 20);
  options.timeout = Duration::from_millis(args.timeout_ms.max(1));
  options.max_body_bytes = args.max_body_bytes;
  options.max_module_bytes = args.max_module_bytes;
  options.grace_period = args.grace_period;
  options.header_timeout = args.header_timeout;
  options.keep_alive_timeout = args.keep_alive_timeout;
  options.websocket_idle_timeout = args.websocket_idle_timeout;
  options.cron_store = args.cron_store.filter(|url| !url.is_empty());
  options.cron_lease = args.cron_lease;
  if args.max_connections == Some(0) {
    return Err("--max-connections must be at least 1".into());
  }
  options.max_connections = args.max_connections;
  options.expose_errors = args.expose_errors;
  options.env_file = args.env_file;
  options.inherit_env = args.inherit_env;
  let cache_dir = args
    .cache_dir
    .unwrap_or_else(kiln::runtime::default_cache_dir);
  if !args.no_snapshot {
    options.snapshots = Some(kiln_host::SnapshotOptions {
      baker: std::env::current_exe().map_err(|e| format!("cannot find this kiln binary: {e}"))?,
      cache_dir: cache_dir.clone(),
    });
  }
  options.code_cache_dir = Some(cache_dir);
  let tokio = tokio::runtime::Builder::new_multi_thread()
    .enable_all()
    .build()
    .map_err(|e| format!("cannot start tokio: {e}"))?;
  tokio.block_on(async move {
    let host = kiln_host::Host::new(options).map_err(|e| match e {
      kiln_host::HostError::HeapTooSmall => format!(
        "--max-heap-mb must be at least {}",
        kiln_host::MIN_HEAP_BYTES >> 20
      )
      .into(),
      e => Box::<dyn std::error::Error>::from(e),
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
      .await
      .map_err(|source| kiln_host::HostError::Bind {
        addr: args.listen,
        source,
      })?;
    let addr = listener.local_addr()?;
    // Functions load in the background: the port opens now.
    host.start();
    let names: Vec<&str> = host.functions().collect();
    tracing::info!("serving {} function(s): {}", names.len(), names.join(", "));
    // Scripts and tests read the bound address (port 0) from this line.
    println!("kiln serve: listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    kiln_host::serve(host, listener, shutdown_signal()).await;
    Ok::<_, Box<dyn std::error::Error>>(0)
  })
}

/// Colored logs only on a terminal, and never with NO_COLOR set.
fn color_stderr() -> bool {
  use std::io::IsTerminal;
  std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
  #[cfg(unix)]
  {
    use tokio::signal::unix::SignalKind;
    if let Ok(mut term) = tokio::signal::unix::signal(SignalKind::terminate()) {
      tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
      }
      return;
    }
  }
  let _ = tokio::signal::ctrl_c().await;
}
