//! `LocalCronHandler`: the in-process cron backend, the default.
//!
//! One scheduler task per handler (per runtime), spawned lazily on the first
//! job, sleeps until the earliest deadline and wakes the jobs that are due.
//! At most [`MAX_CONCURRENT_RUNS`] runs are in flight at once across jobs: a
//! run holds a permit from the moment it is woken until the job asks for its
//! next run. It must never outlive its runtime: the task holds only a weak
//! reference and ends when the handler and its jobs are gone.

use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::rc::Weak;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::interface::CronError;
use super::interface::CronHandle;
use super::interface::CronHandler;
use super::interface::CronSpec;
use super::schedule::CronSchedule;

/// Runs allowed in flight at once, across all jobs of one handler.
pub const MAX_CONCURRENT_RUNS: usize = 50;
/// Jobs that may be live at once (as in Deno: the 102nd registration fails).
pub const MAX_CRONS: usize = 101;
/// Retry delays (ms) after a failed run when the job names none.
pub const DEFAULT_BACKOFF_SCHEDULE: [u32; 5] = [100, 1000, 5000, 30000, 60000];
/// Test hook: when set to a number of ms, every next run is that far away.
pub const TEST_OFFSET_ENV: &str = "KILN_CRON_TEST_SCHEDULE_OFFSET";

struct Job {
  name: String,
  schedule: CronSchedule,
  backoff: Vec<u32>,
  /// How many retries of the current failure streak have been used.
  retries: usize,
  deadline: Option<Instant>,
  waiter: Option<oneshot::Sender<()>>,
  /// Held while a run is in flight.
  permit: Option<OwnedSemaphorePermit>,
}

struct Shared {
  jobs: RefCell<BTreeMap<u64, Job>>,
  next_id: Cell<u64>,
  /// Wakes the scheduler task: a new deadline, or the handler went away.
  wake: Rc<Notify>,
  task_running: Cell<bool>,
  permits: Arc<Semaphore>,
  test_offset: Option<Duration>,
}

impl Drop for Shared {
  fn drop(&mut self) {
    // Lets the task notice it has nothing left to serve.
    self.wake.notify_one();
  }
}

/// The default cron backend: jobs run in this process, on this runtime's
/// thread.
#[derive(Clone)]
pub struct LocalCronHandler {
  shared: Rc<Shared>,
}

impl Default for LocalCronHandler {
  fn default() -> Self {
    let test_offset = std::env::var(TEST_OFFSET_ENV)
      .ok()
      .and_then(|v| v.trim().parse::<u64>().ok())
      .map(Duration::from_millis);
    Self::with_test_offset(test_offset)
  }
}

impl LocalCronHandler {
  /// A handler whose every next run is `offset` from now when set (tests);
  /// `Default` reads it from `KILN_CRON_TEST_SCHEDULE_OFFSET`.
  pub fn with_test_offset(offset: Option<Duration>) -> Self {
    LocalCronHandler {
      shared: Rc::new(Shared {
        jobs: RefCell::new(BTreeMap::new()),
        next_id: Cell::new(0),
        wake: Rc::new(Notify::new()),
        task_running: Cell::new(false),
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT_RUNS)),
        test_offset: offset,
      }),
    }
  }

  /// Jobs currently registered.
  pub fn live_jobs(&self) -> usize {
    self.shared.jobs.borrow().len()
  }
}

impl CronHandler for LocalCronHandler {
  type Handle = LocalCronHandle;

  fn create(&self, spec: CronSpec) -> Result<LocalCronHandle, CronError> {
    let schedule = CronSchedule::parse(&spec.schedule)?;
    let mut jobs = self.shared.jobs.borrow_mut();
    if jobs.values().any(|j| j.name == spec.name) {
      return Err(CronError::AlreadyExists);
    }
    if jobs.len() >= MAX_CRONS {
      return Err(CronError::TooManyCrons);
    }
    let id = self.shared.next_id.get();
    self.shared.next_id.set(id + 1);
    jobs.insert(
      id,
      Job {
        name: spec.name,
        schedule,
        backoff: spec
          .backoff_schedule
          .unwrap_or_else(|| DEFAULT_BACKOFF_SCHEDULE.to_vec()),
        retries: 0,
        deadline: None,
        waiter: None,
        permit: None,
      },
    );
    Ok(LocalCronHandle {
      id,
      shared: Rc::downgrade(&self.shared),
    })
  }
}

/// A job of a [`LocalCronHandler`].
pub struct LocalCronHandle {
  id: u64,
  shared: Weak<Shared>,
}

impl CronHandle for LocalCronHandle {
  async fn next(&self, prev_success: bool) -> Result<bool, CronError> {
    let Some(shared) = self.shared.upgrade() else {
      return Ok(false);
    };
    let receiver = {
      let mut jobs = shared.jobs.borrow_mut();
      let Some(job) = jobs.get_mut(&self.id) else {
        return Ok(false);
      };
      // The previous run is over.
      job.permit = None;
      let delay = if !prev_success && job.retries < job.backoff.len() {
        let delay = Duration::from_millis(u64::from(job.backoff[job.retries]));
        job.retries += 1;
        delay
      } else {
        job.retries = 0;
        match shared.test_offset {
          Some(offset) => offset,
          None => {
            let now = Utc::now();
            let next = job
              .schedule
              .next_after(&now)
              .ok_or(CronError::InvalidSchedule)?;
            (next - now).to_std().unwrap_or_default()
          }
        }
      };
      let (sender, receiver) = oneshot::channel();
      job.deadline = Some(Instant::now() + delay);
      job.waiter = Some(sender);
      receiver
    };
    ensure_task(&shared);
    shared.wake.notify_one();
    drop(shared);
    // A closed job drops its sender: that is the `false`.
    Ok(receiver.await.is_ok())
  }

  fn close(&self) {
    if let Some(shared) = self.shared.upgrade() {
      shared.jobs.borrow_mut().remove(&self.id);
      shared.wake.notify_one();
    }
  }
}

fn ensure_task(shared: &Rc<Shared>) {
  if shared.task_running.replace(true) {
    return;
  }
  let weak = Rc::downgrade(shared);
  let wake = shared.wake.clone();
  deno_core::unsync::spawn(scheduler(weak, wake));
}

/// Sleeps until the earliest deadline, wakes the due jobs, repeats; ends
/// when no job is waiting or the handler is gone.
async fn scheduler(shared: Weak<Shared>, wake: Rc<Notify>) {
  loop {
    let Some(strong) = shared.upgrade() else {
      return;
    };
    let now = Instant::now();
    let mut earliest: Option<Instant> = None;
    let mut due = Vec::new();
    for (id, job) in strong.jobs.borrow().iter() {
      match job.deadline {
        Some(d) if job.waiter.is_some() && d <= now => due.push(*id),
        Some(d) if job.waiter.is_some() => earliest = Some(earliest.map_or(d, |e| e.min(d))),
        _ => {}
      }
    }
    if due.is_empty() && earliest.is_none() {
      strong.task_running.set(false);
      return;
    }
    let permits = strong.permits.clone();
    drop(strong);
    for id in due {
      // Waits while MAX_CONCURRENT_RUNS runs are in flight.
      let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
      };
      let Some(strong) = shared.upgrade() else {
        return;
      };
      let mut jobs = strong.jobs.borrow_mut();
      if let Some(job) = jobs.get_mut(&id)
        && let Some(waiter) = job.waiter.take()
      {
        job.deadline = None;
        if waiter.send(()).is_ok() {
          job.permit = Some(permit);
        }
      }
    }
    if let Some(deadline) = earliest {
      tokio::select! {
        _ = tokio::time::sleep_until(deadline) => {}
        _ = wake.notified() => {}
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn spec(name: &str, backoff: Option<Vec<u32>>) -> CronSpec {
    CronSpec {
      name: name.into(),
      schedule: "* * * * *".into(),
      backoff_schedule: backoff,
    }
  }

  /// A paused-clock runtime: sleeps complete instantly and deterministically.
  fn paused(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
      .enable_time()
      .start_paused(true)
      .build()
      .unwrap()
      .block_on(f);
  }

  async fn waited(handle: &LocalCronHandle, prev_success: bool) -> (bool, Duration) {
    let start = Instant::now();
    let run = handle.next(prev_success).await.unwrap();
    (run, start.elapsed())
  }

  #[test]
  fn default_backoff_then_back_to_the_schedule() {
    paused(async {
      let handler = LocalCronHandler::with_test_offset(Some(Duration::from_secs(3600)));
      let job = handler.create(spec("j", None)).unwrap();
      assert_eq!(waited(&job, true).await, (true, Duration::from_secs(3600)));
      for ms in DEFAULT_BACKOFF_SCHEDULE {
        assert_eq!(
          waited(&job, false).await,
          (true, Duration::from_millis(ms.into()))
        );
      }
      // Retries exhausted: the schedule again, and a success resets the streak.
      assert_eq!(waited(&job, false).await.1, Duration::from_secs(3600));
      assert_eq!(waited(&job, true).await.1, Duration::from_secs(3600));
      assert_eq!(waited(&job, false).await.1, Duration::from_millis(100));
    });
  }

  #[test]
  fn next_run_follows_the_real_schedule_without_the_hook() {
    paused(async {
      let handler = LocalCronHandler::with_test_offset(None);
      let job = handler.create(spec("minutely", None)).unwrap();
      let (run, waited) = waited(&job, true).await;
      assert!(run);
      assert!(waited <= Duration::from_secs(60), "{waited:?}");
    });
  }

  #[test]
  fn closing_resolves_a_pending_next_with_false_and_frees_the_name() {
    paused(async {
      let handler = LocalCronHandler::with_test_offset(Some(Duration::from_secs(10)));
      let job = Rc::new(handler.create(spec("closing", None)).unwrap());
      let pending = deno_core::unsync::spawn({
        let job = job.clone();
        async move { job.next(true).await }
      });
      tokio::task::yield_now().await;
      job.close();
      assert_eq!(pending.await.unwrap(), Ok(false));
      assert_eq!(job.next(true).await, Ok(false));
      assert_eq!(handler.live_jobs(), 0);
      assert!(handler.create(spec("closing", None)).is_ok());
    });
  }

  #[test]
  fn names_are_unique_and_live_jobs_are_limited() {
    paused(async {
      let handler = LocalCronHandler::with_test_offset(None);
      let jobs: Vec<_> = (0..MAX_CRONS)
        .map(|i| handler.create(spec(&format!("job {i}"), None)).unwrap())
        .collect();
      assert_eq!(
        handler.create(spec("job 0", None)).err(),
        Some(CronError::AlreadyExists)
      );
      assert_eq!(
        handler.create(spec("one more", None)).err(),
        Some(CronError::TooManyCrons)
      );
      jobs[0].close();
      assert!(handler.create(spec("one more", None)).is_ok());
    });
  }

  #[test]
  fn at_most_fifty_runs_are_in_flight() {
    paused(async {
      let handler = LocalCronHandler::with_test_offset(Some(Duration::from_millis(10)));
      let jobs: Vec<_> = (0..MAX_CONCURRENT_RUNS + 1)
        .map(|i| Rc::new(handler.create(spec(&format!("job {i}"), None)).unwrap()))
        .collect();
      let woken = Rc::new(Cell::new(0));
      for job in &jobs {
        let (job, woken) = (job.clone(), woken.clone());
        deno_core::unsync::spawn(async move {
          if job.next(true).await == Ok(true) {
            woken.set(woken.get() + 1);
          }
        });
      }
      tokio::time::sleep(Duration::from_secs(1)).await;
      // The 51st waits for a permit: nobody has asked for a next run yet.
      assert_eq!(woken.get(), MAX_CONCURRENT_RUNS);
      // One run finishing (asking for its next run) lets the last one in.
      let first = jobs[0].clone();
      deno_core::unsync::spawn(async move { first.next(true).await });
      tokio::time::sleep(Duration::from_millis(1)).await;
      assert_eq!(woken.get(), MAX_CONCURRENT_RUNS + 1);
    });
  }
}
