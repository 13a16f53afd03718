//! Bodies between hyper and an isolate: request bodies are pumped into a
//! bounded channel (back-pressure to the client, size limit enforced as the
//! bytes arrive); response bodies are read from the isolate's channel.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use kiln_extensions::serve::BodyError;
use kiln_extensions::serve::RequestBody;
use kiln_extensions::serve::ResponseBody;

/// Streams `incoming` into a channel for the isolate. Past `limit` bytes the
/// stream ends with an error and the returned flag is set (the host then
/// answers 413).
pub(crate) fn pump_request_body(
  mut incoming: Incoming,
  limit: u64,
) -> (RequestBody, Arc<AtomicBool>) {
  let (tx, rx) = mpsc::channel(4);
  let too_large = Arc::new(AtomicBool::new(false));
  let flag = too_large.clone();
  tokio::spawn(async move {
    let mut total: u64 = 0;
    while let Some(frame) = incoming.frame().await {
      let chunk = match frame {
        Ok(frame) => match frame.into_data() {
          Ok(data) => data,
          Err(_) => continue, // trailers
        },
        Err(e) => {
          let _ = tx.send(Err(BodyError(format!("request body: {e}")))).await;
          return;
        }
      };
      total += chunk.len() as u64;
      if total > limit {
        flag.store(true, Ordering::Release);
        let message = format!("request body exceeds the limit of {limit} bytes");
        let _ = tx.send(Err(BodyError(message))).await;
        return;
      }
      if tx.send(Ok(chunk)).await.is_err() {
        return; // the handler stopped reading
      }
    }
  });
  (rx, too_large)
}

/// A response body: fixed bytes, or the isolate's stream.
pub struct HostBody {
  kind: Kind,
}

enum Kind {
  Full(Option<Bytes>),
  Stream(ResponseBody),
}

impl HostBody {
  pub(crate) fn full(bytes: Bytes) -> Self {
    HostBody {
      kind: Kind::Full(Some(bytes)),
    }
  }

  pub(crate) fn empty() -> Self {
    HostBody {
      kind: Kind::Full(None),
    }
  }

  pub(crate) fn stream(body: ResponseBody) -> Self {
    HostBody {
      kind: Kind::Stream(body),
    }
  }
}

impl http_body::Body for HostBody {
  type Data = Bytes;
  type Error = std::io::Error;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
    match &mut self.kind {
      Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
      Kind::Stream(body) => match body.chunks.poll_recv(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e.0)))),
        Poll::Ready(None) if body.complete.load(Ordering::Acquire) => Poll::Ready(None),
        // The isolate went away mid-body: abort rather than pretend the
        // response is complete.
        Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::other(
          "the function stopped before finishing the response body",
        )))),
      },
    }
  }

  fn is_end_stream(&self) -> bool {
    matches!(self.kind, Kind::Full(None))
  }

  fn size_hint(&self) -> http_body::SizeHint {
    match &self.kind {
      Kind::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
      Kind::Full(None) => http_body::SizeHint::with_exact(0),
      Kind::Stream(_) => http_body::SizeHint::default(),
    }
  }
}
