//! Integration tests that boot from the real baked snapshot: the `kiln`
//! binary as a user runs it, and the library in-process.

mod cli;
mod cron;
mod embed;
mod hardening;
mod library;
mod serve;

/// Held by tests that hide parts of the source tree (the relocation test
/// renames `ext_js/`) and by tests that build from it (the embed example's
/// cargo build would see the files missing).
pub static SOURCE_TREE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Locks [`SOURCE_TREE`], ignoring poisoning by a failed test.
pub fn lock_source_tree() -> std::sync::MutexGuard<'static, ()> {
  SOURCE_TREE.lock().unwrap_or_else(|p| p.into_inner())
}
