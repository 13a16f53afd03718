//! Op round trips from JS: a sync (fast) op and an async op, per call.

#[path = "common.rs"]
mod common;

use criterion::Criterion;
use criterion::Throughput;
use criterion::criterion_group;
use criterion::criterion_main;
use deno_core::JsRuntime;
use deno_core::op2;

#[op2(fast)]
fn op_bench_sync(x: u32) -> u32 {
  x.wrapping_add(1)
}

#[op2]
async fn op_bench_async(x: u32) -> u32 {
  x.wrapping_add(1)
}

deno_core::extension!(bench_ops, ops = [op_bench_sync, op_bench_async],);

const SYNC_CALLS: u64 = 100_000;
const ASYNC_CALLS: u64 = 10_000;

fn ops(c: &mut Criterion) {
  let tokio = common::tokio();
  let _guard = tokio.enter();
  let mut js = JsRuntime::try_new(deno_core::RuntimeOptions {
    extensions: vec![bench_ops::init()],
    ..Default::default()
  })
  .expect("runtime");
  js.execute_script(
    "setup",
    r#"
      const { op_bench_sync, op_bench_async } = Deno.core.ops;
      globalThis.syncLoop = (n) => { let x = 0; for (let i = 0; i < n; i++) x = op_bench_sync(x); return x; };
      globalThis.asyncLoop = async (n) => { let x = 0; for (let i = 0; i < n; i++) x = await op_bench_async(x); return x; };
    "#,
  )
  .expect("setup");

  let mut g = c.benchmark_group("ops");
  g.throughput(Throughput::Elements(SYNC_CALLS));
  g.bench_function("sync_op_x100000", |b| {
    b.iter(|| {
      js.execute_script("sync", format!("syncLoop({SYNC_CALLS})"))
        .expect("sync")
    })
  });
  g.throughput(Throughput::Elements(ASYNC_CALLS));
  g.bench_function("async_op_x10000", |b| {
    b.iter(|| {
      let promise = js
        .execute_script("async", format!("asyncLoop({ASYNC_CALLS})"))
        .expect("async");
      let resolve = js.resolve(promise);
      tokio
        .block_on(js.with_event_loop_promise(Box::pin(resolve), Default::default()))
        .expect("resolve")
    })
  });
  g.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
