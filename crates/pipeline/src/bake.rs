//! The bake: extensions in, a verified-on-load snapshot container out.
//!
//! Runs at build time (kiln's `build.rs` and any embedder's) and in tests.
//! It transpiles the TypeScript glue, runs every extension's JS into a V8
//! heap, snapshots it, wraps it in a [`SnapshotContainer`], and collects what
//! the runtime still needs from the bake: lazily loaded sources that no baked
//! code consumed.

use std::borrow::Cow;
use std::path::Path;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use std::time::Instant;

use deno_core::ModuleCodeString;
use deno_core::ModuleName;
use deno_core::SourceMapData;
use deno_core::snapshot::CreateSnapshotOptions;
use deno_error::JsErrorBox;

use crate::container::Manifest;
use crate::container::SnapshotContainer;
use crate::transpile;

/// The zstd level kiln bakes with (see benches/RESULTS.md for the choice).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 19;

/// The container file written into the output directory.
pub const SNAPSHOT_FILE: &str = "kiln.snap";
/// The generated Rust table of residual lazy sources.
pub const RESIDUAL_FILE: &str = "kiln_residual.rs";
/// The generated Rust table of every extension source, for bakes at run time
/// (see [`with_embedded_sources`]).
pub const SOURCES_FILE: &str = "kiln_sources.rs";

/// V8 flags that make a bake reproducible. They must be set before the first
/// isolate of the process; V8 keeps them for the process.
const DETERMINISTIC_V8_FLAGS: &[&str] = &["--predictable", "--hash-seed=1", "--random-seed=1"];

/// Why a bake failed.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
  #[error("snapshot creation failed: {0}")]
  CreateSnapshot(String),
  #[error("cannot read lazily loaded source {specifier}: {reason}")]
  ReadLazySource { specifier: String, reason: String },
  #[error("cannot compress the snapshot: {0}")]
  Compress(std::io::Error),
  #[error("{0} is not set (bake from a build script, or set it explicitly)")]
  MissingEnv(&'static str),
  #[error("cannot write {path}: {source}")]
  Write {
    path: PathBuf,
    source: std::io::Error,
  },
  /// A user module failed to load or threw while it was evaluated.
  #[error("{0}")]
  Module(String),
  /// User code left something a snapshot cannot hold.
  #[error("cannot bake: {0}")]
  Unbakeable(String),
  #[error("no source for extension file {0} (the binary was built without it)")]
  MissingSource(String),
  /// A failure while the user module at `index` (of
  /// [`UserModules::modules`]) was loaded or evaluated.
  #[error("{source}")]
  AtModule {
    index: usize,
    #[source]
    source: Box<BakeError>,
  },
}

/// A lazily loaded extension source that no baked code consumed: the runtime
/// must carry its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidualSource {
  pub specifier: String,
  pub code: String,
  pub is_esm: bool,
}

/// What a bake produced.
#[derive(Debug)]
pub struct Baked {
  /// The container: header plus zstd frame.
  pub container: Vec<u8>,
  pub manifest: Manifest,
  pub raw_len: usize,
  /// Every file read to build the snapshot (for `cargo:rerun-if-changed`).
  pub files_loaded: Vec<PathBuf>,
  /// Lazy sources left out of the heap, sorted by specifier.
  pub residual: Vec<ResidualSource>,
  /// Every extension source as read for the bake (TypeScript untranspiled),
  /// by specifier: what a bake at run time needs (see
  /// [`with_embedded_sources`]).
  pub sources: Vec<(String, String)>,
  pub duration: Duration,
}

impl Baked {
  /// Wraps raw snapshot bytes in a container and records the bake (the
  /// files loaded sorted, once each).
  fn wrap(
    raw: &[u8],
    manifest: Manifest,
    compression_level: i32,
    mut files_loaded: Vec<PathBuf>,
    residual: Vec<ResidualSource>,
    sources: Vec<(String, String)>,
    start: Instant,
  ) -> Result<Baked, BakeError> {
    files_loaded.sort();
    files_loaded.dedup();
    let container =
      SnapshotContainer::encode(&manifest, raw, compression_level).map_err(BakeError::Compress)?;
    Ok(Baked {
      container,
      manifest,
      raw_len: raw.len(),
      files_loaded,
      residual,
      sources,
      duration: start.elapsed(),
    })
  }

  pub fn compressed_len(&self) -> usize {
    self.container.len()
  }

  /// Prints `cargo:rerun-if-changed` for every file that went into the
  /// snapshot (build scripts only).
  pub fn emit_rerun_if_changed(&self) {
    for file in &self.files_loaded {
      std::println!("cargo:rerun-if-changed={}", file.display());
    }
  }

  /// Writes `kiln.snap` and the residual-source table into `out_dir`.
  pub fn write_to(&self, out_dir: &Path) -> Result<(), BakeError> {
    write(&out_dir.join(SNAPSHOT_FILE), self.container.as_slice())?;
    let residual_dir = out_dir.join("kiln_residual");
    std::fs::create_dir_all(&residual_dir).map_err(|source| BakeError::Write {
      path: residual_dir.clone(),
      source,
    })?;
    let mut js = String::new();
    let mut esm = String::new();
    for (i, source) in self.residual.iter().enumerate() {
      let file = format!("{i}.js");
      write(&residual_dir.join(&file), source.code.as_bytes())?;
      let entry = format!(
        "  ({:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/kiln_residual/{file}\"))),\n",
        source.specifier
      );
      if source.is_esm { &mut esm } else { &mut js }.push_str(&entry);
    }
    let table = format!(
      "// Generated by the kiln bake: lazily loaded sources no baked code consumed.\n\
       pub static RESIDUAL_LAZY_JS: &[(&str, &str)] = &[\n{js}];\n\
       pub static RESIDUAL_LAZY_ESM: &[(&str, &str)] = &[\n{esm}];\n"
    );
    write(&out_dir.join(RESIDUAL_FILE), table.as_bytes())?;
    write_source_table(
      out_dir,
      "kiln_sources",
      SOURCES_FILE,
      "EXTENSION_SOURCES",
      &self.sources,
    )
  }
}

/// Writes `sources` as files under `out_dir/dir` and a Rust table `name` of
/// `(specifier, include_str!(file))` pairs into `out_dir/file`.
fn write_source_table(
  out_dir: &Path,
  dir: &str,
  file: &str,
  name: &str,
  sources: &[(String, String)],
) -> Result<(), BakeError> {
  let source_dir = out_dir.join(dir);
  std::fs::create_dir_all(&source_dir).map_err(|source| BakeError::Write {
    path: source_dir.clone(),
    source,
  })?;
  let mut entries = String::new();
  for (i, (specifier, code)) in sources.iter().enumerate() {
    let source_file = format!("{i}.txt");
    write(&source_dir.join(&source_file), code.as_bytes())?;
    entries.push_str(&format!(
      "  ({specifier:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{dir}/{source_file}\"))),\n"
    ));
  }
  let table = format!(
    "// Generated by the kiln bake.\npub static {name}: &[(&str, &str)] = &[\n{entries}];\n"
  );
  write(&out_dir.join(file), table.as_bytes())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BakeError> {
  // Unchanged outputs keep their mtime, so cargo does not rebuild dependents.
  if std::fs::read(path).is_ok_and(|old| old == bytes) {
    return Ok(());
  }
  std::fs::write(path, bytes).map_err(|source| BakeError::Write {
    path: path.to_path_buf(),
    source,
  })
}

/// The baking API for build scripts: kiln's own `build.rs` uses it, and so can
/// any crate that has kiln as a build-dependency and bakes its own extensions
/// next to kiln's.
///
/// ```no_run
/// # fn kiln_extensions() -> Vec<deno_core::Extension> { Vec::new() }
/// # fn demo() -> Result<(), kiln_pipeline::bake::BakeError> {
/// let out_dir = std::env::var("OUT_DIR").unwrap();
/// let baked = kiln_pipeline::bake::Baker::new(out_dir)
///   // kiln's list first: kiln_extensions::all(Default::default())
///   .extensions(kiln_extensions())
///   // .extension(my_ext::init(..))
///   .bake()?;
/// baked.emit_rerun_if_changed();
/// # Ok(()) }
/// ```
pub struct Baker {
  out_dir: PathBuf,
  extensions: Vec<deno_core::Extension>,
  target: Option<String>,
  cargo_manifest_dir: Option<&'static str>,
  compression_level: i32,
  modules: Option<UserModules>,
}

impl Baker {
  /// A bake that writes `kiln.snap` and `kiln_residual.rs` into `out_dir`.
  pub fn new(out_dir: impl Into<PathBuf>) -> Self {
    Baker {
      out_dir: out_dir.into(),
      extensions: Vec::new(),
      target: None,
      cargo_manifest_dir: None,
      compression_level: DEFAULT_COMPRESSION_LEVEL,
      modules: None,
    }
  }

  /// JavaScript or TypeScript modules evaluated into the snapshot after the
  /// extensions (an application baked next to its runtime): their top-level
  /// code runs at bake, so a runtime thawed from the snapshot imports them
  /// without parsing, compiling or evaluating anything. They must leave
  /// nothing pending (see [`bake_with_modules`]).
  pub fn modules(mut self, modules: UserModules) -> Self {
    self.modules = Some(modules);
    self
  }

  /// Appends extensions, in order (the runtime must list the same ones).
  pub fn extensions(mut self, extensions: Vec<deno_core::Extension>) -> Self {
    self.extensions.extend(extensions);
    self
  }

  /// Appends one extension.
  pub fn extension(mut self, extension: deno_core::Extension) -> Self {
    self.extensions.push(extension);
    self
  }

  /// The zstd level (default [`DEFAULT_COMPRESSION_LEVEL`]).
  pub fn compression(mut self, level: i32) -> Self {
    self.compression_level = level;
    self
  }

  /// The target triple the snapshot is for (default: `$TARGET`, which cargo
  /// sets for build scripts).
  pub fn target(mut self, target: impl Into<String>) -> Self {
    self.target = Some(target.into());
    self
  }

  /// The directory deno_core resolves extension sources against (default:
  /// `$CARGO_MANIFEST_DIR` of the build script, leaked once).
  pub fn cargo_manifest_dir(mut self, dir: &'static str) -> Self {
    self.cargo_manifest_dir = Some(dir);
    self
  }

  /// Bakes and writes the outputs.
  pub fn bake(self) -> Result<Baked, BakeError> {
    let target = self
      .target
      .or_else(|| std::env::var("TARGET").ok())
      .ok_or(BakeError::MissingEnv("TARGET"))?;
    let manifest_dir = match self.cargo_manifest_dir {
      Some(dir) => dir,
      None => {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
          .map_err(|_| BakeError::MissingEnv("CARGO_MANIFEST_DIR"))?;
        Box::leak(dir.into_boxed_str())
      }
    };
    let baked = match self.modules {
      None => bake(
        self.extensions,
        &target,
        manifest_dir,
        self.compression_level,
      )?,
      Some(modules) => bake_with_modules(
        self.extensions,
        &target,
        manifest_dir,
        self.compression_level,
        modules,
      )?,
    };
    baked.write_to(&self.out_dir)?;
    Ok(baked)
  }
}

/// Bakes `extensions` into a snapshot container for `target`.
///
/// `cargo_manifest_dir` is recorded by deno_core as the root of extension
/// sources. The first bake of a process sets V8's flags for determinism, so
/// it must come before any other runtime of that process: V8 freezes its
/// flags once it starts.
pub fn bake(
  extensions: Vec<deno_core::Extension>,
  target: &str,
  cargo_manifest_dir: &'static str,
  compression_level: i32,
) -> Result<Baked, BakeError> {
  let start = Instant::now();
  let manifest = Manifest::new(target, &extensions);
  let lazy_files = lazy_files(&extensions);
  let sources = extension_sources(&extensions, cargo_manifest_dir)?;

  set_bake_flags();

  let options = CreateSnapshotOptions {
    cargo_manifest_dir,
    startup_snapshot: None,
    skip_op_registration: false,
    extensions,
    extension_transpiler: Some(Rc::new(transpile_extension_source)),
    with_runtime_cb: None,
  };
  // deno_core panics on most snapshot failures; turn that into an error.
  let output = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    deno_core::snapshot::create_snapshot(options, None)
  }))
  .map_err(|panic| BakeError::CreateSnapshot(panic_message(&panic)))?
  .map_err(|e| BakeError::CreateSnapshot(e.to_string()))?;

  let consumed: std::collections::BTreeSet<&str> = output
    .consumed_lazy_specifiers
    .iter()
    .map(String::as_str)
    .collect();
  let mut residual = Vec::new();
  for (file, is_esm) in &lazy_files {
    if consumed.contains(file.specifier) {
      continue;
    }
    let code = file
      .load()
      .map_err(|e| BakeError::ReadLazySource {
        specifier: file.specifier.to_string(),
        reason: e.to_string(),
      })?
      .as_str()
      .to_string();
    // deno_core expects residual scripts pre-wrapped (see wrap_lazy_ext_script).
    let code = if *is_esm {
      code
    } else {
      deno_core::wrap_lazy_ext_script(&code)
    };
    residual.push(ResidualSource {
      specifier: file.specifier.to_string(),
      code,
      is_esm: *is_esm,
    });
  }
  residual.sort_by(|a, b| a.specifier.cmp(&b.specifier));

  Baked::wrap(
    &output.output,
    manifest,
    compression_level,
    output.files_loaded_during_snapshot,
    residual,
    sources,
    start,
  )
}

/// Sets kiln's bake flags, once per process, before V8 starts. Every bake
/// must use the same ones: V8 shares one read-only heap between the
/// isolates of a process, so snapshots whose read-only parts differ (the
/// hash seed is baked into them) cannot be thawed side by side (a host runs
/// kiln's snapshot and functions' own snapshots in one process).
fn set_bake_flags() {
  // V8 freezes its flags when it initialises: setting them twice aborts.
  static SET_FLAGS: std::sync::Once = std::sync::Once::new();
  SET_FLAGS.call_once(|| {
    deno_core::v8_set_flags(
      std::iter::once("kiln-bake".to_string())
        .chain(DETERMINISTIC_V8_FLAGS.iter().map(|f| f.to_string()))
        .collect(),
    );
  });
}

/// Every extension file with its source text, in registration order.
fn extension_sources(
  extensions: &[deno_core::Extension],
  cargo_manifest_dir: &str,
) -> Result<Vec<(String, String)>, BakeError> {
  all_files(extensions)
    .map(|file| {
      let code = load_file(file, cargo_manifest_dir)?;
      Ok((file.specifier.to_string(), code))
    })
    .collect()
}

fn all_files(
  extensions: &[deno_core::Extension],
) -> impl Iterator<Item = &deno_core::ExtensionFileSource> {
  extensions.iter().flat_map(|ext| {
    ext
      .js_files
      .iter()
      .chain(ext.esm_files.iter())
      .chain(ext.lazy_loaded_esm_files.iter())
      .chain(ext.lazy_loaded_js_files.iter())
  })
}

/// A file's text; paths recorded by deno_core's macros are relative to the
/// crate that declared them unless absolute.
fn load_file(
  file: &deno_core::ExtensionFileSource,
  cargo_manifest_dir: &str,
) -> Result<String, BakeError> {
  let read_error = |e: std::io::Error| BakeError::ReadLazySource {
    specifier: file.specifier.to_string(),
    reason: e.to_string(),
  };
  if let deno_core::ExtensionFileSourceCode::LoadedFromFsDuringSnapshot(path) = &file.code {
    let path = Path::new(cargo_manifest_dir).join(path);
    return std::fs::read_to_string(path).map_err(read_error);
  }
  Ok(file.load().map_err(read_error)?.as_str().to_string())
}

/// Replaces every extension file's source with the text `sources` (a bake's
/// [`Baked::sources`], embedded in a binary) holds for it, so the extensions
/// can be baked again where their source files do not exist (a bake at run
/// time: `kiln compile`, served functions).
pub fn with_embedded_sources(
  mut extensions: Vec<deno_core::Extension>,
  sources: &[(&'static str, &'static str)],
) -> Result<Vec<deno_core::Extension>, BakeError> {
  let table: std::collections::HashMap<&str, &'static str> = sources.iter().copied().collect();
  let replace = |files: &std::borrow::Cow<'static, [deno_core::ExtensionFileSource]>| {
    files
      .iter()
      .map(|file| {
        let code = table
          .get(file.specifier)
          .ok_or_else(|| BakeError::MissingSource(file.specifier.to_string()))?;
        Ok(deno_core::ExtensionFileSource::new_computed(
          file.specifier,
          std::sync::Arc::from(*code),
        ))
      })
      .collect::<Result<Vec<_>, BakeError>>()
      .map(std::borrow::Cow::Owned)
  };
  for ext in &mut extensions {
    ext.js_files = replace(&ext.js_files)?;
    ext.esm_files = replace(&ext.esm_files)?;
    ext.lazy_loaded_esm_files = replace(&ext.lazy_loaded_esm_files)?;
    ext.lazy_loaded_js_files = replace(&ext.lazy_loaded_js_files)?;
  }
  Ok(extensions)
}

/// User modules to evaluate into a snapshot after the extensions.
pub struct UserModules {
  /// Resolves and loads the modules (and everything they import).
  pub loader: Rc<dyn deno_core::ModuleLoader>,
  /// A script run before the first module (e.g. to put the extensions' glue
  /// into its bake mode).
  pub prelude: Option<String>,
  /// Loaded and evaluated in this order, each as a side module with its
  /// static imports.
  pub modules: Vec<deno_core::ModuleSpecifier>,
  /// A script run before each module, made from its index.
  pub before_each: Option<Box<dyn Fn(usize) -> String>>,
  /// Called before each module is loaded, with its index (e.g. to report
  /// progress from a bake process, should V8 abort in it).
  pub on_module: Option<Box<dyn Fn(usize)>>,
  /// A script run after each module; if it throws, that module fails.
  pub after_each: Option<String>,
  /// A script run after the last module, before the heap is serialized.
  pub postlude: Option<String>,
  /// Longest a module's evaluation (top-level await included) may take.
  pub timeout: Option<Duration>,
  /// Caps the V8 heap of the bake; past it V8 aborts the process (so bake
  /// in a process of its own).
  pub max_heap_bytes: Option<usize>,
}

/// Bakes `extensions` plus user `modules` into a snapshot container for
/// `target` (see [`bake`], whose V8 flags this sets too). Every lazily loaded extension source goes into the residual
/// table: which ones the user code consumed is not known here.
pub fn bake_with_modules(
  extensions: Vec<deno_core::Extension>,
  target: &str,
  cargo_manifest_dir: &'static str,
  compression_level: i32,
  modules: UserModules,
) -> Result<Baked, BakeError> {
  let start = Instant::now();
  let manifest = Manifest::new(target, &extensions);
  let sources = extension_sources(&extensions, cargo_manifest_dir)?;
  let mut residual = lazy_files(&extensions)
    .into_iter()
    .map(|(file, is_esm)| {
      let code = load_file(&file, cargo_manifest_dir)?;
      let code = if is_esm {
        code
      } else {
        deno_core::wrap_lazy_ext_script(&code)
      };
      Ok(ResidualSource {
        specifier: file.specifier.to_string(),
        code,
        is_esm,
      })
    })
    .collect::<Result<Vec<_>, BakeError>>()?;
  residual.sort_by(|a, b| a.specifier.cmp(&b.specifier));
  let files_loaded: Vec<PathBuf> = all_files(&extensions)
    .filter_map(|file| match &file.code {
      deno_core::ExtensionFileSourceCode::LoadedFromFsDuringSnapshot(path) => {
        Some(Path::new(cargo_manifest_dir).join(path))
      }
      _ => None,
    })
    .collect();
  let raw = snapshot_with_modules(extensions, modules)?;
  Baked::wrap(
    &raw,
    manifest,
    compression_level,
    files_loaded,
    residual,
    sources,
    start,
  )
}

/// Runs `extensions` (whose sources must be loadable here) and then the user
/// modules in a snapshotting runtime and returns deno_core's raw snapshot
/// bytes. It sets kiln's bake flags, so it must run before any other V8
/// isolate of the process (a process of its own, or a build script). Fails, naming the culprit, if a module does not load, throws, or
/// leaves a timer, an interval, an open resource or an operation in flight.
pub fn snapshot_with_modules(
  extensions: Vec<deno_core::Extension>,
  modules: UserModules,
) -> Result<Box<[u8]>, BakeError> {
  // deno_core panics on most snapshot failures; turn that into an error.
  std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    snapshot_with_modules_inner(extensions, modules)
  }))
  .map_err(|panic| BakeError::CreateSnapshot(panic_message(&panic)))?
}

fn snapshot_with_modules_inner(
  extensions: Vec<deno_core::Extension>,
  modules: UserModules,
) -> Result<Box<[u8]>, BakeError> {
  use deno_core::stats::RuntimeActivityStats;
  use deno_core::stats::RuntimeActivityStatsFilter;

  set_bake_flags();
  let tokio = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .map_err(|e| BakeError::CreateSnapshot(format!("cannot start tokio: {e}")))?;
  let _guard = tokio.enter();
  let mut js = deno_core::JsRuntimeForSnapshot::try_new(deno_core::RuntimeOptions {
    extensions,
    extension_transpiler: Some(Rc::new(transpile_extension_source)),
    module_loader: Some(modules.loader),
    create_params: modules
      .max_heap_bytes
      .map(|max| deno_core::v8::CreateParams::default().heap_limits(0, max)),
    ..Default::default()
  })
  .map_err(|e| BakeError::CreateSnapshot(e.to_string()))?;
  let script_error = |e: Box<deno_core::error::JsError>| BakeError::Module(e.to_string());
  // One turn of the event loop without waiting: what a script or module
  // left for later (settled promises' reactions, FinalizationRegistry
  // cleanups V8 posted) runs now, not in the snapshot.
  let settle = |js: &mut deno_core::JsRuntimeForSnapshot| {
    tokio.block_on(std::future::poll_fn(|cx| {
      match js.poll_event_loop(cx, Default::default()) {
        std::task::Poll::Ready(result) => std::task::Poll::Ready(result),
        std::task::Poll::Pending => std::task::Poll::Ready(Ok(())),
      }
    }))
  };
  if let Some(prelude) = modules.prelude {
    js.execute_script("ext:kiln/bake_prelude.js", prelude)
      .map_err(script_error)?;
    settle(&mut js).map_err(|e| BakeError::Module(e.to_string()))?;
  }
  let filter = RuntimeActivityStatsFilter::all();
  for (index, specifier) in modules.modules.iter().enumerate() {
    let at = |source: BakeError| BakeError::AtModule {
      index,
      source: Box::new(source),
    };
    let module_error = |e: deno_core::error::CoreError| at(BakeError::Module(e.to_string()));
    let before = js.runtime_activity_stats_factory().capture(&filter);
    if let Some(on_module) = &modules.on_module {
      on_module(index);
    }
    if let Some(before_each) = &modules.before_each {
      js.execute_script("ext:kiln/bake_before_module.js", before_each(index))
        .map_err(|e| at(script_error(e)))?;
    }
    let id = tokio
      .block_on(js.load_side_es_module(specifier))
      .map_err(module_error)?;
    let evaluation = js.mod_evaluate(id);
    let evaluated = js.with_event_loop_future(evaluation, Default::default());
    match modules.timeout {
      None => tokio.block_on(evaluated).map_err(module_error)?,
      Some(limit) => tokio
        .block_on(tokio::time::timeout(limit, evaluated))
        .map_err(|_| {
          at(BakeError::Unbakeable(format!(
            "its top-level evaluation did not finish within {} ms",
            limit.as_millis()
          )))
        })?
        .map_err(module_error)?,
    }
    // A module that threw settles its evaluation first and reports the
    // exception on the next turn of the event loop: take that turn.
    settle(&mut js).map_err(module_error)?;
    if let Some(after_each) = &modules.after_each {
      js.execute_script("ext:kiln/bake_after_module.js", after_each.clone())
        .map_err(|e| at(script_error(e)))?;
    }
    let after = js.runtime_activity_stats_factory().capture(&filter);
    let diff = RuntimeActivityStats::diff(&before, &after);
    if let Some(what) = describe_activity(&diff.appeared) {
      return Err(at(BakeError::Unbakeable(what)));
    }
  }
  if let Some(postlude) = modules.postlude {
    js.execute_script("ext:kiln/bake_postlude.js", postlude)
      .map_err(script_error)?;
  }
  Ok(js.snapshot())
}

/// What user code left running, as one sentence, or `None`.
fn describe_activity(appeared: &[deno_core::stats::RuntimeActivity]) -> Option<String> {
  use deno_core::stats::RuntimeActivity;
  let mut items: Vec<String> = appeared
    .iter()
    .map(|activity| match activity {
      RuntimeActivity::AsyncOp(_, _, op) => format!("an operation in flight ({op})"),
      RuntimeActivity::Resource(_, _, name) => format!("an open resource ({name})"),
      RuntimeActivity::Timer(..) => "a pending timer (setTimeout)".to_string(),
      RuntimeActivity::Interval(..) => "a pending interval (setInterval)".to_string(),
    })
    .collect();
  items.sort();
  items.dedup();
  if items.is_empty() {
    return None;
  }
  Some(format!(
    "the code left {} at the end of its top-level evaluation; a snapshot cannot hold running work (start it at launch instead)",
    items.join(", ")
  ))
}

/// Every lazily loaded file of every extension, with whether it is ESM.
fn lazy_files(extensions: &[deno_core::Extension]) -> Vec<(deno_core::ExtensionFileSource, bool)> {
  extensions
    .iter()
    .flat_map(|ext| {
      ext
        .lazy_loaded_js_files
        .iter()
        .map(|f| (f.clone(), false))
        .chain(ext.lazy_loaded_esm_files.iter().map(|f| (f.clone(), true)))
    })
    .collect()
}

/// deno_core's extension transpiler: TypeScript glue through deno_ast, all
/// else untouched. Baked code must be 7-bit ASCII.
pub fn transpile_extension_source(
  specifier: ModuleName,
  code: ModuleCodeString,
) -> Result<(ModuleCodeString, Option<SourceMapData>), JsErrorBox> {
  if !transpile::is_typescript(specifier.as_str()) {
    return Ok((code, None));
  }
  let url = deno_ast::ModuleSpecifier::parse(specifier.as_str())
    .map_err(|e| JsErrorBox::generic(format!("{}: {e}", specifier.as_str())))?;
  let out = transpile::transpile_typescript(&url, code.as_str())
    .map_err(|e| JsErrorBox::generic(e.to_string()))?;
  if let Some(c) = out.code.chars().find(|c| !c.is_ascii()) {
    return Err(JsErrorBox::generic(format!(
      "{}: extension code must be 7-bit ASCII, found {c:?}; write it as a \\u escape",
      specifier.as_str()
    )));
  }
  Ok((out.code.into(), out.source_map.map(Cow::Owned)))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
  panic
    .downcast_ref::<String>()
    .cloned()
    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
    .unwrap_or_else(|| "panic without a message".to_string())
}
