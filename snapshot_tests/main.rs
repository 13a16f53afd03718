//! Integration tests that boot from the real baked snapshot: the `kiln`
//! binary as a user runs it, and the library in-process. Compiled as a test
//! of `crates/cli` (the package that builds the binary).

mod cli;
mod compile;
mod cron;
mod fleet;
mod function_snapshots;
mod hardening;
mod library;
mod packages;
mod platform;
mod serve;

/// The repository root (these tests are compiled as part of `crates/cli`).
pub fn repo_root() -> std::path::PathBuf {
  std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Held by tests that hide parts of the source tree (the relocation test
/// renames `ext_js/`) and by tests that read from it.
pub static SOURCE_TREE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `kiln` command whose caches (code caches of `kiln run`) go to a
/// directory of the test run, not the user's home.
pub fn kiln_command() -> std::process::Command {
  let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
  cmd.env("NO_COLOR", "1").env(
    "XDG_CACHE_HOME",
    std::env::temp_dir().join("kiln-tests-cache"),
  );
  cmd
}

/// Locks [`SOURCE_TREE`], ignoring poisoning by a failed test.
pub fn lock_source_tree() -> std::sync::MutexGuard<'static, ()> {
  SOURCE_TREE.lock().unwrap_or_else(|p| p.into_inner())
}
