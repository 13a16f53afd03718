//! The module loader for user code: local `file:` modules only.
//!
//! `.ts`/`.mts`/`.tsx` are transpiled with deno_ast at load (once per process
//! per source text, then served from a cache); `.js`/`.mjs` run as they are;
//! `.json` loads as a JSON module. Remote and package specifiers (`npm:`,
//! `jsr:`, `http:`, …) are refused with a clear error: kiln never touches the
//! network to load code.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
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
use deno_core::ResolutionKind;
use deno_core::error::ModuleLoaderError;
use deno_error::JsErrorBox;

use crate::snapshot::transpile;
use crate::snapshot::transpile::TranspileError;

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

/// Loads user modules from the local file system.
#[derive(Default)]
pub struct FsModuleLoader {
  source_maps: RefCell<HashMap<String, Arc<[u8]>>>,
}

/// Schemes kiln refuses to load, with what they are.
const UNSUPPORTED_SCHEMES: &[(&str, &str)] = &[
  ("npm:", "npm packages"),
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
    if let Some(err) = unsupported(specifier) {
      return Err(err);
    }
    let resolved = deno_core::resolve_import(specifier, referrer).map_err(JsErrorBox::from_err)?;
    if resolved.scheme() != "file" {
      return Err(unsupported(resolved.as_str()).unwrap_or_else(|| {
        JsErrorBox::type_error(format!(
          "unsupported import '{specifier}': kiln loads local files only"
        ))
      }));
    }
    Ok(resolved)
  }

  fn load(
    &self,
    specifier: &ModuleSpecifier,
    maybe_referrer: Option<&ModuleLoadReferrer>,
    _options: ModuleLoadOptions,
  ) -> ModuleLoadResponse {
    ModuleLoadResponse::Sync(self.load_sync(specifier, maybe_referrer))
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
  fn load_sync(
    &self,
    specifier: &ModuleSpecifier,
    maybe_referrer: Option<&ModuleLoadReferrer>,
  ) -> Result<ModuleSource, ModuleLoaderError> {
    let path = specifier
      .to_file_path()
      .map_err(|_| JsErrorBox::type_error(format!("not a file path: {specifier}")))?;
    let source = std::fs::read_to_string(&path).map_err(|e| {
      let from = maybe_referrer
        .map(|r| format!(" (imported from {})", r.specifier))
        .unwrap_or_default();
      let reason = if e.kind() == std::io::ErrorKind::NotFound {
        "no such file".to_string()
      } else {
        e.to_string()
      };
      JsErrorBox::new(
        "NotFound",
        format!("cannot load module {}{from}: {reason}", path.display()),
      )
    })?;
    let (module_type, code) = match module_kind(&path) {
      Some(ModuleKind::TypeScript) => {
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
      Some(ModuleKind::JavaScript) => (ModuleType::JavaScript, source),
      Some(ModuleKind::Json) => (ModuleType::Json, source),
      None => {
        return Err(JsErrorBox::type_error(format!(
          "cannot load module {}: unknown file type (expected .ts, .mts, .tsx, .js, .mjs or .json)",
          path.display()
        )));
      }
    };
    Ok(ModuleSource::new(
      module_type,
      ModuleSourceCode::String(code.into()),
      specifier,
      None,
    ))
  }
}

enum ModuleKind {
  TypeScript,
  JavaScript,
  Json,
}

fn module_kind(path: &Path) -> Option<ModuleKind> {
  match path.extension()?.to_str()? {
    "ts" | "mts" | "cts" | "tsx" => Some(ModuleKind::TypeScript),
    "js" | "mjs" | "cjs" => Some(ModuleKind::JavaScript),
    "json" => Some(ModuleKind::Json),
    _ => None,
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
