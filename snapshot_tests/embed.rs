//! The embedder example (`examples/embed/`): a separate crate with kiln as a
//! dependency and build-dependency bakes its own extension next to kiln's.
//! Builds and runs it with cargo, as a user would.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// A target dir of its own (the outer `cargo test` holds the lock on ours),
/// beside ours so repeated runs reuse it.
fn example_target_dir() -> PathBuf {
  let exe = std::env::current_exe().expect("test binary path");
  // <target>/<profile>/deps/<test binary>
  let target = exe
    .ancestors()
    .nth(3)
    .map(Path::to_path_buf)
    .unwrap_or_else(std::env::temp_dir);
  target.join("embed-example")
}

#[test]
fn embed_example_bakes_and_runs_its_own_extension() {
  let _tree = crate::lock_source_tree();
  let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed/Cargo.toml");
  let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
  let out = Command::new(cargo)
    .args(["run", "--quiet", "--manifest-path"])
    .arg(&manifest)
    .env("CARGO_TARGET_DIR", example_target_dir())
    .env("NO_COLOR", "1")
    .output()
    .expect("run cargo");
  let stdout = String::from_utf8_lossy(&out.stdout);
  let stderr = String::from_utf8_lossy(&out.stderr);
  assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
  assert!(stdout.contains("sync op: 2 + 3 = 5\n"), "{stdout}");
  assert!(stdout.contains("resource: counter = 2\n"), "{stdout}");
  assert!(stdout.contains("after close: counter"), "{stdout}");
  assert!(stdout.contains("async op: done\n"), "{stdout}");
  assert!(stdout.contains("counters closed: 1\n"), "{stdout}");
  assert!(
    stdout.contains("without embed_ext: snapshot fingerprint mismatch: baked for"),
    "{stdout}"
  );
}

#[test]
fn bake_api_reports_the_example_ts_for_rerun_if_changed() {
  // The example's own build output lists its glue among the files that went
  // into the snapshot; the build script prints them as rerun-if-changed.
  let _tree = crate::lock_source_tree();
  let dir = example_target_dir();
  let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed/Cargo.toml");
  let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
  let status = Command::new(cargo)
    .args(["build", "--quiet", "--manifest-path"])
    .arg(&manifest)
    .env("CARGO_TARGET_DIR", &dir)
    .status()
    .expect("run cargo");
  assert!(status.success());
  let glue = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed/ext_js/embed.ts");
  let build_dir = dir.join("debug/build");
  let found = std::fs::read_dir(&build_dir)
    .expect("build dir")
    .flatten()
    .filter(|e| {
      e.file_name()
        .to_string_lossy()
        .starts_with("kiln-embed-example-")
    })
    .filter_map(|e| std::fs::read_to_string(e.path().join("output")).ok())
    .any(|out| out.contains(&format!("cargo:rerun-if-changed={}", glue.display())));
  assert!(
    found,
    "no build output of the example lists {}",
    glue.display()
  );
}
