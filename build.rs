//! Bakes kiln's extensions into `$OUT_DIR/kiln.snap` (see DESIGN.md).
//!
//! Only the modules baking needs are compiled here, through `#[path]`; they
//! must not reach into the rest of the crate.

#[allow(dead_code)]
#[path = "src/snapshot/bake.rs"]
mod bake;
#[allow(dead_code)]
#[path = "src/snapshot/container.rs"]
mod container;
#[allow(dead_code)]
#[path = "src/extensions/mod.rs"]
mod extensions;
#[allow(dead_code)]
#[path = "src/snapshot/transpile.rs"]
mod transpile;

use std::path::PathBuf;

fn main() {
  let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
  let target = std::env::var("TARGET").expect("cargo sets TARGET");
  // The runtime computes its expected fingerprint with the same target.
  std::println!("cargo:rustc-env=KILN_TARGET={target}");
  std::println!("cargo:rerun-if-changed=build.rs");
  std::println!("cargo:rerun-if-changed=ext_js");

  let baked = match bake::Baker::new(&out_dir)
    .extensions(extensions::all(extensions::ExtensionOptions::default()))
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
