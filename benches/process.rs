//! Process cold start: spawn a runtime binary on an empty script, exec to
//! exit. kiln's release binary always; `deno run` and `node` beside it when
//! they are on PATH, so ratios are measured on the same machine in one run.

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;

fn on_path(name: &str) -> Option<PathBuf> {
  std::env::var_os("PATH").and_then(|paths| {
    std::env::split_paths(&paths)
      .map(|dir| dir.join(name))
      .find(|p| p.is_file())
  })
}

fn process(c: &mut Criterion) {
  let dir = tempfile::tempdir().expect("tempdir");
  let empty = dir.path().join("empty.js");
  std::fs::write(&empty, "").expect("write empty.js");
  let deno_dir = dir.path().join("deno_dir");

  let mut g = c.benchmark_group("process");
  g.measurement_time(Duration::from_secs(8));
  let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
  g.bench_function("kiln_run", |b| {
    b.iter(|| common::spawn_ok(Command::new(kiln).arg("run").arg(&empty)))
  });
  if let Some(deno) = on_path("deno") {
    g.bench_function("deno_run", |b| {
      b.iter(|| {
        common::spawn_ok(
          Command::new(&deno)
            .env("DENO_DIR", &deno_dir)
            .env("DENO_NO_UPDATE_CHECK", "1")
            .args(["run", "--quiet"])
            .arg(&empty),
        )
      })
    });
  } else {
    eprintln!("process: deno not on PATH, skipped");
  }
  if let Some(node) = on_path("node") {
    g.bench_function("node", |b| {
      b.iter(|| common::spawn_ok(Command::new(&node).arg(&empty)))
    });
  } else {
    eprintln!("process: node not on PATH, skipped");
  }
  g.finish();
}

criterion_group!(benches, process);
criterion_main!(benches);
