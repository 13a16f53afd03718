//! Runtime creation with 10, 100 and 1000 ops (and one JS function per op),
//! from a snapshot and from source: the evidence that op registration costs
//! (almost) nothing at launch when it was done at bake time.

#[path = "common.rs"]
mod common;

use std::time::Duration;

use criterion::BenchmarkId;
use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;
use deno_core::JsRuntime;
use kiln::snapshot::bake;
use kiln::snapshot::container::SnapshotContainer;

const OP_COUNTS: [usize; 3] = [10, 100, 1000];

fn scaling(c: &mut Criterion) {
  // Bake first: a bake sets V8 flags, which must precede every runtime.
  let snapshots: Vec<(usize, &'static [u8])> = OP_COUNTS
    .iter()
    .map(|&ops| {
      let baked = bake::bake(
        vec![common::scaled_extension(ops)],
        kiln::snapshot::load::TARGET,
        env!("CARGO_MANIFEST_DIR"),
        3,
      )
      .expect("bake");
      let raw = SnapshotContainer::parse(&baked.container)
        .and_then(|c| c.decompress())
        .expect("thaw");
      (ops, &*Box::leak(raw.into_boxed_slice()))
    })
    .collect();

  let tokio = common::tokio();
  let _guard = tokio.enter();
  let mut g = c.benchmark_group("scaling");
  g.measurement_time(Duration::from_secs(6));
  for &(ops, snapshot) in &snapshots {
    g.bench_with_input(BenchmarkId::new("snapshot", ops), &ops, |b, &ops| {
      b.iter(|| {
        let mut js = JsRuntime::try_new(deno_core::RuntimeOptions {
          startup_snapshot: Some(snapshot),
          extensions: vec![common::scaled_extension(ops)],
          ..Default::default()
        })
        .expect("runtime from snapshot");
        common::one_plus_one(&mut js);
      })
    });
    g.bench_with_input(BenchmarkId::new("source", ops), &ops, |b, &ops| {
      b.iter(|| {
        let mut js = JsRuntime::try_new(deno_core::RuntimeOptions {
          extensions: vec![common::scaled_extension(ops)],
          ..Default::default()
        })
        .expect("runtime from source");
        common::one_plus_one(&mut js);
      })
    });
  }
  g.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
