//! The instances of one function: at most `max_instances` of them, each
//! serving one request at a time; idle ones are reused (most recently used
//! first) and evicted after the idle timeout.
//!
//! One instance per function owns its `Deno.cron` jobs; it is not evicted
//! while it has jobs, and is replaced if it dies.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::watch;

use super::instance::AcquireError;
use super::instance::Instance;
use super::instance::InstanceSpec;
use super::instance::StartError;
use super::metrics::TerminationCause;
use super::snapshots::HostSnapshot;
use super::snapshots::StartFrom;

/// An instance lent to one request; give it back with
/// [`FunctionPool::release`] or [`FunctionPool::discard`].
pub(crate) struct Lease {
  pub(crate) instance: Instance,
  _permit: OwnedSemaphorePermit,
}

pub(crate) struct FunctionPool {
  spec: InstanceSpec,
  /// Idle instances kept ready beyond those serving.
  warm: usize,
  /// A background start of warm instances is under way.
  warming: AtomicBool,
  /// The host's snapshot, if functions start from one.
  snapshot: Option<Arc<HostSnapshot>>,
  max_instances: usize,
  permits: Arc<Semaphore>,
  idle: Mutex<Vec<Instance>>,
  /// Some live instance owns the cron jobs.
  cron_owner: AtomicBool,
  closed: AtomicBool,
  /// True once the first load at host start-up has finished (either way);
  /// requests wait for it instead of starting a second load beside it.
  loaded: watch::Sender<bool>,
}

impl FunctionPool {
  /// A pool; with `preload`, requests wait for [`FunctionPool::preload`]'s
  /// first load to finish.
  pub(crate) fn new(
    spec: InstanceSpec,
    max_instances: usize,
    warm: usize,
    preload: bool,
    snapshot: Option<Arc<HostSnapshot>>,
  ) -> Self {
    let max_instances = max_instances.max(1);
    FunctionPool {
      spec,
      warm,
      warming: AtomicBool::new(false),
      snapshot,
      max_instances,
      permits: Arc::new(Semaphore::new(max_instances)),
      idle: Mutex::new(Vec::new()),
      cron_owner: AtomicBool::new(false),
      closed: AtomicBool::new(false),
      loaded: watch::Sender::new(!preload),
    }
  }

  pub(crate) fn name(&self) -> &str {
    &self.spec.function
  }

  fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
    self.idle.lock().unwrap_or_else(PoisonError::into_inner)
  }

  /// Starts the cron-owning instance (at host start-up), so the function's
  /// jobs are registered and its load errors show at once.
  pub(crate) async fn preload(self: &Arc<Self>) -> Result<(), StartError> {
    let result = self.start_idle().await;
    self.loaded.send_replace(true);
    if result.is_ok() {
      self.keep_warm();
    }
    result
  }

  /// Starts instances in the background until `warm` of them are idle
  /// (never more than `max_instances` in all), so a request finds one
  /// thawed and ready instead of waiting for a thread, an isolate and its
  /// start.
  pub(crate) fn keep_warm(self: &Arc<Self>) {
    if self.warm == 0
      || self.closed.load(Ordering::Acquire)
      || self.warming.swap(true, Ordering::AcqRel)
    {
      return;
    }
    let pool = self.clone();
    tokio::spawn(async move {
      while pool.needs_warm_instance() {
        if let Err(e) = pool.start_idle().await {
          tracing::warn!(function = %pool.spec.function, "cannot start a warm instance: {e}");
          break;
        }
      }
      pool.warming.store(false, Ordering::Release);
    });
  }

  fn needs_warm_instance(&self) -> bool {
    let idle = self.idle().iter().filter(|i| i.is_alive()).count();
    let busy = self.max_instances - self.permits.available_permits();
    !self.closed.load(Ordering::Acquire) && idle < self.warm && idle + busy < self.max_instances
  }

  async fn start_idle(self: &Arc<Self>) -> Result<(), StartError> {
    let permit = self.permits.clone().acquire_owned().await;
    let Ok(_permit) = permit else {
      return Ok(());
    };
    let instance = self.start().await?;
    self.put_idle(instance);
    Ok(())
  }

  /// What instances start from (the host's snapshot is baked or read
  /// from the cache by the first caller; the others wait for it).
  async fn start_from(&self) -> StartFrom {
    match &self.snapshot {
      Some(snapshot) => snapshot.start_from(&self.spec.path).await,
      None => StartFrom::Embedded,
    }
  }

  async fn start(self: &Arc<Self>) -> Result<Instance, StartError> {
    let mut spec = self.spec.clone();
    spec.start_from = self.start_from().await;
    let owns_cron = !self.cron_owner.swap(true, Ordering::AcqRel);
    let result = Instance::start(spec, owns_cron).await;
    if result.is_err() && owns_cron {
      self.cron_owner.store(false, Ordering::Release);
    }
    result
  }

  /// An instance for one request: an idle one, or a new one while fewer
  /// than `max_instances` are busy; otherwise waits for one to be free.
  /// Waits at most `wait` for the function's first load and a free slot.
  pub(crate) async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<Lease, AcquireError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut loaded = self.loaded.subscribe();
    if tokio::time::timeout_at(deadline, loaded.wait_for(|done| *done))
      .await
      .is_err()
    {
      return Err(AcquireError::StillLoading {
        function: self.spec.function.to_string(),
        ms: wait.as_millis(),
      });
    }
    let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
      .await
      .map_err(|_| AcquireError::Busy {
        function: self.spec.function.to_string(),
        instances: self.max_instances,
        ms: wait.as_millis(),
      })?
      .map_err(|_| AcquireError::ShuttingDown(self.spec.function.to_string()))?;
    loop {
      let candidate = self.idle().pop();
      match candidate {
        Some(instance) if instance.is_alive() => {
          // A warm instance was taken: replace it.
          self.keep_warm();
          return Ok(Lease {
            instance,
            _permit: permit,
          });
        }
        Some(dead) => self.forget(dead),
        None => break,
      }
    }
    let instance = self.start().await?;
    self.keep_warm();
    Ok(Lease {
      instance,
      _permit: permit,
    })
  }

  /// The request is done and the instance healthy: back to the idle list.
  pub(crate) fn release(self: &Arc<Self>, lease: Lease) {
    let Lease { instance, _permit } = lease;
    if instance.is_alive() {
      self.put_idle(instance);
    } else {
      self.forget(instance);
    }
  }

  /// The instance is dead or must die (terminated): drop it.
  pub(crate) fn discard(self: &Arc<Self>, lease: Lease) {
    let Lease { instance, _permit } = lease;
    self.forget(instance);
  }

  fn put_idle(self: &Arc<Self>, mut instance: Instance) {
    instance.last_used = Instant::now();
    if self.closed.load(Ordering::Acquire) {
      self.forget(instance);
      return;
    }
    self.idle().push(instance);
  }

  /// Drops an instance, records why, and replaces a dead cron owner.
  fn forget(self: &Arc<Self>, instance: Instance) {
    let cause = instance.fate().map(|(cause, _)| cause);
    self.spec.metrics.instance_stop(&self.spec.function, cause);
    let had_jobs = instance.runs_cron_jobs();
    if instance.owns_cron {
      self.cron_owner.store(false, Ordering::Release);
    }
    drop(instance.stop());
    if had_jobs && !self.closed.load(Ordering::Acquire) {
      tracing::warn!(function = %self.spec.function, "cron-owning instance ended; starting a new one");
      self.respawn_cron_owner();
    }
  }

  fn respawn_cron_owner(self: &Arc<Self>) {
    let pool = self.clone();
    tokio::spawn(async move {
      if let Err(e) = pool.start_idle().await {
        tracing::error!(function = %pool.spec.function, "cannot restart the cron-owning instance: {e}");
      }
    });
  }

  /// Evicts instances idle for longer than `idle_timeout`, except a cron
  /// owner with live jobs and (with `keep_warm`) the warm ones.
  pub(crate) fn evict_idle(self: &Arc<Self>, idle_timeout: Duration, keep_warm: bool) {
    let evicted: Vec<Instance> = {
      let mut idle = self.idle();
      // The most recently used come last; the `warm` newest stay.
      let warm = if keep_warm { self.warm } else { 0 };
      let warm_from = idle.len().saturating_sub(warm);
      let (stale, keep): (Vec<_>, Vec<_>) = idle.drain(..).enumerate().partition(|(n, i)| {
        !i.is_alive()
          || (*n < warm_from && i.last_used.elapsed() >= idle_timeout && !i.runs_cron_jobs())
      });
      *idle = keep.into_iter().map(|(_, i)| i).collect();
      stale.into_iter().map(|(_, i)| i).collect()
    };
    for instance in evicted {
      if instance.is_alive() {
        instance.terminate(TerminationCause::Idle);
      }
      self.forget(instance);
    }
  }

  /// Stops every idle instance and refuses new work; returns the threads
  /// to join.
  pub(crate) fn close(&self) -> Vec<std::thread::JoinHandle<()>> {
    self.closed.store(true, Ordering::Release);
    self.permits.close();
    let idle: Vec<Instance> = self.idle().drain(..).collect();
    idle
      .into_iter()
      .filter_map(|instance| {
        self.spec.metrics.instance_stop(&self.spec.function, None);
        instance.stop()
      })
      .collect()
  }
}
