//! The floor under kiln's start-up: what V8 and deno_core cost with nothing
//! of kiln's in the snapshot, so a start-up target can be checked against
//! what is reachable at all.
//!
//! - `bare_snapshot_thawed`: a runtime from a snapshot of deno_core alone
//!   (no extension), in process, then `1+1`; compare `startup/snapshot_thawed`;
//! - `process_exit`: this bench binary spawned and exiting at once (a process
//!   linking V8 and kiln, doing nothing);
//! - `process_bare_snapshot`: the same process thawing that bare snapshot,
//!   running `1+1` and exiting;
//! - `kiln_run_empty`: `kiln run` on an empty script, in the same run.
//!
//! V8 keeps one read-only heap per process, so the bare snapshot is baked
//! in a child process (this binary, told so by an environment variable) and
//! only thawed here.

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;

/// Child modes of this binary.
const BAKE_TO: &str = "KILN_FLOOR_BAKE_TO";
const THAW_FROM: &str = "KILN_FLOOR_THAW_FROM";
const EXIT_AT_ONCE: &str = "KILN_FLOOR_EXIT";

/// Runs a child mode if this process is one; returns otherwise.
fn child_modes() {
  if std::env::var_os(EXIT_AT_ONCE).is_some() {
    std::process::exit(0);
  }
  if let Some(out) = std::env::var_os(BAKE_TO) {
    let tokio = common::tokio();
    let _guard = tokio.enter();
    let js = deno_core::JsRuntimeForSnapshot::try_new(deno_core::RuntimeOptions::default())
      .expect("snapshotting runtime");
    std::fs::write(out, js.snapshot()).expect("write the bare snapshot");
    std::process::exit(0);
  }
  if let Some(file) = std::env::var_os(THAW_FROM) {
    common::thaw_file_run_and_exit(&file, "1+1");
  }
}

fn floor(c: &mut Criterion) {
  child_modes();
  let dir = tempfile::tempdir().expect("tempdir");
  let bare = dir.path().join("bare.snap");
  common::spawn_ok(Command::new(common::this_binary()).env(BAKE_TO, &bare));
  let snapshot: &'static [u8] = Box::leak(
    std::fs::read(&bare)
      .expect("bare snapshot")
      .into_boxed_slice(),
  );
  eprintln!("floor: bare deno_core snapshot is {} bytes", snapshot.len());

  let tokio = common::tokio();
  let _guard = tokio.enter();
  let mut g = c.benchmark_group("floor");
  g.measurement_time(Duration::from_secs(8));
  g.bench_function("bare_snapshot_thawed", |b| {
    b.iter(|| {
      let mut js = common::thaw_bare(snapshot);
      common::one_plus_one(&mut js);
    })
  });
  g.bench_function("process_exit", |b| {
    b.iter(|| common::spawn_ok(Command::new(common::this_binary()).env(EXIT_AT_ONCE, "1")))
  });
  g.bench_function("process_bare_snapshot", |b| {
    b.iter(|| common::spawn_ok(Command::new(common::this_binary()).env(THAW_FROM, &bare)))
  });
  let empty = dir.path().join("empty.js");
  std::fs::write(&empty, "").expect("write empty.js");
  let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
  g.bench_function("kiln_run_empty", |b| {
    b.iter(|| common::spawn_ok(Command::new(kiln).arg("run").arg(&empty)))
  });
  g.finish();
}

criterion_group!(benches, floor);
criterion_main!(benches);
