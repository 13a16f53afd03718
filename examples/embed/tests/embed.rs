//! The embedder example end to end: its build script baked kiln's
//! extensions plus `embed_ext`; its program (the `embed` example target,
//! which `cargo test` builds in this workspace's target directory) thaws
//! that snapshot and exercises the extension.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// `<target>/<profile>`, from this test binary's own path
/// (`<target>/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
  let exe = std::env::current_exe().expect("test binary path");
  exe
    .ancestors()
    .nth(2)
    .map(Path::to_path_buf)
    .expect("test binary lives in <target>/<profile>/deps")
}

#[test]
fn the_example_bakes_and_runs_its_own_extension() {
  let program = profile_dir().join("examples").join("embed");
  let out = Command::new(&program)
    .env("NO_COLOR", "1")
    .output()
    .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
  let stdout = String::from_utf8_lossy(&out.stdout);
  let stderr = String::from_utf8_lossy(&out.stderr);
  assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
  assert!(stdout.contains("sync op: 2 + 3 = 5\n"), "{stdout}");
  assert!(stdout.contains("resource: counter = 2\n"), "{stdout}");
  assert!(stdout.contains("after close: counter"), "{stdout}");
  assert!(stdout.contains("async op: done\n"), "{stdout}");
  assert!(stdout.contains("counters closed: 1\n"), "{stdout}");
  assert!(
    stdout.contains("baked app: 1000 entries, k12 = 144\n"),
    "{stdout}"
  );
  assert!(
    stdout.contains("without embed_ext: snapshot fingerprint mismatch: baked for"),
    "{stdout}"
  );
}

#[test]
fn the_build_script_reports_the_glue_for_rerun_if_changed() {
  // The bake lists the extension's glue among the files that went into the
  // snapshot; the build script prints them as rerun-if-changed.
  let build_dir = profile_dir().join("build");
  let glue = "ext_js/embed.ts";
  let found = std::fs::read_dir(&build_dir)
    .expect("build dir")
    .flatten()
    .filter(|e| {
      e.file_name()
        .to_string_lossy()
        .starts_with("kiln-embed-example-")
    })
    .filter_map(|e| std::fs::read_to_string(e.path().join("output")).ok())
    .any(|out| {
      out
        .lines()
        .any(|l| l.starts_with("cargo:rerun-if-changed=") && l.ends_with(glue))
    });
  assert!(found, "no build output of the example lists {glue}");
}
