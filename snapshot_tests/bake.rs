//! Bakes in-process through the public bake API. Its own test binary: V8
//! flags and the platform are process-wide, and a bake sets flags first.

use kiln::extensions;
use kiln::snapshot::bake;
use kiln::snapshot::container::SnapshotContainer;

#[test]
fn bake_produces_a_container_for_the_one_extension_list() {
  let baked = bake::bake(
    extensions::all(extensions::ExtensionOptions::default()),
    kiln::snapshot::load::TARGET,
    env!("CARGO_MANIFEST_DIR"),
    3,
  )
  .unwrap_or_else(|e| panic!("bake failed: {e}"));

  // The container carries the manifest the runtime expects.
  let container = SnapshotContainer::parse(&baked.container).unwrap();
  container
    .check_manifest(&kiln::runtime::expected_manifest())
    .unwrap();
  assert_eq!(container.decompress().unwrap().len(), baked.raw_len);

  // Every file that went into the snapshot is listed for rerun-if-changed,
  // the TypeScript glue included.
  // (Compiled as a test of crates/cli: the repository root is two up.)
  let glue = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
    .join("../../ext_js/runtime.ts")
    .canonicalize()
    .unwrap();
  assert!(
    baked
      .files_loaded
      .iter()
      .any(|f| f.canonicalize().is_ok_and(|f| f == glue)),
    "{:?}",
    baked.files_loaded
  );
  assert!(
    baked
      .files_loaded
      .iter()
      .any(|f| f.ends_with("06_streams.js"))
  );

  // Lazy sources no baked code consumed are carried as residuals, sorted
  // (deno_core binary-searches them); consumed ones are not.
  let specs: Vec<&str> = baked
    .residual
    .iter()
    .map(|r| r.specifier.as_str())
    .collect();
  assert!(specs.windows(2).all(|w| w[0] < w[1]), "{specs:?}");
  assert!(specs.contains(&"ext:deno_web/locks.js"), "{specs:?}");
  assert!(!specs.contains(&"ext:deno_web/06_streams.js"), "{specs:?}");
  for r in baked.residual.iter().filter(|r| !r.is_esm) {
    assert!(
      r.code.starts_with("\"use strict\"; return ("),
      "{} is not pre-wrapped",
      r.specifier
    );
  }
}
