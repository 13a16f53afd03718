//! Packages without a bundler: bare and `npm:` specifiers resolved from the
//! nearest `node_modules` by Node's algorithm (oxc_resolver), and the
//! `"imports"` of a `deno.json` (an import map, the `import_map` crate).
//!
//! - Conditions, in the order Workers list them: `workerd`, `worker`,
//!   `browser`, `import`, `default`; `module` then `main` for packages
//!   without `exports`. (As in Node, a package's `exports` object decides
//!   which matching condition wins: its keys are tried in their order.)
//! - `npm:name@version/sub` resolves like `name/sub` from `node_modules`;
//!   the version is not checked (install the package first).
//! - A package file Node would run as CommonJS (`.cjs`, `"type":
//!   "commonjs"`, or a `.js` file of a package without `"type"` that has no
//!   `import`/`export`) is refused with an error naming the package.
//! - Inside `node_modules`, a relative import without its extension (or of
//!   a directory) resolves as bundlers resolve it: many packages publish
//!   ES modules written for bundlers.
//! - The import map of a module is the `deno.json` nearest above it (never
//!   above the confinement root); modules inside `node_modules` use none.
//! - Under a confinement root (`kiln serve`) the resolver sees no file
//!   outside it, so resolution never leaves the served tree.

use std::cell::OnceCell;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::rc::Rc;

use deno_core::ModuleSpecifier;
use oxc_resolver::FileMetadata;
use oxc_resolver::FileSystem;
use oxc_resolver::FileSystemOs;
use oxc_resolver::ResolveError;
use oxc_resolver::ResolveOptions;
use oxc_resolver::ResolverGeneric;

/// Conditions of package `exports` kiln matches (Workers' set).
pub const CONDITIONS: &[&str] = &["workerd", "worker", "browser", "import", "default"];

/// The config file whose `"imports"` apply.
const CONFIG_FILE: &str = "deno.json";

/// Why a specifier could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PackageError {
  #[error("cannot resolve '{specifier}' from {referrer}: {reason}")]
  NotFound {
    specifier: String,
    referrer: String,
    reason: String,
  },
  #[error("invalid {}: {reason}", path.display())]
  Config { path: PathBuf, reason: String },
}

/// The package a resolved file belongs to, as far as loading cares.
#[derive(Debug, Clone)]
pub struct PackageFile {
  /// The package's name (`@scope/name`), as imported.
  pub package: String,
  /// Whether Node would run it as CommonJS (`None`: an ES module).
  pub commonjs: Option<CommonJs>,
}

/// Why a package file counts as CommonJS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonJs {
  /// `.cjs`, or `"type": "commonjs"`.
  Declared,
  /// A `.js` file of a package without `"type"`: CommonJS unless it has
  /// module syntax.
  ByDefault,
}

/// Resolves package specifiers for one module loader.
pub struct Packages {
  /// Made on the first package import: most programs have none.
  resolver: OnceCell<ResolverGeneric<ConfinedFs>>,
  root: Option<PathBuf>,
  /// Import map by directory of the referrer (`None`: no deno.json).
  import_maps: RefCell<HashMap<PathBuf, Option<Rc<import_map::ImportMap>>>>,
}

impl Packages {
  /// Package resolution that reads nothing outside `root`, if given.
  pub fn new(root: Option<PathBuf>) -> Self {
    Packages {
      resolver: OnceCell::new(),
      root,
      import_maps: RefCell::default(),
    }
  }

  fn resolver(&self) -> &ResolverGeneric<ConfinedFs> {
    self.resolver.get_or_init(|| {
      let options = ResolveOptions {
        condition_names: CONDITIONS.iter().map(|c| c.to_string()).collect(),
        main_fields: vec!["module".into(), "main".into()],
        extensions: vec![".mjs".into(), ".js".into(), ".json".into()],
        node_path: false,
        builtin_modules: false,
        ..ResolveOptions::default()
      };
      let fs = ConfinedFs {
        inner: FileSystemOs::new(),
        root: self.root.clone(),
      };
      ResolverGeneric::new_with_file_system(fs, options)
    })
  }

  /// Maps `specifier` through the import map that applies to `referrer`
  /// (a file inside `referrer_dir`), if any maps it.
  pub fn map_import(
    &self,
    specifier: &str,
    referrer: &ModuleSpecifier,
    referrer_dir: &Path,
  ) -> Result<Option<ModuleSpecifier>, PackageError> {
    if in_node_modules(referrer_dir) {
      return Ok(None);
    }
    let Some(map) = self.import_map_for(referrer_dir)? else {
      return Ok(None);
    };
    Ok(map.resolve(specifier, referrer).ok())
  }

  fn import_map_for(&self, dir: &Path) -> Result<Option<Rc<import_map::ImportMap>>, PackageError> {
    if let Some(found) = self.import_maps.borrow().get(dir) {
      return Ok(found.clone());
    }
    let inside = |d: &Path| self.root.as_ref().is_none_or(|root| d.starts_with(root));
    let found = match dir
      .ancestors()
      .take_while(|d| inside(d))
      .find(|d| d.join(CONFIG_FILE).is_file())
    {
      None => None,
      Some(config_dir) => Some(Rc::new(read_import_map(&config_dir.join(CONFIG_FILE))?)),
    };
    self
      .import_maps
      .borrow_mut()
      .insert(dir.to_path_buf(), found.clone());
    Ok(found)
  }

  /// Resolves a bare specifier (or `npm:` one) from `referrer_dir` through
  /// `node_modules`.
  pub fn resolve_package(
    &self,
    specifier: &str,
    referrer: &str,
    referrer_dir: &Path,
  ) -> Result<(PathBuf, PackageFile), PackageError> {
    let request = npm_request(specifier).unwrap_or_else(|| specifier.to_string());
    let not_found = |reason: String| PackageError::NotFound {
      specifier: specifier.to_string(),
      referrer: referrer.to_string(),
      reason,
    };
    let resolution = self
      .resolver()
      .resolve(referrer_dir, &request)
      .map_err(|e| not_found(describe(&e, &request)))?;
    let path = resolution.full_path();
    // Node's rule (ESM_FILE_FORMAT), with its syntax detection for `.js`
    // files of packages that declare no "type".
    let package_type = resolution.package_json().and_then(|p| p.r#type());
    let commonjs = match path.extension().and_then(|e| e.to_str()) {
      Some("cjs") => Some(CommonJs::Declared),
      Some("js") => match package_type {
        Some(oxc_resolver::PackageType::Module) => None,
        Some(oxc_resolver::PackageType::CommonJs) => Some(CommonJs::Declared),
        None => Some(CommonJs::ByDefault),
      },
      _ => None,
    };
    let package = package_name(&request).unwrap_or(&request).to_string();
    Ok((path, PackageFile { package, commonjs }))
  }

  /// A relative import inside a package, resolved the way bundlers do
  /// (packages published for them leave out extensions and `/index.js`);
  /// `None` when the directory is not inside `node_modules` or nothing
  /// matches.
  pub fn resolve_in_package(&self, specifier: &str, referrer_dir: &Path) -> Option<PathBuf> {
    if !in_node_modules(referrer_dir) {
      return None;
    }
    let exact = referrer_dir.join(specifier);
    if exact.is_file() {
      return None;
    }
    let resolution = self.resolver().resolve(referrer_dir, specifier).ok()?;
    Some(resolution.full_path())
  }
}

fn in_node_modules(dir: &Path) -> bool {
  dir.components().any(|c| c.as_os_str() == "node_modules")
}

/// Whether `specifier` is bare: not relative, not absolute, not a URL.
pub fn is_bare(specifier: &str) -> bool {
  !(specifier.starts_with("./")
    || specifier.starts_with("../")
    || specifier.starts_with('/')
    || specifier == "."
    || specifier == ".."
    || ModuleSpecifier::parse(specifier).is_ok())
}

/// `npm:name@range/sub` (or `npm:/name@range/sub`, as import maps expand
/// it) as the bare request `name/sub`; `None` if not an `npm:` specifier.
pub fn npm_request(specifier: &str) -> Option<String> {
  let rest = specifier.strip_prefix("npm:")?.trim_start_matches('/');
  // `@scope/` stays; the name ends at its version (`@`) or subpath (`/`).
  let (scope, unscoped) = match rest.strip_prefix('@') {
    Some(after) => {
      let slash = after.find('/')?;
      (&rest[..slash + 2], &after[slash + 1..])
    }
    None => ("", rest),
  };
  let end = unscoped.find(['@', '/']).unwrap_or(unscoped.len());
  let (name, after) = unscoped.split_at(end);
  let subpath = match after.strip_prefix('@') {
    Some(version_and_path) => version_and_path
      .find('/')
      .map_or("", |i| &version_and_path[i..]),
    None => after,
  };
  Some(format!("{scope}{name}{subpath}"))
}

/// The package name of a bare request: `@scope/name` or `name`.
pub fn package_name(request: &str) -> Option<&str> {
  if request.starts_with('#') {
    return None;
  }
  let mut slashes = request.match_indices('/').map(|(i, _)| i);
  let end = if request.starts_with('@') {
    slashes.nth(1)
  } else {
    slashes.next()
  };
  Some(&request[..end.unwrap_or(request.len())])
}

fn describe(error: &ResolveError, request: &str) -> String {
  match error {
    ResolveError::NotFound(_) => not_found(request),
    // Under a confinement root, what lies outside reads as missing.
    ResolveError::IOError(e)
      if std::io::Error::from(e.clone()).kind() == std::io::ErrorKind::NotFound =>
    {
      not_found(request)
    }
    other => other.to_string(),
  }
}

fn not_found(request: &str) -> String {
  match package_name(request) {
    Some(name) => format!("no package '{name}' in node_modules (or no such file in it)"),
    None => format!("'{request}' is not mapped by the package's \"imports\""),
  }
}

/// Reads `"imports"` and `"scopes"` of a deno.json as an import map.
fn read_import_map(path: &Path) -> Result<import_map::ImportMap, PackageError> {
  let config_error = |reason: String| PackageError::Config {
    path: path.to_path_buf(),
    reason,
  };
  let text = std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?;
  let value: serde_json::Value =
    serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
  let mut map = serde_json::Map::new();
  for key in ["imports", "scopes"] {
    if let Some(entry) = value.get(key) {
      map.insert(key.to_string(), entry.clone());
    }
  }
  let base = ModuleSpecifier::from_file_path(path)
    .map_err(|()| config_error("not an absolute path".to_string()))?;
  let options = import_map::ImportMapOptions {
    address_hook: None,
    expand_imports: true,
  };
  import_map::parse_from_value_with_options(base, serde_json::Value::Object(map), options)
    .map(|parsed| parsed.import_map)
    .map_err(|e| config_error(e.to_string()))
}

/// The OS file system, minus everything outside `root` (which then does
/// not exist as far as resolution can tell).
struct ConfinedFs {
  inner: FileSystemOs,
  root: Option<PathBuf>,
}

impl ConfinedFs {
  fn check(&self, path: &Path) -> std::io::Result<()> {
    match &self.root {
      Some(root) if !path.starts_with(root) => Err(std::io::ErrorKind::NotFound.into()),
      _ => Ok(()),
    }
  }
}

impl FileSystem for ConfinedFs {
  fn new() -> Self {
    ConfinedFs {
      inner: FileSystemOs::new(),
      root: None,
    }
  }

  fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
    self.check(path)?;
    self.inner.read(path)
  }

  fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
    self.check(path)?;
    self.inner.read_to_string(path)
  }

  fn metadata(&self, path: &Path) -> std::io::Result<FileMetadata> {
    self.check(path)?;
    self.inner.metadata(path)
  }

  fn symlink_metadata(&self, path: &Path) -> std::io::Result<FileMetadata> {
    self.check(path)?;
    self.inner.symlink_metadata(path)
  }

  fn read_link(&self, path: &Path) -> Result<PathBuf, ResolveError> {
    self.check(path).map_err(ResolveError::from)?;
    let target = self.inner.read_link(path)?;
    self.check(&target).map_err(ResolveError::from)?;
    Ok(target)
  }

  fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf> {
    self.check(path)?;
    let canonical = self.inner.canonicalize(path)?;
    self.check(&canonical)?;
    Ok(canonical)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn bare_specifiers() {
    assert!(is_bare("hono"));
    assert!(is_bare("hono/etag"));
    assert!(is_bare("@supabase/supabase-js"));
    assert!(is_bare("#internal"));
    assert!(!is_bare("./x.js"));
    assert!(!is_bare("../x.js"));
    assert!(!is_bare("/abs/x.js"));
    assert!(!is_bare("file:///x.js"));
    assert!(!is_bare("npm:hono"));
  }

  #[test]
  fn npm_specifiers_become_requests() {
    assert_eq!(npm_request("npm:hono").as_deref(), Some("hono"));
    assert_eq!(npm_request("npm:hono@4").as_deref(), Some("hono"));
    assert_eq!(
      npm_request("npm:hono@^4.1/etag").as_deref(),
      Some("hono/etag")
    );
    assert_eq!(npm_request("npm:/hono@4/jwt").as_deref(), Some("hono/jwt"));
    assert_eq!(npm_request("npm:hono/etag").as_deref(), Some("hono/etag"));
    assert_eq!(
      npm_request("npm:@supabase/supabase-js@2.4/dist/x.js").as_deref(),
      Some("@supabase/supabase-js/dist/x.js")
    );
    assert_eq!(npm_request("npm:@scope/pkg").as_deref(), Some("@scope/pkg"));
    assert_eq!(npm_request("hono"), None);
  }

  #[test]
  fn package_names() {
    assert_eq!(package_name("hono/etag"), Some("hono"));
    assert_eq!(package_name("hono"), Some("hono"));
    assert_eq!(package_name("@s/p/x/y"), Some("@s/p"));
    assert_eq!(package_name("@s/p"), Some("@s/p"));
    assert_eq!(package_name("#x"), None);
  }
}
