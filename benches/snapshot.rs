//! The real baked snapshot under zstd levels: compressed size (printed) and
//! decompression time, to choose the bake's level. Also times the runtime's
//! own check-and-decompress path (`load::thaw`).

use std::time::Duration;

use criterion::BenchmarkId;
use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;
use kiln::snapshot::container::SnapshotContainer;
use kiln::snapshot::load;

fn compress(raw: &[u8], level: i32, long: bool) -> Vec<u8> {
  let mut c = zstd::bulk::Compressor::new(level).expect("compressor");
  if long {
    c.long_distance_matching(true).expect("ldm");
    c.window_log(27).expect("window");
  }
  c.compress(raw).expect("compress")
}

fn snapshot(c: &mut Criterion) {
  let manifest = kiln::runtime::expected_manifest();
  let raw = load::thaw(load::EMBEDDED_SNAPSHOT, &manifest).expect("thaw");
  let baked = SnapshotContainer::parse(load::EMBEDDED_SNAPSHOT).expect("parse");
  eprintln!(
    "snapshot: raw {} bytes; embedded container {} bytes ({:.1}%)",
    raw.len(),
    load::EMBEDDED_SNAPSHOT.len(),
    100.0 * load::EMBEDDED_SNAPSHOT.len() as f64 / raw.len() as f64
  );
  let mut g = c.benchmark_group("snapshot");
  g.measurement_time(Duration::from_secs(5));
  for (level, long) in [(1, false), (3, false), (9, false), (19, false), (22, true)] {
    let frame = compress(&raw, level, long);
    let label = if long {
      format!("{level}-long")
    } else {
      level.to_string()
    };
    eprintln!(
      "snapshot: zstd level {label}: {} bytes ({:.1}% of raw)",
      frame.len(),
      100.0 * frame.len() as f64 / raw.len() as f64
    );
    g.bench_with_input(
      BenchmarkId::new("decompress", &label),
      &frame,
      |b, frame| {
        b.iter(|| {
          let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
          if long {
            d.window_log_max(27).expect("window");
          }
          d.decompress(frame, raw.len()).expect("decompress")
        })
      },
    );
  }
  g.bench_function("thaw_embedded", |b| {
    b.iter(|| load::thaw(load::EMBEDDED_SNAPSHOT, &manifest).expect("thaw"))
  });
  g.bench_function("check_header_only", |b| {
    b.iter(|| {
      let c = SnapshotContainer::parse(load::EMBEDDED_SNAPSHOT).expect("parse");
      c.check_manifest(&manifest).expect("manifest");
    })
  });
  g.finish();
  drop(baked);
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
