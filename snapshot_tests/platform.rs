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
