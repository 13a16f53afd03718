//! The function host behind `kiln serve`: every module in a directory is a
//! function with a WHATWG `fetch` handler, served over HTTP, each instance in
//! its own isolate thawed from the snapshot.
//!
//! This module routes requests and applies the limits; `pool` owns the
//! instances, `instance` the isolate threads, `server` the sockets. Nothing
//! here runs JS on the server's threads, and no request can take down
//! another: a failing instance is discarded and replaced, and an error that
//! escapes a handler is logged under the request it surfaced in, never
//! answered to anyone.
//!
//! Every response carries `x-request-id`; every failure of the host's own is
//! one [`Failure`], turned into a status and a JSON body in one place.

mod body;
mod cron;
pub mod env;
mod instance;
pub mod metrics;
mod pool;
pub mod router;
mod server;
pub mod snapshots;
mod websocket;

use kiln_extensions::cron::postgres::PostgresCronOptions;
use kiln_extensions::cron::postgres::PostgresCronStore;
use kiln_extensions::cron::postgres::ScheduleClock;
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use http::Method;
use http::Request;
use http::Response;
use http::StatusCode;
use http::header;
use hyper::body::Incoming;
use tokio::sync::oneshot;

pub use body::HostBody;
pub use instance::AcquireError;
pub use instance::StartError;
pub use metrics::Metrics;
pub use server::serve;
pub use snapshots::SnapshotOptions;

use instance::InstanceSpec;
use kiln::runtime::ModuleAccess;
use kiln_extensions::serve::HOPS_HEADER;
use kiln_extensions::serve::HandlerError;
use kiln_extensions::serve::ServeRequest;
use kiln_extensions::serve::ServeResponse;
use metrics::TerminationCause;
use pool::FunctionPool;
use pool::Lease;
use router::HOST_PREFIX;

/// Settings of a host; the `kiln serve` flags.
#[derive(Debug, Clone)]
pub struct HostOptions {
  /// Directory of function modules; functions load modules only from
  /// inside it.
  pub dir: PathBuf,
  /// Instances per function.
  pub max_instances: usize,
  /// Idle instances each function keeps thawed and ready beyond those
  /// serving (within `max_instances`); a taken one is replaced in the
  /// background.
  pub warm_instances: usize,
  /// An instance idle this long is stopped.
  pub idle_timeout: Duration,
  /// V8 heap cap per instance.
  pub max_heap_bytes: usize,
  /// Wall-time limit of one request inside an instance (handler and
  /// response body), of a module's start-up, and of a request's wait for
  /// an instance.
  pub timeout: Duration,
  /// Largest accepted request body.
  pub max_body_bytes: u64,
  /// Largest module file a function may load.
  pub max_module_bytes: u64,
  /// How long shutdown waits for in-flight requests.
  pub grace_period: Duration,
  /// Longest wait for a request's head, from the connection's start or the
  /// previous response.
  pub header_timeout: Duration,
  /// A connection with no request in progress is closed after this long.
  pub keep_alive_timeout: Duration,
  /// Most open connections (more wait in the listen backlog); `None`:
  /// derived from the process's file-descriptor limit.
  pub max_connections: Option<usize>,
  /// 500 bodies carry the error's message and stack instead of only the
  /// request id (for development).
  pub expose_errors: bool,
  /// A dotenv file of variables for every function.
  pub env_file: Option<PathBuf>,
  /// Host variables every function sees (none otherwise).
  pub inherit_env: Vec<String>,
  /// Start every function at start-up, in the background (registers its
  /// cron jobs, shows load errors at once). Without it, instances start on
  /// first request.
  pub preload: bool,
  /// Start functions from a baked snapshot (see [`snapshots`]); `None`
  /// loads their modules in every instance.
  pub snapshots: Option<SnapshotOptions>,
  /// Keep V8 code caches of the modules instances load (functions that
  /// are not baked) in `<dir>/code/`.
  pub code_cache_dir: Option<PathBuf>,
  /// A WebSocket (`Deno.upgradeWebSocket`) on which nothing passed either
  /// way for this long is closed, and its instance released.
  pub websocket_idle_timeout: Duration,
  /// A PostgreSQL database shared by a fleet of hosts: each cron tick runs
  /// on one of them (see [`kiln_extensions::cron::postgres`]). `None`: every
  /// host runs every job.
  pub cron_store: Option<String>,
  /// How long a host's claim on a cron run lasts without being renewed
  /// (with `cron_store`): another host takes the run over after it.
  pub cron_lease: Duration,
}

impl HostOptions {
  /// The defaults of `kiln serve` for `dir`.
  pub fn new(dir: impl Into<PathBuf>) -> Self {
    HostOptions {
      dir: dir.into(),
      max_instances: std::thread::available_parallelism().map_or(2, |n| n.get()),
      warm_instances: 1,
      idle_timeout: Duration::from_secs(300),
      max_heap_bytes: 128 << 20,
      timeout: Duration::from_secs(30),
      max_body_bytes: 10 << 20,
      max_module_bytes: kiln::runtime::DEFAULT_MAX_MODULE_BYTES,
      grace_period: Duration::from_secs(10),
      header_timeout: Duration::from_secs(10),
      keep_alive_timeout: Duration::from_secs(60),
      max_connections: None,
      expose_errors: false,
      env_file: None,
      inherit_env: Vec::new(),
      preload: true,
      snapshots: None,
      code_cache_dir: None,
      websocket_idle_timeout: Duration::from_secs(120),
      cron_store: None,
      cron_lease: kiln_extensions::cron::postgres::DEFAULT_LEASE,
    }
  }
}

/// The smallest heap an instance can start in: below it V8 runs out of
/// memory while thawing the snapshot, before any limit handling is in place,
/// and that aborts the process.
pub const MIN_HEAP_BYTES: usize = 16 << 20;

/// The most function invocations one request may pass through (a function
/// fetching itself, directly or through others); past it the host answers
/// 508 Loop Detected.
pub const MAX_HOPS: u32 = 8;

/// The response header that names a request in the host's log.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
  #[error("max_heap_bytes must be at least {} MiB (the snapshot alone needs several MiB)", MIN_HEAP_BYTES >> 20)]
  HeapTooSmall,
  #[error("cannot read the functions directory {}: {source}", dir.display())]
  ReadDir {
    dir: PathBuf,
    source: std::io::Error,
  },
  #[error("no functions in {}: expected <name>.ts or <name>.js files", .0.display())]
  NoFunctions(PathBuf),
  #[error("cannot listen on {addr}: {source}")]
  Bind {
    addr: SocketAddr,
    source: std::io::Error,
  },
  #[error(transparent)]
  Snapshot(#[from] kiln::snapshot::container::ContainerError),
  #[error(transparent)]
  EnvFile(#[from] env::EnvFileError),
  #[error(transparent)]
  CronStore(#[from] kiln_extensions::cron::postgres::CronStoreError),
  #[error(transparent)]
  CronTimeScale(#[from] kiln_extensions::cron::postgres::BadTimeScale),
}

/// A request the host answers itself, with why. Each has one status; only
/// [`Failure::Internal`] hides its detail from the client by default.
#[derive(Debug, thiserror::Error)]
enum Failure {
  #[error("{0}")]
  BadRequest(String),
  #[error("no function serves {0}")]
  NoFunction(String),
  #[error("request body exceeds the limit of {0} bytes")]
  TooLarge(u64),
  #[error("loop detected: the request passed through {0} function invocations (limit {MAX_HOPS})")]
  LoopDetected(u32),
  #[error(transparent)]
  Unavailable(AcquireError),
  #[error("function '{function}' timed out after {ms} ms")]
  Timeout { function: String, ms: u128 },
  #[error("{0}")]
  Internal(String),
}

impl Failure {
  fn status(&self) -> StatusCode {
    match self {
      Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
      Failure::NoFunction(_) => StatusCode::NOT_FOUND,
      Failure::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
      Failure::LoopDetected(_) => StatusCode::LOOP_DETECTED,
      Failure::Unavailable(AcquireError::Start(_)) | Failure::Internal(_) => {
        StatusCode::INTERNAL_SERVER_ERROR
      }
      Failure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
      Failure::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
    }
  }
}

/// Request ids: unique in a process, not guessable from one another.
struct RequestIds {
  keys: std::collections::hash_map::RandomState,
  next: AtomicU64,
}

impl RequestIds {
  fn new() -> Self {
    RequestIds {
      keys: std::collections::hash_map::RandomState::new(),
      next: AtomicU64::new(0),
    }
  }

  fn next(&self) -> Arc<str> {
    let n = self.next.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", self.keys.hash_one(n)).into()
  }
}

/// The function host: functions, their pools, metrics.
pub struct Host {
  options: HostOptions,
  functions: BTreeMap<String, Arc<FunctionPool>>,
  metrics: Arc<Metrics>,
  cron_store: Option<PostgresCronStore>,
  /// Functions whose first load has not finished yet.
  loading: AtomicUsize,
  request_ids: RequestIds,
}

impl Host {
  /// Finds the functions in `options.dir` and checks the snapshot. No
  /// instance runs yet (see [`Host::start`]).
  pub fn new(options: HostOptions) -> Result<Arc<Host>, HostError> {
    if options.max_heap_bytes < MIN_HEAP_BYTES {
      return Err(HostError::HeapTooSmall);
    }
    kiln::runtime::prefetch_snapshot();
    let read_dir = |source| HostError::ReadDir {
      dir: options.dir.clone(),
      source,
    };
    // Functions are confined to the canonical directory (symlinks resolved).
    let root = std::fs::canonicalize(&options.dir).map_err(read_dir)?;
    let (found, skipped) = router::discover(&root).map_err(read_dir)?;
    for s in skipped {
      tracing::warn!("not serving {}: {}", s.path.display(), s.reason);
    }
    if found.is_empty() {
      return Err(HostError::NoFunctions(options.dir.clone()));
    }
    // A broken snapshot is a start-up error, not a 500 on every request.
    kiln::runtime::check_embedded_snapshot()?;
    let metrics = Arc::new(Metrics::default());
    let cron_store = match &options.cron_store {
      Some(url) => {
        let mut store = PostgresCronOptions::new(url.clone());
        store.lease = options.cron_lease;
        store.clock = ScheduleClock::from_env()?;
        store.events = Some(metrics.clone());
        Some(PostgresCronStore::connect(store)?)
      }
      None => None,
    };
    // Variables: inherited, then --env-file, then <name>.env.
    let mut shared = env::inherited(&options.inherit_env);
    if let Some(file) = &options.env_file {
      env::read_into(&mut shared, file)?;
    }
    let access = ModuleAccess {
      root: Some(root.clone()),
      max_bytes: options.max_module_bytes,
    };
    let snapshot = options.snapshots.as_ref().map(|snapshots| {
      Arc::new(snapshots::HostSnapshot::new(
        found
          .iter()
          .map(|(n, p)| (n.to_string(), p.clone()))
          .collect(),
        access.clone(),
        snapshots.clone(),
        options.timeout,
        options.max_heap_bytes,
      ))
    });
    let mut functions = BTreeMap::new();
    for (name, path) in found {
      let mut vars = shared.clone();
      let own = root.join(format!("{name}.env"));
      if own.is_file() {
        env::read_into(&mut vars, &own)?;
      }
      let spec = InstanceSpec {
        function: name.as_str().into(),
        path,
        env: Arc::new(vars),
        modules: access.clone(),
        max_heap_bytes: options.max_heap_bytes,
        start_timeout: options.timeout,
        metrics: metrics.clone(),
        start_from: Default::default(),
        code_cache_dir: options.code_cache_dir.clone(),
        cron_store: cron_store.clone(),
      };
      let pool = FunctionPool::new(
        spec,
        options.max_instances,
        options.warm_instances,
        options.preload,
        snapshot.clone(),
      );
      functions.insert(name, Arc::new(pool));
    }
    Ok(Arc::new(Host {
      options,
      functions,
      metrics,
      cron_store,
      loading: AtomicUsize::new(0),
      request_ids: RequestIds::new(),
    }))
  }

  /// Names of the served functions.
  pub fn functions(&self) -> impl Iterator<Item = &str> {
    self.functions.keys().map(String::as_str)
  }

  pub fn options(&self) -> &HostOptions {
    &self.options
  }

  /// Whether every function's first load has finished (loaded or failed).
  pub fn is_ready(&self) -> bool {
    self.loading.load(Ordering::Acquire) == 0
  }

  /// Starts the idle eviction task and (with `preload`) loads one instance
  /// of every function in the background, all in parallel; returns at once,
  /// so the port can open while functions load. A function that fails to
  /// load is logged; requests to it get its error until an instance starts.
  pub fn start(self: &Arc<Self>) {
    if let Some(store) = self.cron_store.clone() {
      // A failure is logged by the store (and retried whenever a job runs);
      // HTTP is served either way.
      tokio::spawn(async move {
        if store.check().await.is_ok() {
          tracing::info!(
            "cron store {}: ready; this host is {}",
            store.address(),
            store.host_id()
          );
        }
      });
    }
    if self.options.preload {
      self.loading.store(self.functions.len(), Ordering::Release);
      for pool in self.functions.values() {
        let pool = pool.clone();
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
          match pool.preload().await {
            Ok(()) => tracing::info!(function = pool.name(), "loaded"),
            Err(e) => tracing::error!("{e}"),
          }
          if let Some(host) = host.upgrade() {
            host.loading.fetch_sub(1, Ordering::AcqRel);
          }
        });
      }
    }
    let host = Arc::downgrade(self);
    let period =
      (self.options.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    tokio::spawn(async move {
      let mut ticker = tokio::time::interval(period);
      loop {
        ticker.tick().await;
        let Some(host) = host.upgrade() else { return };
        for pool in host.functions.values() {
          pool.evict_idle(host.options.idle_timeout, true);
        }
      }
    });
  }

  /// Stops the idle instances of `function` now, warm ones included
  /// (benchmarks use it to get a cold start); cron owners with jobs stay. Returns false for an unknown
  /// function.
  pub fn evict(&self, function: &str) -> bool {
    match self.functions.get(function) {
      Some(pool) => {
        pool.evict_idle(Duration::ZERO, false);
        true
      }
      None => false,
    }
  }

  /// Stops every instance (cron jobs with them) and waits for their
  /// threads, and for the cron store to record what they let go of.
  pub async fn close(&self) {
    let threads: Vec<_> = self.functions.values().flat_map(|p| p.close()).collect();
    let _ = tokio::task::spawn_blocking(move || {
      for thread in threads {
        let _ = thread.join();
      }
    })
    .await;
    // Runs the stopped instances held are let go of (so another host takes
    // them over now, not after the lease): wait for those statements.
    if let Some(store) = &self.cron_store {
      store.settle(Duration::from_secs(5)).await;
    }
  }

  /// Answers one HTTP request. If this future is dropped first (the client
  /// went away), the function's `request.signal` is aborted and the request
  /// is logged and counted with status 499.
  pub async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
    let id = self.request_ids.next();
    let (client_gone, gone) = oneshot::channel();
    let mut log = RequestLog {
      metrics: self.metrics.clone(),
      started: Instant::now(),
      method: request.method().clone(),
      path: request.uri().path().to_string(),
      id: id.clone(),
      function: None,
      client_gone: Some(client_gone),
    };
    let mut response = match self.route(request, &mut log, gone).await {
      Ok(response) => response,
      Err(failure) => self.failure_response(failure, log.function.as_deref(), &id),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
      response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    log.finish(response.status());
    response
  }

  async fn route(
    self: &Arc<Self>,
    request: Request<Incoming>,
    log: &mut RequestLog,
    gone: oneshot::Receiver<()>,
  ) -> Result<Response<HostBody>, Failure> {
    let path = router::normalize_path(request.uri().path())
      .map_err(|e| Failure::BadRequest(e.to_string()))?
      .into_owned();
    if let Some(endpoint) = path
      .strip_prefix('/')
      .and_then(|p| p.strip_prefix(HOST_PREFIX))
      .and_then(|p| p.strip_prefix('/'))
    {
      return self.host_endpoint(endpoint, &path);
    }
    let pool = router::function_of(&path).and_then(|name| self.functions.get(name));
    let Some(pool) = pool.cloned() else {
      return Err(Failure::NoFunction(path));
    };
    log.function = Some(pool.name().to_string());
    let hops = match request.headers().get(HOPS_HEADER) {
      None => 0,
      Some(value) => value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| Failure::BadRequest(format!("invalid {HOPS_HEADER} header")))?,
    };
    if hops > MAX_HOPS {
      return Err(Failure::LoopDetected(hops));
    }
    // On its own task: a client that disconnects drops this future, and an
    // instance must never be dropped mid-request (it goes back to its pool
    // or is discarded with a recorded cause).
    let host = self.clone();
    let id = log.id.clone();
    let call = Call {
      id,
      hops,
      path,
      gone,
    };
    tokio::spawn(async move { host.dispatch(&pool, request, call).await })
      .await
      .unwrap_or_else(|e| Err(Failure::Internal(format!("request task failed: {e}"))))
  }

  /// `/_kiln/<endpoint>`: health (liveness), ready (every function loaded or
  /// failed), metrics.
  fn host_endpoint(&self, endpoint: &str, path: &str) -> Result<Response<HostBody>, Failure> {
    match endpoint {
      "health" => Ok(text(StatusCode::OK, "ok\n")),
      "ready" if self.is_ready() => Ok(text(StatusCode::OK, "ready\n")),
      "ready" => Ok(text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
          "loading {} function(s)\n",
          self.loading.load(Ordering::Acquire)
        ),
      )),
      "metrics" => {
        let mut response = text(StatusCode::OK, self.metrics.render());
        response.headers_mut().insert(
          header::CONTENT_TYPE,
          HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
      }
      _ => Err(Failure::NoFunction(path.to_string())),
    }
  }

  /// The one place a [`Failure`] becomes a response (and a log line).
  fn failure_response(
    &self,
    failure: Failure,
    function: Option<&str>,
    id: &str,
  ) -> Response<HostBody> {
    let status = failure.status();
    let function = function.unwrap_or("-");
    let detail = failure.to_string();
    if status.is_server_error() {
      // Function and id first: the detail may span lines (a stack).
      tracing::warn!("function '{function}' request_id={id}: {status}: {detail}");
    }
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR && !self.options.expose_errors {
      "internal error"
    } else {
      &detail
    };
    json_error(status, message, id)
  }

  async fn dispatch(
    &self,
    pool: &Arc<FunctionPool>,
    mut request: Request<Incoming>,
    call: Call,
  ) -> Result<Response<HostBody>, Failure> {
    // Taken before the request is handed on: the function decides whether
    // to upgrade (`Deno.upgradeWebSocket`).
    let upgrade =
      websocket::is_upgrade_request(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let limit = self.options.max_body_bytes;
    let declared = request
      .headers()
      .get(header::CONTENT_LENGTH)
      .and_then(|v| v.to_str().ok())
      .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
      return Err(Failure::TooLarge(limit));
    }
    let (parts, incoming) = request.into_parts();
    let url = request_url(&parts, &call.path).map_err(Failure::BadRequest)?;
    // Counted from here (waiting for an instance included) until the
    // instance is done with the request.
    let in_flight = InFlight::new(self.metrics.clone());
    let lease = pool
      .acquire(self.options.timeout)
      .await
      .map_err(Failure::Unavailable)?;

    let (serve_request, pending) = outgoing(parts, incoming, url, call, limit);
    if !lease.instance.send(serve_request) {
      return Err(self.instance_died(pool, lease));
    }
    let deadline = tokio::time::Instant::now() + self.options.timeout;
    let mut outcome = match tokio::time::timeout_at(deadline, pending.reply).await {
      Err(_) => {
        lease.instance.terminate(TerminationCause::Timeout);
        pool.discard(lease);
        return Err(Failure::Timeout {
          function: pool.name().to_string(),
          ms: self.options.timeout.as_millis(),
        });
      }
      Ok(Err(_)) => return Err(self.instance_died(pool, lease)),
      Ok(Ok(outcome)) => outcome,
    };
    let socket = match &mut outcome {
      Ok(response) => response.upgrade.take(),
      Err(_) => None,
    };
    if let Some(socket) = socket {
      let Some(upgrade) = upgrade else {
        // The glue only upgrades requests that asked to (checked in
        // `Deno.upgradeWebSocket`); hyper refuses the rest.
        drop(in_flight);
        let bound = tokio::time::sleep_until(deadline);
        finish_in_background(pool.clone(), lease, pending.done, bound);
        return Err(Failure::Internal(format!(
          "function '{}' upgraded a request that cannot be upgraded",
          pool.name()
        )));
      };
      // An open socket holds its instance (it is not counted in flight but
      // in `kiln_websockets_open`); once the relay ends, the isolate sees
      // the socket close and has the usual timeout to let go of it.
      drop(in_flight);
      // Its own task: the instance letting go first must not cut it short.
      let relay = tokio::spawn(websocket::relay(
        upgrade,
        socket,
        self.options.websocket_idle_timeout,
        pool.name().into(),
        self.metrics.clone(),
      ));
      let timeout = self.options.timeout;
      let bound = async move {
        let _ = relay.await;
        tokio::time::sleep(timeout).await;
      };
      finish_in_background(pool.clone(), lease, pending.done, bound);
    } else {
      let bound = async move {
        let _in_flight = in_flight;
        tokio::time::sleep_until(deadline).await;
      };
      finish_in_background(pool.clone(), lease, pending.done, bound);
    }
    if pending.too_big.is_some_and(|f| f.load(Ordering::Acquire)) {
      return Err(Failure::TooLarge(limit));
    }
    match outcome {
      Err(HandlerError(message)) => Err(Failure::Internal(message)),
      Ok(response) => into_http_response(response, pool.name()),
    }
  }

  /// The instance went away with the request: discard it, say why.
  fn instance_died(&self, pool: &Arc<FunctionPool>, lease: Lease) -> Failure {
    let message = death_message(pool.name(), &lease, self.options.max_heap_bytes);
    pool.discard(lease);
    Failure::Internal(message)
  }
}

/// The host's ends of a request handed to an isolate.
struct Pending {
  reply: oneshot::Receiver<Result<ServeResponse, HandlerError>>,
  done: oneshot::Receiver<()>,
  /// Set when the streamed request body passed the limit.
  too_big: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The request as an isolate receives it (its body streamed in under
/// `limit`), and the channels the host waits on.
fn outgoing(
  parts: http::request::Parts,
  incoming: Incoming,
  url: String,
  call: Call,
  limit: u64,
) -> (ServeRequest, Pending) {
  let headers = parts
    .headers
    .iter()
    .map(|(k, v)| (k.as_str().as_bytes().into(), v.as_bytes().into()))
    .collect();
  let carries_body = !matches!(parts.method, Method::GET | Method::HEAD)
    && !hyper::body::Body::is_end_stream(&incoming);
  let (body, too_big) = if carries_body {
    let (rx, flag) = body::pump_request_body(incoming, limit);
    (Some(rx), Some(flag))
  } else {
    (None, None)
  };
  let (reply_tx, reply) = oneshot::channel();
  let (done_tx, done) = oneshot::channel();
  let request = ServeRequest {
    id: call.id,
    hops: call.hops,
    method: parts.method.to_string(),
    url,
    headers,
    body,
    reply: reply_tx,
    done: done_tx,
    client_gone: call.gone,
  };
  let pending = Pending {
    reply,
    done,
    too_big,
  };
  (request, pending)
}

/// What `dispatch` needs of a routed request besides the request itself.
struct Call {
  id: Arc<str>,
  hops: u32,
  /// The normalized path.
  path: String,
  gone: oneshot::Receiver<()>,
}

/// Logs and counts one request when it is answered, or with status 499 if
/// the client went away first (then it also aborts the function's
/// `request.signal`).
struct RequestLog {
  metrics: Arc<Metrics>,
  started: Instant,
  method: Method,
  path: String,
  id: Arc<str>,
  function: Option<String>,
  /// Dropped unsent once answered; sent when the client went away.
  client_gone: Option<oneshot::Sender<()>>,
}

/// The status logged for a request whose client went away (nginx's).
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl RequestLog {
  fn finish(mut self, status: StatusCode) {
    self.client_gone = None;
    self.record(status.as_u16());
  }

  fn record(&self, status: u16) {
    let function = self.function.as_deref();
    self.metrics.request(function.unwrap_or(""), status);
    tracing::info!(
      "{} {} {status} {} {:.1}ms id={}",
      self.method,
      self.path,
      function.unwrap_or("-"),
      self.started.elapsed().as_secs_f64() * 1000.0,
      self.id
    );
  }
}

impl Drop for RequestLog {
  fn drop(&mut self) {
    if let Some(gone) = self.client_gone.take() {
      let _ = gone.send(());
      self.record(CLIENT_CLOSED_REQUEST);
    }
  }
}

/// Decrements the in-flight gauge when the request is done with its
/// instance.
struct InFlight(Arc<Metrics>);

impl InFlight {
  fn new(metrics: Arc<Metrics>) -> Self {
    metrics.in_flight_add(1);
    InFlight(metrics)
  }
}

impl Drop for InFlight {
  fn drop(&mut self) {
    self.0.in_flight_add(-1);
  }
}

/// Waits until the instance is done with the request (response body
/// written, `waitUntil` work settled, WebSocket closed), then returns it to
/// the pool; if `bound` completes first, the instance is terminated.
fn finish_in_background(
  pool: Arc<FunctionPool>,
  lease: Lease,
  done: oneshot::Receiver<()>,
  bound: impl Future<Output = ()> + Send + 'static,
) {
  tokio::spawn(async move {
    tokio::select! {
      finished = done => match finished {
        Ok(()) => pool.release(lease),
        Err(_) => pool.discard(lease),
      },
      () = bound => {
        tracing::warn!(
          function = pool.name(),
          "response body or waitUntil work not finished within the timeout; instance terminated"
        );
        lease.instance.terminate(TerminationCause::Timeout);
        pool.discard(lease);
      }
    }
  });
}

/// Why an instance stopped answering.
fn death_message(function: &str, lease: &Lease, max_heap_bytes: usize) -> String {
  match lease.instance.fate() {
    Some((TerminationCause::OutOfMemory, _)) => format!(
      "function '{function}' ran out of memory (limit {} MiB); the instance was discarded",
      max_heap_bytes >> 20
    ),
    Some((TerminationCause::UncaughtError, detail)) => {
      format!("function '{function}' crashed: {detail}")
    }
    Some((cause, _)) => format!("function '{function}' instance ended ({})", cause.label()),
    None => format!("function '{function}' instance ended unexpectedly"),
  }
}

/// The URL the function sees: scheme, the request's authority (from the
/// request target or the Host header), the normalized path and the query.
fn request_url(parts: &http::request::Parts, path: &str) -> Result<String, String> {
  let authority = match (parts.uri.authority(), parts.headers.get(header::HOST)) {
    (Some(authority), _) => authority.to_string(),
    (None, Some(host)) => host
      .to_str()
      .ok()
      .and_then(|h| h.parse::<http::uri::Authority>().ok())
      .map(|a| a.to_string())
      .ok_or_else(|| format!("invalid Host header: {host:?}"))?,
    (None, None) => "localhost".to_string(),
  };
  let query = parts
    .uri
    .query()
    .map(|q| format!("?{q}"))
    .unwrap_or_default();
  Ok(format!("http://{authority}{path}{query}"))
}

fn into_http_response(
  response: ServeResponse,
  function: &str,
) -> Result<Response<HostBody>, Failure> {
  let mut builder = Response::builder().status(response.status);
  for (name, value) in &response.headers {
    builder = builder.header(name.as_slice(), value.as_slice());
  }
  let body = match response.body {
    Some(body) => HostBody::stream(body),
    None => HostBody::empty(),
  };
  builder.body(body).map_err(|e| {
    Failure::Internal(format!(
      "function '{function}' returned an invalid response: {e}"
    ))
  })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<HostBody> {
  let mut response = Response::new(HostBody::full(body.into()));
  *response.status_mut() = status;
  response
}

/// `{"error": message, "request_id": id}` with `status`.
fn json_error(status: StatusCode, message: &str, id: &str) -> Response<HostBody> {
  let body = serde_json::json!({ "error": message, "request_id": id }).to_string();
  let mut response = text(status, body);
  response.headers_mut().insert(
    header::CONTENT_TYPE,
    HeaderValue::from_static("application/json"),
  );
  response
}
