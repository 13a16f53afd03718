//! Bakes kiln's extensions plus `embed_ext` into `$OUT_DIR/kiln.snap`.

use kiln_embed_ext as ext;

fn main() {
  let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
  match kiln::snapshot::bake::Baker::new(out_dir)
    .extensions(kiln::extensions::all(Default::default()))
    .extension(ext::embed_ext::init(ext::ClosedCounters::default()))
    .bake()
  {
    Ok(baked) => baked.emit_rerun_if_changed(),
    Err(e) => {
      eprintln!("bake failed: {e}");
      std::process::exit(1);
    }
  }
  println!("cargo:rerun-if-changed=build.rs");
}
