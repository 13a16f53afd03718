//! `kiln_runtime`: the public `Deno` namespace and the web globals.
//!
//! Its glue (`ext_js/runtime.ts`) installs deno_web's classes as globals and
//! replaces deno_core's internal `Deno` with the public namespace at bake
//! time. The ops here read run-time configuration (`Deno.args`), write the
//! console's output and end the program (`Deno.exit`, or a closed stdout);
//! nothing here may depend on the bake machine.

use std::collections::BTreeMap;
use std::sync::Arc;

use deno_core::OpState;
use deno_core::op2;
use deno_core::v8;

/// Run-time configuration of the `Deno` namespace; never baked.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
  /// `Deno.args`.
  pub args: Vec<String>,
  /// Stop the program (see [`OutputClosed`]) when console output finds
  /// stdout closed, as a command-line tool in a pipeline should; otherwise
  /// such output is dropped.
  pub stop_on_closed_stdout: bool,
  /// What `Deno.env` holds. The default (used while baking) is empty.
  pub env: Env,
}

/// The variables `Deno.env` reads.
#[derive(Clone, Debug)]
pub enum Env {
  /// The process environment, read when code asks; `set` and `delete`
  /// change what this runtime sees, not the process (`kiln run`).
  Process,
  /// A fixed set that code cannot change (a function's variables).
  ReadOnly(Arc<BTreeMap<String, String>>),
}

impl Default for Env {
  fn default() -> Self {
    Env::ReadOnly(Arc::default())
  }
}

/// `Deno.env` of one runtime, in the op state. Nothing is read or copied
/// when the runtime is created: the process environment is read on use,
/// with this runtime's own `set`/`delete` on top.
struct EnvState {
  source: Env,
  /// Changes made by `set` (`Some`) and `delete` (`None`), process env only.
  changes: BTreeMap<String, Option<String>>,
}

impl EnvState {
  fn get(&self, key: &str) -> Option<String> {
    match &self.source {
      Env::ReadOnly(vars) => vars.get(key).cloned(),
      Env::Process => match self.changes.get(key) {
        Some(change) => change.clone(),
        None => std::env::var(key).ok(),
      },
    }
  }

  fn to_map(&self) -> BTreeMap<String, String> {
    match &self.source {
      Env::ReadOnly(vars) => (**vars).clone(),
      Env::Process => {
        // Variables that are not valid Unicode are left out, as in Deno.
        let mut vars: BTreeMap<String, String> = std::env::vars_os()
          .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
          .collect();
        for (key, change) in &self.changes {
          match change {
            Some(value) => vars.insert(key.clone(), value.clone()),
            None => vars.remove(key),
          };
        }
        vars
      }
    }
  }

  fn change(&mut self, key: &str, value: Option<&str>) -> Result<(), EnvError> {
    if matches!(self.source, Env::ReadOnly(_)) {
      return Err(EnvError::ReadOnly);
    }
    self
      .changes
      .insert(key.to_string(), value.map(str::to_string));
    Ok(())
  }
}

/// Why `Deno.env` refused a call.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum EnvError {
  #[class(type)]
  #[error("Deno.env is read-only here: a function's variables come from its env files")]
  ReadOnly,
  #[class(type)]
  #[error("Key is an empty string.")]
  EmptyKey,
  #[class(type)]
  #[error("Key contains invalid characters: {0:?}")]
  InvalidKey(String),
  #[class(type)]
  #[error("Value contains invalid characters: {0:?}")]
  InvalidValue(String),
}

fn check_key(key: &str) -> Result<(), EnvError> {
  if key.is_empty() {
    return Err(EnvError::EmptyKey);
  }
  if key.contains(['=', '\0']) {
    return Err(EnvError::InvalidKey(key.to_string()));
  }
  Ok(())
}

/// Set by `Deno.exit(code)`; the runtime reads it after execution stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequest(pub i32);

/// Set when console output found stdout closed (a broken pipe) and the
/// configuration says to stop; execution was terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputClosed;

/// Lets `Deno.exit` stop the isolate from inside an op.
pub struct TerminationHandle(pub v8::IsolateHandle);

/// Called by `Deno.exit(code)` after it terminated execution, for embedders
/// whose event loop must end then (a terminated isolate does not always
/// make deno_core's event loop return).
pub struct ExitHook(pub Box<dyn Fn(i32)>);

deno_core::extension!(
  kiln_runtime,
  deps = [deno_webidl, deno_web, deno_crypto, deno_fetch, kiln_fetch],
  ops = [
    op_kiln_args,
    op_kiln_env_delete,
    op_kiln_env_get,
    op_kiln_env_set,
    op_kiln_env_to_object,
    op_kiln_exit,
    op_kiln_navigator,
    op_kiln_no_color,
    op_kiln_print,
    op_kiln_versions,
  ],
  esm_entry_point = "ext:kiln_runtime/runtime.ts",
  esm = [dir "../../ext_js", "runtime.ts"],
  options = { config: RuntimeConfig },
  state = |state, options| {
    state.put(EnvState {
      source: options.config.env.clone(),
      changes: BTreeMap::new(),
    });
    state.put(options.config);
  },
);

#[op2]
#[serde]
fn op_kiln_args(state: &mut OpState) -> Vec<String> {
  state
    .try_borrow::<RuntimeConfig>()
    .map(|c| c.args.clone())
    .unwrap_or_default()
}

#[op2]
#[serde]
fn op_kiln_versions() -> (String, String) {
  (
    env!("CARGO_PKG_VERSION").to_string(),
    v8::VERSION_STRING.to_string(),
  )
}

/// Whether console output to stdout and stderr must be plain: not a
/// terminal, or `NO_COLOR` set (https://no-color.org).
#[op2]
#[serde]
fn op_kiln_no_color() -> (bool, bool) {
  use std::io::IsTerminal;
  let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
  (
    no_color || !std::io::stdout().is_terminal(),
    no_color || !std::io::stderr().is_terminal(),
  )
}

/// Records the exit code and terminates JS execution; the runtime turns the
/// termination into `Ok(exit code)`.
#[op2(fast)]
fn op_kiln_exit(state: &mut OpState, code: i32) {
  state.put(ExitRequest(code));
  if let Some(handle) = state.try_borrow::<TerminationHandle>() {
    handle.0.terminate_execution();
  }
  if let Some(hook) = state.try_borrow::<ExitHook>() {
    (hook.0)(code);
  }
}

/// Console output. Unlike deno_core's `op_print` (which panics when a flush
/// fails) a closed stdout ends the program quietly or is ignored (see
/// [`RuntimeConfig::stop_on_closed_stdout`]); a failing stderr is ignored:
/// there is nowhere left to report it.
#[op2(fast)]
fn op_kiln_print(state: &mut OpState, #[string] message: &str, is_err: bool) {
  let written = if is_err {
    write_fully(&mut std::io::stderr().lock(), message.as_bytes())
  } else {
    write_fully(&mut std::io::stdout().lock(), message.as_bytes())
  };
  let Err(e) = written else { return };
  let stop = !is_err
    && e.kind() == std::io::ErrorKind::BrokenPipe
    && state
      .try_borrow::<RuntimeConfig>()
      .is_some_and(|c| c.stop_on_closed_stdout);
  if stop {
    state.put(OutputClosed);
    if let Some(handle) = state.try_borrow::<TerminationHandle>() {
      handle.0.terminate_execution();
    }
  }
}

/// Writes and flushes all of `bytes`, retrying when the descriptor is
/// non-blocking and full.
fn write_fully(out: &mut impl std::io::Write, mut bytes: &[u8]) -> std::io::Result<()> {
  while !bytes.is_empty() {
    match out.write(bytes) {
      Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
      Ok(n) => bytes = &bytes[n..],
      Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
      Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
      Err(e) => return Err(e),
    }
  }
  out.flush()
}

#[op2]
#[string]
fn op_kiln_env_get(state: &mut OpState, #[string] key: &str) -> Result<Option<String>, EnvError> {
  check_key(key)?;
  Ok(state.borrow::<EnvState>().get(key))
}

#[op2]
#[serde]
fn op_kiln_env_to_object(state: &mut OpState) -> BTreeMap<String, String> {
  state.borrow::<EnvState>().to_map()
}

#[op2(fast)]
fn op_kiln_env_set(
  state: &mut OpState,
  #[string] key: &str,
  #[string] value: &str,
) -> Result<(), EnvError> {
  check_key(key)?;
  if value.contains('\0') {
    return Err(EnvError::InvalidValue(value.to_string()));
  }
  state.borrow_mut::<EnvState>().change(key, Some(value))
}

#[op2(fast)]
fn op_kiln_env_delete(state: &mut OpState, #[string] key: &str) -> Result<(), EnvError> {
  check_key(key)?;
  state.borrow_mut::<EnvState>().change(key, None)
}

/// `[hardwareConcurrency, language]` of this machine, read at run time.
#[op2]
#[serde]
fn op_kiln_navigator() -> (u32, String) {
  let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
  // The POSIX locale (`en_US.UTF-8`) as a BCP 47 tag (`en-US`).
  let language = ["LC_ALL", "LC_MESSAGES", "LANG"]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .find(|v| !v.is_empty() && v != "C" && v != "POSIX")
    .and_then(|v| v.split(['.', '@']).next().map(|l| l.replace('_', "-")))
    .unwrap_or_else(|| "en-US".to_string());
  (u32::try_from(cores).unwrap_or(u32::MAX), language)
}
