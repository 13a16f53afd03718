//! `kiln serve` over real HTTP on loopback, host in process:
//!
//! - `cold_first_request`: a request to a function that has never run in
//!   this process — instance start (isolate thawed from the snapshot), module
//!   transpile and load, handler — on a fresh connection. Each iteration
//!   uses a function of its own (`f0`, `f1`, ...), evicted afterwards,
//!   outside the timing;
//! - `cold_restart`: the same function again after its instance was evicted
//!   (transpiled module cached): the cost of an instance start on demand;
//! - `warm_request`: one request on a keep-alive connection to a running
//!   instance (latency);
//! - `warm_throughput`: 128 requests over 8 concurrent keep-alive
//!   connections, 2 instances (throughput; criterion reports elements/s).

mod loopback;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use criterion::Criterion;
use criterion::Throughput;
use criterion::criterion_group;
use criterion::criterion_main;
use http_body_util::BodyExt;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kiln_host::Host;
use kiln_host::HostOptions;

/// Functions written for the cold bench; more than any criterion run uses.
const COLD_FUNCTIONS: usize = 3000;

const HELLO: &str = "export default { fetch: () => new Response(\"Hello from kiln!\") };\n";

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
  let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
  let _ = stream.set_nodelay(true);
  let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
    .await
    .expect("handshake");
  tokio::spawn(connection);
  sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) {
  let request = http::Request::get(path)
    .header("host", "bench")
    .body(Empty::new())
    .expect("request");
  // A keep-alive connection takes the next request once the previous
  // response has been read in full.
  sender.ready().await.expect("connection ready");
  let response = sender.send_request(request).await.expect("response");
  assert_eq!(response.status(), 200, "{path}");
  let body = response
    .into_body()
    .collect()
    .await
    .expect("body")
    .to_bytes();
  assert_eq!(&body[..], b"Hello from kiln!");
}

/// Times one request on a new connection to `function`, which has no live
/// instance, then evicts the instance it started (outside the timing): its
/// teardown finishes before the next timed request, and thousands of
/// isolates do not pile up.
async fn cold_request(host: &Host, addr: SocketAddr, function: &str) -> Duration {
  let started = Instant::now();
  let mut sender = connect(addr).await;
  get(&mut sender, &format!("/{function}")).await;
  let elapsed = started.elapsed();
  drop(sender);
  // Let the instance finish the request first.
  tokio::time::sleep(Duration::from_millis(2)).await;
  host.evict(function);
  tokio::time::sleep(Duration::from_millis(8)).await;
  elapsed
}

fn serve(c: &mut Criterion) {
  let dir = tempfile::tempdir().expect("tempdir");
  std::fs::write(dir.path().join("hello.ts"), HELLO).expect("write");
  for i in 0..COLD_FUNCTIONS {
    std::fs::write(dir.path().join(format!("f{i}.ts")), HELLO).expect("write");
  }
  let tokio = tokio::runtime::Builder::new_multi_thread()
    .enable_all()
    .build()
    .expect("tokio");
  let mut options = HostOptions::new(dir.path());
  // Instances start on first request; nothing is evicted behind our back.
  options.preload = false;
  options.max_instances = 2;
  // Cold means cold: no instance is started ahead of a request.
  options.warm_instances = 0;
  options.idle_timeout = Duration::from_secs(3600);
  let (host, addr) = loopback::serve(&tokio, options);
  let host: Arc<Host> = host;

  let mut g = c.benchmark_group("serve");
  g.sample_size(30);
  g.measurement_time(Duration::from_secs(6));

  let next = AtomicUsize::new(0);
  let cold = RefCell::new(Vec::new());
  g.bench_function("cold_first_request", |b| {
    b.iter_custom(|iters| {
      tokio.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
          let i = next.fetch_add(1, Ordering::Relaxed);
          assert!(
            i < COLD_FUNCTIONS,
            "more iterations than prepared functions"
          );
          let elapsed = cold_request(&host, addr, &format!("f{i}")).await;
          cold.borrow_mut().push(elapsed);
          total += elapsed;
        }
        total
      })
    })
  });

  g.bench_function("cold_restart", |b| {
    b.iter_custom(|iters| {
      tokio.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
          total += cold_request(&host, addr, "hello").await;
        }
        total
      })
    })
  });

  g.sample_size(100);
  g.measurement_time(Duration::from_secs(5));
  let mut sender = tokio.block_on(connect(addr));
  let warm = RefCell::new(Vec::new());
  g.bench_function("warm_request", |b| {
    b.iter_custom(|iters| {
      tokio.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
          let started = Instant::now();
          get(&mut sender, "/hello").await;
          let elapsed = started.elapsed();
          warm.borrow_mut().push(elapsed);
          total += elapsed;
        }
        total
      })
    })
  });

  const CONNECTIONS: usize = 8;
  const PER_CONNECTION: usize = 16;
  g.throughput(Throughput::Elements((CONNECTIONS * PER_CONNECTION) as u64));
  let mut senders: Vec<_> = tokio.block_on(async {
    let mut v = Vec::new();
    for _ in 0..CONNECTIONS {
      v.push(connect(addr).await);
    }
    v
  });
  g.bench_function("warm_throughput", |b| {
    b.iter(|| {
      tokio.block_on(async {
        let tasks: Vec<_> = senders
          .drain(..)
          .map(|mut sender| {
            tokio::spawn(async move {
              for _ in 0..PER_CONNECTION {
                get(&mut sender, "/hello").await;
              }
              sender
            })
          })
          .collect();
        for task in tasks {
          senders.push(task.await.expect("client task"));
        }
      })
    })
  });
  g.finish();
  tokio.block_on(host.close());
  // Criterion reports per-sample means; these are the single requests.
  report("serve/cold_first_request", cold.into_inner());
  report("serve/warm_request", warm.into_inner());
}

/// Prints percentiles of individual request latencies.
fn report(name: &str, mut samples: Vec<Duration>) {
  if samples.is_empty() {
    return;
  }
  samples.sort();
  let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
  println!(
    "{name} (single requests): n={} p50={:.3?} p90={:.3?} p99={:.3?} max={:.3?}",
    samples.len(),
    at(0.5),
    at(0.9),
    at(0.99),
    samples[samples.len() - 1]
  );
}

criterion_group!(benches, serve);
criterion_main!(benches);
