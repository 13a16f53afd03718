//! The PostgreSQL cron backend: many processes (a fleet of `kiln serve`
//! hosts) share one database, and every tick of every job runs once across
//! all of them.
//!
//! Every process computes the same ticks from the schedule (UTC, see
//! [`ScheduleClock`]). At a tick each one tries to claim the run with one
//! statement, an `INSERT ... ON CONFLICT DO NOTHING` on the key (function,
//! job, tick, attempt) of `kiln_cron_runs`: one wins and runs the handler,
//! the others skip. The winner holds a lease that a task of the store
//! renews for every run the process holds; a process that dies stops
//! renewing and another takes the run over once the lease has expired (so a
//! run whose host crashed runs at least once, possibly twice). A failed run's
//! retry is inserted, in the same statement that records the failure, as a
//! waiting row held by the same lease, so a retry also runs once. A row
//! that is running or waiting keeps every new tick of its job from being
//! claimed: runs of one job never overlap across the fleet.
//!
//! Database access runs on a thread of the store's own (so a handler busy
//! in JavaScript never delays lease renewal), through a small pool of
//! tokio-postgres connections.

mod clock;
mod handler;
mod sql;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use chrono::DateTime;
use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::OnceCell;

pub use clock::BadTimeScale;
pub use clock::ScheduleClock;
pub use clock::TIME_SCALE_ENV;
pub use handler::PostgresCronHandle;
pub use handler::PostgresCronHandler;

/// How long a claimed run stays claimed without being renewed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// A failing store is logged at most once per this interval.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The version of the tables this kiln reads and writes.
pub const SCHEMA_VERSION: i32 = sql::MIGRATIONS.len() as i32;
/// Connections the store keeps at most.
const POOL_SIZE: usize = 4;
/// Longest wait for a connection to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the store saw, for metrics. Every method has a default that does
/// nothing.
pub trait CronStoreEvents: Send + Sync {
  /// A tick of `job` was not run here.
  fn skipped(&self, _function: &str, _job: &str, _reason: SkipReason) {}
  /// This process took over a run whose lease had expired.
  fn took_over(&self, _function: &str, _job: &str) {}
  /// A statement or a connection failed.
  fn store_error(&self) {}
}

/// Why a process did not run a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
  /// Another process claimed it first.
  ClaimedElsewhere,
  /// A run (or a retry) of the same job was still in progress.
  StillRunning,
}

impl SkipReason {
  /// The metric label.
  pub fn label(self) -> &'static str {
    match self {
      SkipReason::ClaimedElsewhere => "claimed",
      SkipReason::StillRunning => "overlap",
    }
  }
}

/// How to reach the database and how to hold runs.
#[derive(Clone)]
pub struct PostgresCronOptions {
  /// `postgres://user:password@host:port/db` or `host=... user=...`.
  pub url: String,
  /// How long a claimed run stays claimed without being renewed (renewed
  /// every third of it while the process lives).
  pub lease: Duration,
  /// Schedule time (wall time unless a test scales it).
  pub clock: ScheduleClock,
  /// This process in `kiln_cron_runs.host` [default: hostname/pid/random].
  pub host_id: Option<String>,
  /// Where skips, take-overs and errors are reported.
  pub events: Option<Arc<dyn CronStoreEvents>>,
}

impl PostgresCronOptions {
  pub fn new(url: impl Into<String>) -> Self {
    PostgresCronOptions {
      url: url.into(),
      lease: DEFAULT_LEASE,
      clock: ScheduleClock::default(),
      host_id: None,
      events: None,
    }
  }
}

/// Why the store could not be used. Addresses are shown without their
/// password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CronStoreError {
  #[error("invalid cron store address {address}: {reason}")]
  BadAddress { address: String, reason: String },
  #[error("cron store lease must be at least 100ms, got {0:?}")]
  BadLease(Duration),
  #[error("cron store {address}: {reason}")]
  Database { address: String, reason: String },
  #[error(
    "cron store {address}: its tables are at schema version {found}, newer than this kiln's ({SCHEMA_VERSION})"
  )]
  SchemaTooNew { address: String, found: i32 },
  #[error("cron store: {0}")]
  Internal(String),
}

/// A connection pool to the cron database, shared by every runtime of a
/// process (cheap to clone). Make one per process; hand each runtime a
/// [`PostgresCronHandler`] over it.
#[derive(Clone)]
pub struct PostgresCronStore {
  inner: Arc<Inner>,
}

struct Inner {
  runtime: tokio::runtime::Handle,
  /// Ends the store's thread when the store is dropped.
  _stop: tokio::sync::oneshot::Sender<()>,
  pool: Pool,
  address: String,
  host: String,
  lease: Duration,
  clock: ScheduleClock,
  events: Option<Arc<dyn CronStoreEvents>>,
  schema: OnceCell<()>,
  health: Mutex<Health>,
  /// Statements started in the background (a run let go of or closed)
  /// that have not finished; [`PostgresCronStore::settle`] waits for them.
  background: std::sync::atomic::AtomicUsize,
  settled: tokio::sync::Notify,
  /// Every job's slot: the runs this process knows it holds, and so
  /// renews. A row claimed for this host whose acknowledgement was lost
  /// is in no slot: its lease runs out and it is taken over.
  slots: Mutex<Vec<std::sync::Weak<Mutex<handler::SlotState>>>>,
}

#[derive(Default)]
struct Health {
  last_failure: Option<Instant>,
  last_logged: Option<Instant>,
  down: bool,
}

/// One run (or retry) of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunKey {
  pub function: Arc<str>,
  pub job: Arc<str>,
  pub tick: DateTime<Utc>,
  pub attempt: i32,
}

/// This process, its lease (ms), and the job's slot, for a statement's task.
struct Held {
  host: String,
  lease: f64,
  store: PostgresCronStore,
  slot: handler::Slot,
}

/// What a claim at a tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
  Won,
  Skipped(SkipReason),
}

impl PostgresCronStore {
  /// Starts the store's thread and pool. Makes no connection yet: the
  /// first use (or [`check`](Self::check)) does, and creates or upgrades
  /// the tables.
  pub fn connect(options: PostgresCronOptions) -> Result<Self, CronStoreError> {
    let address = redact(&options.url);
    let mut config =
      options
        .url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| CronStoreError::BadAddress {
          address: address.clone(),
          reason: describe(&e),
        })?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
      return Err(CronStoreError::BadAddress {
        address,
        reason: "sslmode=require: the cron store does not speak TLS yet (reach a TLS-only database through a local TLS proxy such as pgbouncer or stunnel)".into(),
      });
    }
    if options.lease < Duration::from_millis(100) {
      return Err(CronStoreError::BadLease(options.lease));
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
      config.application_name("kiln");
    }
    let manager = deadpool_postgres::Manager::from_config(
      config,
      tokio_postgres::NoTls,
      deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
      },
    );
    let pool = Pool::builder(manager)
      .max_size(POOL_SIZE)
      .runtime(deadpool_postgres::Runtime::Tokio1)
      .create_timeout(Some(CONNECT_TIMEOUT))
      .wait_timeout(Some(CONNECT_TIMEOUT * 2))
      .build()
      .map_err(|e| CronStoreError::Internal(e.to_string()))?;
    let (runtime, stop) = start_thread()?;
    let store = PostgresCronStore {
      inner: Arc::new(Inner {
        runtime,
        _stop: stop,
        pool,
        address,
        host: options.host_id.unwrap_or_else(default_host_id),
        lease: options.lease,
        clock: options.clock,
        events: options.events,
        schema: OnceCell::new(),
        health: Mutex::new(Health::default()),
        background: Default::default(),
        settled: tokio::sync::Notify::new(),
        slots: Mutex::default(),
      }),
    };
    store
      .inner
      .runtime
      .spawn(renew_leases(Arc::downgrade(&store.inner)));
    Ok(store)
  }

  /// Connects and makes sure the tables are there. A failure is also
  /// logged (once per [`ERROR_LOG_INTERVAL`]) and counted; the store keeps
  /// trying whenever it is used.
  pub async fn check(&self) -> Result<(), CronStoreError> {
    self.run(|_| async { Ok(()) }).await
  }

  /// The address, password hidden.
  pub fn address(&self) -> &str {
    &self.inner.address
  }

  /// This process in `kiln_cron_runs.host`.
  pub fn host_id(&self) -> &str {
    &self.inner.host
  }

  pub fn lease(&self) -> Duration {
    self.inner.lease
  }

  pub fn clock(&self) -> ScheduleClock {
    self.inner.clock
  }

  /// Runs `op` on the store's thread (see [`Inner::execute`]) and waits
  /// for it from any runtime.
  async fn run<T, F, Fut>(&self, op: F) -> Result<T, CronStoreError>
  where
    T: Send + 'static,
    F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
  {
    let task = self.inner.runtime.spawn(self.inner.clone().execute(op));
    match task.await {
      Ok(result) => result,
      Err(e) => {
        let e = CronStoreError::Internal(format!("the store's thread is gone: {e}"));
        self.inner.failed(&e);
        Err(e)
      }
    }
  }

  /// Whether this process may take runs over: not until the store has
  /// answered for a whole lease after a failure, so the owner of a run
  /// (that could not renew either) has renewed its lease first.
  pub(crate) fn may_take_over(&self) -> bool {
    let health = self.inner.health();
    health
      .last_failure
      .is_none_or(|t| t.elapsed() >= self.inner.lease)
  }

  pub(crate) async fn claim(
    &self,
    function: &Arc<str>,
    job: &Arc<str>,
    tick: DateTime<Utc>,
    slot: &handler::Slot,
  ) -> Result<Claim, CronStoreError> {
    let key = RunKey {
      function: function.clone(),
      job: job.clone(),
      tick,
      attempt: 0,
    };
    let held = self.held(slot);
    self
      .run(move |client| async move {
        let row = client
          .query_one(
            sql::CLAIM,
            &[
              &&*key.function,
              &&*key.job,
              &key.tick,
              &held.host,
              &held.lease,
            ],
          )
          .await?;
        let won: bool = row.get(0);
        let busy: Option<DateTime<Utc>> = row.get(1);
        Ok(if won {
          held.slot.hold(&held.store, key, None);
          Claim::Won
        } else if busy.is_some_and(|t| t != key.tick) {
          Claim::Skipped(SkipReason::StillRunning)
        } else {
          Claim::Skipped(SkipReason::ClaimedElsewhere)
        })
      })
      .await
  }

  /// Takes over the oldest run of the job whose holder stopped renewing
  /// it; a waiting retry keeps its due time.
  pub(crate) async fn take_over(
    &self,
    function: &Arc<str>,
    job: &Arc<str>,
    slot: &handler::Slot,
  ) -> Result<Option<RunKey>, CronStoreError> {
    let (function, job) = (function.clone(), job.clone());
    let held = self.held(slot);
    self
      .run(move |client| async move {
        let Some(row) = client
          .query_opt(
            sql::TAKE_OVER,
            &[
              &&*function,
              &&*job,
              &held.host,
              &held.lease,
              &sql::MAX_TAKEOVERS,
            ],
          )
          .await?
        else {
          return Ok(None);
        };
        let key = RunKey {
          function,
          job,
          tick: row.get(0),
          attempt: row.get(1),
        };
        let waiting = row
          .get::<_, Option<f64>>(2)
          .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        held.slot.hold(&held.store, key.clone(), waiting);
        Ok(Some(key))
      })
      .await
  }

  /// Records how a run ended; with `retry`, inserts the next attempt,
  /// waiting that long and held by this process. Returns whether this
  /// process still held the run and whether the retry was inserted.
  pub(crate) async fn finish(
    &self,
    key: &RunKey,
    success: bool,
    retry: Option<Duration>,
    slot: &handler::Slot,
  ) -> Result<(bool, bool), CronStoreError> {
    let key = key.clone();
    let held = self.held(slot);
    self
      .run(move |client| async move {
        let state = if success { "succeeded" } else { "failed" };
        let retry_ms = retry.map(|d| d.as_secs_f64() * 1000.0);
        let row = client
          .query_one(
            sql::FINISH,
            &[
              &&*key.function,
              &&*key.job,
              &key.tick,
              &key.attempt,
              &held.host,
              &state,
              &retry_ms,
              &held.lease,
            ],
          )
          .await?;
        let (still_held, retried): (bool, bool) = (row.get(0), row.get(1));
        if retried {
          let next = RunKey {
            attempt: key.attempt + 1,
            ..key
          };
          held.slot.hold(&held.store, next, retry);
        } else {
          held.slot.clear();
        }
        Ok((still_held, retried))
      })
      .await
  }

  /// Starts a waiting retry this process holds; false if it is no longer
  /// held here.
  pub(crate) async fn start_waiting(
    &self,
    key: &RunKey,
    slot: &handler::Slot,
  ) -> Result<bool, CronStoreError> {
    let key = key.clone();
    let held = self.held(slot);
    self
      .run(move |client| async move {
        let started = client
          .execute(
            sql::START_WAITING,
            &[
              &&*key.function,
              &&*key.job,
              &key.tick,
              &key.attempt,
              &held.host,
              &held.lease,
            ],
          )
          .await?
          == 1;
        if started {
          held.slot.hold(&held.store, key, None);
        } else {
          held.slot.clear();
        }
        Ok(started)
      })
      .await
  }

  /// Lets go of a run this process holds (its runtime is going away), so
  /// another process takes it over at once. In the background.
  pub(crate) fn release(&self, key: RunKey) {
    self.end_in_background(sql::RELEASE, key);
  }

  /// Ends a run or retry of a job closed while this process held it: the
  /// run goes on here to its end, but its outcome will not be reported.
  pub(crate) fn close_run(&self, key: RunKey) {
    self.end_in_background(sql::CLOSE, key);
  }

  fn end_in_background(&self, statement: &'static str, key: RunKey) {
    let inner = self.inner.clone();
    let host = inner.host.clone();
    inner.background.fetch_add(1, Ordering::AcqRel);
    self.inner.runtime.spawn(async move {
      let _ = inner
        .clone()
        .execute(move |client| async move {
          client
            .execute(
              statement,
              &[&&*key.function, &&*key.job, &key.tick, &key.attempt, &host],
            )
            .await
        })
        .await;
      if inner.background.fetch_sub(1, Ordering::AcqRel) == 1 {
        inner.settled.notify_waiters();
      }
    });
  }

  /// Waits (at most `within`) for the runs let go of in the background to
  /// be recorded: call it after the runtimes are gone, before the process
  /// exits, so other processes take those runs over at once.
  pub async fn settle(&self, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
      let settled = self.inner.settled.notified();
      if self.inner.background.load(Ordering::Acquire) == 0 {
        return;
      }
      if tokio::time::timeout_at(deadline, settled).await.is_err() {
        return;
      }
    }
  }

  /// A job's slot, renewed while it holds a run.
  pub(crate) fn new_slot(&self) -> handler::Slot {
    let slot = handler::Slot::default();
    self
      .inner
      .slots
      .lock()
      .unwrap_or_else(|p| p.into_inner())
      .push(slot.downgrade());
    slot
  }

  /// What a statement on a job's runs needs, moved into its task.
  fn held(&self, slot: &handler::Slot) -> Held {
    Held {
      host: self.inner.host.clone(),
      lease: self.inner.lease_ms(),
      store: self.clone(),
      slot: slot.clone(),
    }
  }

  pub(crate) fn events(&self) -> Option<&Arc<dyn CronStoreEvents>> {
    self.inner.events.as_ref()
  }
}

impl Inner {
  /// The lease, in ms as the statements take it.
  fn lease_ms(&self) -> f64 {
    self.lease.as_secs_f64() * 1000.0
  }

  /// Runs `op` with a connection, after the tables are known to be there;
  /// records how it went. On the store's thread.
  async fn execute<T, F, Fut>(self: Arc<Self>, op: F) -> Result<T, CronStoreError>
  where
    F: FnOnce(deadpool_postgres::Object) -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
  {
    let result = async {
      let mut client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
      self
        .schema
        .get_or_try_init(|| sql::migrate(&mut client, &self.address))
        .await?;
      op(client).await.map_err(|e| self.db_error(&e))
    }
    .await;
    match &result {
      Ok(_) => self.succeeded(),
      Err(e) => self.failed(e),
    }
    result
  }

  /// The runs the slots of live jobs hold.
  fn held_runs(&self) -> Vec<RunKey> {
    let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
    slots.retain(|slot| slot.strong_count() > 0);
    slots
      .iter()
      .filter_map(|slot| handler::Slot::held_key(&*slot.upgrade()?))
      .collect()
  }

  fn health(&self) -> std::sync::MutexGuard<'_, Health> {
    self.health.lock().unwrap_or_else(|p| p.into_inner())
  }

  fn db_error(&self, e: &tokio_postgres::Error) -> CronStoreError {
    CronStoreError::Database {
      address: self.address.clone(),
      reason: describe(e),
    }
  }

  fn pool_error(&self, e: deadpool_postgres::PoolError) -> CronStoreError {
    let reason = match e {
      deadpool_postgres::PoolError::Backend(e) => describe(&e),
      deadpool_postgres::PoolError::Timeout(_) => {
        "timed out connecting to the database".to_string()
      }
      other => other.to_string(),
    };
    CronStoreError::Database {
      address: self.address.clone(),
      reason,
    }
  }

  fn failed(&self, e: &CronStoreError) {
    if let Some(events) = &self.events {
      events.store_error();
    }
    let now = Instant::now();
    let mut health = self.health();
    health.last_failure = Some(now);
    health.down = true;
    if health
      .last_logged
      .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL)
    {
      health.last_logged = Some(now);
      drop(health);
      tracing::error!("{e}");
    }
  }

  fn succeeded(&self) {
    let mut health = self.health();
    if health.down {
      health.down = false;
      drop(health);
      tracing::info!("cron store {} reachable again", self.address);
    }
  }
}

/// Renews the lease of every run this process's jobs hold, every third of a
/// lease (sooner after a failure, to get them back as soon as the database
/// is).
async fn renew_leases(store: Weak<Inner>) {
  let mut failed = false;
  loop {
    let Some(inner) = store.upgrade() else {
      return;
    };
    let period = if failed {
      inner.lease / 10
    } else {
      inner.lease / 3
    };
    drop(inner);
    tokio::time::sleep(period).await;
    let Some(inner) = store.upgrade() else {
      return;
    };
    let held = inner.held_runs();
    if held.is_empty() {
      failed = false;
      continue;
    }
    let host = inner.host.clone();
    let lease = inner.lease_ms();
    failed = inner
      .execute(move |client| async move {
        let functions: Vec<&str> = held.iter().map(|k| &*k.function).collect();
        let jobs: Vec<&str> = held.iter().map(|k| &*k.job).collect();
        let ticks: Vec<DateTime<Utc>> = held.iter().map(|k| k.tick).collect();
        let attempts: Vec<i32> = held.iter().map(|k| k.attempt).collect();
        client
          .execute(
            sql::RENEW,
            &[&host, &lease, &functions, &jobs, &ticks, &attempts],
          )
          .await
      })
      .await
      .is_err();
  }
}

/// A current-thread runtime on a thread of its own, ended by the sender.
fn start_thread()
-> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), CronStoreError> {
  let (handle_tx, handle_rx) = std::sync::mpsc::channel();
  let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
  std::thread::Builder::new()
    .name("kiln-cron-store".into())
    .spawn(move || {
      let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
      {
        Ok(runtime) => runtime,
        Err(e) => {
          let _ = handle_tx.send(Err(e.to_string()));
          return;
        }
      };
      let _ = handle_tx.send(Ok(runtime.handle().clone()));
      runtime.block_on(async {
        let _ = stop_rx.await;
      });
    })
    .map_err(|e| CronStoreError::Internal(format!("cannot start its thread: {e}")))?;
  match handle_rx.recv() {
    Ok(Ok(handle)) => Ok((handle, stop_tx)),
    Ok(Err(e)) => Err(CronStoreError::Internal(format!(
      "cannot start its runtime: {e}"
    ))),
    Err(_) => Err(CronStoreError::Internal("its thread ended at once".into())),
  }
}

/// `hostname/pid/random`: unique per process, readable in the history.
fn default_host_id() -> String {
  let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
    .map(|h| h.trim().to_string())
    .ok()
    .filter(|h| !h.is_empty())
    .unwrap_or_else(|| "host".to_string());
  let nanos = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.subsec_nanos());
  format!("{hostname}/{}/{nanos:08x}", std::process::id())
}

/// An error and its causes, `: `-separated (tokio-postgres puts the
/// useful part, such as the server's message, in the cause).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
  if let Some(db) = e
    .downcast_ref::<tokio_postgres::Error>()
    .and_then(|e| e.as_db_error())
  {
    return db.message().to_string();
  }
  let mut text = e.to_string();
  let mut cause = e.source();
  while let Some(c) = cause {
    if let Some(db) = c.downcast_ref::<tokio_postgres::error::DbError>() {
      text = db.message().to_string();
      break;
    }
    text.push_str(": ");
    text.push_str(&c.to_string());
    cause = c.source();
  }
  text
}

/// The address with its password replaced by `***`, in URL form
/// (`postgres://user:secret@host/db`) and key-value form
/// (`password=secret`, quoted or not).
pub fn redact(url: &str) -> String {
  if let Some(scheme_end) = url.find("://") {
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@')
      && let Some(colon) = authority[..at].find(':')
    {
      let start = scheme_end + 3;
      return format!("{}:***{}", &url[..start + colon], &url[start + at..]);
    }
    let query = &rest[authority_end..];
    if query.contains("password=") {
      return format!(
        "{}{}",
        &url[..scheme_end + 3 + authority_end],
        redact_pairs(query, '&')
      );
    }
    return url.to_string();
  }
  redact_pairs(url, ' ')
}

/// Replaces the value of every `password` key.
fn redact_pairs(text: &str, separator: char) -> String {
  let mut out = String::with_capacity(text.len());
  let mut chars = text.char_indices().peekable();
  while let Some((i, c)) = chars.next() {
    let starts_key = i == 0 || text[..i].ends_with([separator, '?', ' ']);
    if starts_key && text[i..].starts_with("password") {
      let after = text[i + "password".len()..].trim_start();
      if let Some(value) = after.strip_prefix('=') {
        out.push_str("password=***");
        let value = value.trim_start();
        let consumed = if let Some(quoted) = value.strip_prefix('\'') {
          // Up to the closing quote, skipping escaped ones.
          let mut end = quoted.len();
          let mut escaped = false;
          for (j, q) in quoted.char_indices() {
            match q {
              '\\' if !escaped => escaped = true,
              '\'' if !escaped => {
                end = j + 1;
                break;
              }
              _ => escaped = false,
            }
          }
          1 + end
        } else {
          value.find([separator, ' ']).unwrap_or(value.len())
        };
        let skip_to = text.len() - value.len() + consumed;
        while chars.peek().is_some_and(|&(j, _)| j < skip_to) {
          chars.next();
        }
        continue;
      }
    }
    out.push(c);
  }
  out
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn passwords_never_show() {
    assert_eq!(
      redact("postgres://kiln:s3cret@127.0.0.1:5432/kiln"),
      "postgres://kiln:***@127.0.0.1:5432/kiln"
    );
    assert_eq!(
      redact("postgresql://kiln:p%40ss@db/x?sslmode=disable"),
      "postgresql://kiln:***@db/x?sslmode=disable"
    );
    assert_eq!(redact("postgres://kiln@db/x"), "postgres://kiln@db/x");
    assert_eq!(
      redact("postgres://db/x?user=kiln&password=s3cret&sslmode=disable"),
      "postgres://db/x?user=kiln&password=***&sslmode=disable"
    );
    assert_eq!(
      redact("host=db user=kiln password=s3cret dbname=x"),
      "host=db user=kiln password=*** dbname=x"
    );
    assert_eq!(
      redact("host=db password = 'a b\\' c' dbname=x"),
      "host=db password=*** dbname=x"
    );
  }

  #[test]
  fn bad_addresses_and_leases_are_refused_up_front() {
    let err = PostgresCronStore::connect(PostgresCronOptions::new("host=db port=notaport"))
      .err()
      .map(|e| e.to_string());
    assert!(
      err
        .as_deref()
        .is_some_and(|e| e.starts_with("invalid cron store address host=db port=notaport")),
      "{err:?}"
    );
    let err = PostgresCronStore::connect(PostgresCronOptions::new(
      "postgres://kiln:pw@db/kiln?sslmode=require",
    ))
    .err()
    .map(|e| e.to_string());
    assert!(
      err.as_deref().is_some_and(|e| e.starts_with(
        "invalid cron store address postgres://kiln:***@db/kiln?sslmode=require: sslmode=require: the cron store does not speak TLS"
      )),
      "{err:?}"
    );
    let mut options = PostgresCronOptions::new("postgres://kiln@127.0.0.1/kiln");
    options.lease = Duration::from_millis(10);
    assert!(matches!(
      PostgresCronStore::connect(options),
      Err(CronStoreError::BadLease(_))
    ));
  }
}
