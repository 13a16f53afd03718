//! `kiln_runtime`: the public `Deno` namespace and the web globals.
//!
//! Its glue (`ext_js/runtime.ts`) installs deno_web's classes as globals and
//! replaces deno_core's internal `Deno` with the public namespace at bake
//! time. The ops here read run-time configuration (`Deno.args`) and end the
//! program (`Deno.exit`); nothing here may depend on the bake machine.

use deno_core::OpState;
use deno_core::op2;
use deno_core::v8;

/// Run-time configuration of the `Deno` namespace; never baked.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
  /// `Deno.args`.
  pub args: Vec<String>,
}

/// Set by `Deno.exit(code)`; the runtime reads it after execution stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequest(pub i32);

/// Lets `Deno.exit` stop the isolate from inside an op.
pub struct TerminationHandle(pub v8::IsolateHandle);

deno_core::extension!(
  kiln_runtime,
  deps = [deno_webidl, deno_web, deno_fetch, kiln_fetch],
  ops = [op_kiln_args, op_kiln_exit, op_kiln_no_color, op_kiln_versions],
  esm_entry_point = "ext:kiln_runtime/runtime.ts",
  esm = [dir "ext_js", "runtime.ts"],
  options = { config: RuntimeConfig },
  state = |state, options| {
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
}
