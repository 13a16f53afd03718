//! `kiln serve` end to end: the real binary on 127.0.0.1:0, a real HTTP
//! client (hyper), functions written to a temp directory.

use std::io::BufRead;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::Request;
use http::StatusCode;
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// A `kiln serve` process; killed on drop if still running.
pub(crate) struct Server {
  pub(crate) child: Child,
  pub(crate) addr: SocketAddr,
  /// Holds the functions and the log until the server is gone.
  _dir: tempfile::TempDir,
  stderr: PathBuf,
}

impl Server {
  pub(crate) fn start(functions: &[(&str, &str)], flags: &[&str], env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let fns = dir.path().join("functions");
    std::fs::create_dir(&fns).unwrap();
    for (name, source) in functions {
      std::fs::write(fns.join(name), source).unwrap();
    }
    Server::start_dir(dir, &fns, flags, env)
  }

  /// Serves `fns`; `dir` receives the log.
  pub(crate) fn start_dir(
    dir: tempfile::TempDir,
    fns: &std::path::Path,
    flags: &[&str],
    env: &[(&str, &str)],
  ) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    Server::serve_args(&mut cmd, fns, flags, env);
    // Baked snapshots go to the test's own directory, never into the
    // user's cache or the served tree.
    if !flags.contains(&"--cache-dir") && !flags.contains(&"--no-snapshot") {
      cmd.arg("--cache-dir").arg(dir.path().join("kiln-cache"));
    }
    Server::spawn(dir, cmd)
  }

  /// Adds `serve <fns> --listen 127.0.0.1:0 <flags>` and the environment.
  pub(crate) fn serve_args(
    cmd: &mut Command,
    fns: &std::path::Path,
    flags: &[&str],
    env: &[(&str, &str)],
  ) {
    cmd
      .arg("serve")
      .arg(fns)
      .args(["--listen", "127.0.0.1:0"])
      .args(flags)
      .env("NO_COLOR", "1")
      .env_remove("KILN_CRON_TEST_SCHEDULE_OFFSET")
      .env_remove("KILN_CRON_TEST_TIME_SCALE")
      .env_remove("KILN_CRON_STORE");

    for (k, v) in env {
      cmd.env(k, v);
    }
  }

  /// Runs a prepared `kiln serve` command; `dir` receives the log.
  pub(crate) fn spawn(dir: tempfile::TempDir, mut cmd: Command) -> Server {
    let stderr = dir.path().join("stderr.log");
    cmd
      .stdout(Stdio::piped())
      .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
      let mut line = String::new();
      let _ = BufReader::new(stdout).read_line(&mut line);
      let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let Some(addr) = line.trim().strip_prefix("kiln serve: listening on http://") else {
      let _ = child.kill();
      panic!(
        "no listening line (got {line:?}); stderr:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
      );
    };
    let addr = addr.parse().unwrap();
    Server {
      child,
      addr,
      _dir: dir,
      stderr,
    }
  }

  pub(crate) fn stderr(&self) -> String {
    std::fs::read_to_string(&self.stderr).unwrap_or_default()
  }

  pub(crate) fn sigterm(&self) {
    let status = Command::new("kill")
      .args(["-TERM", &self.child.id().to_string()])
      .status()
      .unwrap();
    assert!(status.success());
  }

  pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
    let response = send(self.addr, request("GET", path, empty())).await;
    let status = response.status();
    (status, text(response).await)
  }

  pub(crate) async fn metrics(&self) -> String {
    self.get("/_kiln/metrics").await.1
  }

  /// Waits (up to 5 s) for `kiln_requests_in_flight` to drop to 0: it drops
  /// when the isolate is done with a request, a moment after the client has
  /// the whole response.
  pub(crate) async fn wait_until_nothing_in_flight(&self) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&self.metrics().await, "kiln_requests_in_flight") != 0.0 {
      assert!(Instant::now() < deadline, "requests stay in flight");
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }
}

impl Drop for Server {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn empty() -> Body {
  Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
  Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A request body fed chunk by chunk from a channel (chunked encoding).
pub(crate) struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
  type Data = Bytes;
  type Error = std::io::Error;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
    self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
  }
}

pub(crate) fn request(method: &str, path: &str, body: Body) -> Request<Body> {
  Request::builder()
    .method(method)
    .uri(path)
    .header("host", "kiln.test")
    .body(body)
    .unwrap()
}

pub(crate) async fn send(addr: SocketAddr, request: Request<Body>) -> http::Response<Incoming> {
  let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
  let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
    .await
    .unwrap();
  tokio::spawn(connection);
  sender.send_request(request).await.unwrap()
}

pub(crate) async fn text(response: http::Response<Incoming>) -> String {
  let bytes = response.into_body().collect().await.unwrap().to_bytes();
  String::from_utf8_lossy(&bytes).into_owned()
}

/// The `error` field of a host's JSON error body.
pub(crate) fn error_of(body: &str) -> String {
  let value: serde_json::Value =
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
  value["error"].as_str().unwrap_or_default().to_string()
}

/// The value of a metrics line (`name{labels}`), 0 when absent.
pub(crate) fn metric(metrics: &str, series: &str) -> f64 {
  metrics
    .lines()
    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    .unwrap_or(0.0)
}

pub(crate) const HELLO: &str = r#"
export default {
  fetch(request: Request): Response {
    const url = new URL(request.url);
    return new Response(`hello from ${url.pathname} at ${url.host}\n`, {
      headers: { "x-kiln": "yes" },
    });
  },
};
"#;

#[tokio::test]
async fn hello_function_health_and_404() {
  let server = Server::start(&[("hello.ts", HELLO)], &[], &[]);
  let response = send(server.addr, request("GET", "/hello/sub?x=1", empty())).await;
  assert_eq!(response.status(), StatusCode::OK);
  assert_eq!(response.headers()["x-kiln"], "yes");
  assert_eq!(text(response).await, "hello from /hello/sub at kiln.test\n");

  assert_eq!(
    server.get("/_kiln/health").await,
    (StatusCode::OK, "ok\n".into())
  );
  let (status, body) = server.get("/nope").await;
  assert_eq!(status, StatusCode::NOT_FOUND);
  assert_eq!(error_of(&body), "no function serves /nope");
  assert_eq!(server.get("/").await.0, StatusCode::NOT_FOUND);
  let mut bad_host = request("GET", "/hello", empty());
  bad_host
    .headers_mut()
    .insert("host", "not a host/..".parse().unwrap());
  let response = send(server.addr, bad_host).await;
  assert_eq!(response.status(), StatusCode::BAD_REQUEST);
  assert!(text(response).await.contains("invalid Host header"));

  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_requests_total{function="hello",status="200"}"#
    ),
    1.0
  );
  assert_eq!(
    metric(&metrics, r#"kiln_requests_total{function="",status="404"}"#),
    2.0
  );
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_requests_total{function="hello",status="400"}"#
    ),
    1.0
  );
  assert!(
    server.stderr().contains("GET /hello/sub 200 hello"),
    "{}",
    server.stderr()
  );
}

#[tokio::test]
async fn json_echo_with_a_streamed_request_body() {
  let echo = r#"
    export default {
      async fetch(request: Request) {
        const chunks: number[] = [];
        const reader = request.body!.getReader();
        const parts: Uint8Array[] = [];
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          chunks.push(value.length);
          parts.push(value);
        }
        const all = new Uint8Array(chunks.reduce((a, b) => a + b, 0));
        let at = 0;
        for (const p of parts) { all.set(p, at); at += p.length; }
        const json = JSON.parse(new TextDecoder().decode(all));
        return Response.json({ json, method: request.method, chunks: chunks.length,
          type: request.headers.get("content-type") });
      },
    };
  "#;
  let server = Server::start(&[("echo.ts", echo)], &[], &[]);
  let (tx, rx) = mpsc::channel(1);
  let body = BodyExt::boxed(ChannelBody(rx));
  let mut req = request("POST", "/echo", body);
  req
    .headers_mut()
    .insert("content-type", "application/json".parse().unwrap());
  let feeder = tokio::spawn(async move {
    for part in [r#"{"greeting": "#, r#""hi", "n": [1, "#, r#"2, 3]}"#] {
      tx.send(Bytes::from(part)).await.unwrap();
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
  });
  let response = send(server.addr, req).await;
  feeder.await.unwrap();
  assert_eq!(response.status(), StatusCode::OK);
  let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
  assert_eq!(
    body["json"],
    serde_json::json!({"greeting": "hi", "n": [1, 2, 3]})
  );
  assert_eq!(body["method"], "POST");
  assert_eq!(body["type"], "application/json");
  // The body arrived in pieces, as it was sent.
  assert!(body["chunks"].as_u64().unwrap() >= 2, "{body}");
}

#[tokio::test]
async fn streamed_response_arrives_chunk_by_chunk() {
  let stream = r#"
    export default {
      fetch() {
        const enc = new TextEncoder();
        let i = 0;
        const body = new ReadableStream({
          async pull(controller) {
            if (i > 0) await new Promise((r) => setTimeout(r, 300));
            if (i === 3) { controller.close(); return; }
            controller.enqueue(enc.encode(`part ${i++}\n`));
          },
        });
        return new Response(body, { headers: { "content-type": "text/plain" } });
      },
    };
  "#;
  let server = Server::start(&[("stream.ts", stream)], &[], &[]);
  let response = send(server.addr, request("GET", "/stream", empty())).await;
  assert_eq!(response.status(), StatusCode::OK);
  let mut body = response.into_body();
  let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
  let first_at = Instant::now();
  assert_eq!(first, "part 0\n");
  let mut rest = Vec::new();
  while let Some(frame) = body.frame().await {
    if let Ok(data) = frame.unwrap().into_data() {
      rest.extend_from_slice(&data);
    }
  }
  // The first chunk was delivered before the function produced the others.
  assert!(first_at.elapsed() >= Duration::from_millis(500));
  assert_eq!(String::from_utf8(rest).unwrap(), "part 1\npart 2\n");
}

#[tokio::test]
async fn functions_that_fail_to_load_are_isolated() {
  let server = Server::start(
    &[
      ("hello.ts", HELLO),
      ("broken.ts", "export default { fetch( => 1 };\n"),
      ("throws.ts", "throw new Error(\"no config\");\n"),
      ("nofetch.ts", "export default { hello: 1 };\n"),
    ],
    &["--expose-errors"],
    &[],
  );
  let (status, body) = server.get("/broken").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  let error: serde_json::Value = serde_json::from_str(&body).unwrap();
  let message = error["error"].as_str().unwrap();
  assert!(
    message.starts_with("function 'broken' failed to load: SyntaxError"),
    "{message}"
  );
  assert!(message.contains("broken.ts:1:"), "{message}");

  let (status, body) = server.get("/throws").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(
    body.contains("function 'throws' failed to load: Error: no config"),
    "{body}"
  );

  let (status, body) = server.get("/nofetch").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(
    body.contains("the module has no default export with a fetch(request) method"),
    "{body}"
  );

  let (status, body) = server.get("/hello").await;
  assert_eq!(
    (status, body.as_str()),
    (StatusCode::OK, "hello from /hello at kiln.test\n")
  );
  let log = server.stderr();
  assert!(
    log.contains("function 'broken' failed to load: SyntaxError"),
    "{log}"
  );
}

#[tokio::test]
async fn handler_errors_are_500_with_the_error() {
  let bad = r#"
    export default {
      fetch(request: Request) {
        if (request.url.endsWith("/type")) return "not a response";
        throw new RangeError("out of range");
      },
    };
  "#;
  let server = Server::start(&[("bad.ts", bad)], &["--expose-errors"], &[]);
  let (status, body) = server.get("/bad").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(
    error_of(&body).starts_with("RangeError: out of range"),
    "{body}"
  );
  assert!(body.contains("bad.ts:5:15"), "source-mapped frame: {body}");
  assert!(
    !body.contains("ext:kiln_serve"),
    "host frames are hidden: {body}"
  );
  let (status, body) = server.get("/bad/type").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(body.contains("must return a Response"), "{body}");
}

#[tokio::test]
async fn infinite_loop_gets_504_within_the_timeout_and_the_function_recovers() {
  let spin = r#"
    export default {
      fetch(request: Request) {
        if (new URL(request.url).searchParams.has("spin")) { while (true) {} }
        return new Response("alive");
      },
    };
  "#;
  let server = Server::start(
    &[("spin.ts", spin), ("hello.ts", HELLO)],
    &["--timeout-ms", "500"],
    &[],
  );
  let started = Instant::now();
  let (status, body) = server.get("/spin?spin").await;
  let elapsed = started.elapsed();
  assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
  assert_eq!(error_of(&body), "function 'spin' timed out after 500 ms");
  assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
  assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
  assert_eq!(server.get("/spin").await, (StatusCode::OK, "alive".into()));
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_terminations_total{function="spin",cause="timeout"}"#
    ),
    1.0
  );
}

#[tokio::test]
async fn heap_exhaustion_gets_500_and_the_function_recovers() {
  let eat = r#"
    export default {
      fetch(request: Request) {
        const query = new URL(request.url).searchParams;
        if (query.has("eat")) {
          const hoard: number[][] = [];
          while (true) hoard.push(new Array(100_000).fill(1.5));
        }
        if (query.has("buffers")) {
          // ArrayBuffer contents live outside the V8 heap; capped too.
          const hoard: Uint8Array[] = [];
          while (true) hoard.push(new Uint8Array(8 << 20));
        }
        return new Response("fine");
      },
    };
  "#;
  let server = Server::start(
    &[("eat.ts", eat), ("hello.ts", HELLO)],
    &["--max-heap-mb", "32", "--expose-errors"],
    &[],
  );
  let (status, body) = server.get("/eat?eat").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(
    body.contains("function 'eat' ran out of memory (limit 32 MiB)"),
    "{body}"
  );
  assert_eq!(server.get("/eat").await, (StatusCode::OK, "fine".into()));
  // Past the ArrayBuffer cap V8's last-resort GC reaches the heap-limit
  // callback: the same outcome, the process unharmed.
  let (status, body) = server.get("/eat?buffers").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  assert!(
    body.contains("function 'eat' ran out of memory (limit 32 MiB)"),
    "{body}"
  );
  assert_eq!(server.get("/eat").await, (StatusCode::OK, "fine".into()));
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_terminations_total{function="eat",cause="out_of_memory"}"#
    ),
    2.0
  );
}

#[tokio::test]
async fn request_body_over_the_limit_gets_413() {
  let echo = r#"
    export default { async fetch(r: Request) { return new Response(String((await r.arrayBuffer()).byteLength)); } };
  "#;
  let server = Server::start(&[("size.ts", echo)], &["--max-body-bytes", "1000"], &[]);
  // Declared length.
  let response = send(
    server.addr,
    request("POST", "/size", full(vec![b'x'; 1001])),
  )
  .await;
  assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
  assert_eq!(
    error_of(&text(response).await),
    "request body exceeds the limit of 1000 bytes"
  );
  // Chunked: found out while streaming.
  let (tx, rx) = mpsc::channel(4);
  let feeder = tokio::spawn(async move {
    for _ in 0..4 {
      if tx.send(Bytes::from(vec![b'y'; 400])).await.is_err() {
        break;
      }
    }
  });
  let response = send(
    server.addr,
    request("POST", "/size", BodyExt::boxed(ChannelBody(rx))),
  )
  .await;
  assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
  feeder.abort();
  // At the limit is fine.
  let response = send(
    server.addr,
    request("POST", "/size", full(vec![b'x'; 1000])),
  )
  .await;
  assert_eq!(response.status(), StatusCode::OK);
  assert_eq!(text(response).await, "1000");
}

#[tokio::test]
async fn concurrent_requests_to_several_functions() {
  // Each instance names itself once, at module load.
  let slow = |name: &str| {
    format!(
      r#"
      // Top-level code is baked once for all instances: an instance's own
      // identity is made at run time.
      let instance: string | undefined;
      export default {{
        async fetch(request: Request) {{
          instance ??= Math.random().toString(36).slice(2);
          await new Promise((r) => setTimeout(r, 400));
          const i = new URL(request.url).searchParams.get("i");
          return Response.json({{ function: "{name}", i, instance }});
        }},
      }};
    "#
    )
  };
  let (a, b, c) = (slow("a"), slow("b"), slow("c"));
  let server = Server::start(
    &[("a.ts", &a), ("b.ts", &b), ("c.ts", &c)],
    &["--max-instances", "2"],
    &[],
  );
  let mut tasks = Vec::new();
  for i in 0..12 {
    let name = ["a", "b", "c"][i % 3];
    let addr = server.addr;
    tasks.push(tokio::spawn(async move {
      let response = send(addr, request("GET", &format!("/{name}?i={i}"), empty())).await;
      (name, i, response.status(), text(response).await)
    }));
  }
  let mut instances: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
    Default::default();
  for task in tasks {
    let (name, i, status, body) = task.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["function"], name);
    assert_eq!(body["i"], i.to_string());
    instances
      .entry(name)
      .or_default()
      .insert(body["instance"].as_str().unwrap().to_string());
  }
  // 4 concurrent requests per function: served by exactly --max-instances
  // isolates each, no more.
  let metrics = server.metrics().await;
  for f in ["a", "b", "c"] {
    assert_eq!(instances[f].len(), 2, "{f}: {:?}", instances[f]);
    let starts = metric(
      &metrics,
      &format!(r#"kiln_instance_starts_total{{function="{f}",result="ok"}}"#),
    );
    assert_eq!(starts, 2.0, "{f}\n{metrics}");
  }
}

#[tokio::test]
async fn cron_jobs_run_in_the_function_and_show_in_metrics() {
  let ticker = r#"
    let runs = 0;
    Deno.cron("tick", "* * * * *", () => { runs++; });
    Deno.cron("fail", "*/5 * * * *", { backoffSchedule: [] }, () => { throw new Error("cron failure"); });
    export default { fetch: () => Response.json({ runs }) };
  "#;
  let server = Server::start(
    &[("ticker.ts", ticker)],
    // One instance (the cron owner) answers every request.
    &["--max-instances", "3", "--warm-instances", "0"],
    &[("KILN_CRON_TEST_SCHEDULE_OFFSET", "50")],
  );
  let deadline = Instant::now() + Duration::from_secs(10);
  let runs = loop {
    let (status, body) = server.get("/ticker").await;
    assert_eq!(status, StatusCode::OK);
    let runs = serde_json::from_str::<serde_json::Value>(&body).unwrap()["runs"]
      .as_u64()
      .unwrap();
    if runs >= 3 || Instant::now() > deadline {
      break runs;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
  };
  assert!(runs >= 3, "cron ran {runs} times");
  let metrics = server.metrics().await;
  let total = metric(&metrics, r#"kiln_cron_runs_total{function="ticker"}"#);
  let failures = metric(&metrics, r#"kiln_cron_failures_total{function="ticker"}"#);
  assert!(total >= 3.0, "{metrics}");
  assert!(failures >= 1.0, "{metrics}");
}

#[tokio::test]
async fn graceful_shutdown_drains_an_in_flight_request() {
  let slow = r#"
    export default {
      async fetch() {
        await new Promise((r) => setTimeout(r, 600));
        return new Response("finished");
      },
    };
  "#;
  let mut server = Server::start(&[("slow.ts", slow)], &[], &[]);
  let addr = server.addr;
  let in_flight = tokio::spawn(async move {
    let response = send(addr, request("GET", "/slow", empty())).await;
    (response.status(), text(response).await)
  });
  tokio::time::sleep(Duration::from_millis(200)).await;
  server.sigterm();
  let (status, body) = in_flight.await.unwrap();
  assert_eq!((status, body.as_str()), (StatusCode::OK, "finished"));
  let exit = tokio::task::spawn_blocking(move || {
    let status = server.child.wait().unwrap();
    (status, server.stderr())
  })
  .await
  .unwrap();
  assert_eq!(exit.0.code(), Some(0), "{}", exit.1);
  assert!(exit.1.contains("shutting down"), "{}", exit.1);
  // No longer listening.
  assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn functions_can_fetch_over_loopback() {
  let proxy = r#"
    export default {
      async fetch(request: Request) {
        const origin = new URL(request.url).origin;
        const upstream = await fetch(`${origin}/hello/from-proxy`);
        return new Response(`proxied ${upstream.status}: ${await upstream.text()}`);
      },
    };
  "#;
  let server = Server::start(&[("proxy.ts", proxy), ("hello.ts", HELLO)], &[], &[]);
  // The function fetches through the Host header's origin: point it at us.
  let mut req = request("GET", "/proxy", empty());
  req
    .headers_mut()
    .insert("host", server.addr.to_string().parse().unwrap());
  let response = send(server.addr, req).await;
  assert_eq!(response.status(), StatusCode::OK);
  assert_eq!(
    text(response).await,
    format!(
      "proxied 200: hello from /hello/from-proxy at {}\n",
      server.addr
    )
  );
}

#[tokio::test]
async fn a_taken_warm_instance_is_replaced_and_warm_ones_outlive_the_idle_timeout() {
  let server = Server::start(
    &[("hello.ts", HELLO)],
    &["--idle-timeout", "200ms", "--max-instances", "4"],
    &[],
  );
  let starts = |metrics: &str| {
    metric(
      metrics,
      r#"kiln_instance_starts_total{function="hello",result="ok"}"#,
    )
  };
  // The warm instance started with the host serves the first request ...
  let deadline = Instant::now() + Duration::from_secs(20);
  while starts(&server.metrics().await) < 1.0 {
    assert!(Instant::now() < deadline, "{}", server.stderr());
    tokio::time::sleep(Duration::from_millis(20)).await;
  }
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  // ... and another one is started in the background to replace it.
  while starts(&server.metrics().await) < 2.0 {
    assert!(Instant::now() < deadline, "{}", server.metrics().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
  }
  // Past the idle timeout, one warm instance stays.
  tokio::time::sleep(Duration::from_millis(800)).await;
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_instances{function="hello"}"#),
    1.0,
    "{metrics}"
  );
  assert_eq!(starts(&metrics), 2.0, "{metrics}");
}

#[tokio::test]
async fn idle_instances_are_evicted_and_restarted_on_demand() {
  let cron = r#"
    Deno.cron("keep", "0 0 1 1 *", () => {});
    export default { fetch: () => new Response("cron") };
  "#;
  let server = Server::start(
    &[("hello.ts", HELLO), ("cron.ts", cron)],
    &["--idle-timeout", "200ms", "--warm-instances", "0"],
    &[],
  );
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  tokio::time::sleep(Duration::from_millis(800)).await;
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_instances{function="hello"}"#),
    0.0,
    "{metrics}"
  );
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_terminations_total{function="hello",cause="idle"}"#
    ),
    1.0
  );
  // The instance that runs the cron job stays.
  assert_eq!(
    metric(&metrics, r#"kiln_instances{function="cron"}"#),
    1.0,
    "{metrics}"
  );
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_starts_total{function="hello",result="ok"}"#
    ),
    2.0
  );
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
  let server = Server::start(&[("hello.ts", HELLO)], &[], &[]);
  let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
  let (mut sender, connection) = hyper::client::conn::http2::handshake(
    hyper_util::rt::TokioExecutor::new(),
    TokioIo::new(stream),
  )
  .await
  .unwrap();
  tokio::spawn(connection);
  let uri = format!("http://{}/hello", server.addr);
  let request = Request::get(uri).body(empty()).unwrap();
  let response = sender.send_request(request).await.unwrap();
  assert_eq!(response.version(), http::Version::HTTP_2);
  assert_eq!(response.status(), StatusCode::OK);
  assert_eq!(
    text(response).await,
    format!("hello from /hello at {}\n", server.addr)
  );
}

#[tokio::test]
async fn the_example_functions_work() {
  let examples = crate::repo_root().join("examples/functions");
  let server = Server::start_dir(tempfile::tempdir().unwrap(), &examples, &[], &[]);
  assert_eq!(
    server.get("/hello?name=tests").await,
    (StatusCode::OK, "Hello from tests!\n".into())
  );
  let response = send(
    server.addr,
    request("POST", "/api/echo", full(r#"{"a":[1,2]}"#)),
  )
  .await;
  assert_eq!(response.status(), StatusCode::OK);
  assert_eq!(
    text(response).await,
    r#"{"received":{"a":[1,2]},"method":"POST","path":"/api/echo"}"#
  );
  let (status, body) = server.get("/api/missing").await;
  assert_eq!(
    (status, body.as_str()),
    (
      StatusCode::NOT_FOUND,
      r#"{"error":"no route /api/missing"}"#
    )
  );
  // The job runs on the minute; the count depends on the wall clock.
  let (status, body) = server.get("/ticker").await;
  assert_eq!(status, StatusCode::OK);
  let ticker: serde_json::Value = serde_json::from_str(&body).unwrap();
  assert!(
    ticker["runs"].is_u64() && ticker.get("last").is_some(),
    "{body}"
  );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_does_not_cost_the_instance() {
  let slow = r#"
    export default {
      async fetch() {
        await new Promise((r) => setTimeout(r, 300));
        return new Response("done");
      },
    };
  "#;
  let server = Server::start(&[("slow.ts", slow)], &["--max-instances", "1"], &[]);
  let addr = server.addr;
  let abandoned = tokio::spawn(async move { send(addr, request("GET", "/slow", empty())).await });
  tokio::time::sleep(Duration::from_millis(100)).await;
  abandoned.abort();
  let _ = abandoned.await;
  tokio::time::sleep(Duration::from_millis(400)).await;
  assert_eq!(server.get("/slow").await, (StatusCode::OK, "done".into()));
  let metrics = server.metrics().await;
  // The instance went back to the pool: no second start, nothing discarded.
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_starts_total{function="slow",result="ok"}"#
    ),
    1.0,
    "{metrics}"
  );
  assert_eq!(metric(&metrics, r#"kiln_instances{function="slow"}"#), 1.0);
  server.wait_until_nothing_in_flight().await;
}

#[tokio::test]
async fn waiting_too_long_for_a_busy_instance_gets_503() {
  let slow = r#"
    export default {
      async fetch() {
        await new Promise((r) => setTimeout(r, 350));
        return new Response("done");
      },
    };
  "#;
  let server = Server::start(
    &[("slow.ts", slow)],
    &["--max-instances", "1", "--timeout-ms", "600"],
    &[],
  );
  let mut tasks = Vec::new();
  for _ in 0..3 {
    let addr = server.addr;
    tasks.push(tokio::spawn(async move {
      let response = send(addr, request("GET", "/slow", empty())).await;
      (response.status(), text(response).await)
    }));
  }
  let mut results = Vec::new();
  for task in tasks {
    results.push(task.await.unwrap());
  }
  results.sort();
  assert_eq!(results[0], (StatusCode::OK, "done".into()));
  assert_eq!(results[1], (StatusCode::OK, "done".into()));
  assert_eq!(results[2].0, StatusCode::SERVICE_UNAVAILABLE);
  assert_eq!(
    error_of(&results[2].1),
    "function 'slow': all 1 instances stayed busy for 600 ms"
  );
}

/// Runs `kiln serve <dir> <flags>`, which must refuse to start (exit 1);
/// returns its stderr.
pub(crate) fn serve_refused(dir: &std::path::Path, flags: &[&str]) -> String {
  let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
    .arg("serve")
    .arg(dir)
    .args(["--listen", "127.0.0.1:0"])
    .args(flags)
    .env("NO_COLOR", "1")
    .output()
    .unwrap();
  let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
  assert_eq!(output.status.code(), Some(1), "{stderr}");
  stderr
}

#[test]
fn a_heap_limit_too_small_to_start_is_refused_up_front() {
  let dir = tempfile::tempdir().unwrap();
  std::fs::write(dir.path().join("hello.ts"), HELLO).unwrap();
  let stderr = serve_refused(dir.path(), &["--max-heap-mb", "4"]);
  assert!(
    stderr.contains("error: --max-heap-mb must be at least 16"),
    "{stderr}"
  );
}
