//! `Deno.cron` inside the host: every instance of a function runs the same
//! module, so every instance registers the same jobs; only the function's
//! cron-owning instance runs them (otherwise a job would run once per
//! instance). Other instances keep the registration bookkeeping (so the same
//! names, limits and errors apply) but their jobs never fire.
//!
//! With a cron store (`--cron-store`), the owner's jobs run through
//! [`PostgresCronHandler`]: each tick runs on one host of the fleet.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

use super::metrics::Metrics;
use kiln_extensions::cron::CronError;
use kiln_extensions::cron::CronHandle;
use kiln_extensions::cron::CronHandler;
use kiln_extensions::cron::CronSpec;
use kiln_extensions::cron::LocalCronHandler;
use kiln_extensions::cron::local::LocalCronHandle;
use kiln_extensions::cron::postgres::PostgresCronHandle;
use kiln_extensions::cron::postgres::PostgresCronHandler;
use kiln_extensions::cron::postgres::PostgresCronStore;

/// The cron backend of one instance.
pub(crate) struct HostCronHandler {
  local: LocalCronHandler,
  /// The owner's jobs with a cron store.
  fleet: Option<PostgresCronHandler>,
  owner: bool,
  function: Arc<str>,
  metrics: Arc<Metrics>,
  /// Jobs registered in this instance (an owner with jobs is never evicted).
  jobs: Arc<AtomicUsize>,
}

impl HostCronHandler {
  pub(crate) fn new(
    owner: bool,
    function: Arc<str>,
    metrics: Arc<Metrics>,
    jobs: Arc<AtomicUsize>,
    store: Option<&PostgresCronStore>,
  ) -> Self {
    HostCronHandler {
      local: LocalCronHandler::default(),
      fleet: store
        .filter(|_| owner)
        .map(|store| PostgresCronHandler::new(store, &function)),
      owner,
      function,
      metrics,
      jobs,
    }
  }
}

impl CronHandler for HostCronHandler {
  type Handle = HostCronHandle;

  fn create(&self, spec: CronSpec) -> Result<HostCronHandle, CronError> {
    let fleet = match &self.fleet {
      Some(fleet) => Some(fleet.create(spec.clone())?),
      None => None,
    };
    let inner = self.local.create(spec)?;
    self.jobs.fetch_add(1, Ordering::Relaxed);
    Ok(HostCronHandle {
      inner,
      fleet,
      owner: self.owner,
      first: Cell::new(true),
      closed: Notify::new(),
      function: self.function.clone(),
      metrics: self.metrics.clone(),
      jobs: self.jobs.clone(),
    })
  }
}

/// A job in one instance.
pub(crate) struct HostCronHandle {
  inner: LocalCronHandle,
  fleet: Option<PostgresCronHandle>,
  owner: bool,
  first: Cell<bool>,
  closed: Notify,
  function: Arc<str>,
  metrics: Arc<Metrics>,
  jobs: Arc<AtomicUsize>,
}

impl CronHandle for HostCronHandle {
  async fn next(&self, prev_success: bool) -> Result<bool, CronError> {
    if !self.owner {
      // Registered, never run here: wait for close.
      self.closed.notified().await;
      return Ok(false);
    }
    // Every call after the first reports the run that just ended.
    if !self.first.replace(false) {
      self.metrics.cron_run(&self.function, prev_success);
    }
    match &self.fleet {
      Some(fleet) => fleet.next(prev_success).await,
      None => self.inner.next(prev_success).await,
    }
  }

  fn close(&self) {
    self.inner.close();
    if let Some(fleet) = &self.fleet {
      fleet.close();
    }
    self.closed.notify_one();
    self.jobs.fetch_sub(1, Ordering::Relaxed);
  }
}
