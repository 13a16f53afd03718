//! The module loader for user code: local `file:` modules only.
//!
//! `.ts`/`.mts`/`.tsx` are transpiled with deno_ast at load (once per process
//! per source text, then served from a cache); `.js`/`.mjs` run as they are;
//! `.json` loads as a JSON module, only when imported `with { type: "json" }`.
//! Bare and `npm:` specifiers resolve from `node_modules`, and a `deno.json`'s
//! `"imports"` apply (see [`super::packages`]). Remote specifiers (`jsr:`,
//! `http:`, …) are refused with a clear error: kiln never touches the network
//! to load code.
//!
//! Every module is a regular file no larger than [`ModuleAccess::max_bytes`],
//! opened without blocking and read with a bounded reader, so a device or a
//! FIFO can neither hang nor exhaust the process. With a
//! [`ModuleAccess::root`] (`kiln serve`), only files whose canonical path lies
//! inside it load, and every refusal reads the same, so code cannot probe
//! which files exist outside.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;

use deno_core::ModuleLoadOptions;
use deno_core::ModuleLoadReferrer;
use deno_core::ModuleLoadResponse;
use deno_core::ModuleLoader;
use deno_core::ModuleSource;
use deno_core::ModuleSourceCode;
use deno_core::ModuleSpecifier;
use deno_core::ModuleType;
use deno_core::RequestedModuleType;
use deno_core::ResolutionKind;
use deno_core::SourceCodeCacheInfo;
use deno_core::error::ModuleLoaderError;
use deno_error::JsErrorBox;

use super::code_cache::CodeCache;
use super::packages;
use super::packages::CommonJs;
use super::packages::PackageFile;
use super::packages::Packages;
use kiln_pipeline::transpile;
use kiln_pipeline::transpile::TranspileError;

/// A transpiled module, shared across runtimes of the process.
struct CachedModule {
  source: Arc<str>,
  code: Arc<str>,
  source_map: Option<Arc<[u8]>>,
}

/// Transpile results by path; an entry is reused only while the file's text
/// is unchanged.
fn transpile_cache() -> &'static Mutex<HashMap<String, Arc<CachedModule>>> {
  static CACHE: OnceLock<Mutex<HashMap<String, Arc<CachedModule>>>> = OnceLock::new();
  CACHE.get_or_init(Default::default)
}

/// The default of [`ModuleAccess::max_bytes`]: 16 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 16 << 20;

/// Which files user code may load as modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleAccess {
  /// Only files whose canonical path (symlinks resolved) lies inside this
  /// directory load; it must itself be canonical. `None`: any file.
  pub root: Option<PathBuf>,
  /// Largest module file, in bytes.
  pub max_bytes: u64,
}

impl Default for ModuleAccess {
  fn default() -> Self {
    ModuleAccess {
      root: None,
      max_bytes: DEFAULT_MAX_MODULE_BYTES,
    }
  }
}

/// Loads user modules from the local file system.
#[derive(Default)]
pub struct FsModuleLoader {
  access: ModuleAccess,
  source_maps: RefCell<HashMap<String, Arc<[u8]>>>,
  /// Resolved specifier -> the specifier as the importing code wrote it,
  /// for refusals that must not reveal the resolved path.
  written: RefCell<HashMap<String, String>>,
  /// Modules served from memory (JavaScript), by specifier.
  memory: HashMap<String, Arc<str>>,
  /// Modules named under a base URL that stands for a directory (a baked
  /// app's modules are named relative to its root, not by build-machine
  /// paths).
  relocation: Option<Relocation>,
  /// Every module read from a file, with the hash of its text, when
  /// recording (bakes only: hashing every source would slow every start).
  loaded: Option<RefCell<Vec<LoadedModule>>>,
  /// Where V8 code caches of loaded modules are kept, if anywhere.
  code_cache: Option<CodeCache>,
  /// Package resolution, set up on the first import that needs it.
  packages: OnceCell<Packages>,
  /// Files resolved as package entry points, by specifier (checked for
  /// CommonJS when loaded).
  package_files: RefCell<HashMap<String, PackageFile>>,
}

/// A module read from a file: its specifier and the SHA-256 of its text.
pub type LoadedModule = (String, [u8; 32]);

/// Modules whose specifiers start with `base` are read from `root`.
#[derive(Debug, Clone)]
pub struct Relocation {
  pub base: ModuleSpecifier,
  pub root: PathBuf,
}

impl Relocation {
  /// The specifier of the file at `path` (`base` + its path below `root`);
  /// `None` outside `root`.
  pub fn specifier_of(&self, path: &Path) -> Option<ModuleSpecifier> {
    let relative = path.strip_prefix(&self.root).ok()?;
    let mut url = self.base.clone();
    url.path_segments_mut().ok()?.pop_if_empty().extend(
      relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy()),
    );
    Some(url)
  }
}

/// Why a module file could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
  /// Missing, outside the allowed root, or not a regular file: under a root
  /// these are told apart only in this type, never to the importing code.
  #[error("no such file")]
  NotFound,
  #[error("outside the allowed directory")]
  OutsideRoot,
  #[error("not a regular file")]
  NotRegular,
  #[error("larger than the limit of {max} bytes")]
  TooLarge { max: u64 },
  #[error("not valid UTF-8")]
  NotUtf8,
  #[error("{0}")]
  Io(std::io::Error),
}

/// Schemes kiln refuses to load, with what they are.
const UNSUPPORTED_SCHEMES: &[(&str, &str)] = &[
  ("jsr:", "jsr packages"),
  ("node:", "Node.js built-in modules"),
  ("http:", "remote modules"),
  ("https:", "remote modules"),
  ("data:", "data: URL modules"),
  ("blob:", "blob: URL modules"),
];

fn unsupported(specifier: &str) -> Option<JsErrorBox> {
  UNSUPPORTED_SCHEMES
    .iter()
    .find(|(scheme, _)| specifier.starts_with(scheme))
    .map(|(_, what)| {
      JsErrorBox::type_error(format!(
        "unsupported import '{specifier}': kiln loads local files only ({what} are not supported)"
      ))
    })
}

impl ModuleLoader for FsModuleLoader {
  fn resolve(
    &self,
    specifier: &str,
    referrer: &str,
    _kind: ResolutionKind,
  ) -> Result<ModuleSpecifier, ModuleLoaderError> {
    let resolved = self.resolve_specifier(specifier, referrer)?;
    if self.access.root.is_some() {
      self
        .written
        .borrow_mut()
        .insert(resolved.to_string(), specifier.to_string());
    }
    Ok(resolved)
  }

  fn load(
    &self,
    specifier: &ModuleSpecifier,
    maybe_referrer: Option<&ModuleLoadReferrer>,
    options: ModuleLoadOptions,
  ) -> ModuleLoadResponse {
    ModuleLoadResponse::Sync(self.load_sync(
      specifier,
      maybe_referrer,
      &options.requested_module_type,
    ))
  }

  fn code_cache_ready(
    &self,
    specifier: ModuleSpecifier,
    hash: u64,
    code_cache: &[u8],
  ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    // New or rejected: V8 compiled the module and made this cache.
    if let Some(cache) = &self.code_cache {
      cache.put(specifier.as_str(), hash, code_cache);
    }
    Box::pin(std::future::ready(()))
  }

  fn get_source_map(&self, specifier: &str) -> Option<Cow<'_, [u8]>> {
    self
      .source_maps
      .borrow()
      .get(specifier)
      .map(|m| Cow::Owned(m.to_vec()))
  }
}

impl FsModuleLoader {
  /// Resolves an import: through the import map and `node_modules` when it
  /// names a package, else as a URL relative to `referrer`.
  fn resolve_specifier(
    &self,
    specifier: &str,
    referrer: &str,
  ) -> Result<ModuleSpecifier, JsErrorBox> {
    let context = self.referrer_context(referrer);
    let mut specifier = Cow::Borrowed(specifier);
    if let Some((real_referrer, dir)) = &context {
      let mapped = self
        .packages()
        .map_import(&specifier, real_referrer, dir)
        .map_err(|e| JsErrorBox::type_error(e.to_string()))?;
      if let Some(mapped) = mapped {
        if mapped.scheme() == "file"
          && let Ok(path) = mapped.to_file_path()
        {
          return self.specifier_for(&path);
        }
        specifier = Cow::Owned(mapped.to_string());
      }
    }
    if let Some((_, dir)) = &context
      && (specifier.starts_with("./") || specifier.starts_with("../"))
      && let Some(path) = self.packages().resolve_in_package(&specifier, dir)
    {
      return self.specifier_for(&path);
    }
    if specifier.starts_with("npm:") || packages::is_bare(&specifier) {
      let Some((_, dir)) = &context else {
        return Err(JsErrorBox::type_error(format!(
          "cannot resolve '{specifier}' from {referrer}: packages are imported from files"
        )));
      };
      let (path, file) = self
        .packages()
        .resolve_package(&specifier, referrer, dir)
        .map_err(|e| JsErrorBox::type_error(e.to_string()))?;
      let resolved = self.specifier_for(&path)?;
      self
        .package_files
        .borrow_mut()
        .insert(resolved.to_string(), file);
      return Ok(resolved);
    }
    if let Some(err) = unsupported(&specifier) {
      return Err(err);
    }
    let resolved = deno_core::resolve_import(&specifier, referrer).map_err(JsErrorBox::from_err)?;
    if resolved.scheme() != "file" {
      return Err(unsupported(resolved.as_str()).unwrap_or_else(|| {
        JsErrorBox::type_error(format!(
          "unsupported import '{specifier}': kiln loads local files only"
        ))
      }));
    }
    Ok(resolved)
  }

  fn packages(&self) -> &Packages {
    self
      .packages
      .get_or_init(|| Packages::new(self.access.root.clone()))
  }

  /// For a file module referrer: its URL on the real file system and its
  /// directory.
  fn referrer_context(&self, referrer: &str) -> Option<(ModuleSpecifier, PathBuf)> {
    let url = ModuleSpecifier::parse(referrer).ok()?;
    if url.scheme() != "file" {
      return None;
    }
    // A module served from memory counts as the file it is named after.
    let path = self.file_path(&url).ok()?;
    let dir = path.parent()?.to_path_buf();
    let real = ModuleSpecifier::from_file_path(&path).ok()?;
    Some((real, dir))
  }

  /// The specifier of a real file: relocated under the app's base when
  /// there is a relocation.
  fn specifier_for(&self, path: &Path) -> Result<ModuleSpecifier, JsErrorBox> {
    let specifier = match &self.relocation {
      None => ModuleSpecifier::from_file_path(path).ok(),
      Some(relocation) => relocation.specifier_of(path),
    };
    specifier.ok_or_else(|| match &self.relocation {
      Some(relocation) => JsErrorBox::type_error(format!(
        "cannot load module {}: outside the app root {}",
        path.display(),
        relocation.root.display()
      )),
      None => JsErrorBox::type_error(format!("not a file path: {}", path.display())),
    })
  }

  /// A loader that loads what `access` allows.
  pub fn new(access: ModuleAccess) -> Self {
    FsModuleLoader {
      access,
      ..Default::default()
    }
  }

  /// Serves `code` (JavaScript) for `specifier` instead of reading a file.
  pub fn with_module(mut self, specifier: &ModuleSpecifier, code: Arc<str>) -> Self {
    self.memory.insert(specifier.to_string(), code);
    self
  }

  /// A source map for a module that is not loaded here (a baked one).
  pub fn with_source_map(self, specifier: &str, map: Arc<[u8]>) -> Self {
    self
      .source_maps
      .borrow_mut()
      .insert(specifier.to_string(), map);
    self
  }

  /// Keeps V8 code caches of the JavaScript modules it loads in `cache`.
  pub fn with_code_cache(mut self, cache: Option<CodeCache>) -> Self {
    self.code_cache = cache;
    self
  }

  /// Reads modules named under `relocation.base` from `relocation.root`.
  pub fn with_relocation(mut self, relocation: Relocation) -> Self {
    self.relocation = Some(relocation);
    self
  }

  /// Records every module it reads from a file, with the SHA-256 of its
  /// text (see [`FsModuleLoader::loaded_modules`]); for bakes.
  pub fn recording(mut self) -> Self {
    self.loaded = Some(RefCell::default());
    self
  }

  /// Every module read from a file so far, with the SHA-256 of its text,
  /// in load order, if recording.
  pub fn loaded_modules(&self) -> Vec<LoadedModule> {
    self
      .loaded
      .as_ref()
      .map(|loaded| loaded.borrow().clone())
      .unwrap_or_default()
  }

  /// The source map of a module this loader transpiled.
  pub fn source_map(&self, specifier: &str) -> Option<Arc<[u8]>> {
    self.source_maps.borrow().get(specifier).cloned()
  }

  /// Loads `specifier` as this loader would for an import and returns its
  /// JavaScript (TypeScript transpiled).
  pub fn load_javascript(&self, specifier: &ModuleSpecifier) -> Result<Arc<str>, JsErrorBox> {
    if let Some(code) = self.memory.get(specifier.as_str()) {
      return Ok(code.clone());
    }
    let source = self.load_sync(specifier, None, &RequestedModuleType::None)?;
    match source.code {
      ModuleSourceCode::String(code) => Ok(code.as_str().into()),
      ModuleSourceCode::Bytes(_) => Err(JsErrorBox::type_error(format!(
        "{specifier}: not a JavaScript module"
      ))),
    }
  }

  /// The file a specifier names: under a relocation, inside its root.
  fn file_path(&self, specifier: &ModuleSpecifier) -> Result<PathBuf, JsErrorBox> {
    if let Some(relocation) = &self.relocation {
      let relative = relocation
        .base
        .make_relative(specifier)
        .filter(|r| {
          !r.starts_with("../") && specifier.as_str().starts_with(relocation.base.as_str())
        })
        .ok_or_else(|| {
          JsErrorBox::type_error(format!(
            "cannot load module {specifier}: outside the app root {}",
            relocation.root.display()
          ))
        })?;
      let decoded = ModuleSpecifier::parse("file:///")
        .and_then(|u| u.join(&relative))
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| JsErrorBox::type_error(format!("not a file path: {specifier}")))?;
      let inner = decoded.strip_prefix("/").unwrap_or(&decoded);
      return Ok(relocation.root.join(inner));
    }
    specifier
      .to_file_path()
      .map_err(|_| JsErrorBox::type_error(format!("not a file path: {specifier}")))
  }

  fn load_sync(
    &self,
    specifier: &ModuleSpecifier,
    maybe_referrer: Option<&ModuleLoadReferrer>,
    requested: &RequestedModuleType,
  ) -> Result<ModuleSource, ModuleLoaderError> {
    if let Some(code) = self.memory.get(specifier.as_str()) {
      return Ok(ModuleSource::new(
        ModuleType::JavaScript,
        ModuleSourceCode::String(code.to_string().into()),
        specifier,
        None,
      ));
    }
    let path = self.file_path(specifier)?;
    // Decided from the name alone, before the file system is touched.
    let Some(kind) = module_kind(&path) else {
      return Err(JsErrorBox::type_error(format!(
        "cannot load module {}: unknown file type (expected .{}, .{} or .json)",
        path.display(),
        transpile::TYPESCRIPT_EXTENSIONS.join(", ."),
        JAVASCRIPT_EXTENSIONS.join(", .")
      )));
    };
    match (&kind, requested) {
      (ModuleKind::Json, RequestedModuleType::Json) => {}
      (ModuleKind::Json, _) => {
        return Err(JsErrorBox::type_error(format!(
          "cannot load module {}: JSON modules must be imported with {{ type: \"json\" }}",
          path.display()
        )));
      }
      (_, RequestedModuleType::Json) => {
        return Err(JsErrorBox::type_error(format!(
          "cannot load module {}: imported with {{ type: \"json\" }}, but it is not a .json file",
          path.display()
        )));
      }
      _ => {}
    }
    let source = read_module(&path, &self.access).map_err(|e| {
      if self.access.root.is_some() && !matches!(e, ReadError::TooLarge { .. }) {
        // One error for missing, outside and special files: which one it
        // was would tell the code what exists outside its directory.
        let written = self.written.borrow().get(specifier.as_str()).cloned();
        let written = written.unwrap_or_else(|| path.display().to_string());
        return JsErrorBox::type_error(format!("module not found or not allowed: {written}"));
      }
      let from = maybe_referrer
        .map(|r| format!(" (imported from {})", r.specifier))
        .unwrap_or_default();
      let class = if matches!(e, ReadError::NotFound) {
        "NotFound"
      } else {
        "TypeError"
      };
      JsErrorBox::new(
        class,
        format!("cannot load module {}{from}: {e}", path.display()),
      )
    })?;
    self.check_package_format(specifier, &path, &source)?;
    if let Some(loaded) = &self.loaded {
      loaded.borrow_mut().push((
        specifier.to_string(),
        kiln_pipeline::app::source_hash(&source),
      ));
    }
    let (module_type, code) = match kind {
      ModuleKind::TypeScript => {
        let module = transpile_cached(specifier, source).map_err(|e| match e {
          TranspileError::Syntax { .. } => JsErrorBox::new("SyntaxError", e.to_string()),
          TranspileError::Emit { .. } => JsErrorBox::generic(e.to_string()),
        })?;
        if let Some(map) = &module.source_map {
          self
            .source_maps
            .borrow_mut()
            .insert(specifier.to_string(), map.clone());
        }
        (ModuleType::JavaScript, module.code.to_string())
      }
      ModuleKind::JavaScript => (ModuleType::JavaScript, source),
      ModuleKind::Json => {
        // V8's own JSON error names no file; this one does.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&source) {
          return Err(JsErrorBox::new(
            "SyntaxError",
            format!("invalid JSON in module {}: {e}", path.display()),
          ));
        }
        (ModuleType::Json, source)
      }
    };
    let code_cache = match (&self.code_cache, &module_type) {
      (Some(cache), ModuleType::JavaScript) => {
        let key = CodeCache::key(&code);
        Some(SourceCodeCacheInfo {
          hash: key,
          data: cache.get(specifier.as_str(), key).map(Cow::Owned),
        })
      }
      _ => None,
    };
    Ok(ModuleSource::new(
      module_type,
      ModuleSourceCode::String(code.into()),
      specifier,
      code_cache,
    ))
  }
}

impl FsModuleLoader {
  /// Refuses a package entry point Node would run as CommonJS.
  fn check_package_format(
    &self,
    specifier: &ModuleSpecifier,
    path: &Path,
    source: &str,
  ) -> Result<(), JsErrorBox> {
    let files = self.package_files.borrow();
    let Some(file) = files.get(specifier.as_str()) else {
      return Ok(());
    };
    let commonjs = match file.commonjs {
      None => false,
      Some(CommonJs::Declared) => true,
      Some(CommonJs::ByDefault) => !transpile::has_module_syntax(specifier, source),
    };
    if commonjs {
      return Err(JsErrorBox::type_error(format!(
        "cannot load package '{}': {} is CommonJS, and kiln runs ES modules only (use a version of the package with an ES module build, or bundle it)",
        file.package,
        path.display()
      )));
    }
    Ok(())
  }
}

/// Reads a module file as `access` allows: a regular file (checked on the
/// open descriptor, which was opened without blocking so a FIFO cannot hang
/// us), at most `max_bytes` of it.
fn read_module(path: &Path, access: &ModuleAccess) -> Result<String, ReadError> {
  use std::io::Read;
  use std::os::unix::fs::OpenOptionsExt;

  let not_found = |e: std::io::Error| match e.kind() {
    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => ReadError::NotFound,
    _ => ReadError::Io(e),
  };
  let mut open = std::fs::OpenOptions::new();
  open.read(true).custom_flags(libc::O_NONBLOCK);
  let file = match &access.root {
    Some(root) => {
      let canonical = std::fs::canonicalize(path).map_err(not_found)?;
      if !canonical.starts_with(root) {
        return Err(ReadError::OutsideRoot);
      }
      // No symlink may have been swapped in since it was resolved.
      open.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
      open.open(&canonical)
    }
    None => open.open(path),
  }
  .map_err(|e| match e.raw_os_error() {
    Some(libc::ELOOP) => ReadError::OutsideRoot,
    _ => not_found(e),
  })?;
  let metadata = file.metadata().map_err(ReadError::Io)?;
  if !metadata.is_file() {
    return Err(ReadError::NotRegular);
  }
  let max = access.max_bytes;
  if metadata.len() > max {
    return Err(ReadError::TooLarge { max });
  }
  let mut bytes = Vec::with_capacity(metadata.len() as usize);
  // The file may grow after the size check: never read past the limit.
  file
    .take(max.saturating_add(1))
    .read_to_end(&mut bytes)
    .map_err(ReadError::Io)?;
  if bytes.len() as u64 > max {
    return Err(ReadError::TooLarge { max });
  }
  String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

enum ModuleKind {
  TypeScript,
  JavaScript,
  Json,
}

/// Extensions of JavaScript modules (TypeScript ones are
/// [`transpile::TYPESCRIPT_EXTENSIONS`]).
pub const JAVASCRIPT_EXTENSIONS: &[&str] = &["js", "mjs", "cjs"];

fn module_kind(path: &Path) -> Option<ModuleKind> {
  let ext = path.extension()?.to_str()?;
  if transpile::TYPESCRIPT_EXTENSIONS.contains(&ext) {
    Some(ModuleKind::TypeScript)
  } else if JAVASCRIPT_EXTENSIONS.contains(&ext) {
    Some(ModuleKind::JavaScript)
  } else if ext == "json" {
    Some(ModuleKind::Json)
  } else {
    None
  }
}

fn transpile_cached(
  specifier: &ModuleSpecifier,
  source: String,
) -> Result<Arc<CachedModule>, TranspileError> {
  let key = specifier.to_string();
  if let Ok(cache) = transpile_cache().lock()
    && let Some(hit) = cache.get(&key)
    && *hit.source == *source
  {
    return Ok(hit.clone());
  }
  let out = transpile::transpile_typescript(specifier, &source)?;
  let module = Arc::new(CachedModule {
    source: source.into(),
    code: out.code.into(),
    source_map: out.source_map.map(Into::into),
  });
  if let Ok(mut cache) = transpile_cache().lock() {
    cache.insert(key, module.clone());
  }
  Ok(module)
}
