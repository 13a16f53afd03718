//! What functions get from the platform under `kiln serve`: their variables
//! (`Deno.env`, the `env` argument) and `ctx.waitUntil`. The real binary.

use std::time::Duration;
use std::time::Instant;

use http::StatusCode;

use crate::serve::Server;
use crate::serve::metric;

/// Reports what a function sees of its variables.
const VARS: &str = r#"
export default {
  fetch(_request: Request, env: Record<string, string>): Response {
    let setError = "";
    try { Deno.env.set("X", "1"); } catch (e) { setError = `${(e as Error).name}: ${(e as Error).message}`; }
    return Response.json({ deno: Deno.env.toObject(), arg: env, frozen: Object.isFrozen(env), setError });
  },
};
"#;

#[tokio::test]
async fn functions_see_their_own_variables_and_nothing_of_the_host() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  std::fs::create_dir(&fns).unwrap();
  std::fs::write(fns.join("mine.ts"), VARS).unwrap();
  std::fs::write(fns.join("other.ts"), VARS).unwrap();
  std::fs::write(fns.join("mine.env"), "B=mine only\nC='own'\n").unwrap();
  let shared = dir.path().join("shared.env");
  std::fs::write(&shared, "# shared\nA=1\nexport B=\"two words\"\n").unwrap();
  let shared = shared.to_str().unwrap().to_string();
  let server = Server::start_dir(
    dir,
    &fns,
    &["--env-file", &shared, "--inherit-env", "KILN_INHERITED"],
    &[
      ("KILN_HOST_SECRET", "do-not-show"),
      ("KILN_INHERITED", "from host"),
    ],
  );
  let (status, body) = server.get("/mine").await;
  assert_eq!(status, StatusCode::OK, "{body}");
  let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
  let expected = serde_json::json!({
    "A": "1", "B": "mine only", "C": "own", "KILN_INHERITED": "from host",
  });
  assert_eq!(seen["deno"], expected, "{body}");
  assert_eq!(seen["arg"], expected, "{body}");
  assert_eq!(seen["frozen"], true);
  assert_eq!(
    seen["setError"],
    "TypeError: Deno.env is read-only here: a function's variables come from its env files"
  );
  let (_, body) = server.get("/other").await;
  let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
  assert_eq!(
    seen["arg"],
    serde_json::json!({ "A": "1", "B": "two words", "KILN_INHERITED": "from host" })
  );
  assert!(!server.stderr().contains("two words"));
}

#[test]
fn a_bad_env_file_is_refused_by_line_without_its_values() {
  let dir = tempfile::tempdir().unwrap();
  std::fs::write(dir.path().join("f.ts"), VARS).unwrap();
  std::fs::write(dir.path().join("f.env"), "OK=1\nTOKEN=\"s3cret\n").unwrap();
  let stderr = crate::serve::serve_refused(dir.path(), &[]);
  assert!(
    stderr.contains("f.env:2: unterminated double quote"),
    "{stderr}"
  );
  assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test]
async fn wait_until_work_runs_after_the_response_and_holds_the_instance() {
  let worker = r#"
    let done = 0;
    export default {
      fetch(request: Request, _env: unknown, ctx: { waitUntil(p: Promise<unknown>): void }): Response {
        if (new URL(request.url).pathname === "/work/count") return new Response(String(done));
        ctx.waitUntil(new Promise((r) => setTimeout(r, 2000)).then(() => { done++; }));
        ctx.waitUntil(Promise.reject(new Error("late failure")));
        return new Response(`sent with ${done} done`);
      },
    };
  "#;
  let server = Server::start(&[("work.ts", worker)], &["--max-instances", "1"], &[]);
  let started = Instant::now();
  let (status, body) = server.get("/work").await;
  let answered = started.elapsed();
  assert_eq!(
    (status, body.as_str()),
    (StatusCode::OK, "sent with 0 done")
  );
  assert!(
    answered < Duration::from_millis(1500),
    "the response waited for the work: {answered:?}"
  );
  // The only instance is busy until the work settles; then it has run.
  assert_eq!(
    server.get("/work/count").await,
    (StatusCode::OK, "1".into())
  );
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_unhandled_errors_total{function="work"}"#),
    1.0,
    "{metrics}"
  );
  assert!(server.stderr().contains("late failure"));
}

/// Upgrades `/echo` requests; says hello, echoes each message, and answers
/// plain requests with how many sockets it has opened.
const ECHO: &str = r#"
let opened = 0;
export default {
  fetch(request: Request): Response {
    if (request.headers.get("upgrade") === null) {
      return new Response(`opened ${opened}`);
    }
    const url = new URL(request.url);
    const { socket, response } = Deno.upgradeWebSocket(request, {
      protocol: url.searchParams.get("protocol") ?? undefined,
    });
    socket.onopen = () => {
      opened++;
      socket.send(`hello (${socket.protocol || "no protocol"})`);
    };
    socket.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) socket.send(new Uint8Array(e.data).reverse());
      else socket.send(`echo: ${e.data}`);
    };
    return response;
  },
};
"#;

/// A `kiln run` WebSocket client: sends two texts and one binary message,
/// reads the metrics while its socket is open, closes, prints what it saw.
const CLIENT: &str = r#"
const [url, metricsUrl] = Deno.args;
const ws = new WebSocket(url, ["chat", "superchat"]);
ws.binaryType = "arraybuffer";
const got: string[] = [];
let openWhileConnected = "";
await new Promise<void>((resolve, reject) => {
  ws.onmessage = async (e) => {
    got.push(typeof e.data === "string" ? e.data : `bytes ${[...new Uint8Array(e.data)]}`);
    if (got.length === 1) ws.send("one");
    else if (got.length === 2) ws.send(new Uint8Array([1, 2, 3]));
    else if (got.length === 3) ws.send("two");
    else {
      const metrics = await (await fetch(metricsUrl)).text();
      openWhileConnected = metrics.split("\n").find((l) => l.startsWith("kiln_websockets_open")) ?? "";
      ws.close(1000, "done");
    }
  };
  ws.onclose = (e) => { got.push(`closed ${e.code} ${e.wasClean}`); resolve(); };
  ws.onerror = (e) => reject(new Error(`socket error: ${(e as ErrorEvent).message} ${(e as ErrorEvent).error?.stack}`));
});
console.log(JSON.stringify({ protocol: ws.protocol, got, openWhileConnected }));
"#;

fn run_client(dir: &std::path::Path, args: &[&str]) -> String {
  let client = dir.join("client.ts");
  std::fs::write(&client, CLIENT).unwrap();
  let output = crate::kiln_command()
    .arg("run")
    .arg(&client)
    .args(args)
    .output()
    .unwrap();
  let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
  assert!(
    output.status.success(),
    "client failed: {stdout}{}",
    String::from_utf8_lossy(&output.stderr)
  );
  stdout
}

#[tokio::test]
async fn a_function_upgrades_to_a_websocket_that_a_kiln_run_client_talks_to() {
  let server = Server::start(&[("echo.ts", ECHO)], &["--max-instances", "1"], &[]);
  let client_dir = tempfile::tempdir().unwrap();
  let addr = server.addr;
  let url = format!("ws://{addr}/echo?protocol=superchat");
  let metrics_url = format!("http://{addr}/_kiln/metrics");
  let dir = client_dir.path().to_path_buf();
  let out = tokio::task::spawn_blocking(move || run_client(&dir, &[&url, &metrics_url]))
    .await
    .unwrap();
  let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
  assert_eq!(
    seen,
    serde_json::json!({
      "protocol": "superchat",
      "got": [
        "hello (superchat)",
        "echo: one",
        "bytes 3,2,1",
        "echo: two",
        "closed 1000 true",
      ],
      "openWhileConnected": "kiln_websockets_open{function=\"echo\"} 1",
    })
  );
  // Closed: the socket let go of the only instance, which still serves.
  assert_eq!(
    server.get("/echo").await,
    (StatusCode::OK, "opened 1".into())
  );
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_websockets_open{function="echo"}"#),
    0.0
  );
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_websockets_total{function="echo",how="closed"}"#
    ),
    1.0,
    "{metrics}"
  );
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_requests_total{function="echo",status="101"}"#
    ),
    1.0,
    "{metrics}"
  );
}

#[tokio::test]
async fn a_function_is_a_websocket_client_too() {
  // Connects to the echo function through the host it is served by (the
  // test's client sends no Host header: the address comes in the query).
  let client = r#"
    export default {
      async fetch(request: Request): Promise<Response> {
        const ws = new WebSocket(new URL(request.url).searchParams.get("to")!);
        const got: string[] = [];
        await new Promise<void>((resolve, reject) => {
          ws.onmessage = (e) => {
            got.push(String(e.data));
            if (got.length === 1) ws.send("from a function");
            else ws.close();
          };
          ws.onclose = () => resolve();
          ws.onerror = (e) => reject(new Error(`socket error: ${(e as ErrorEvent).message} ${(e as ErrorEvent).error?.stack}`));
        });
        return Response.json(got);
      },
    };
  "#;
  let server = Server::start(
    &[("echo.ts", ECHO), ("client.ts", client)],
    &["--expose-errors"],
    &[],
  );
  assert_eq!(
    server
      .get(&format!("/client?to=ws://{}/echo", server.addr))
      .await,
    (
      StatusCode::OK,
      r#"["hello (no protocol)","echo: from a function"]"#.into()
    )
  );
}

#[tokio::test]
async fn an_idle_websocket_is_closed_and_releases_its_instance() {
  let server = Server::start(
    &[("echo.ts", ECHO)],
    &["--max-instances", "1", "--websocket-idle-timeout", "300ms"],
    &[],
  );
  let script = r#"
    const ws = new WebSocket(Deno.args[0]);
    const started = Date.now();
    const events: string[] = [];
    await new Promise<void>((resolve) => {
      ws.onmessage = (e) => events.push(String(e.data));
      ws.onclose = (e) => { events.push(`closed ${e.code} ${e.reason}`); resolve(); };
    });
    console.log(JSON.stringify({ events, ms: Date.now() - started }));
  "#;
  let dir = tempfile::tempdir().unwrap();
  let file = dir.path().join("idle.ts");
  std::fs::write(&file, script).unwrap();
  let url = format!("ws://{}/echo", server.addr);
  let output = tokio::task::spawn_blocking(move || {
    crate::kiln_command()
      .arg("run")
      .arg(&file)
      .arg(&url)
      .output()
      .unwrap()
  })
  .await
  .unwrap();
  let stdout = String::from_utf8_lossy(&output.stdout);
  assert!(
    output.status.success(),
    "{stdout}{}",
    String::from_utf8_lossy(&output.stderr)
  );
  let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
  assert_eq!(
    seen["events"],
    serde_json::json!(["hello (no protocol)", "closed 1001 idle timeout"])
  );
  assert!(seen["ms"].as_u64().unwrap() >= 300, "{seen}");
  // The one instance is free again.
  assert_eq!(
    server.get("/echo").await,
    (StatusCode::OK, "opened 1".into())
  );
  let metrics = server.metrics().await;
  assert_eq!(
    metric(
      &metrics,
      r#"kiln_websockets_total{function="echo",how="idle"}"#
    ),
    1.0,
    "{metrics}"
  );
}

#[tokio::test]
async fn upgrading_a_plain_request_is_a_type_error() {
  let function = r#"
    export default {
      fetch(request: Request): Response {
        try {
          Deno.upgradeWebSocket(request);
          return new Response("upgraded?");
        } catch (e) {
          return new Response(`${(e as Error).name}: ${(e as Error).message}`);
        }
      },
    };
  "#;
  let server = Server::start(&[("up.ts", function)], &[], &[]);
  assert_eq!(
    server.get("/up").await,
    (
      StatusCode::OK,
      "TypeError: Invalid Header: 'upgrade' header must contain 'websocket'".into()
    )
  );
}
