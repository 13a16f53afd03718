//! WebSockets of `Deno.upgradeWebSocket`: the host's half.
//!
//! A function that upgrades answers `101` with the host's end of a socket
//! pair (see `kiln_extensions::serve`'s `op_serve_upgrade`); the other end
//! is the isolate's WebSocket. Once hyper hands over the upgraded
//! connection, [`relay`] copies bytes both ways until either side closes or
//! nothing has passed for the idle timeout; then it closes both, and the
//! socket's `close` event releases the instance.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use super::metrics::Metrics;

/// Whether a request asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn is_upgrade_request(headers: &http::HeaderMap) -> bool {
  headers
    .get_all(http::header::UPGRADE)
    .iter()
    .filter_map(|v| v.to_str().ok())
    .flat_map(|v| v.split(','))
    .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

/// How a relay ended (the `how` label of `kiln_websockets_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
  Closed,
  Idle,
  Failed,
}

impl End {
  fn label(self) -> &'static str {
    match self {
      End::Closed => "closed",
      End::Idle => "idle",
      End::Failed => "failed",
    }
  }
}

/// Relays the upgraded client connection and the isolate's socket until
/// one side closes or `idle` passes without a byte either way.
pub(crate) async fn relay(
  upgrade: OnUpgrade,
  isolate: std::os::unix::net::UnixStream,
  idle: Duration,
  function: Arc<str>,
  metrics: Arc<Metrics>,
) {
  let end = match upgrade.await {
    Err(e) => {
      tracing::debug!(function = %function, "WebSocket upgrade failed: {e}");
      End::Failed
    }
    Ok(upgraded) => match tokio::net::UnixStream::from_std(isolate) {
      Err(e) => {
        tracing::warn!(function = %function, "WebSocket relay: {e}");
        End::Failed
      }
      Ok(isolate) => {
        metrics.websocket_open(&function, 1);
        let end = copy_both_ways(TokioIo::new(upgraded), isolate, idle).await;
        metrics.websocket_open(&function, -1);
        end
      }
    },
  };
  if end == End::Idle {
    tracing::info!(
      function = %function,
      "WebSocket closed: nothing sent either way for {idle:?}"
    );
  }
  metrics.websocket_end(&function, end.label());
}

/// An unmasked close frame (server to client, RFC 6455 section 5.5.1):
/// code 1001, reason "idle timeout".
const IDLE_CLOSE_FRAME: [u8; 16] = [
  0x88, 14, 0x03, 0xe9, b'i', b'd', b'l', b'e', b' ', b't', b'i', b'm', b'e', b'o', b'u', b't',
];

async fn copy_both_ways<C>(client: C, mut isolate: tokio::net::UnixStream, idle: Duration) -> End
where
  C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
  let (mut client_read, mut client_write) = tokio::io::split(client);
  let (mut isolate_read, mut isolate_write) = isolate.split();
  let mut from_client = vec![0u8; 16 << 10];
  let mut from_isolate = vec![0u8; 16 << 10];
  let end = loop {
    tokio::select! {
      read = client_read.read(&mut from_client) => match read {
        Ok(0) | Err(_) => break End::Closed,
        Ok(n) => if isolate_write.write_all(&from_client[..n]).await.is_err() {
          break End::Closed;
        },
      },
      read = isolate_read.read(&mut from_isolate) => match read {
        Ok(0) | Err(_) => break End::Closed,
        Ok(n) => if client_write.write_all(&from_isolate[..n]).await.is_err() {
          break End::Closed;
        },
      },
      () = tokio::time::sleep(idle) => break End::Idle,
    }
  };
  if end == End::Idle {
    // Nothing is in flight (idle both ways), so a frame of ours cannot
    // split one of the isolate's: tell the client why, as a WebSocket
    // close (1001, "going away").
    let _ = client_write.write_all(&IDLE_CLOSE_FRAME).await;
  }
  // Whatever the isolate wrote last (its close frame) goes out before the
  // connection ends; both ends then see end-of-stream.
  let _ = client_write.flush().await;
  let _ = client_write.shutdown().await;
  let _ = isolate_write.shutdown().await;
  end
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn upgrade_requests_name_websocket() {
    let mut headers = http::HeaderMap::new();
    assert!(!is_upgrade_request(&headers));
    headers.insert(http::header::UPGRADE, "h2c".parse().unwrap());
    assert!(!is_upgrade_request(&headers));
    headers.insert(http::header::UPGRADE, "foo, WebSocket".parse().unwrap());
    assert!(is_upgrade_request(&headers));
  }

  #[tokio::test]
  async fn relays_both_ways_and_ends_when_idle() {
    let (client, mut far_client) = tokio::io::duplex(64);
    let (isolate, mut far_isolate) = tokio::net::UnixStream::pair().unwrap();
    let relay = tokio::spawn(copy_both_ways(client, isolate, Duration::from_millis(200)));
    far_client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    far_isolate.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    far_isolate.write_all(b"pong").await.unwrap();
    far_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(relay.await.unwrap(), End::Idle);
    // The client gets a close frame, then both far ends see the end of the
    // stream.
    let mut close = Vec::new();
    far_client.read_to_end(&mut close).await.unwrap();
    assert_eq!(close, IDLE_CLOSE_FRAME);
    assert_eq!(far_isolate.read(&mut buf).await.unwrap(), 0);
  }

  #[tokio::test]
  async fn ends_when_a_side_closes() {
    let (client, far_client) = tokio::io::duplex(64);
    let (isolate, _far_isolate) = tokio::net::UnixStream::pair().unwrap();
    let relay = tokio::spawn(copy_both_ways(client, isolate, Duration::from_secs(60)));
    drop(far_client);
    assert_eq!(relay.await.unwrap(), End::Closed);
  }
}
