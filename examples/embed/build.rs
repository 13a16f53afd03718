//! Bakes kiln's extensions plus `embed_ext` into `$OUT_DIR/kiln.snap`, and
//! the application in `app/` on top: its modules are evaluated now.

use kiln::runtime::ModuleSpecifier;
use kiln_embed_ext as ext;

fn main() {
  let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
  let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
  // Named under file:///app/, not by this machine's paths.
  let base = ModuleSpecifier::parse(kiln::runtime::APP_BASE).expect("a URL");
  let loader =
    kiln::runtime::FsModuleLoader::default().with_relocation(kiln::runtime::Relocation {
      base: base.clone(),
      root: std::path::Path::new(&manifest_dir).join("app"),
    });
  let app = base.join("app.ts").expect("a URL");
  match kiln::snapshot::bake::Baker::new(out_dir)
    .extensions(kiln::extensions::all(Default::default()))
    .extension(ext::embed_ext::init(ext::ClosedCounters::default()))
    .modules(kiln::runtime::user_modules(
      std::rc::Rc::new(loader),
      vec![app],
    ))
    .bake()
  {
    Ok(baked) => baked.emit_rerun_if_changed(),
    Err(e) => {
      eprintln!("bake failed: {e}");
      std::process::exit(1);
    }
  }
  println!("cargo:rerun-if-changed=build.rs");
  println!("cargo:rerun-if-changed=app");
}
