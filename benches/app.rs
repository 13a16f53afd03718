//! User code at start-up (#12), release binaries, one run:
//!
//! - `app/*`: a process running the generated ~1 MB app (see `fixture.rs`)
//!   to exit: the `kiln compile`d executable, `kiln run` without and with a
//!   warm code cache, `deno run` with its (warm) code cache, `node`;
//! - `app_serve/*`: `kiln serve` in process with functions started from the
//!   baked snapshot: the first request to an instance that has not started
//!   (no warm instance) and the first request that finds a warm one, for
//!   `hello.ts` and for a function importing the 1 MB app;
//! - the floor under both (`app/floor_process`, `app_serve/floor_thaw`):
//!   a snapshot of deno_core alone with the same app evaluated in it (no
//!   kiln extension, no container, no compression), thawed by a process
//!   that calls `checksum()` and exits, and thawed in process, each thaw
//!   followed by the call and a drop. V8 keeps one read-only heap per
//!   process, so that snapshot is baked and thawed by children (this
//!   binary, told so by environment variables); the in-process floor is
//!   timed by the child and reported on its stdout.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;
use http_body_util::BodyExt;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use kiln_host::Host;
use kiln_host::HostOptions;

mod common;
mod fixture;
mod loopback;

fn on_path(name: &str) -> Option<PathBuf> {
  std::env::var_os("PATH").and_then(|paths| {
    std::env::split_paths(&paths)
      .map(|dir| dir.join(name))
      .find(|p| p.is_file())
  })
}

fn run_ok(cmd: &mut Command) {
  let out = cmd.stderr(Stdio::piped()).output().expect("spawn");
  assert!(
    out.status.success() && !out.stdout.is_empty(),
    "{cmd:?} failed: {}",
    String::from_utf8_lossy(&out.stderr)
  );
}

/// Child modes of this binary (the floor): bake the bare app snapshot of
/// `FLOOR_APP` to `FLOOR_BAKE_TO`; thaw `FLOOR_THAW` once and exit; thaw
/// `FLOOR_THAW_IN_PROCESS` `FLOOR_ITERS` times and print the nanoseconds.
const FLOOR_APP: &str = "KILN_APP_FLOOR_APP";
const FLOOR_BAKE_TO: &str = "KILN_APP_FLOOR_BAKE_TO";
const FLOOR_THAW: &str = "KILN_APP_FLOOR_THAW";
const FLOOR_THAW_IN_PROCESS: &str = "KILN_APP_FLOOR_THAW_IN_PROCESS";
const FLOOR_ITERS: &str = "KILN_APP_FLOOR_ITERS";

/// What the floor runs after a thaw: the compiled app's `main.mjs` body.
const FLOOR_CALL: &str = "Deno.core.print(`${globalThis.checksum()}\n`)";

/// Runs a child mode if this process is one; returns otherwise.
fn floor_child_modes() {
  if let (Some(app), Some(out)) = (std::env::var_os(FLOOR_APP), std::env::var_os(FLOOR_BAKE_TO)) {
    let tokio = common::tokio();
    let _guard = tokio.enter();
    let mut js = deno_core::JsRuntimeForSnapshot::try_new(deno_core::RuntimeOptions {
      module_loader: Some(std::rc::Rc::new(deno_core::FsModuleLoader)),
      ..Default::default()
    })
    .expect("snapshotting runtime");
    // A side module that imports the app and hands `checksum` to scripts.
    let app = deno_core::url::Url::from_file_path(&app).expect("app url");
    let entry = app.join("floor-entry.mjs").expect("entry url");
    let code = format!("import {{ checksum }} from \"{app}\";\nglobalThis.checksum = checksum;\n");
    tokio.block_on(async {
      let id = js
        .load_side_es_module_from_code(&entry, code)
        .await
        .expect("load app");
      let evaluated = js.mod_evaluate(id);
      js.run_event_loop(Default::default())
        .await
        .expect("event loop");
      evaluated.await.expect("evaluate app");
    });
    std::fs::write(out, js.snapshot()).expect("write the app snapshot");
    std::process::exit(0);
  }
  if let Some(file) = std::env::var_os(FLOOR_THAW) {
    common::thaw_file_run_and_exit(&file, FLOOR_CALL);
  }
  if let Some(file) = std::env::var_os(FLOOR_THAW_IN_PROCESS) {
    let iters: u64 = std::env::var(FLOOR_ITERS)
      .ok()
      .and_then(|n| n.parse().ok())
      .expect("iterations");
    let tokio = common::tokio();
    let _guard = tokio.enter();
    let snapshot: &'static [u8] = Box::leak(
      std::fs::read(file)
        .expect("read the app snapshot")
        .into_boxed_slice(),
    );
    let call = "globalThis.checksum()";
    // One thaw outside the timing, as the host has thawed before.
    drop(common::thaw_bare(snapshot));
    let started = Instant::now();
    for _ in 0..iters {
      let mut js = common::thaw_bare(snapshot);
      std::hint::black_box(js.execute_script("main", call).expect("checksum"));
    }
    println!("{}", started.elapsed().as_nanos());
    std::process::exit(0);
  }
}

/// Bakes the floor's snapshot of the app whose entry is `lib`, in a child.
fn bake_floor(lib: &Path, out: &Path) {
  let status = Command::new(common::this_binary())
    .env(FLOOR_APP, lib)
    .env(FLOOR_BAKE_TO, out)
    .status()
    .expect("spawn the floor bake");
  assert!(status.success(), "the floor bake failed");
  eprintln!(
    "floor: deno_core + app snapshot is {} bytes",
    std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
  );
}

const MAIN: &str = "import { checksum } from \"./lib.mjs\";\nconsole.log(checksum());\n";

fn app(c: &mut Criterion) {
  floor_child_modes();
  let dir = tempfile::tempdir().expect("tempdir");
  let src = dir.path().join("app");
  let size = fixture::write(&src);
  eprintln!(
    "app fixture: {} modules, {} KiB",
    fixture::MODULES + 1,
    size / 1024
  );
  let main = src.join("main.mjs");
  std::fs::write(&main, MAIN).expect("write main");
  let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
  let exe = dir.path().join("app-compiled");
  let status = Command::new(kiln)
    .arg("compile")
    .arg(&main)
    .arg("-o")
    .arg(&exe)
    .status()
    .expect("spawn kiln compile");
  assert!(status.success(), "kiln compile failed");
  let code_cache = dir.path().join("kiln-cache");
  // Warm every cache once, outside the timing.
  run_ok(&mut Command::new(&exe));
  run_ok(
    Command::new(kiln)
      .arg("run")
      .arg("--cache-dir")
      .arg(&code_cache)
      .arg(&main),
  );
  let deno_dir = dir.path().join("deno_dir");
  let deno = on_path("deno");
  let deno_cmd = |deno: &Path| {
    let mut cmd = Command::new(deno);
    cmd
      .env("DENO_DIR", &deno_dir)
      .env("DENO_NO_UPDATE_CHECK", "1")
      .args(["run", "--quiet"])
      .arg(&main);
    cmd
  };
  if let Some(deno) = &deno {
    run_ok(&mut deno_cmd(deno));
  }

  let floor_snapshot = dir.path().join("floor.snap");
  bake_floor(&src.join("lib.mjs"), &floor_snapshot);
  let floor_cmd = || {
    let mut cmd = Command::new(common::this_binary());
    cmd.env(FLOOR_THAW, &floor_snapshot);
    cmd
  };
  run_ok(&mut floor_cmd());

  let mut g = c.benchmark_group("app");
  g.sample_size(30);
  g.measurement_time(Duration::from_secs(8));
  g.bench_function("compiled", |b| b.iter(|| run_ok(&mut Command::new(&exe))));
  g.bench_function("floor_process", |b| b.iter(|| run_ok(&mut floor_cmd())));
  g.bench_function("kiln_run_no_code_cache", |b| {
    b.iter(|| {
      run_ok(
        Command::new(kiln)
          .args(["run", "--no-code-cache"])
          .arg(&main),
      )
    })
  });
  g.bench_function("kiln_run_code_cache", |b| {
    b.iter(|| {
      run_ok(
        Command::new(kiln)
          .arg("run")
          .arg("--cache-dir")
          .arg(&code_cache)
          .arg(&main),
      )
    })
  });
  match &deno {
    Some(deno) => {
      g.bench_function("deno_run", |b| b.iter(|| run_ok(&mut deno_cmd(deno))));
    }
    None => eprintln!("app: deno not on PATH, skipped"),
  }
  match on_path("node") {
    Some(node) => {
      g.bench_function("node", |b| {
        b.iter(|| run_ok(Command::new(&node).arg(&main)))
      });
    }
    None => eprintln!("app: node not on PATH, skipped"),
  }
  g.finish();
}

async fn first_request(addr: std::net::SocketAddr, path: &str) -> Duration {
  let started = Instant::now();
  let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
  let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
    .await
    .expect("handshake");
  tokio::spawn(conn);
  let request = http::Request::get(path)
    .header("host", addr.to_string())
    .body(Empty::<Bytes>::new())
    .expect("request");
  let response = sender.send_request(request).await.expect("send");
  assert!(
    response.status().is_success(),
    "{path}: {}",
    response.status()
  );
  let body = response.into_body().collect().await.expect("body");
  std::hint::black_box(body.to_bytes());
  started.elapsed()
}

/// A host serving `hello` and `big` (the 1 MB app behind a handler), with
/// functions started from the baked snapshot and `warm` warm instances.
fn start_host(
  tokio: &tokio::runtime::Runtime,
  fns: &Path,
  cache: &Path,
  warm: usize,
) -> (Arc<Host>, std::net::SocketAddr) {
  let mut options = HostOptions::new(fns);
  options.max_instances = 2;
  options.warm_instances = warm;
  options.idle_timeout = Duration::from_secs(3600);
  options.snapshots = Some(kiln_host::SnapshotOptions {
    baker: PathBuf::from(env!("CARGO_BIN_EXE_kiln")),
    cache_dir: cache.to_path_buf(),
  });
  let (host, addr) = loopback::serve(tokio, options);
  tokio.block_on(async {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !host.is_ready() {
      assert!(Instant::now() < deadline, "host never ready");
      tokio::time::sleep(Duration::from_millis(20)).await;
    }
  });
  (host, addr)
}

fn app_serve(c: &mut Criterion) {
  let dir = tempfile::tempdir().expect("tempdir");
  let fns = dir.path().join("functions");
  fixture::write(&fns.join("app"));
  std::fs::write(
    fns.join("hello.ts"),
    "export default { fetch: () => new Response(\"Hello from kiln!\") };\n",
  )
  .expect("write");
  std::fs::write(
    fns.join("big.mjs"),
    "import { checksum } from \"./app/lib.mjs\";\nexport default { fetch: () => new Response(String(checksum())) };\n",
  )
  .expect("write");
  let tokio = tokio::runtime::Builder::new_multi_thread()
    .enable_all()
    .build()
    .expect("tokio");
  let floor_snapshot = dir.path().join("floor.snap");
  bake_floor(&fns.join("app").join("lib.mjs"), &floor_snapshot);
  let mut g = c.benchmark_group("app_serve");
  g.sample_size(30);
  g.measurement_time(Duration::from_secs(6));

  // The floor under a first request: thaw the app's bare snapshot, call
  // `checksum()`, drop, in a child process that times it.
  g.bench_function("floor_thaw", |b| {
    b.iter_custom(|iters| {
      let out = Command::new(common::this_binary())
        .env(FLOOR_THAW_IN_PROCESS, &floor_snapshot)
        .env(FLOOR_ITERS, iters.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn the floor thaw");
      assert!(out.status.success(), "the floor thaw failed");
      let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("nanoseconds from the floor thaw");
      Duration::from_nanos(nanos)
    })
  });

  // No warm instance: every timed request starts one (thawed from the
  // snapshot), evicted afterwards outside the timing.
  let (host, addr) = start_host(&tokio, &fns, &dir.path().join("cache"), 0);
  for function in ["hello", "big"] {
    g.bench_function(format!("first_request_no_warm/{function}"), |b| {
      b.iter_custom(|iters| {
        tokio.block_on(async {
          let mut total = Duration::ZERO;
          for _ in 0..iters {
            host.evict(function);
            tokio::time::sleep(Duration::from_millis(10)).await;
            total += first_request(addr, &format!("/{function}")).await;
          }
          total
        })
      })
    });
  }
  drop(host);

  // A warm instance waits: the timed request (on a new connection) takes
  // it; its replacement starts outside the timing.
  let (host, addr) = start_host(&tokio, &fns, &dir.path().join("cache"), 1);
  for function in ["hello", "big"] {
    g.bench_function(format!("first_request_warm/{function}"), |b| {
      b.iter_custom(|iters| {
        tokio.block_on(async {
          let mut total = Duration::ZERO;
          for _ in 0..iters {
            tokio::time::sleep(Duration::from_millis(10)).await;
            total += first_request(addr, &format!("/{function}")).await;
          }
          total
        })
      })
    });
  }
  drop(host);
  g.finish();
}

criterion_group!(benches, app, app_serve);
criterion_main!(benches);
