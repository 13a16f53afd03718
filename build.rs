//! Bakes kiln's extensions into `$OUT_DIR/kiln.snap` (see DESIGN.md) when
//! the `embedded-snapshot` feature is on; the baking is `kiln-pipeline`'s
//! `Baker`, the list `kiln-extensions`' one `all()`.

use std::path::PathBuf;

fn main() {
  let target = std::env::var("TARGET").expect("cargo sets TARGET");
  // The runtime computes its expected fingerprint with the same target.
  std::println!("cargo:rustc-env=KILN_TARGET={target}");
  std::println!("cargo:rerun-if-changed=build.rs");
  if std::env::var_os("CARGO_FEATURE_EMBEDDED_SNAPSHOT").is_none() {
    return;
  }
  std::println!("cargo:rerun-if-changed=ext_js");
  let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

  let baked = match kiln_pipeline::bake::Baker::new(&out_dir)
    .extensions(kiln_extensions::all(Default::default()))
    .target(&target)
    .cargo_manifest_dir(env!("CARGO_MANIFEST_DIR"))
    .bake()
  {
    Ok(baked) => baked,
    Err(e) => {
      build_print::error!("kiln bake failed: {e}");
      std::process::exit(1);
    }
  };
  baked.emit_rerun_if_changed();
  build_print::info!(
    "kiln snapshot: {} extensions, {} ops, {} KiB raw -> {} KiB zstd ({:.1}%), {} residual sources, baked in {:.2?}",
    baked.manifest.extensions.len(),
    baked.manifest.op_count(),
    baked.raw_len / 1024,
    baked.compressed_len() / 1024,
    100.0 * baked.compressed_len() as f64 / baked.raw_len as f64,
    baked.residual.len(),
    baked.duration
  );
}
