//! `kiln serve` starting functions from a baked snapshot: the real binary,
//! its bake child, the on-disk cache.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use http::StatusCode;

use crate::serve::Server;
use crate::serve::metric;

fn write(path: &Path, text: &str) {
  std::fs::create_dir_all(path.parent().unwrap()).unwrap();
  std::fs::write(path, text).unwrap();
}

const GREETER: &str = r#"import { TABLE } from "./lib/table.ts";
// Runs once, at bake (the host logs it as bake output): instances never
// print it.
console.error("greeter top level ran");
export default {
  fetch() {
    return new Response(`${TABLE.get("k12")} ${TABLE.size}`);
  },
};
"#;

fn table(size: usize) -> String {
  format!(
    "export const TABLE: Map<string, number> = new Map();\nfor (let i = 0; i < {size}; i++) TABLE.set(`k${{i}}`, i * i);\n"
  )
}

/// Serves `fns` with `cache` as the cache directory.
fn serve(fns: &Path, cache: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
  let mut all = vec!["--cache-dir", cache.to_str().unwrap()];
  all.extend_from_slice(flags);
  Server::start_dir(tempfile::tempdir().unwrap(), fns, &all, env)
}

async fn wait_ready(server: &Server) {
  let deadline = Instant::now() + Duration::from_secs(30);
  while server.get("/_kiln/ready").await.0 != StatusCode::OK {
    assert!(
      Instant::now() < deadline,
      "never ready:\n{}",
      server.stderr()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
  }
}

#[tokio::test]
async fn functions_start_from_a_cached_snapshot_that_an_edit_rebakes() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let cache = dir.path().join("cache");
  write(&fns.join("greeter.ts"), GREETER);
  write(&fns.join("lib/table.ts"), &table(100));

  let server = serve(&fns, &cache, &[], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 100".into())
  );
  let log = server.stderr();
  assert!(
    log.contains("baked a snapshot of 1 of 1 functions"),
    "{log}"
  );
  assert_eq!(log.matches("greeter top level ran").count(), 1, "{log}");
  assert!(log.contains("bake output: greeter top level ran"), "{log}");
  drop(server);

  // A restart reuses the cache.
  let server = serve(&fns, &cache, &[], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 100".into())
  );
  let log = server.stderr();
  assert!(log.contains("snapshot from cache"), "{log}");
  assert!(!log.contains("baked a snapshot"), "{log}");
  assert!(!log.contains("greeter top level ran"), "{log}");
  drop(server);

  // An edited import re-bakes.
  write(&fns.join("lib/table.ts"), &table(50));
  let server = serve(&fns, &cache, &[], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 50".into())
  );
  let log = server.stderr();
  assert!(
    log.contains("baked a snapshot of 1 of 1 functions"),
    "{log}"
  );
  drop(server);

  // --no-snapshot loads the modules in each instance.
  let server = serve(&fns, &cache, &["--no-snapshot"], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 50".into())
  );
  let log = server.stderr();
  assert!(!log.contains("snapshot"), "{log}");
  assert!(log.contains("greeter top level ran"), "{log}");
  assert!(!log.contains("bake output"), "{log}");
}

#[tokio::test]
async fn a_function_that_cannot_be_baked_is_served_from_its_modules_with_a_warning() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let cache = dir.path().join("cache");
  write(&fns.join("greeter.ts"), GREETER);
  write(&fns.join("lib/table.ts"), &table(100));
  // Reads a variable at its top level: baking it would bake its absence.
  write(
    &fns.join("keyed.ts"),
    "const key = Deno.env.get(\"KEY\");\nexport default { fetch: () => new Response(`key=${key}`) };\n",
  );
  write(
    &fns.join("ticking.ts"),
    "setInterval(() => {}, 1000);\nexport default { fetch: () => new Response(\"ticking\") };\n",
  );
  let env_file = dir.path().join("vars.env");
  write(&env_file, "KEY=abc\n");
  let server = serve(
    &fns,
    &cache,
    &["--env-file", env_file.to_str().unwrap()],
    &[],
  );
  wait_ready(&server).await;
  assert_eq!(
    server.get("/keyed").await,
    (StatusCode::OK, "key=abc".into())
  );
  assert_eq!(
    server.get("/ticking").await,
    (StatusCode::OK, "ticking".into())
  );
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 100".into())
  );
  let log = server.stderr();
  assert!(
    log.contains("function 'keyed' cannot be started from a snapshot, serving it from its modules: Uncaught Error: cannot bake: the code read Deno.env while it was evaluated"),
    "{log}"
  );
  assert!(
    log.contains("function 'ticking' cannot be started from a snapshot, serving it from its modules: cannot bake: the code left a pending interval (setInterval)"),
    "{log}"
  );
  assert!(
    log.contains("baked a snapshot of 1 of 3 functions"),
    "{log}"
  );
  drop(server);

  // The cache remembers why, and says so again.
  let server = serve(
    &fns,
    &cache,
    &["--env-file", env_file.to_str().unwrap()],
    &[],
  );
  wait_ready(&server).await;
  assert_eq!(
    server.get("/keyed").await,
    (StatusCode::OK, "key=abc".into())
  );
  let log = server.stderr();
  assert!(log.contains("snapshot from cache"), "{log}");
  assert!(
    log.contains("function 'keyed' cannot be started from a snapshot"),
    "{log}"
  );
}

#[tokio::test]
async fn functions_are_served_when_none_of_them_can_be_baked() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  write(
    &fns.join("ticking.ts"),
    "setInterval(() => {}, 1000);\nexport default { fetch: () => new Response(\"ticking\") };\n",
  );
  let server = serve(&fns, &dir.path().join("cache"), &[], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/ticking").await,
    (StatusCode::OK, "ticking".into())
  );
  let log = server.stderr();
  assert!(
    log.contains("baked a snapshot of 0 of 1 functions"),
    "{log}"
  );
}

#[tokio::test]
async fn web_crypto_may_be_detected_at_a_baked_top_level_but_not_used() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  // As Hono's etag middleware does: look at crypto.subtle at top level,
  // use it per request (here through a reference kept at bake).
  write(
    &fns.join("detects.ts"),
    r#"const subtle = (crypto && crypto.subtle) ? crypto.subtle : null;
export default {
  async fetch() {
    const digest = new Uint8Array(await subtle!.digest("SHA-256", new TextEncoder().encode("abc")));
    return new Response(Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("") + " " + crypto.randomUUID().length);
  },
};
"#,
  );
  write(
    &fns.join("rolls.ts"),
    "const id = crypto.randomUUID();
export default { fetch: () => new Response(id) };
",
  );
  let server = serve(&fns, &dir.path().join("cache"), &[], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/detects").await,
    (StatusCode::OK, "ba7816bf 36".into())
  );
  let (status, id) = server.get("/rolls").await;
  assert_eq!((status, id.len()), (StatusCode::OK, 36));
  let log = server.stderr();
  assert!(
    log.contains("baked a snapshot of 1 of 2 functions"),
    "{log}"
  );
  assert!(
    log.contains(
      "function 'rolls' cannot be started from a snapshot, serving it from its modules: "
    ) && log
      .contains("Error: cannot bake: Web Crypto (crypto) was used while the code was evaluated"),
    "{log}"
  );
}

#[tokio::test]
async fn cron_jobs_declared_at_a_baked_top_level_run_once_per_tick() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let cache = dir.path().join("cache");
  write(
    &fns.join("ticker.ts"),
    r#"let runs = 0;
Deno.cron("tick", "* * * * *", () => { runs++; });
export default {
  async fetch(request: Request) {
    if (new URL(request.url).searchParams.has("slow")) {
      await new Promise((r) => setTimeout(r, 300));
    }
    return Response.json({ runs });
  },
};
"#,
  );
  let server = serve(
    &fns,
    &cache,
    &["--max-instances", "3"],
    &[("KILN_CRON_TEST_SCHEDULE_OFFSET", "100")],
  );
  wait_ready(&server).await;
  assert!(
    server
      .stderr()
      .contains("baked a snapshot of 1 of 1 functions")
  );
  // Three instances at once.
  let started = Instant::now();
  let (a, b, c) = tokio::join!(
    server.get("/ticker?slow"),
    server.get("/ticker?slow"),
    server.get("/ticker?slow")
  );
  for (status, _) in [&a, &b, &c] {
    assert_eq!(*status, StatusCode::OK);
  }
  tokio::time::sleep(Duration::from_millis(1200)).await;
  let elapsed = started.elapsed().as_millis() as f64;
  let metrics = server.metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_instances{function="ticker"}"#),
    3.0,
    "{metrics}"
  );
  // One run per 100 ms tick in one instance; three instances running the
  // job would triple it.
  let runs = metric(&metrics, r#"kiln_cron_runs_total{function="ticker"}"#);
  let ticks = elapsed / 100.0 + 5.0;
  assert!(
    runs >= 5.0 && runs <= ticks,
    "{runs} runs in {elapsed} ms\n{metrics}"
  );
}

#[tokio::test]
async fn a_snapshot_too_large_for_the_heap_cap_is_not_thawed() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let cache = dir.path().join("cache");
  // About 8 MiB of numbers built at top level: with kiln's own heap the
  // snapshot needs more than half of a 16 MiB instance.
  write(
    &fns.join("heavy.ts"),
    "const data = new Float64Array(1_000_000).fill(1.5);\nexport default { fetch: () => new Response(String(data.length)) };\n",
  );
  let server = serve(&fns, &cache, &["--max-heap-mb", "16"], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/heavy").await,
    (StatusCode::OK, "1000000".into())
  );
  let log = server.stderr();
  assert!(
    log.contains("is too large for instances of 16 MiB"),
    "{log}"
  );
}

#[tokio::test]
async fn a_function_that_exhausts_the_bake_heap_is_left_out() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let cache = dir.path().join("cache");
  write(&fns.join("greeter.ts"), GREETER);
  write(&fns.join("lib/table.ts"), &table(100));
  write(
    &fns.join("hog.ts"),
    "const all: object[] = [];\nfor (let i = 0; i < 50_000_000; i++) all.push({ i });\nexport default { fetch: () => new Response(String(all.length)) };\n",
  );
  let server = serve(&fns, &cache, &["--max-heap-mb", "32"], &[]);
  wait_ready(&server).await;
  assert_eq!(
    server.get("/greeter").await,
    (StatusCode::OK, "144 100".into())
  );
  // Served from its modules, where it runs out of memory again: a 500.
  assert_eq!(
    server.get("/hog").await.0,
    StatusCode::INTERNAL_SERVER_ERROR
  );
  let log = server.stderr();
  assert!(
    log.contains("function 'hog' cannot be started from a snapshot, serving it from its modules: cannot bake: V8 aborted while its top level was evaluated"),
    "{log}"
  );
  assert!(log.contains("it ran out of memory"), "{log}");
  assert!(
    log.contains("baked a snapshot of 1 of 2 functions"),
    "{log}"
  );
}
