//! `kiln_serve`: the bridge between `kiln serve` and a function's isolate.
//!
//! The host hands requests to an isolate through an inbox channel
//! ([`ServeInbox`]); the glue (`ext_js/serve.ts`) takes each one with
//! `op_serve_next`, builds a WHATWG `Request` (its body streamed in with
//! `op_serve_read`), calls the module's `fetch` handler and streams the
//! `Response` back (`op_serve_respond`, `op_serve_write`). Everything here is
//! plain channels: the host side (`kiln-host`) never touches V8.
//!
//! Without an inbox (`kiln run`, embedders) `op_serve_next` returns `null` at
//! once, so the extension costs nothing there.
//!
//! Once serving, an error that escapes a handler (an unhandled rejection, a
//! throw in a timer or microtask) goes to the inbox's [`ServeObserver`]
//! with the id of the request in flight, instead of ending the isolate; and
//! every `fetch` the isolate makes carries [`HOPS_HEADER`], so a function
//! that calls itself ends in `508 Loop Detected` instead of running away.

use std::borrow::Cow;
use std::cell::Cell;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use deno_core::AsyncRefCell;
use deno_core::ByteString;
use deno_core::JsBuffer;
use deno_core::OpState;
use deno_core::RcRef;
use deno_core::Resource;
use deno_core::ResourceId;
use deno_core::ToJsBuffer;
use deno_core::op2;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

/// Header list as it crosses the channel: names and values as bytes.
pub type HeaderList = Vec<(ByteString, ByteString)>;

/// Chunks of a request body; an error ends the body (e.g. it was too large
/// or the client went away).
pub type RequestBody = mpsc::Receiver<Result<Bytes, BodyError>>;

/// A response body as the isolate produces it. An error item aborts the
/// response (the handler failed after the head was sent); so does the
/// channel closing before `complete` is set (the isolate died mid-body).
pub struct ResponseBody {
  pub chunks: mpsc::Receiver<Result<Bytes, BodyError>>,
  pub complete: Arc<AtomicBool>,
}

/// Why a body stream ended early. The message reaches JS as a `TypeError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, deno_error::JsError)]
#[class(type)]
#[error("{0}")]
pub struct BodyError(pub String);

/// The header that counts how many function invocations a request has passed
/// through: the host reads it on every request, and each `fetch` from inside
/// a function sends the count of the request it serves plus one.
pub const HOPS_HEADER: &str = "x-kiln-hops";

thread_local! {
  /// The hop count of the request this thread's isolate serves (each
  /// instance has its own thread); `None` outside `kiln serve`. A thread
  /// local because deno_fetch's request hook is a plain `fn`.
  static SERVING_HOPS: Cell<Option<u32>> = const { Cell::new(None) };
}

/// deno_fetch's request hook: marks subrequests of a served request with
/// its hop count plus one. Does nothing outside `kiln serve`.
pub fn mark_subrequest<B>(request: &mut http::Request<B>) -> Result<(), deno_error::JsErrorBox> {
  if let Some(hops) = SERVING_HOPS.with(Cell::get) {
    request
      .headers_mut()
      .insert(HOPS_HEADER, http::HeaderValue::from(hops.saturating_add(1)));
  }
  Ok(())
}

/// One request for a function.
pub struct ServeRequest {
  /// The host's id of the request (`x-request-id`), for logs.
  pub id: Arc<str>,
  /// Function invocations this request has already passed through.
  pub hops: u32,
  pub method: String,
  /// Absolute URL (`http://host/path?query`).
  pub url: String,
  pub headers: HeaderList,
  /// `None` for requests without a body.
  pub body: Option<RequestBody>,
  /// Receives the response head, or the handler's error if it failed before
  /// responding.
  pub reply: oneshot::Sender<Result<ServeResponse, HandlerError>>,
  /// Fires when the isolate is done with the request (response body written
  /// or abandoned).
  pub done: oneshot::Sender<()>,
  /// Fires when the client went away before the response head; dropped
  /// unsent once the head is out. Aborts `request.signal`.
  pub client_gone: oneshot::Receiver<()>,
}

/// A response head and its body.
pub struct ServeResponse {
  pub status: u16,
  pub headers: HeaderList,
  pub body: Option<ResponseBody>,
  /// A WebSocket upgrade (status 101): the host's end of a socket pair
  /// whose other end is the isolate's WebSocket. The host relays the
  /// upgraded connection's bytes through it; closing it closes the socket.
  pub upgrade: Option<std::os::unix::net::UnixStream>,
}

/// The handler threw (or returned something that is not a `Response`)
/// before responding: the message is the JS error's string form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// What the host hears from a serving isolate besides responses.
pub trait ServeObserver {
  /// An error escaped a handler's own promise (an unhandled rejection, a
  /// throw in a timer or microtask): `request_id` is the request in flight
  /// when it surfaced, if any; `message` the error with its stack. The
  /// isolate keeps serving.
  fn unhandled_error(&self, request_id: Option<&str>, message: &str);
}

/// The host side of an isolate's inbox: put into the op state at run time.
pub struct ServeInbox {
  receiver: Rc<AsyncRefCell<mpsc::Receiver<ServeRequest>>>,
  observer: Box<dyn ServeObserver>,
  /// The request being served (an instance serves one at a time).
  current: RefCell<Option<(ResourceId, Arc<str>)>>,
}

impl ServeInbox {
  pub fn new(receiver: mpsc::Receiver<ServeRequest>, observer: Box<dyn ServeObserver>) -> Self {
    ServeInbox {
      receiver: Rc::new(AsyncRefCell::new(receiver)),
      observer,
      current: RefCell::new(None),
    }
  }
}

/// Errors of the serve ops. Only the glue calls them; a wrong rid is a bug
/// there, reported as a `BadResource` error rather than a panic.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ServeOpError {
  #[class(inherit)]
  #[error(transparent)]
  Resource(#[from] deno_core::error::ResourceError),
  #[class(range)]
  #[error("The status provided ({0}) is outside the range [200, 599].")]
  Status(u16),
  #[class(type)]
  #[error("the response was already sent")]
  AlreadyResponded,
  #[class(inherit)]
  #[error(transparent)]
  Body(#[from] BodyError),
  #[class(generic)]
  #[error("cannot create the WebSocket's socket: {0}")]
  Socket(#[from] std::io::Error),
}

deno_core::extension!(
  kiln_serve,
  deps = [kiln_runtime, deno_websocket],
  ops = [
    op_serve_next,
    op_serve_read,
    op_serve_respond,
    op_serve_write,
    op_serve_error,
    op_serve_finish,
    op_serve_close,
    op_serve_client_gone,
    op_serve_unhandled,
    op_serve_upgrade,
    op_serve_websocket_accept,
  ],
  esm_entry_point = "ext:kiln_serve/serve.ts",
  esm = [dir "../../ext_js", "serve.ts"],
);

/// One request inside the isolate.
struct RequestResource {
  body: AsyncRefCell<Option<RequestBody>>,
  reply: RefCell<Option<oneshot::Sender<Result<ServeResponse, HandlerError>>>>,
  response_body: RefCell<Option<mpsc::Sender<Result<Bytes, BodyError>>>>,
  /// Set when the glue finished the body normally.
  complete: Arc<AtomicBool>,
  done: RefCell<Option<oneshot::Sender<()>>>,
  client_gone: RefCell<Option<oneshot::Receiver<()>>>,
}

impl Resource for RequestResource {
  fn name(&self) -> Cow<'_, str> {
    "serveRequest".into()
  }
}

impl Drop for RequestResource {
  fn drop(&mut self) {
    // Dropping the body sender ends the response body; then the host may
    // give this isolate its next request.
    self.response_body.borrow_mut().take();
    if let Some(done) = self.done.borrow_mut().take() {
      let _ = done.send(());
    }
  }
}

/// `[rid, method, url, headers, hasBody]` of the next request, or `null`
/// once the host closed the inbox (or there is none).
#[op2]
#[serde]
async fn op_serve_next(
  state: Rc<RefCell<OpState>>,
) -> Option<(ResourceId, String, String, HeaderList, bool)> {
  let inbox = state.borrow().try_borrow::<ServeInbox>()?.receiver.clone();
  let request = inbox.borrow_mut().await.recv().await?;
  let has_body = request.body.is_some();
  SERVING_HOPS.with(|hops| hops.set(Some(request.hops)));
  let resource = RequestResource {
    body: AsyncRefCell::new(request.body),
    reply: RefCell::new(Some(request.reply)),
    response_body: RefCell::new(None),
    complete: Arc::new(AtomicBool::new(false)),
    done: RefCell::new(Some(request.done)),
    client_gone: RefCell::new(Some(request.client_gone)),
  };
  let mut state = state.borrow_mut();
  let rid = state.resource_table.add(resource);
  if let Some(inbox) = state.try_borrow::<ServeInbox>() {
    *inbox.current.borrow_mut() = Some((rid, request.id));
  }
  Some((rid, request.method, request.url, request.headers, has_body))
}

/// The next request body chunk, or `null` at its end.
#[op2]
#[serde]
async fn op_serve_read(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
) -> Result<Option<ToJsBuffer>, ServeOpError> {
  let resource = state.borrow().resource_table.get::<RequestResource>(rid)?;
  let mut body = RcRef::map(resource, |r| &r.body).borrow_mut().await;
  let Some(receiver) = body.as_mut() else {
    return Ok(None);
  };
  match receiver.recv().await {
    Some(Ok(chunk)) => Ok(Some(chunk.to_vec().into())),
    Some(Err(e)) => {
      body.take();
      Err(e.into())
    }
    None => {
      body.take();
      Ok(None)
    }
  }
}

type Reply = oneshot::Sender<Result<ServeResponse, HandlerError>>;

/// The request and the channel its response head goes out on (once).
fn take_reply(
  state: &OpState,
  rid: ResourceId,
) -> Result<(Rc<RequestResource>, Reply), ServeOpError> {
  let resource = state.resource_table.get::<RequestResource>(rid)?;
  let reply = resource
    .reply
    .borrow_mut()
    .take()
    .ok_or(ServeOpError::AlreadyResponded)?;
  Ok((resource, reply))
}

/// Sends the response head. With `has_body`, the body follows through
/// `op_serve_write`.
#[op2]
fn op_serve_respond(
  state: &mut OpState,
  #[smi] rid: ResourceId,
  #[smi] status: u32,
  #[serde] headers: HeaderList,
  has_body: bool,
) -> Result<(), ServeOpError> {
  let status = u16::try_from(status).unwrap_or(u16::MAX);
  if !(200..=599).contains(&status) {
    return Err(ServeOpError::Status(status));
  }
  let (resource, reply) = take_reply(state, rid)?;
  let body = if has_body {
    // A small buffer: the handler runs ahead of the client by a few chunks
    // at most (back-pressure through op_serve_write).
    let (tx, rx) = mpsc::channel(4);
    *resource.response_body.borrow_mut() = Some(tx);
    Some(ResponseBody {
      chunks: rx,
      complete: resource.complete.clone(),
    })
  } else {
    None
  };
  // The host may have given up on the request (timeout, client gone); the
  // body writes then report it.
  let _ = reply.send(Ok(ServeResponse {
    status,
    headers,
    body,
    upgrade: None,
  }));
  Ok(())
}

/// Sends the `101 Switching Protocols` head of a WebSocket upgrade and
/// returns the rid of the server WebSocket (deno_websocket's resource) the
/// glue hands to the `socket` of `Deno.upgradeWebSocket`.
///
/// The isolate never sees the client's connection: it gets one end of a
/// socket pair, the host the other, and the host relays the upgraded
/// connection through it (`kiln-host`'s `websocket` module). So the
/// isolate's side is the same whatever the connection (TCP, TLS in front,
/// HTTP/1.1 through hyper's protocol detection).
#[op2]
#[smi]
fn op_serve_upgrade(
  state: &mut OpState,
  #[smi] rid: ResourceId,
  #[serde] headers: HeaderList,
) -> Result<ResourceId, ServeOpError> {
  let (_, reply) = take_reply(state, rid)?;
  let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
  ours.set_nonblocking(true)?;
  theirs.set_nonblocking(true)?;
  let ours = tokio::net::UnixStream::from_std(ours)?;
  let ws = deno_websocket::ws_create_server_stream(
    state,
    deno_net::raw::NetworkStream::Unix(ours),
    Bytes::new(),
  );
  // If the host gave up on the request its end is dropped with the reply:
  // the socket then reads end-of-stream and closes.
  let _ = reply.send(Ok(ServeResponse {
    status: 101,
    headers,
    body: None,
    upgrade: Some(theirs),
  }));
  Ok(ws)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455
/// section 4.2.2).
#[op2]
#[string]
fn op_serve_websocket_accept(#[string] key: &str) -> String {
  use base64::Engine as _;
  use sha1::Digest as _;
  let mut sha1 = sha1::Sha1::new();
  sha1.update(key.as_bytes());
  sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Writes one response body chunk; resolves `false` when nobody reads the
/// response any more (client gone), so the glue stops producing it.
#[op2]
async fn op_serve_write(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
  #[buffer] chunk: JsBuffer,
) -> Result<bool, ServeOpError> {
  let resource = state.borrow().resource_table.get::<RequestResource>(rid)?;
  let Some(sender) = resource.response_body.borrow().clone() else {
    return Ok(false);
  };
  Ok(sender.send(Ok(Bytes::from(chunk.to_vec()))).await.is_ok())
}

/// The handler failed: before the head this becomes the host's error
/// response; after it, the response is aborted.
#[op2]
async fn op_serve_error(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
  #[string] message: String,
) -> Result<(), ServeOpError> {
  let resource = state.borrow().resource_table.get::<RequestResource>(rid)?;
  let reply = resource.reply.borrow_mut().take();
  if let Some(reply) = reply {
    let _ = reply.send(Err(HandlerError(message)));
    return Ok(());
  }
  let sender = resource.response_body.borrow_mut().take();
  if let Some(sender) = sender {
    // An error item makes the host abort the response instead of ending it
    // as if it were complete.
    let _ = sender.send(Err(BodyError(message))).await;
  }
  Ok(())
}

/// The response is over (the client gets the end of the body now); `ok`
/// when the body was written in full. The request stays open for its
/// `waitUntil` work until [`op_serve_close`].
#[op2(fast)]
fn op_serve_finish(
  state: &mut OpState,
  #[smi] rid: ResourceId,
  ok: bool,
) -> Result<(), ServeOpError> {
  let resource = state.resource_table.get::<RequestResource>(rid)?;
  if ok {
    resource.complete.store(true, Ordering::Release);
  }
  // Dropping the sender ends the body (complete or aborted, as flagged).
  resource.response_body.borrow_mut().take();
  if let Some(reply) = resource.reply.borrow_mut().take() {
    // Finished without responding or failing: a bug in the glue, reported
    // instead of leaving the client waiting.
    let _ = reply.send(Err(HandlerError(
      "the handler finished without a response".to_string(),
    )));
  }
  Ok(())
}

/// The isolate is done with the request (its `waitUntil` work settled): the
/// host may send the next one.
#[op2(fast)]
fn op_serve_close(state: &mut OpState, #[smi] rid: ResourceId) -> Result<(), ServeOpError> {
  let resource = state.resource_table.take::<RequestResource>(rid)?;
  if let Some(inbox) = state.try_borrow::<ServeInbox>() {
    let mut current = inbox.current.borrow_mut();
    if current.as_ref().is_some_and(|(r, _)| *r == rid) {
      *current = None;
    }
  }
  drop(resource);
  Ok(())
}

/// Resolves `true` when the client went away before the response head,
/// `false` once that can no longer happen.
#[op2]
async fn op_serve_client_gone(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
) -> Result<bool, ServeOpError> {
  let resource = state.borrow().resource_table.get::<RequestResource>(rid)?;
  let gone = resource.client_gone.borrow_mut().take();
  drop(resource);
  Ok(match gone {
    Some(gone) => gone.await.is_ok(),
    None => false,
  })
}

/// An error escaped a handler: tell the host (with the request in flight)
/// instead of ending the isolate.
#[op2(fast)]
fn op_serve_unhandled(state: &mut OpState, #[string] message: &str) {
  if let Some(inbox) = state.try_borrow::<ServeInbox>() {
    let current = inbox.current.borrow();
    let id = current.as_ref().map(|(_, id)| &**id);
    inbox.observer.unhandled_error(id, message);
  }
}
