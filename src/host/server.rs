//! Sockets: accepts HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge)
//! connections with hyper and hands each request to the [`Host`]. On
//! shutdown it stops accepting, lets in-flight requests finish within the
//! grace period, then stops every instance.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::Host;

/// Serves `host` on `listener` until `shutdown` resolves, then drains and
/// closes the host.
pub async fn serve(host: Arc<Host>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
  let graceful = GracefulShutdown::new();
  let builder = auto::Builder::new(TokioExecutor::new());
  tokio::pin!(shutdown);
  loop {
    tokio::select! {
      accepted = listener.accept() => {
        let stream = match accepted {
          Ok((stream, _)) => stream,
          Err(e) => {
            // Out of file descriptors and the like: back off, keep serving.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
          }
        };
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        let service = service_fn(move |request| {
          let host = host.clone();
          async move { Ok::<_, Infallible>(host.handle(request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
          if let Err(e) = connection.await {
            tracing::debug!("connection ended: {e}");
          }
        });
      }
      () = &mut shutdown => break,
    }
  }
  drop(listener);
  let grace = host.options().grace_period;
  tracing::info!("shutting down: finishing in-flight requests (grace period {grace:?})");
  if tokio::time::timeout(grace, graceful.shutdown())
    .await
    .is_err()
  {
    tracing::warn!("grace period over; closing the remaining connections");
  }
  host.close().await;
  tracing::info!("stopped");
}
