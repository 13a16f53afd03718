//! The cron backend interface: what `Deno.cron` needs from a scheduler.
//!
//! The extension's ops and glue only talk to these traits. The local
//! scheduler (`LocalCronHandler`) is the default; a shared database or a
//! remote scheduler implements the same traits without touching ops or glue.

use std::future::Future;

/// A job as `Deno.cron` registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
  /// Unique among live jobs of one handler.
  pub name: String,
  /// Five-field cron expression (UTC), already validated by the extension.
  pub schedule: String,
  /// Retry delays in ms after a failed run; `None` means the default.
  pub backoff_schedule: Option<Vec<u32>>,
}

/// Why a job could not be created or scheduled. The messages are the exact
/// `TypeError` messages `Deno.cron` throws.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, deno_error::JsError)]
pub enum CronError {
  #[class(type)]
  #[error("Cron name cannot exceed 64 characters: current length {0}")]
  NameTooLong(usize),
  #[class(type)]
  #[error(
    "Invalid cron name: only alphanumeric characters, whitespace, hyphens, and underscores are allowed"
  )]
  InvalidName,
  #[class(type)]
  #[error("Invalid cron schedule")]
  InvalidSchedule,
  #[class(type)]
  #[error("Invalid backoff schedule")]
  InvalidBackoffSchedule,
  #[class(type)]
  #[error("Cron with this name already exists")]
  AlreadyExists,
  #[class(type)]
  #[error("Too many crons")]
  TooManyCrons,
  #[class(generic)]
  #[error("cron backend error: {0}")]
  Backend(String),
}

/// Creates job handles. One handler serves one runtime (isolate).
pub trait CronHandler {
  type Handle: CronHandle + 'static;

  /// Registers a job; fails if its name is taken or too many jobs are live.
  fn create(&self, spec: CronSpec) -> Result<Self::Handle, CronError>;
}

/// One registered job.
pub trait CronHandle {
  /// Waits until the job should run. `prev_success` reports how the previous
  /// run went (true before the first run), which selects the backoff delay.
  /// Resolves `true` to run now, `false` once the job is closed.
  fn next(&self, prev_success: bool) -> impl Future<Output = Result<bool, CronError>>;

  /// Closes the job: a pending `next` resolves `false` and the name is freed.
  fn close(&self);
}
