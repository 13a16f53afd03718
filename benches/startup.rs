//! Runtime creation in process: time to a runtime that has executed `1+1`.
//!
//! - `snapshot_thawed`: from the baked snapshot, bytes already decompressed
//!   (the steady state of a host);
//! - `snapshot_cold`: the same plus fingerprint check and decompression (the
//!   first runtime of a process);
//! - `from_source`: the same extensions, no snapshot: their JS evaluated and
//!   TypeScript transpiled at start-up (what the snapshot replaces);
//! - `floor`: a bare deno_core runtime with no extensions.

#[path = "common.rs"]
mod common;

use std::rc::Rc;
use std::time::Duration;

use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;
use deno_core::JsRuntime;
use kiln::extensions;
use kiln::snapshot::load;

fn startup(c: &mut Criterion) {
  let tokio = common::tokio();
  let _guard = tokio.enter();
  let mut g = c.benchmark_group("startup");
  g.measurement_time(Duration::from_secs(8));

  g.bench_function("snapshot_thawed", |b| {
    b.iter(|| {
      let mut rt = kiln::Runtime::new(kiln::RuntimeOptions::default()).expect("runtime");
      common::one_plus_one(rt.js_runtime());
    })
  });

  g.bench_function("snapshot_cold", |b| {
    b.iter(|| {
      let raw = load::thaw(load::EMBEDDED_SNAPSHOT, &kiln::runtime::expected_manifest())
        .expect("thaw")
        .into_boxed_slice();
      // SAFETY: the runtime borrowing `raw` is dropped at the end of this
      // block, before `raw`; nothing keeps the slice beyond the runtime.
      let bytes: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&raw) };
      {
        // SAFETY: `bytes` is `load::thaw`'s output for kiln's own list.
        let mut rt =
          unsafe { kiln::Runtime::from_snapshot(bytes, kiln::RuntimeOptions::default()) }
            .expect("runtime");
        common::one_plus_one(rt.js_runtime());
      }
      drop(raw);
    })
  });

  g.sample_size(20);
  g.bench_function("from_source", |b| {
    b.iter(|| {
      let mut js = JsRuntime::try_new(deno_core::RuntimeOptions {
        extensions: extensions::all(extensions::ExtensionOptions::default()),
        extension_transpiler: Some(Rc::new(kiln::snapshot::bake::transpile_extension_source)),
        ..Default::default()
      })
      .expect("runtime from source");
      js.execute_script("bootstrap", "globalThis.__kilnBootstrap();")
        .expect("bootstrap");
      common::one_plus_one(&mut js);
    })
  });

  g.sample_size(100);
  g.bench_function("floor", |b| {
    b.iter(|| {
      let mut js = JsRuntime::try_new(deno_core::RuntimeOptions::default()).expect("bare runtime");
      common::one_plus_one(&mut js);
    })
  });
  g.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
