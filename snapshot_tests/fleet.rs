//! Fleet cron on PostgreSQL: several real `kiln serve` processes share a
//! private PostgreSQL cluster the test starts itself (initdb into a temp
//! dir, run as an unprivileged user, listening on loopback), with schedule
//! time scaled 60x (`KILN_CRON_TEST_TIME_SCALE`): one schedule minute per
//! wall second. Jobs report each run to a helper HTTP server the test runs,
//! with the wall second they started in, which is their tick.

use std::collections::BTreeMap;
use std::io::Read;
use std::io::Write;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use http::StatusCode;

use super::serve::Server;
use super::serve::metric;
use super::serve::serve_refused;

const PASSWORD: &str = "fleet-secret";

/// A PostgreSQL cluster of the test's own; stopped when dropped.
struct PgCluster {
  dir: tempfile::TempDir,
  bin: PathBuf,
  port: u16,
  /// The unprivileged user the server runs as when the tests run as root.
  user: Option<(u32, u32)>,
}

/// Debian's newest `/usr/lib/postgresql/<major>/bin`, else `initdb` on
/// PATH; `KILN_TEST_PG_BIN` overrides.
fn pg_bin() -> PathBuf {
  if let Some(dir) = std::env::var_os("KILN_TEST_PG_BIN") {
    return dir.into();
  }
  let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|e| {
      let major = e.file_name().to_str()?.parse().ok()?;
      let bin = e.path().join("bin");
      bin.join("initdb").is_file().then_some((major, bin))
    })
    .collect();
  debian.sort();
  if let Some((_, bin)) = debian.pop() {
    return bin;
  }
  std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
    .find(|dir| dir.join("initdb").is_file())
    .expect(
      "PostgreSQL's initdb not found: install Debian's postgresql package (.ci/run does) or set KILN_TEST_PG_BIN",
    )
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user Debian's package creates (else `nobody`).
fn unprivileged_user() -> Option<(u32, u32)> {
  // SAFETY: geteuid has no preconditions.
  if unsafe { libc::geteuid() } != 0 {
    return None;
  }
  for name in [c"postgres", c"nobody"] {
    // SAFETY: a NUL-terminated name; the result is read at once, before
    // any other call could reuse the static buffer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if !pw.is_null() {
      // SAFETY: non-null, points to a valid passwd entry.
      let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
      return Some((uid, gid));
    }
  }
  panic!("running as root and no postgres or nobody user to run PostgreSQL as");
}

fn free_port() -> u16 {
  TcpListener::bind("127.0.0.1:0")
    .unwrap()
    .local_addr()
    .unwrap()
    .port()
}

impl PgCluster {
  fn start() -> PgCluster {
    let dir = tempfile::Builder::new()
      .prefix("kiln-pg")
      .tempdir()
      .unwrap();
    let cluster = PgCluster {
      bin: pg_bin(),
      port: free_port(),
      user: unprivileged_user(),
      dir,
    };
    let pwfile = cluster.dir.path().join("pwfile");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if let Some((uid, gid)) = cluster.user {
      for path in [cluster.dir.path(), &pwfile] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
      }
    }
    cluster.run(
      cluster
        .command("initdb")
        .arg("-D")
        .arg(cluster.data())
        .args([
          "-U",
          "kiln",
          "--auth=scram-sha-256",
          "--no-sync",
          "-E",
          "UTF8",
        ])
        .arg(format!("--pwfile={}", pwfile.display())),
    );
    cluster.start_server();
    cluster
  }

  fn data(&self) -> PathBuf {
    self.dir.path().join("data")
  }

  fn command(&self, program: &str) -> Command {
    let mut cmd = Command::new(self.bin.join(program));
    if let Some((uid, gid)) = self.user {
      use std::os::unix::process::CommandExt;
      cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").current_dir(self.dir.path());
    cmd
  }

  fn run(&self, cmd: &mut Command) {
    let output = cmd.output().unwrap();
    assert!(
      output.status.success(),
      "{cmd:?} failed: {}{}",
      String::from_utf8_lossy(&output.stdout),
      String::from_utf8_lossy(&output.stderr)
    );
  }

  fn start_server(&self) {
    let options = format!(
      "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off",
      self.port,
      self.dir.path().display()
    );
    self.run(
      self
        .command("pg_ctl")
        .arg("-D")
        .arg(self.data())
        .arg("-l")
        .arg(self.dir.path().join("server.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"]),
    );
  }

  fn stop_server(&self) {
    self.run(
      self
        .command("pg_ctl")
        .arg("-D")
        .arg(self.data())
        .args(["-m", "fast", "-w", "stop"]),
    );
  }

  fn url_with_password(&self, password: &str) -> String {
    format!(
      "postgres://kiln:{password}@127.0.0.1:{}/postgres",
      self.port
    )
  }

  fn url(&self) -> String {
    self.url_with_password(PASSWORD)
  }

  async fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
      .await
      .unwrap();
    tokio::spawn(connection);
    client.query(sql, &[]).await.unwrap()
  }

  /// Every run of `function`, its tick as a wall second.
  async fn runs(&self, function: &str) -> Vec<Run> {
    self
      .query(&format!(
        "SELECT job, (extract(epoch FROM tick) / 60)::bigint, attempt, state, coalesce(host, ''), takeovers, \
                extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8 \
           FROM kiln_cron_runs WHERE function = '{function}' ORDER BY tick, job, attempt"
      ))
      .await
      .iter()
      .map(|r| Run {
        job: r.get(0),
        second: r.get(1),
        attempt: r.get(2),
        state: r.get(3),
        host: r.get(4),
        takeovers: r.get(5),
        started: r.get(6),
        finished: r.get(7),
      })
      .collect()
  }
}

impl Drop for PgCluster {
  fn drop(&mut self) {
    let _ = self
      .command("pg_ctl")
      .arg("-D")
      .arg(self.data())
      .args(["-m", "immediate", "-w", "stop"])
      .output();
  }
}

#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Run {
  job: String,
  second: i64,
  attempt: i32,
  state: String,
  host: String,
  takeovers: i32,
  /// Seconds since the epoch, the database's clock.
  started: Option<f64>,
  finished: Option<f64>,
}

/// One request a job made to the helper.
#[derive(Debug, Clone)]
struct Call {
  at: Instant,
  path: String,
  params: BTreeMap<String, String>,
}

impl Call {
  fn param(&self, name: &str) -> &str {
    self.params.get(name).map_or("", String::as_str)
  }

  fn second(&self) -> i64 {
    self.param("second").parse().unwrap()
  }
}

/// The helper server jobs report to; `reply` answers each request's path.
struct Helper {
  addr: SocketAddr,
  calls: Arc<Mutex<Vec<Call>>>,
}

impl Helper {
  fn start(reply: impl Fn(&str, usize) -> &'static str + Send + Sync + 'static) -> Helper {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let reply = Arc::new(reply);
    let recorded = calls.clone();
    std::thread::spawn(move || {
      for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let (calls, reply) = (recorded.clone(), reply.clone());
        std::thread::spawn(move || {
          let mut head = Vec::new();
          let mut byte = [0u8; 1];
          while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
          }
          let head = String::from_utf8_lossy(&head);
          let target = head.split(' ').nth(1).unwrap_or_default().to_string();
          let (path, query) = target.split_once('?').unwrap_or((&target, ""));
          let params = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
          let body = {
            let mut calls = calls.lock().unwrap();
            let earlier = calls.iter().filter(|c| c.path == path).count();
            calls.push(Call {
              at: Instant::now(),
              path: path.to_string(),
              params,
            });
            reply(path, earlier)
          };
          let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
          );
        });
      }
    });
    Helper { addr, calls }
  }

  fn calls(&self, path: &str) -> Vec<Call> {
    let calls = self.calls.lock().unwrap();
    calls.iter().filter(|c| c.path == path).cloned().collect()
  }

  async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Call> {
    let deadline = Instant::now() + within;
    loop {
      let calls = self.calls(path);
      if calls.len() >= n {
        return calls;
      }
      assert!(
        Instant::now() < deadline,
        "{n} calls to {path} within {within:?}: got {calls:?}"
      );
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  }
}

/// Jobs report `<path>?host=<HOST_NAME>&job=<job>&second=<wall second>`
/// to the helper: the wall second a run starts in is its tick.
const REPORT: &str = r#"
async function report(path: string, job: string): Promise<string> {
  const second = Math.floor(Date.now() / 1000);
  const host = Deno.env.get("HOST_NAME");
  const response = await fetch(`${Deno.env.get("HELPER")}${path}?host=${host}&job=${job}&second=${second}`);
  return await response.text();
}
"#;

/// A host of the fleet.
fn host(
  cluster: &PgCluster,
  helper: &Helper,
  name: &str,
  functions: &[(&str, &str)],
  lease: &str,
) -> Server {
  let helper_url = format!("http://{}", helper.addr);
  let url = cluster.url();
  Server::start(
    functions,
    &["--cron-lease", lease, "--inherit-env", "HOST_NAME,HELPER"],
    &[
      ("KILN_CRON_STORE", &url),
      ("KILN_CRON_TEST_TIME_SCALE", "60"),
      ("HOST_NAME", name),
      ("HELPER", &helper_url),
    ],
  )
}

async fn wait_ready(servers: &[&Server]) {
  let deadline = Instant::now() + Duration::from_secs(60);
  for server in servers {
    while server.get("/_kiln/ready").await.0 != StatusCode::OK {
      assert!(Instant::now() < deadline, "not ready: {}", server.stderr());
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
  }
}

fn wall_second() -> i64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .unwrap()
    .as_secs() as i64
}

/// Sleeps until the wall clock reaches `second`.
async fn until_second(second: i64) {
  let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
  let target = Duration::from_secs(second.max(0) as u64);
  if let Some(wait) = target.checked_sub(now) {
    tokio::time::sleep(wait).await;
  }
}

fn kill(server: &mut Server) {
  server.child.kill().unwrap();
  server.child.wait().unwrap();
}

/// Where a host's `kiln_cron_runs.host` (`hostname/pid/random`) names it.
fn pid_of(host_id: &str) -> u32 {
  host_id.split('/').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_run_every_tick_of_every_job_once_and_retries_once_each() {
  let cluster = PgCluster::start();
  let helper = Helper::start(|_, _| "ok");
  let jobs = format!(
    r#"{REPORT}
    Deno.cron("a", "* * * * *", () => report("/run", "a"));
    Deno.cron("b", "*/2 * * * *", () => report("/run", "b"));
    export default {{ fetch: () => new Response("jobs") }};
  "#
  );
  let flaky = format!(
    r#"{REPORT}
    Deno.cron("flaky", "*/5 * * * *", {{ backoffSchedule: [60000, 120000] }}, async () => {{
      await report("/flaky", "flaky");
      throw new Error("flaky fails");
    }});
    export default {{ fetch: () => new Response("flaky") }};
  "#
  );
  let functions = [("jobs.ts", jobs.as_str()), ("flaky.ts", flaky.as_str())];
  let mut hosts: Vec<Server> = ["h0", "h1", "h2"]
    .iter()
    .map(|name| host(&cluster, &helper, name, &functions, "5s"))
    .collect();
  wait_ready(&hosts.iter().collect::<Vec<_>>()).await;

  // About 20 ticks of "a" with all three hosts up.
  let first = wall_second() + 1;
  let last = first + 20;
  // Half-way between two ticks (and two retries), when no run is going on.
  until_second(last + 2).await;
  tokio::time::sleep(Duration::from_millis(500)).await;
  let mut skips = 0.0;
  for server in &hosts {
    let metrics = server.metrics().await;
    skips += metric(
      &metrics,
      r#"kiln_cron_skips_total{function="jobs",reason="claimed"}"#,
    );
    assert_eq!(server.get("/jobs").await.0, StatusCode::OK);
  }
  let pids: Vec<u32> = hosts.iter().map(|h| h.child.id()).collect();
  for server in &mut hosts {
    kill(server);
  }

  // Every tick in the window has one run, recorded once; the handlers ran
  // as many times as there are runs: each tick ran exactly once.
  let runs = cluster.runs("jobs").await;
  let calls = helper.calls("/run");
  for (job, every) in [("a", 1), ("b", 2)] {
    for second in (first..=last).filter(|s| s % every == 0) {
      let rows: Vec<_> = runs
        .iter()
        .filter(|r| r.job == job && r.second == second)
        .collect();
      assert_eq!(rows.len(), 1, "job {job}, tick {second}: {runs:?}");
      assert_eq!(
        (rows[0].attempt, rows[0].state.as_str()),
        (0, "succeeded"),
        "{rows:?}"
      );
      assert!(pids.contains(&pid_of(&rows[0].host)), "{rows:?}");
    }
    let rows = runs.iter().filter(|r| r.job == job).count();
    let ran = calls.iter().filter(|c| c.param("job") == job).count();
    assert_eq!(
      ran, rows,
      "job {job}: {ran} runs, {rows} recorded: {runs:?}"
    );
  }
  // The other hosts tried and found each tick claimed.
  assert!(skips >= 20.0, "{skips} skips");

  // Each failing tick of "flaky": the run and two retries, once each, the
  // retries 1 s and 2 s after the failure before them (60 and 120 schedule
  // seconds).
  let runs = cluster.runs("flaky").await;
  let ticks: Vec<i64> = (first..=last - 5).filter(|s| s % 5 == 0).collect();
  assert!(ticks.len() >= 3, "{ticks:?}");
  for tick in ticks {
    let attempts: Vec<_> = runs.iter().filter(|r| r.second == tick).collect();
    assert_eq!(
      attempts
        .iter()
        .map(|r| (r.attempt, r.state.as_str()))
        .collect::<Vec<_>>(),
      [(0, "failed"), (1, "failed"), (2, "failed")],
      "tick {tick}"
    );
    for (pair, backoff) in attempts.windows(2).zip([1.0, 2.0]) {
      let waited = pair[1].started.unwrap() - pair[0].finished.unwrap();
      assert!(
        waited >= backoff - 0.02,
        "tick {tick}: retried after {waited} s: {attempts:?}"
      );
    }
  }
  let ran = helper.calls("/flaky").len();
  let recorded = runs.iter().filter(|r| r.state != "waiting").count();
  assert_eq!(ran, recorded, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_host_dies_is_taken_over_after_the_lease() {
  let cluster = PgCluster::start();
  // The first run hangs; its host is killed mid-run.
  let helper = Helper::start(|path, earlier| match (path, earlier) {
    ("/start", 0) => "hang",
    _ => "go",
  });
  let slow = format!(
    r#"{REPORT}
    Deno.cron("slow", "*/10 * * * *", async () => {{
      if (await report("/start", "slow") === "hang") {{
        await new Promise((resolve) => setTimeout(resolve, 60_000));
      }}
      await report("/done", "slow");
    }});
    export default {{ fetch: () => new Response("slow") }};
  "#
  );
  let functions = [("slow.ts", slow.as_str())];
  let mut hosts: Vec<Server> = ["h0", "h1"]
    .iter()
    .map(|name| host(&cluster, &helper, name, &functions, "2s"))
    .collect();
  wait_ready(&hosts.iter().collect::<Vec<_>>()).await;

  let start = helper
    .wait_for("/start", 1, Duration::from_secs(15))
    .await
    .remove(0);
  let (dead, alive) = match start.param("host") {
    "h0" => (0, 1),
    _ => (1, 0),
  };
  kill(&mut hosts[dead]);
  let killed_at = Instant::now();

  let starts = helper.wait_for("/start", 2, Duration::from_secs(10)).await;
  let taken = &starts[1];
  assert_eq!(taken.param("host"), ["h0", "h1"][alive]);
  // Taken over once the lease ran out, well before the next tick.
  assert!(
    taken.at - killed_at >= Duration::from_millis(1000),
    "{taken:?}"
  );
  assert!(
    taken.second() < start.second() + 10,
    "{taken:?} after {start:?}"
  );
  let done = helper.wait_for("/done", 1, Duration::from_secs(5)).await;
  assert_eq!(done[0].param("host"), ["h0", "h1"][alive]);

  let deadline = Instant::now() + Duration::from_secs(5);
  let row = loop {
    let runs = cluster.runs("slow").await;
    let row = runs
      .into_iter()
      .find(|r| r.second == start.second())
      .unwrap();
    if row.state == "succeeded" || Instant::now() > deadline {
      break row;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
  };
  assert_eq!(
    (row.attempt, row.state.as_str(), row.takeovers),
    (0, "succeeded", 1),
    "{row:?}"
  );
  assert_eq!(pid_of(&row.host), hosts[alive].child.id());
  let metrics = hosts[alive].metrics().await;
  assert_eq!(
    metric(&metrics, r#"kiln_cron_takeovers_total{function="slow"}"#),
    1.0,
    "{metrics}"
  );
  assert_eq!(
    metric(&metrics, r#"kiln_cron_runs_total{function="slow"}"#),
    1.0,
    "{metrics}"
  );
}

/// A host that stops (SIGTERM) lets go of the run it held before it exits,
/// so another host takes it over at once, not after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_lets_go_of_its_run() {
  let cluster = PgCluster::start();
  let helper = Helper::start(|_, _| "hang");
  let slow = format!(
    r#"{REPORT}
    Deno.cron("slow", "* * * * *", async () => {{
      await report("/start", "slow");
      await new Promise((resolve) => setTimeout(resolve, 60_000));
    }});
    export default {{ fetch: () => new Response("slow") }};
  "#
  );
  let mut server = host(
    &cluster,
    &helper,
    "h0",
    &[("slow.ts", slow.as_str())],
    "30s",
  );
  wait_ready(&[&server]).await;
  let start = helper
    .wait_for("/start", 1, Duration::from_secs(10))
    .await
    .remove(0);
  server.sigterm();
  let status = server.child.wait().unwrap();
  assert!(status.success(), "{status:?}: {}", server.stderr());
  let runs = cluster.runs("slow").await;
  let row = runs.iter().find(|r| r.second == start.second()).unwrap();
  // Still to be run (by whichever host comes next), held by nobody.
  assert_eq!(
    (row.state.as_str(), row.host.as_str()),
    ("running", ""),
    "{runs:?}"
  );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_keep_serving_while_the_database_is_down_and_resume_without_duplicates() {
  let cluster = PgCluster::start();
  let helper = Helper::start(|_, _| "ok");
  let jobs = format!(
    r#"{REPORT}
    Deno.cron("a", "* * * * *", () => report("/run", "a"));
    export default {{ fetch: () => new Response("still serving") }};
  "#
  );
  let functions = [("jobs.ts", jobs.as_str())];
  let mut hosts: Vec<Server> = ["h0", "h1"]
    .iter()
    .map(|name| host(&cluster, &helper, name, &functions, "2s"))
    .collect();
  wait_ready(&hosts.iter().collect::<Vec<_>>()).await;
  helper.wait_for("/run", 3, Duration::from_secs(10)).await;

  cluster.stop_server();
  let stopped = wall_second();
  // Four ticks without the database: HTTP is served all along.
  while wall_second() < stopped + 4 {
    for server in &hosts {
      let (status, body) = server.get("/jobs").await;
      assert_eq!((status, body.as_str()), (StatusCode::OK, "still serving"));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
  }
  cluster.start_server();
  let restarted = wall_second();
  // Stopped half-way between two ticks, when no run is going on.
  until_second(restarted + 6).await;
  tokio::time::sleep(Duration::from_millis(500)).await;
  for server in &hosts {
    let metrics = server.metrics().await;
    assert!(
      metric(&metrics, "kiln_cron_store_errors_total") >= 1.0,
      "{metrics}"
    );
  }
  for server in &mut hosts {
    kill(server);
  }

  // No tick ran twice: as many handler runs as recorded runs, one per
  // tick (the key), each recorded once the database was back.
  let runs = cluster.runs("jobs").await;
  let ran = helper.calls("/run").len();
  assert_eq!(ran, runs.len(), "{runs:?}");
  assert!(runs.iter().all(|r| r.state == "succeeded"), "{runs:?}");
  // Scheduling resumed once the database was back.
  assert!(
    runs.iter().filter(|r| r.second > restarted + 2).count() >= 2,
    "no runs after the restart at {restarted}: {runs:?}"
  );
  for server in &hosts {
    let stderr = server.stderr();
    let errors = stderr
      .lines()
      .filter(|l| l.contains("ERROR") && l.contains("cron store postgres://kiln:***@"))
      .count();
    assert!(
      (1..=2).contains(&errors),
      "the store's failure is logged once per 10 s:\n{stderr}"
    );
    assert!(stderr.contains("reachable again"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
  }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_one_clear_error_and_http_is_still_served() {
  let cluster = PgCluster::start();
  let url = cluster.url_with_password("not-the-password");
  let server = Server::start(
    &[(
      "tick.ts",
      r#"
      Deno.cron("tick", "* * * * *", () => {});
      export default { fetch: () => new Response("serving") };
    "#,
    )],
    &["--cron-store", &url],
    &[("KILN_CRON_TEST_TIME_SCALE", "60")],
  );
  wait_ready(&[&server]).await;
  // A few ticks' worth of failed claims.
  tokio::time::sleep(Duration::from_secs(3)).await;
  assert_eq!(
    server.get("/tick").await,
    (StatusCode::OK, "serving".to_string())
  );
  let stderr = server.stderr();
  let expected = format!(
    "cron store postgres://kiln:***@127.0.0.1:{}/postgres: password authentication failed for user \"kiln\"",
    cluster.port
  );
  assert_eq!(
    stderr.lines().filter(|l| l.contains(&expected)).count(),
    1,
    "{stderr}"
  );
  assert!(!stderr.contains("not-the-password"), "{stderr}");
  assert!(metric(&server.metrics().await, "kiln_cron_store_errors_total") >= 1.0);
}

#[test]
fn a_malformed_cron_store_address_is_refused_at_start() {
  let dir = tempfile::tempdir().unwrap();
  std::fs::write(
    dir.path().join("hello.ts"),
    "export default { fetch: () => new Response('hi') };",
  )
  .unwrap();
  let stderr = serve_refused(
    dir.path(),
    &["--cron-store", "host=db password=hunter2 port=notaport"],
  );
  assert!(
    stderr.contains("invalid cron store address host=db password=*** port=notaport"),
    "{stderr}"
  );
  assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// Runs `script` in a runtime of the library whose cron backend is a store
/// of its own (as a process of its own would have) on `url`, named
/// `host_id`, with schedule time scaled 60x; once its event loop is done,
/// returns the value of `result` (a script).
fn library_runtime(
  url: String,
  host_id: &'static str,
  script: &'static str,
  result: &'static str,
) -> std::thread::JoinHandle<String> {
  use kiln::extensions::cron::postgres::PostgresCronHandler;
  use kiln::extensions::cron::postgres::PostgresCronOptions;
  use kiln::extensions::cron::postgres::PostgresCronStore;
  use kiln::extensions::cron::postgres::ScheduleClock;

  std::thread::spawn(move || {
    let mut options = PostgresCronOptions::new(url);
    options.clock = ScheduleClock::scaled(60.0).unwrap();
    options.host_id = Some(host_id.to_string());
    let store = PostgresCronStore::connect(options).unwrap();
    tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap()
      .block_on(async {
        store.check().await.unwrap();
        let mut rt = kiln::Runtime::builder()
          .cron_handler(PostgresCronHandler::new(&store, "library"))
          .build()
          .unwrap();
        rt.execute_script(script).unwrap();
        rt.run_event_loop().await.unwrap();
        rt.execute_script(result).unwrap()
      })
  })
}

/// A job that counts its runs in `globalThis.ran` for 4.5 s.
const COUNTING_JOB: &str = r#"
  globalThis.ran = 0;
  const stop = new AbortController();
  Deno.cron("lib", "* * * * *", { signal: stop.signal }, () => { globalThis.ran++; });
  setTimeout(() => stop.abort(), 4500);
"#;

/// The library: two runtimes, each with its own store as two processes
/// would have, share the ticks of one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedders_plug_the_postgres_backend_into_the_runtime_builder() {
  let cluster = PgCluster::start();
  let ran: usize = ["lib-a", "lib-b"]
    .into_iter()
    .map(|host_id| library_runtime(cluster.url(), host_id, COUNTING_JOB, "globalThis.ran"))
    .collect::<Vec<_>>()
    .into_iter()
    .map(|t| t.join().unwrap().parse::<usize>().unwrap())
    .sum();
  let runs = cluster.runs("library").await;
  assert!(ran >= 3, "{ran} runs in 4.5 s: {runs:?}");
  assert_eq!(runs.len(), ran, "{runs:?}");
  assert!(
    runs
      .iter()
      .all(|r| r.state == "succeeded" && r.attempt == 0)
  );
  assert!(runs.iter().all(|r| r.host == "lib-a" || r.host == "lib-b"));
}

/// A run whose hosts kept dying (taken over three times) is abandoned, not
/// run a fourth time, and the job goes on with its next ticks; one let go
/// of fewer times is taken over and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_keeps_killing_its_host_is_abandoned() {
  let cluster = PgCluster::start();
  // Make the tables, then leave two expired runs behind as dead hosts would.
  library_runtime(cluster.url(), "setup", "", "0")
    .join()
    .unwrap();
  cluster
    .query(
      "INSERT INTO kiln_cron_runs (function, job, tick, attempt, state, host, lease_until, takeovers) VALUES \
         ('library', 'lib', '2001-01-01T00:00:00Z', 0, 'running', 'dead/1/0', now() - interval '1 s', 3), \
         ('library', 'lib', '2001-01-01T00:01:00Z', 0, 'running', NULL, now(), 1)",
    )
    .await;
  let ran: usize = library_runtime(cluster.url(), "survivor", COUNTING_JOB, "globalThis.ran")
    .join()
    .unwrap()
    .parse()
    .unwrap();
  let runs = cluster.runs("library").await;
  let state = |second: i64| {
    runs
      .iter()
      .find(|r| r.second == second)
      .map(|r| (r.state.as_str(), r.host.as_str(), r.takeovers))
  };
  assert_eq!(
    state(978307200 / 60),
    Some(("abandoned", "dead/1/0", 3)),
    "{runs:?}"
  );
  assert_eq!(
    state(978307260 / 60),
    Some(("succeeded", "survivor", 2)),
    "{runs:?}"
  );
  // The taken-over run, then the job's own ticks.
  assert!(ran >= 3, "{ran}: {runs:?}");
  assert_eq!(runs.len(), ran + 1, "{runs:?}");
}

/// Runs of one job never overlap across processes: a run longer than the
/// schedule's interval makes the others skip the ticks it spans. A job
/// closed (its signal aborted) mid-run is recorded `closed`, and the run is
/// not handed to another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_job_never_overlap_across_processes() {
  const SLOW_JOB: &str = r#"
    globalThis.spans = [];
    const stop = new AbortController();
    Deno.cron("lib", "* * * * *", { signal: stop.signal }, async () => {
      const start = Date.now();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      globalThis.spans.push([start, Date.now()]);
    });
    setTimeout(() => stop.abort(), 5200);
  "#;
  let cluster = PgCluster::start();
  let mut spans: Vec<(u64, u64)> = ["lib-a", "lib-b"]
    .into_iter()
    .map(|host_id| {
      library_runtime(
        cluster.url(),
        host_id,
        SLOW_JOB,
        "JSON.stringify(globalThis.spans)",
      )
    })
    .collect::<Vec<_>>()
    .into_iter()
    .flat_map(|t| serde_json::from_str::<Vec<(u64, u64)>>(&t.join().unwrap()).unwrap())
    .collect();
  spans.sort();
  assert!(spans.len() >= 2, "{spans:?}");
  for pair in spans.windows(2) {
    assert!(pair[1].0 >= pair[0].1, "runs overlap: {spans:?}");
  }
  let runs = cluster.runs("library").await;
  assert_eq!(runs.len(), spans.len(), "{runs:?} {spans:?}");
  assert!(
    runs
      .iter()
      .all(|r| r.state == "succeeded" || r.state == "closed"),
    "{runs:?}"
  );
  assert!(runs.iter().all(|r| r.takeovers == 0), "{runs:?}");
  // Only the run the abort caught (the last) can be `closed`.
  let closed: Vec<_> = runs.iter().filter(|r| r.state == "closed").collect();
  assert!(
    closed.is_empty() || (closed.len() == 1 && closed[0].second == runs[runs.len() - 1].second),
    "{runs:?}"
  );
}
