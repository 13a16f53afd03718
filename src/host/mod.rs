//! The function host behind `kiln serve`: every module in a directory is a
//! function with a WHATWG `fetch` handler, served over HTTP, each instance in
//! its own isolate thawed from the snapshot.
//!
//! This module routes requests and applies the limits; `pool` owns the
//! instances, `instance` the isolate threads, `server` the sockets. Nothing
//! here runs JS on the server's threads, and no request can take down
//! another: a failing instance is discarded and replaced.

mod body;
mod cron;
mod instance;
pub mod metrics;
mod pool;
pub mod router;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
pub use instance::StartError;
pub use metrics::Metrics;
pub use server::serve;

use crate::extensions::serve::HandlerError;
use crate::extensions::serve::ServeRequest;
use crate::extensions::serve::ServeResponse;
use instance::InstanceSpec;
use metrics::TerminationCause;
use pool::FunctionPool;
use pool::Lease;

/// Settings of a host; the `kiln serve` flags.
#[derive(Debug, Clone)]
pub struct HostOptions {
  /// Directory of function modules.
  pub dir: PathBuf,
  /// Instances per function.
  pub max_instances: usize,
  /// An instance idle this long is stopped.
  pub idle_timeout: Duration,
  /// V8 heap cap per instance.
  pub max_heap_bytes: usize,
  /// Wall-time limit of one request inside an instance (handler and
  /// response body), and of a module's start-up.
  pub timeout: Duration,
  /// Largest accepted request body.
  pub max_body_bytes: u64,
  /// How long shutdown waits for in-flight requests.
  pub grace_period: Duration,
  /// Start every function at start-up (registers its cron jobs, shows load
  /// errors at once). Without it, instances start on first request.
  pub preload: bool,
}

impl HostOptions {
  /// The defaults of `kiln serve` for `dir`.
  pub fn new(dir: impl Into<PathBuf>) -> Self {
    HostOptions {
      dir: dir.into(),
      max_instances: std::thread::available_parallelism().map_or(2, |n| n.get()),
      idle_timeout: Duration::from_secs(300),
      max_heap_bytes: 128 << 20,
      timeout: Duration::from_secs(30),
      max_body_bytes: 10 << 20,
      grace_period: Duration::from_secs(10),
      preload: true,
    }
  }
}

/// Parses a duration flag: `250ms`, `30s`, `5m`, `1h`, or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
  let text = text.trim();
  let split = text
    .find(|c: char| !c.is_ascii_digit())
    .unwrap_or(text.len());
  let (number, unit) = text.split_at(split);
  let n: u64 = number
    .parse()
    .map_err(|_| format!("invalid duration '{text}': expected e.g. 500ms, 30s, 5m, 1h"))?;
  match unit {
    "ms" => Ok(Duration::from_millis(n)),
    "" | "s" => Ok(Duration::from_secs(n)),
    "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
    "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
    _ => Err(format!(
      "invalid duration unit in '{text}': use ms, s, m or h"
    )),
  }
}

/// The smallest heap an instance can start in: below it V8 runs out of
/// memory while thawing the snapshot, before any limit handling is in place,
/// and that aborts the process.
pub const MIN_HEAP_BYTES: usize = 16 << 20;

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
  #[error("--max-heap-mb must be at least {} (the snapshot alone needs several MiB)", MIN_HEAP_BYTES >> 20)]
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
  Snapshot(#[from] crate::snapshot::container::ContainerError),
}

/// The function host: functions, their pools, metrics.
pub struct Host {
  options: HostOptions,
  functions: BTreeMap<String, Arc<FunctionPool>>,
  metrics: Arc<Metrics>,
}

impl Host {
  /// Finds the functions in `options.dir` and checks the snapshot. No
  /// instance runs yet (see [`Host::start`]).
  pub fn new(options: HostOptions) -> Result<Arc<Host>, HostError> {
    if options.max_heap_bytes < MIN_HEAP_BYTES {
      return Err(HostError::HeapTooSmall);
    }
    crate::runtime::prefetch_snapshot();
    let (found, skipped) = router::discover(&options.dir).map_err(|source| HostError::ReadDir {
      dir: options.dir.clone(),
      source,
    })?;
    for s in skipped {
      tracing::warn!("not serving {}: {}", s.path.display(), s.reason);
    }
    if found.is_empty() {
      return Err(HostError::NoFunctions(options.dir.clone()));
    }
    // A broken snapshot is a start-up error, not a 500 on every request.
    crate::snapshot::load::embedded(crate::runtime::expected_manifest)?;
    let metrics = Arc::new(Metrics::default());
    let functions = found
      .into_iter()
      .map(|(name, path)| {
        let path = std::path::absolute(&path).unwrap_or(path);
        let spec = InstanceSpec {
          function: name.as_str().into(),
          path,
          max_heap_bytes: options.max_heap_bytes,
          start_timeout: options.timeout,
          metrics: metrics.clone(),
        };
        (
          name,
          Arc::new(FunctionPool::new(spec, options.max_instances)),
        )
      })
      .collect();
    Ok(Arc::new(Host {
      options,
      functions,
      metrics,
    }))
  }

  /// Names of the served functions.
  pub fn functions(&self) -> impl Iterator<Item = &str> {
    self.functions.keys().map(String::as_str)
  }

  pub fn options(&self) -> &HostOptions {
    &self.options
  }

  /// Starts one instance of every function (with `preload`) and the idle
  /// eviction task. A function that fails to load is logged; requests to it
  /// get its error until an instance starts.
  pub async fn start(self: &Arc<Self>) {
    if self.options.preload {
      let mut starts = tokio::task::JoinSet::new();
      for pool in self.functions.values() {
        let pool = pool.clone();
        starts.spawn(async move {
          match pool.preload().await {
            Ok(()) => tracing::info!(function = pool.name(), "loaded"),
            Err(e) => tracing::error!("{e}"),
          }
        });
      }
      while starts.join_next().await.is_some() {}
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
          pool.evict_idle(host.options.idle_timeout);
        }
      }
    });
  }

  /// Stops the idle instances of `function` now (benchmarks use it to get a
  /// cold start); cron owners with jobs stay. Returns false for an unknown
  /// function.
  pub fn evict(&self, function: &str) -> bool {
    match self.functions.get(function) {
      Some(pool) => {
        pool.evict_idle(Duration::ZERO);
        true
      }
      None => false,
    }
  }

  /// Stops every instance (cron jobs with them) and waits for their threads.
  pub async fn close(&self) {
    let threads: Vec<_> = self.functions.values().flat_map(|p| p.close()).collect();
    let _ = tokio::task::spawn_blocking(move || {
      for thread in threads {
        let _ = thread.join();
      }
    })
    .await;
  }

  /// Answers one HTTP request.
  pub async fn handle(self: &Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (function, response) = self.route(request).await;
    let status = response.status().as_u16();
    self
      .metrics
      .request(function.as_deref().unwrap_or(""), status);
    tracing::info!(
      "{method} {path} {status} {} {:.1}ms",
      function.as_deref().unwrap_or("-"),
      started.elapsed().as_secs_f64() * 1000.0
    );
    response
  }

  async fn route(
    self: &Arc<Self>,
    request: Request<Incoming>,
  ) -> (Option<String>, Response<HostBody>) {
    let path = request.uri().path();
    match path {
      "/_kiln/health" => return (None, text(StatusCode::OK, "ok\n")),
      "/_kiln/metrics" => {
        let mut response = text(StatusCode::OK, self.metrics.render());
        response.headers_mut().insert(
          header::CONTENT_TYPE,
          HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return (None, response);
      }
      _ => {}
    }
    let pool = router::function_of(path).and_then(|name| self.functions.get(name));
    let Some(pool) = pool else {
      let message = format!("no function serves {path}");
      return (None, json_error(StatusCode::NOT_FOUND, &message));
    };
    let name = pool.name().to_string();
    // On its own task: a client that disconnects drops this future, and an
    // instance must never be dropped mid-request (it goes back to its pool
    // or is discarded with a recorded cause).
    let host = self.clone();
    let pool = pool.clone();
    let response = match tokio::spawn(async move { host.dispatch(&pool, request).await }).await {
      Ok(response) => response,
      Err(e) => json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("function '{name}': request task failed: {e}"),
      ),
    };
    (Some(name), response)
  }

  async fn dispatch(
    &self,
    pool: &Arc<FunctionPool>,
    request: Request<Incoming>,
  ) -> Response<HostBody> {
    let limit = self.options.max_body_bytes;
    let declared = request
      .headers()
      .get(header::CONTENT_LENGTH)
      .and_then(|v| v.to_str().ok())
      .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
      return too_large(limit);
    }
    let (parts, incoming) = request.into_parts();
    let url = match request_url(&parts) {
      Ok(url) => url,
      Err(message) => return json_error(StatusCode::BAD_REQUEST, &message),
    };
    // Counted from here (waiting for an instance included) until the
    // instance is done with the request.
    let in_flight = InFlight::new(self.metrics.clone());
    let lease = match pool.acquire(self.options.timeout).await {
      Ok(lease) => lease,
      Err(e @ StartError::Busy { .. }) => {
        tracing::warn!("{e}");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
      }
      Err(e) => {
        tracing::error!("{e}");
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
      }
    };

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
    let (reply_tx, reply_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let serve_request = ServeRequest {
      method: parts.method.to_string(),
      url,
      headers,
      body,
      reply: reply_tx,
      done: done_tx,
    };
    if lease.instance.send(serve_request).is_err() {
      let message = death_message(pool.name(), &lease, self.options.max_heap_bytes);
      pool.discard(lease);
      return json_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
    }
    let deadline = tokio::time::Instant::now() + self.options.timeout;
    let reply = tokio::time::timeout_at(deadline, reply_rx).await;
    let exceeded = || {
      too_big
        .as_ref()
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire))
    };
    let outcome = match reply {
      Err(_) => {
        lease.instance.terminate(TerminationCause::Timeout);
        pool.discard(lease);
        let message = format!(
          "function '{}' timed out after {} ms",
          pool.name(),
          self.options.timeout.as_millis()
        );
        tracing::warn!("{message}");
        return json_error(StatusCode::GATEWAY_TIMEOUT, &message);
      }
      Ok(Err(_)) => {
        let message = death_message(pool.name(), &lease, self.options.max_heap_bytes);
        pool.discard(lease);
        tracing::warn!("{message}");
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &message);
      }
      Ok(Ok(outcome)) => outcome,
    };
    finish_in_background(pool.clone(), lease, done_rx, deadline, in_flight);
    if exceeded() {
      return too_large(limit);
    }
    match outcome {
      Err(HandlerError(message)) => {
        tracing::warn!(function = pool.name(), "handler failed: {message}");
        json_error(StatusCode::INTERNAL_SERVER_ERROR, &message)
      }
      Ok(response) => into_http_response(response, pool.name()),
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

/// Waits (bounded by the request's deadline) until the instance is done with
/// the request (response body written), then returns it to the pool.
fn finish_in_background(
  pool: Arc<FunctionPool>,
  lease: Lease,
  done: oneshot::Receiver<()>,
  deadline: tokio::time::Instant,
  in_flight: InFlight,
) {
  tokio::spawn(async move {
    let _in_flight = in_flight;
    match tokio::time::timeout_at(deadline, done).await {
      Ok(Ok(())) => pool.release(lease),
      Ok(Err(_)) => pool.discard(lease),
      Err(_) => {
        tracing::warn!(
          function = pool.name(),
          "response body not finished within the timeout; instance terminated"
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
/// request target or the Host header) and path with query.
fn request_url(parts: &http::request::Parts) -> Result<String, String> {
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
  let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
  Ok(format!("http://{authority}{path}"))
}

fn into_http_response(response: ServeResponse, function: &str) -> Response<HostBody> {
  let mut builder = Response::builder().status(response.status);
  for (name, value) in &response.headers {
    builder = builder.header(name.as_slice(), value.as_slice());
  }
  let body = match response.body {
    Some(body) => HostBody::stream(body),
    None => HostBody::empty(),
  };
  match builder.body(body) {
    Ok(response) => response,
    Err(e) => json_error(
      StatusCode::INTERNAL_SERVER_ERROR,
      &format!("function '{function}' returned an invalid response: {e}"),
    ),
  }
}

fn too_large(limit: u64) -> Response<HostBody> {
  json_error(
    StatusCode::PAYLOAD_TOO_LARGE,
    &format!("request body exceeds the limit of {limit} bytes"),
  )
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<HostBody> {
  let mut response = Response::new(HostBody::full(body.into()));
  *response.status_mut() = status;
  response
}

/// `{"error": message}` with `status`.
fn json_error(status: StatusCode, message: &str) -> Response<HostBody> {
  let body = serde_json::json!({ "error": message }).to_string();
  let mut response = text(status, body);
  response.headers_mut().insert(
    header::CONTENT_TYPE,
    HeaderValue::from_static("application/json"),
  );
  response
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("5 days").is_err());
    assert!(parse_duration("ms").is_err());
  }
}
