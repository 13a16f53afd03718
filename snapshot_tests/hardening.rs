//! `kiln serve` under hostile functions and clients: module confinement,
//! cross-request isolation, request lifecycle, connection hygiene, paths,
//! error bodies, start-up and readiness. The real binary on 127.0.0.1:0.

use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use http::StatusCode;

use crate::serve::HELLO;
use crate::serve::Server;
use crate::serve::empty;
use crate::serve::error_of;
use crate::serve::metric;
use crate::serve::request;
use crate::serve::send;
use crate::serve::text;

/// Imports `?s=<specifier>` (with `&json` as a JSON module) and answers
/// with the default export, or 400 with the error.
const IMPORTER: &str = r#"
export default {
  async fetch(request: Request): Promise<Response> {
    const query = new URL(request.url).searchParams;
    const specifier = query.get("s") ?? "";
    try {
      const module = query.has("json")
        ? await import(specifier, { with: { type: "json" } })
        : await import(specifier);
      return new Response(`loaded ${JSON.stringify(module.default ?? null)}`);
    } catch (e) {
      return new Response(`${(e as Error).name}: ${(e as Error).message}`, { status: 400 });
    }
  },
};
"#;

fn write(path: &Path, text: &str) {
  if let Some(parent) = path.parent() {
    std::fs::create_dir_all(parent).unwrap();
  }
  std::fs::write(path, text).unwrap();
}

/// A served directory `<tmp>/functions` with the importer, plus a secret
/// module beside it (outside the tree).
fn confined_server(flags: &[&str]) -> (Server, std::path::PathBuf) {
  let dir = tempfile::tempdir().unwrap();
  let root = dir.path().to_path_buf();
  let fns = root.join("functions");
  write(&fns.join("imp.ts"), IMPORTER);
  write(&fns.join("hello.ts"), HELLO);
  write(&fns.join("lib/util.ts"), "export default 'util inside';\n");
  write(&fns.join("lib/data.json"), "{\"inside\": true}\n");
  write(
    &fns.join("lib/big.js"),
    &format!("export default '{}';\n", "b".repeat(2000)),
  );
  write(&root.join("secret.ts"), "export default 'the secret';\n");
  write(&root.join("secret.json"), "{\"secret\": 1}\n");
  std::os::unix::fs::symlink(root.join("secret.ts"), fns.join("lib/link.ts")).unwrap();
  let made = Command::new("mkfifo")
    .arg(fns.join("lib/fifo.js"))
    .status()
    .unwrap();
  assert!(made.success());
  let server = Server::start_dir(dir, &fns, flags, &[]);
  (server, root)
}

/// Percent-encodes a query value.
fn q(value: &str) -> String {
  value
    .bytes()
    .map(|b| match b {
      b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
        (b as char).to_string()
      }
      _ => format!("%{b:02X}"),
    })
    .collect()
}

fn rss_kib(pid: u32) -> u64 {
  let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
  status
    .lines()
    .find_map(|l| l.strip_prefix("VmRSS:"))
    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    .unwrap_or(0)
}

#[tokio::test]
async fn functions_load_modules_only_from_their_directory() {
  let (server, root) = confined_server(&["--max-module-bytes", "1000"]);
  let import = |spec: &str| format!("/imp?s={}", q(spec));

  // Inside the tree: fine.
  assert_eq!(
    server.get(&import("./lib/util.ts")).await,
    (StatusCode::OK, "loaded \"util inside\"".into())
  );
  assert_eq!(
    server
      .get(&format!("{}&json", import("./lib/data.json")))
      .await,
    (StatusCode::OK, "loaded {\"inside\":true}".into())
  );

  // Outside, missing, or not a regular file: one error, naming only the
  // specifier as written.
  let secret = root.join("secret.ts");
  let secret_url = format!("file://{}", secret.display());
  for spec in [
    "../secret.ts",
    "../missing.ts",
    secret.to_str().unwrap(),
    secret_url.as_str(),
    "./lib/link.ts",
    "./lib/fifo.js",
    "./lib/nothing.js",
  ] {
    let (status, body) = server.get(&import(spec)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {body}");
    assert_eq!(
      body,
      format!("TypeError: module not found or not allowed: {spec}"),
      "{spec}"
    );
  }
  // JSON outside the tree reads the same as anything else outside.
  let (_, body) = server
    .get(&format!("{}&json", import("../secret.json")))
    .await;
  assert_eq!(
    body,
    "TypeError: module not found or not allowed: ../secret.json"
  );
  // JSON needs the import attribute (decided before the file is looked at).
  let (status, body) = server.get(&import("./lib/data.json")).await;
  assert_eq!(status, StatusCode::BAD_REQUEST);
  assert!(
    body.contains("JSON modules must be imported with { type: \"json\" }"),
    "{body}"
  );
  // Over --max-module-bytes.
  let (_, body) = server.get(&import("./lib/big.js")).await;
  assert!(
    body.contains("larger than the limit of 1000 bytes"),
    "{body}"
  );
}

#[tokio::test]
async fn special_files_cannot_hang_or_bloat_the_host() {
  let (server, _root) = confined_server(&[]);
  let pid = server.child.id();
  let before = rss_kib(pid);
  let started = Instant::now();
  for spec in ["/dev/zero", "/dev/stdin", "/dev/zero.js", "./lib/fifo.js"] {
    let (status, body) = server.get(&format!("/imp?s={}", q(spec))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {body}");
  }
  assert!(
    started.elapsed() < Duration::from_secs(10),
    "{:?}",
    started.elapsed()
  );
  // The next request is served, and nothing was read into memory.
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  let grown = rss_kib(pid).saturating_sub(before);
  assert!(grown < 200 * 1024, "host RSS grew by {grown} KiB");
}

#[tokio::test]
async fn an_error_escaping_one_request_never_reaches_another() {
  let leaky = r#"
    export default {
      fetch(request: Request): Response {
        const n = new URL(request.url).searchParams.get("n");
        if (n !== null) {
          Promise.reject(new Error(`rejected-secret-${n}`));
          setTimeout(() => { throw new Error(`timer-secret-${n}`); }, 0);
          queueMicrotask(() => { throw new Error(`microtask-secret-${n}`); });
          return new Response("dirty");
        }
        return new Response("clean");
      },
    };
  "#;
  let server = Server::start(&[("leaky.ts", leaky)], &["--max-instances", "1"], &[]);
  for i in 0..20 {
    let (status, body) = server.get(&format!("/leaky?n={i}")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "dirty"), "{i}");
    let (status, body) = server.get("/leaky").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "clean"), "{i}");
  }
  // Let the last timer fire, then count.
  tokio::time::sleep(Duration::from_millis(100)).await;
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_unhandled_errors_total{function="leaky"}"#),
    60.0,
    "{metrics}"
  );
  // The instance kept serving: no restart.
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_starts_total{function="leaky",result="ok"}"#
    ),
    1.0
  );
  let log = server.stderr();
  let line = log
    .lines()
    .find(|l| l.contains("rejected-secret-7"))
    .unwrap_or_else(|| panic!("{log}"));
  assert!(line.contains("leaky"), "{line}");
  assert!(line.contains("request_id="), "{line}");
}

#[tokio::test]
async fn a_disconnecting_client_aborts_the_request_signal_and_is_logged_as_499() {
  let waiter = r#"
    let aborted = 0;
    export default {
      async fetch(request: Request): Promise<Response> {
        if (new URL(request.url).pathname === "/waiter/count") {
          return new Response(String(aborted));
        }
        await new Promise<void>((resolve) => {
          request.signal.addEventListener("abort", () => { aborted++; resolve(); });
        });
        return new Response("never sent");
      },
    };
  "#;
  let server = Server::start(&[("waiter.ts", waiter)], &["--max-instances", "1"], &[]);
  let addr = server.addr;
  let abandoned = tokio::spawn(async move { send(addr, request("GET", "/waiter", empty())).await });
  tokio::time::sleep(Duration::from_millis(300)).await;
  abandoned.abort();
  let _ = abandoned.await;
  // The handler settles on the abort, so the one instance is free again.
  let deadline = Instant::now() + Duration::from_secs(5);
  loop {
    let (status, body) = server.get("/waiter/count").await;
    assert_eq!(status, StatusCode::OK);
    if body == "1" {
      break;
    }
    assert!(Instant::now() < deadline, "signal never aborted: {body}");
    tokio::time::sleep(Duration::from_millis(50)).await;
  }
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_requests_total{function="waiter",status="499"}"#
    ),
    1.0,
    "{metrics}"
  );
  server.wait_until_nothing_in_flight().await;
  let log = server.stderr();
  assert!(log.contains("GET /waiter 499 waiter"), "{log}");
}

#[tokio::test]
async fn a_function_fetching_itself_ends_in_508() {
  let looper = r#"
    export default {
      async fetch(request: Request): Promise<Response> {
        const inner = await fetch(request.url);
        return new Response(await inner.text(), { status: inner.status });
      },
    };
  "#;
  // No warm instances: the starts counted below are the hops' own.
  let server = Server::start(
    &[("loop.ts", looper)],
    &["--max-instances", "12", "--warm-instances", "0"],
    &[],
  );
  let mut req = request("GET", "/loop", empty());
  req
    .headers_mut()
    .insert("host", server.addr.to_string().parse().unwrap());
  let response = send(server.addr, req).await;
  assert_eq!(response.status(), StatusCode::LOOP_DETECTED);
  let body = text(response).await;
  assert!(error_of(&body).starts_with("loop detected"), "{body}");
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_requests_total{function="loop",status="508"}"#
    ),
    10.0,
    "the 9th hop is refused, and each of the 9 levels passes it on: {metrics}"
  );
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_starts_total{function="loop",result="ok"}"#
    ),
    9.0,
    "{metrics}"
  );
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing() {
  let echo = r#"
    export default {
      fetch: (request: Request) => new Response(`echo ${new URL(request.url).pathname}`),
    };
  "#;
  let server = Server::start(&[("echo.ts", echo), ("hello.ts", HELLO)], &[], &[]);
  let (status, body) = server.get("/echo/../../etc/passwd").await;
  assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
  assert!(error_of(&body).contains("climbs above the root"), "{body}");
  assert_eq!(
    server.get("/echo/%2e%2e/%2E%2E/x").await.0,
    StatusCode::BAD_REQUEST
  );
  assert_eq!(
    server.get("/echo/a/./b/../c?x=1").await,
    (StatusCode::OK, "echo /echo/a/c".into())
  );
  assert_eq!(
    server.get("/echo/%2e%2e/hello/x").await,
    (StatusCode::OK, "hello from /hello/x at kiln.test\n".into())
  );
}

#[tokio::test]
async fn error_bodies_hide_details_unless_exposed() {
  let bad = r#"
    export default {
      fetch(): Response { throw new Error("database password is hunter2"); },
    };
  "#;
  let server = Server::start(&[("bad.ts", bad)], &[], &[]);
  let response = send(server.addr, request("GET", "/bad", empty())).await;
  assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
  let id = response.headers()["x-request-id"]
    .to_str()
    .unwrap()
    .to_string();
  let body = text(response).await;
  assert_eq!(
    body,
    format!(r#"{{"error":"internal error","request_id":"{id}"}}"#)
  );
  // The detail is in the log under the same id.
  let log = server.stderr();
  let line = log
    .lines()
    .find(|l| l.contains("hunter2"))
    .unwrap_or_else(|| panic!("{log}"));
  assert!(line.contains(&id), "{line}");
  // Host 4xx bodies stay descriptive, and carry an id too.
  let response = send(server.addr, request("GET", "/nope", empty())).await;
  assert_eq!(response.status(), StatusCode::NOT_FOUND);
  assert!(response.headers().contains_key("x-request-id"));
  assert_eq!(error_of(&text(response).await), "no function serves /nope");
  // Every response has one, the function's own too.
  let server = Server::start(
    &[("bad.ts", bad), ("hello.ts", HELLO)],
    &["--expose-errors"],
    &[],
  );
  let response = send(server.addr, request("GET", "/hello", empty())).await;
  assert!(response.headers().contains_key("x-request-id"));
  let (status, body) = server.get("/bad").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
  let error = error_of(&body);
  assert!(
    error.contains("Error: database password is hunter2") && error.contains("bad.ts:3"),
    "{body}"
  );
}

#[tokio::test]
async fn the_port_opens_while_functions_load_and_ready_follows() {
  let hang = "await new Promise((r) => setTimeout(r, 60_000));\nexport default { fetch: () => new Response('late') };\n";
  // Modules loaded per instance (no snapshot): functions load one by one.
  let server = Server::start(
    &[("hang.ts", hang), ("hello.ts", HELLO)],
    &["--timeout-ms", "3000", "--no-snapshot"],
    &[],
  );
  // Not ready while `hang` loads, but serving what has loaded.
  let (status, body) = server.get("/_kiln/ready").await;
  assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
  assert_eq!(server.get("/_kiln/health").await.0, StatusCode::OK);
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  // Ready once the load has failed (its timeout), and `hang` answers 500.
  let deadline = Instant::now() + Duration::from_secs(20);
  while server.get("/_kiln/ready").await.0 != StatusCode::OK {
    assert!(Instant::now() < deadline, "never ready");
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
  let log = server.stderr();
  assert!(
    log.contains("function 'hang' did not finish loading within 3000 ms"),
    "{log}"
  );
}

#[tokio::test]
async fn a_function_whose_top_level_hangs_is_left_out_of_the_snapshot() {
  let hang = "await new Promise((r) => setTimeout(r, 60_000));\nexport default { fetch: () => new Response('late') };\n";
  let server = Server::start(
    &[("hang.ts", hang), ("hello.ts", HELLO)],
    &["--timeout-ms", "1500"],
    &[],
  );
  // The snapshot of all functions waits for `hang` up to the timeout, then
  // is baked without it; `hello` starts from it, `hang` from its modules
  // (where it times out again).
  let deadline = Instant::now() + Duration::from_secs(30);
  while server.get("/_kiln/ready").await.0 != StatusCode::OK {
    assert!(Instant::now() < deadline, "never ready");
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
  assert_eq!(server.get("/hello").await.0, StatusCode::OK);
  let log = server.stderr();
  assert!(
    log.contains("function 'hang' cannot be started from a snapshot, serving it from its modules: cannot bake: its top-level evaluation did not finish within 1500 ms"),
    "{log}"
  );
  assert!(
    log.contains("baked a snapshot of 1 of 2 functions"),
    "{log}"
  );
}

#[tokio::test]
async fn deno_exit_in_a_handler_is_counted_as_a_termination() {
  let quits = "export default { fetch() { Deno.exit(3); } };\n";
  let server = Server::start(&[("quits.ts", quits)], &[], &[]);
  assert_eq!(
    server.get("/quits").await.0,
    StatusCode::INTERNAL_SERVER_ERROR
  );
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_instance_terminations_total{function="quits",cause="exit"}"#
    ),
    1.0,
    "{metrics}"
  );
}

/// Opens `n` connections that send nothing.
fn silent_connections(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
  (0..n)
    .map(|_| std::net::TcpStream::connect(addr).unwrap())
    .collect()
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
fn closed_by_server(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
  stream.set_read_timeout(Some(wait)).unwrap();
  let mut buf = [0u8; 1];
  match stream.read(&mut buf) {
    Ok(0) => true,
    Ok(_) => false,
    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
  }
}

#[tokio::test]
async fn silent_connections_past_the_cap_cannot_starve_the_host() {
  // A descriptor limit of 200 caps connections at 100; 250 silent ones
  // would exhaust it without the cap.
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  write(&fns.join("hello.ts"), HELLO);
  let mut cmd = Command::new("prlimit");
  cmd.args(["--nofile=200:200", "--"]);
  cmd.arg(env!("CARGO_BIN_EXE_kiln"));
  Server::serve_args(&mut cmd, &fns, &["--header-timeout", "1s"], &[]);
  cmd.arg("--cache-dir").arg(dir.path().join("kiln-cache"));
  let server = Server::spawn(dir, cmd);
  let addr = server.addr;
  let mut silent = tokio::task::spawn_blocking(move || silent_connections(addr, 250))
    .await
    .unwrap();
  let started = Instant::now();
  let (status, _) = tokio::time::timeout(Duration::from_secs(30), server.get("/hello"))
    .await
    .expect("a normal request is answered");
  assert_eq!(status, StatusCode::OK);
  assert!(started.elapsed() < Duration::from_secs(15));
  // The silent ones are closed by the header timeout.
  let closed =
    tokio::task::spawn_blocking(move || closed_by_server(&mut silent[0], Duration::from_secs(5)))
      .await
      .unwrap();
  assert!(closed);
  let log = server.stderr();
  let accept_errors = log.matches("accept failed").count();
  assert!(accept_errors <= 30, "{accept_errors} accept errors:\n{log}");
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_sent_connections_at_once() {
  let mut server = Server::start(&[("hello.ts", HELLO)], &["--grace-period", "20s"], &[]);
  let addr = server.addr;
  // One connection that sends a header byte now and then, one idle
  // keep-alive connection.
  let mut slow = std::net::TcpStream::connect(addr).unwrap();
  slow
    .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
    .unwrap();
  let mut idle = std::net::TcpStream::connect(addr).unwrap();
  idle
    .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    .unwrap();
  let mut buf = [0u8; 512];
  let n = idle.read(&mut buf).unwrap();
  assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
  tokio::time::sleep(Duration::from_millis(100)).await;
  let started = Instant::now();
  server.sigterm();
  let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
    .await
    .unwrap();
  assert_eq!(status.code(), Some(0));
  assert!(
    started.elapsed() < Duration::from_secs(5),
    "shutdown waited {:?} for connections with no request",
    started.elapsed()
  );
  drop(slow);
}
