//! Sockets: accepts HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge)
//! connections with hyper and hands each request to the [`Host`].
//!
//! It keeps connections from starving the host: at most
//! `max_connections` are open (derived from the file-descriptor limit; more
//! wait in the listen backlog), a connection must deliver a request head
//! within `header_timeout` and is closed after `keep_alive_timeout` without
//! a request in progress, and accept errors back off and are logged at most
//! once a second. On shutdown it stops accepting, closes every connection
//! with no request in progress at once, lets in-flight requests finish
//! within the grace period, then stops every instance.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Host;
use super::HostBody;

/// File descriptors kept free for everything but client connections
/// (instance threads, the listener, log files), when the limit allows.
const RESERVED_FDS: usize = 256;

/// The connection cap for a file-descriptor limit: all but
/// [`RESERVED_FDS`], and never more than half of a small limit.
pub fn connection_cap(fd_limit: usize) -> usize {
  fd_limit
    .saturating_sub(RESERVED_FDS)
    .max(fd_limit / 2)
    .max(1)
}

/// This process's soft file-descriptor limit.
fn fd_limit() -> usize {
  let mut limit = libc::rlimit {
    rlim_cur: 0,
    rlim_max: 0,
  };
  // SAFETY: getrlimit only writes the struct we pass.
  let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
  if ok && limit.rlim_cur != libc::RLIM_INFINITY {
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
  } else {
    1024
  }
}

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
  Serving,
  /// Close connections with no request in progress; finish the others.
  Draining,
  /// The grace period is over: close everything.
  Closing,
}

/// Serves `host` on `listener` until `shutdown` resolves, then drains and
/// closes the host.
pub async fn serve(host: Arc<Host>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
  let options = host.options().clone();
  let cap = options
    .max_connections
    .unwrap_or_else(|| connection_cap(fd_limit()))
    .max(1);
  tracing::debug!("accepting at most {cap} connections");
  let slots = Arc::new(Semaphore::new(cap));
  let mut builder = auto::Builder::new(TokioExecutor::new());
  builder
    .http1()
    .timer(TokioTimer::new())
    .header_read_timeout(options.header_timeout);
  let builder = Arc::new(builder);
  let (phase_tx, phase) = watch::channel(Phase::Serving);
  let timeouts = Timeouts {
    header: options.header_timeout,
    keep_alive: options.keep_alive_timeout,
  };
  let mut accept_errors = AcceptErrors::default();
  tokio::pin!(shutdown);
  loop {
    // A free slot first: past the cap, connections wait in the backlog.
    let permit = tokio::select! {
      permit = slots.clone().acquire_owned() => match permit {
        Ok(permit) => permit,
        Err(_) => break,
      },
      () = &mut shutdown => break,
    };
    let stream = tokio::select! {
      accepted = listener.accept() => match accepted {
        Ok((stream, _)) => {
          accept_errors.reset();
          stream
        }
        Err(e) => {
          // Out of file descriptors and the like: back off, keep serving.
          let pause = accept_errors.failed(&e);
          tokio::time::sleep(pause).await;
          continue;
        }
      },
      () = &mut shutdown => break,
    };
    let _ = stream.set_nodelay(true);
    tokio::spawn(connection(
      stream,
      host.clone(),
      builder.clone(),
      timeouts,
      phase.clone(),
      permit,
    ));
  }
  drop(listener);
  let grace = options.grace_period;
  tracing::info!("shutting down: finishing in-flight requests (grace period {grace:?})");
  let _ = phase_tx.send(Phase::Draining);
  // Every connection holds a slot: all slots back means all closed.
  let all = u32::try_from(cap).unwrap_or(u32::MAX);
  if tokio::time::timeout(grace, slots.acquire_many(all))
    .await
    .is_err()
  {
    tracing::warn!("grace period over; closing the remaining connections");
    let _ = phase_tx.send(Phase::Closing);
    let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
  }
  host.close().await;
  tracing::info!("stopped");
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
  /// For the first request head of a connection.
  header: Duration,
  /// Between requests.
  keep_alive: Duration,
}

/// Accept failures: exponential back-off, and one log line a second at most.
#[derive(Default)]
struct AcceptErrors {
  pause: Duration,
  last_logged: Option<std::time::Instant>,
  suppressed: u64,
}

impl AcceptErrors {
  fn failed(&mut self, error: &std::io::Error) -> Duration {
    if self
      .last_logged
      .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
    {
      if self.suppressed > 0 {
        tracing::warn!(
          "accept failed: {error} ({} more since the last report)",
          self.suppressed
        );
      } else {
        tracing::warn!("accept failed: {error}");
      }
      self.last_logged = Some(std::time::Instant::now());
      self.suppressed = 0;
    } else {
      self.suppressed += 1;
    }
    self.pause = (self.pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    self.pause
  }

  fn reset(&mut self) {
    self.pause = Duration::ZERO;
  }
}

/// Requests in progress on one connection, and since when it has had none.
struct Activity {
  active: AtomicUsize,
  idle_since: Mutex<Option<Instant>>,
  served_any: std::sync::atomic::AtomicBool,
  became_idle: Notify,
}

impl Activity {
  fn new() -> Arc<Self> {
    Arc::new(Activity {
      active: AtomicUsize::new(0),
      idle_since: Mutex::new(Some(Instant::now())),
      served_any: std::sync::atomic::AtomicBool::new(false),
      became_idle: Notify::new(),
    })
  }

  fn idle_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
    self
      .idle_since
      .lock()
      .unwrap_or_else(PoisonError::into_inner)
  }

  fn begin(self: &Arc<Self>) -> InProgress {
    self.served_any.store(true, Ordering::Release);
    if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
      *self.idle_since() = None;
    }
    InProgress(self.clone())
  }

  /// When the connection must close if nothing starts before: `None` while
  /// a request is in progress.
  fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
    let since = (*self.idle_since())?;
    let limit = if self.served_any.load(Ordering::Acquire) {
      timeouts.keep_alive
    } else {
      timeouts.header
    };
    Some(since + limit)
  }
}

/// One request in progress, from its head until its response body is done
/// (or dropped).
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
  fn drop(&mut self) {
    if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
      *self.0.idle_since() = Some(Instant::now());
      self.0.became_idle.notify_one();
    }
  }
}

/// A response body that keeps its request counted as in progress.
struct TrackedBody {
  inner: HostBody,
  _in_progress: InProgress,
}

impl http_body::Body for TrackedBody {
  type Data = Bytes;
  type Error = std::io::Error;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
    Pin::new(&mut self.inner).poll_frame(cx)
  }

  fn is_end_stream(&self) -> bool {
    self.inner.is_end_stream()
  }

  fn size_hint(&self) -> http_body::SizeHint {
    self.inner.size_hint()
  }
}

/// Serves one connection until it ends, times out, or shutdown closes it.
async fn connection(
  stream: TcpStream,
  host: Arc<Host>,
  builder: Arc<auto::Builder<TokioExecutor>>,
  timeouts: Timeouts,
  mut phase: watch::Receiver<Phase>,
  _slot: OwnedSemaphorePermit,
) {
  let activity = Activity::new();
  let service = {
    let activity = activity.clone();
    service_fn(move |request| {
      let in_progress = activity.begin();
      let host = host.clone();
      async move {
        let response = host.handle(request).await;
        Ok::<_, Infallible>(response.map(|inner| TrackedBody {
          inner,
          _in_progress: in_progress,
        }))
      }
    })
  };
  // With upgrades: a function may take the connection over as a
  // WebSocket (`Deno.upgradeWebSocket`).
  let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
  tokio::pin!(conn);
  let mut draining = false;
  loop {
    let deadline = activity.deadline(timeouts);
    if draining && deadline.is_some() {
      return; // nothing in progress: close now
    }
    let expired = async {
      match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
      }
    };
    tokio::select! {
      result = conn.as_mut() => {
        if let Err(e) = result {
          tracing::debug!("connection ended: {e}");
        }
        return;
      }
      () = expired => {
        if activity.deadline(timeouts).is_some_and(|d| d <= Instant::now()) {
          tracing::debug!("closing a connection with no request in progress");
          return;
        }
      }
      () = activity.became_idle.notified() => {}
      changed = phase.changed() => {
        let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Closing };
        match now {
          Phase::Serving => {}
          Phase::Draining => {
            draining = true;
            conn.as_mut().graceful_shutdown();
          }
          Phase::Closing => return,
        }
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn connection_cap_leaves_descriptors_for_the_host() {
    assert_eq!(connection_cap(1024), 768);
    assert_eq!(connection_cap(65536), 65280);
    assert_eq!(connection_cap(256), 128);
    assert_eq!(connection_cap(1), 1);
  }
}
