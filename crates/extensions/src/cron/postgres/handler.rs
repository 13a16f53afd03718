//! `PostgresCronHandler`: the `CronHandler` of one runtime over a shared
//! [`PostgresCronStore`].

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use chrono::DateTime;
use chrono::Utc;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Claim;
use super::PostgresCronStore;
use super::RunKey;
use super::SkipReason;
use crate::cron::interface::CronError;
use crate::cron::interface::CronHandle;
use crate::cron::interface::CronHandler;
use crate::cron::interface::CronSpec;
use crate::cron::local::DEFAULT_BACKOFF_SCHEDULE;
use crate::cron::local::MAX_CRONS;
use crate::cron::schedule::CronSchedule;

/// Runs `Deno.cron` jobs of one runtime through a [`PostgresCronStore`]:
/// each tick runs in whichever process sharing the database claims it.
///
/// `function` names the runtime's jobs in the database (`kiln serve` uses
/// the function's name): runtimes in different processes with the same
/// `function` and job name share the job's ticks.
pub struct PostgresCronHandler {
  store: PostgresCronStore,
  function: Arc<str>,
  names: Rc<RefCell<HashSet<String>>>,
}

impl PostgresCronHandler {
  pub fn new(store: &PostgresCronStore, function: &str) -> Self {
    PostgresCronHandler {
      store: store.clone(),
      function: function.into(),
      names: Rc::default(),
    }
  }
}

impl CronHandler for PostgresCronHandler {
  type Handle = PostgresCronHandle;

  fn create(&self, spec: CronSpec) -> Result<PostgresCronHandle, CronError> {
    let schedule = CronSchedule::parse(&spec.schedule)?;
    let mut names = self.names.borrow_mut();
    if names.contains(&spec.name) {
      return Err(CronError::AlreadyExists);
    }
    if names.len() >= MAX_CRONS {
      return Err(CronError::TooManyCrons);
    }
    names.insert(spec.name.clone());
    Ok(PostgresCronHandle {
      store: self.store.clone(),
      function: self.function.clone(),
      job: spec.name.into(),
      schedule,
      backoff: spec
        .backoff_schedule
        .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
      names: self.names.clone(),
      slot: self.store.new_slot(),
      closed: Cell::new(false),
      wake: Notify::new(),
      last_tick: Cell::new(None),
    })
  }
}

/// The run a job holds in the database, shared with the store's tasks so a
/// claim that completes after the job closed is let go at once.
#[derive(Clone, Default)]
pub(crate) struct Slot(Arc<Mutex<SlotState>>);

#[derive(Default)]
pub(crate) struct SlotState {
  closed: bool,
  held: Option<Held>,
}

#[derive(Clone)]
struct Held {
  key: RunKey,
  /// A waiting retry: when it is due (this process's clock).
  due: Option<Instant>,
}

impl Slot {
  fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
    self.0.lock().unwrap_or_else(|p| p.into_inner())
  }

  /// Records a run now held here (`waiting`: a retry due after that long);
  /// released at once if the job has closed.
  pub(crate) fn hold(&self, store: &PostgresCronStore, key: RunKey, waiting: Option<Duration>) {
    let mut state = self.lock();
    if state.closed {
      drop(state);
      store.release(key);
      return;
    }
    state.held = Some(Held {
      key,
      due: waiting.map(|d| Instant::now() + d),
    });
  }

  pub(crate) fn downgrade(&self) -> std::sync::Weak<Mutex<SlotState>> {
    Arc::downgrade(&self.0)
  }

  /// The run a slot holds, if any.
  pub(crate) fn held_key(slot: &Mutex<SlotState>) -> Option<RunKey> {
    let state = slot.lock().unwrap_or_else(|p| p.into_inner());
    state.held.as_ref().map(|h| h.key.clone())
  }

  pub(crate) fn clear(&self) {
    self.lock().held = None;
  }

  fn held(&self) -> Option<Held> {
    self.lock().held.clone()
  }

  /// Closes the slot; returns the run to let go of.
  fn close(&self) -> Option<RunKey> {
    let mut state = self.lock();
    state.closed = true;
    state.held.take().map(|h| h.key)
  }
}

/// A job of a [`PostgresCronHandler`].
pub struct PostgresCronHandle {
  store: PostgresCronStore,
  function: Arc<str>,
  job: Arc<str>,
  schedule: CronSchedule,
  backoff: Vec<u32>,
  names: Rc<RefCell<HashSet<String>>>,
  slot: Slot,
  closed: Cell<bool>,
  wake: Notify,
  last_tick: Cell<Option<DateTime<Utc>>>,
}

/// A store error: wait this long before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(500);

impl PostgresCronHandle {
  /// Sleeps `d` or until the job closes; false if it closed.
  async fn sleep(&self, d: Duration) -> bool {
    if self.closed.get() {
      return false;
    }
    tokio::select! {
      _ = tokio::time::sleep(d) => {}
      _ = self.wake.notified() => {}
    }
    !self.closed.get()
  }

  /// How often a job waiting for its next tick looks for runs to take over.
  fn take_over_poll(&self) -> Duration {
    self.store.lease() / 2
  }

  /// Records how the run that just ended went, retrying while the store is
  /// down (the run stays held, its lease renewed, until it is recorded).
  async fn report(&self, key: RunKey, success: bool) {
    let retry = (!success)
      .then(|| {
        self
          .backoff
          .get(usize::try_from(key.attempt).unwrap_or(usize::MAX))
      })
      .flatten()
      .map(|&ms| self.store.clock().wall(ms));
    loop {
      match self.store.finish(&key, success, retry, &self.slot).await {
        Ok((true, _)) => return,
        Ok((false, _)) => {
          tracing::warn!(
            "cron job {:?} of {}: the end of its run was not recorded: this host no longer held it (its lease ran out and another host took it over, or an earlier attempt to record it went through unacknowledged)",
            &*self.job,
            self.function
          );
          return;
        }
        Err(_) => {
          if !self.sleep(RETRY_AFTER_ERROR).await {
            return;
          }
        }
      }
    }
  }

  async fn wait_for_run(&self) -> bool {
    let clock = self.store.clock();
    loop {
      if self.closed.get() {
        return false;
      }
      // A retry held here: start it when due.
      if let Some(held) = self.slot.held() {
        if let Some(due) = held.due {
          tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = self.wake.notified() => {}
          }
          if self.closed.get() {
            return false;
          }
          match self.store.start_waiting(&held.key, &self.slot).await {
            Ok(true) => return true,
            Ok(false) => continue,
            Err(_) => {
              if !self.sleep(RETRY_AFTER_ERROR).await {
                return false;
              }
              continue;
            }
          }
        }
        // A run held here that is not waiting: run it (taken over).
        return true;
      }
      if self.store.may_take_over() {
        match self
          .store
          .take_over(&self.function, &self.job, &self.slot)
          .await
        {
          Ok(Some(taken)) => {
            if let Some(events) = self.store.events() {
              events.took_over(&self.function, &self.job);
            }
            tracing::info!(
              "cron job {:?} of {}: took over the run of tick {} (attempt {}) from a host that stopped renewing it",
              &*self.job,
              self.function,
              taken.tick,
              taken.attempt
            );
            continue;
          }
          Ok(None) => {}
          Err(_) => {
            if !self.sleep(RETRY_AFTER_ERROR).await {
              return false;
            }
            continue;
          }
        }
      }
      let now = clock.now();
      // Never a tick this job already tried (a sleep may end a moment early).
      let after = self.last_tick.get().map_or(now, |last| last.max(now));
      let Some(tick) = clock.next_tick(&self.schedule, &after) else {
        // A schedule with no tick left: nothing ever runs.
        self.wake.notified().await;
        return false;
      };
      let wait = clock.wall_until(&tick, &now);
      let poll = self.take_over_poll();
      if wait > poll {
        if !self.sleep(poll).await {
          return false;
        }
        continue;
      }
      if !self.sleep(wait).await {
        return false;
      }
      // Until the tick after this one is due, keep trying to claim this
      // one while the store fails: a tick is claimed once or not at all.
      self.last_tick.set(Some(tick));
      let following = clock.next_tick(&self.schedule, &tick);
      loop {
        match self
          .store
          .claim(&self.function, &self.job, tick, &self.slot)
          .await
        {
          Ok(Claim::Won) => return true,
          Ok(Claim::Skipped(reason)) => {
            self.skipped(reason);
            break;
          }
          Err(_) => {
            if following.is_none_or(|f| clock.now() >= f) || !self.sleep(RETRY_AFTER_ERROR).await {
              break;
            }
          }
        }
      }
    }
  }

  fn skipped(&self, reason: SkipReason) {
    if let Some(events) = self.store.events() {
      events.skipped(&self.function, &self.job, reason);
    }
  }
}

impl CronHandle for PostgresCronHandle {
  async fn next(&self, prev_success: bool) -> Result<bool, CronError> {
    if let Some(held) = self.slot.held()
      && held.due.is_none()
    {
      // The run the previous `next` returned for has ended.
      self.report(held.key, prev_success).await;
    }
    Ok(self.wait_for_run().await)
  }

  /// The job's signal aborted. A run in progress goes on to its end here
  /// (the glue stops asking for runs), so it is recorded as `closed`, never
  /// handed to another host.
  fn close(&self) {
    if let Some(key) = self.shut() {
      self.store.close_run(key);
    }
  }
}

impl PostgresCronHandle {
  /// Stops the job; returns the run it held, if any.
  fn shut(&self) -> Option<RunKey> {
    if self.closed.replace(true) {
      return None;
    }
    self.wake.notify_waiters();
    self.wake.notify_one();
    self.names.borrow_mut().remove(&*self.job);
    self.slot.close()
  }
}

impl Drop for PostgresCronHandle {
  /// The runtime went away (closing it does not close resources): a run in
  /// progress was cut short, so another host takes it over at once.
  fn drop(&mut self) {
    if let Some(key) = self.shut() {
      self.store.release(key);
    }
  }
}
