//! Helpers shared by the benches.
#![allow(dead_code)]

use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;

use deno_core::Extension;
use deno_core::ExtensionFileSource;
use deno_core::FastStaticString;
use deno_core::JsRuntime;
use deno_core::OpDecl;
use deno_core::op2;

/// A current-thread tokio runtime: every JsRuntime is created inside one.
pub fn tokio() -> tokio::runtime::Runtime {
  tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .expect("tokio runtime")
}

/// Runs `cmd` to completion, its output discarded; panics unless it
/// succeeds.
pub fn spawn_ok(cmd: &mut Command) {
  let status = cmd
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .expect("spawn");
  assert!(status.success(), "{cmd:?} failed: {status}");
}

/// This bench binary, to spawn in one of its child modes.
pub fn this_binary() -> std::path::PathBuf {
  std::env::current_exe().expect("current exe")
}

/// A runtime of deno_core alone, thawed from `snapshot` (a floor).
pub fn thaw_bare(snapshot: &'static [u8]) -> JsRuntime {
  JsRuntime::new(deno_core::RuntimeOptions {
    startup_snapshot: Some(snapshot),
    ..Default::default()
  })
}

/// A child process's whole life as a floor: thaw deno_core alone from the
/// snapshot in `file`, run `script`, exit without teardown (as `kiln run`
/// and compiled apps do).
pub fn thaw_file_run_and_exit(file: &std::ffi::OsStr, script: &'static str) -> ! {
  let tokio = tokio();
  let _guard = tokio.enter();
  let snapshot = std::fs::read(file).expect("read the snapshot");
  let mut js = thaw_bare(Box::leak(snapshot.into_boxed_slice()));
  std::hint::black_box(js.execute_script("floor", script).expect("script"));
  std::mem::forget(js);
  std::process::exit(0);
}

/// Runs `1+1`: the definition of "a runtime that works".
pub fn one_plus_one(js: &mut JsRuntime) {
  let v = js.execute_script("bench", "1+1").expect("1+1");
  std::hint::black_box(v);
}

#[op2(fast)]
fn op_scale_template(x: u32) -> u32 {
  x.wrapping_add(1)
}

fn leak(s: String) -> &'static str {
  Box::leak(s.into_boxed_str())
}

/// Op declarations and the JS source of a scaled extension.
type Scaled = (Vec<OpDecl>, Arc<str>);

thread_local! {
  /// Built once per op count (their names are leaked).
  static SCALED: std::cell::RefCell<std::collections::HashMap<usize, Scaled>> = Default::default();
}

/// An extension with `ops` ops (copies of one op under distinct names) and
/// one JS function per op, so extension JS grows with the op count.
pub fn scaled_extension(ops: usize) -> Extension {
  let (decls, js) = SCALED.with(|cache| {
    cache
      .borrow_mut()
      .entry(ops)
      .or_insert_with(|| build_scaled(ops))
      .clone()
  });
  let specifier = "ext:bench_scale/scale.js";
  Extension {
    name: "bench_scale",
    ops: decls.into(),
    esm_files: vec![ExtensionFileSource::new_computed(specifier, js)].into(),
    esm_entry_point: Some(specifier),
    ..Default::default()
  }
}

fn build_scaled(ops: usize) -> Scaled {
  let template = op_scale_template();
  let decls = (0..ops)
    .map(|i| {
      let name = leak(format!("op_scale_{i}"));
      let fast: &'static deno_core::v8::OneByteConst = Box::leak(Box::new(
        deno_core::v8::String::create_external_onebyte_const(name.as_bytes()),
      ));
      let mut decl = template;
      decl.name = name;
      decl.name_fast = FastStaticString::new(fast);
      decl
    })
    .collect();
  let mut js = String::from("import * as ops from \"ext:core/ops\";\n");
  for i in 0..ops {
    js.push_str(&format!(
      "globalThis.scale_{i} = function scale_{i}(x) {{ return ops.op_scale_{i}(x) + {i}; }};\n"
    ));
  }
  (decls, Arc::from(js))
}
