//! Which function a path belongs to, and which files are functions.
//!
//! `<dir>/<name>.ts` (or `.js`, `.mts`, `.mjs`) is served at `/<name>` and
//! `/<name>/...`. Names are restricted to characters that need no escaping
//! in a URL path; `/_kiln/...` belongs to the host. Paths are routed after
//! removing dot-segments, and the function sees the same path, so routing
//! and the function's `new URL(request.url)` never disagree.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

/// The prefix of the host's own endpoints.
pub const HOST_PREFIX: &str = "_kiln";

/// Extensions of function entry modules, in order of preference when one
/// name has several: the common subset of what the module loader loads
/// (a test keeps them within its lists).
const EXTENSIONS: [&str; 4] = ["ts", "mts", "js", "mjs"];

/// A function file that is not served, and why (logged at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
  pub path: PathBuf,
  pub reason: String,
}

/// Finds the functions of `dir`: name → module path, plus the files that
/// look like functions but are not served.
pub fn discover(dir: &Path) -> std::io::Result<(BTreeMap<String, PathBuf>, Vec<Skipped>)> {
  // name -> (rank of its extension, path)
  let mut found: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
  let mut skipped = Vec::new();
  let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
    .filter_map(|e| e.ok().map(|e| e.path()))
    .filter(|p| p.is_file())
    .collect();
  entries.sort();
  for path in entries {
    let (Some(stem), Some(ext)) = (
      path.file_stem().and_then(|s| s.to_str()),
      path.extension().and_then(|s| s.to_str()),
    ) else {
      continue;
    };
    let Some(rank) = EXTENSIONS.iter().position(|e| *e == ext) else {
      continue;
    };
    if stem.ends_with(".d") {
      continue; // type declarations
    }
    let name = stem.to_string();
    if let Err(reason) = check_name(&name) {
      skipped.push(Skipped { path, reason });
      continue;
    }
    let (keep, drop) = match found.remove(&name) {
      None => ((rank, path), None),
      Some(existing) if rank < existing.0 => ((rank, path), Some(existing.1)),
      Some(existing) => (existing, Some(path)),
    };
    if let Some(drop) = drop {
      skipped.push(Skipped {
        reason: format!("'{name}' is already served from {}", keep.1.display()),
        path: drop,
      });
    }
    found.insert(name, keep);
  }
  let found = found
    .into_iter()
    .map(|(name, (_, path))| (name, path))
    .collect();
  Ok((found, skipped))
}

fn check_name(name: &str) -> Result<(), String> {
  if name == HOST_PREFIX {
    return Err(format!("'/{HOST_PREFIX}' is reserved for the host"));
  }
  if name.is_empty()
    || !name
      .chars()
      .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
  {
    return Err(format!(
      "function names may only contain ASCII letters, digits, '-', '_' and '.': '{name}'"
    ));
  }
  Ok(())
}

/// A request path that climbs above `/` (`/a/../..`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path '{0}': it climbs above the root")]
pub struct PathAboveRoot(pub String);

/// Removes dot-segments from an absolute request path (RFC 3986 section
/// 5.2.4). `%2e` counts as `.`, as in WHATWG URL parsing, which is what the
/// function's `new URL()` applies. A path that climbs above `/` is an error
/// rather than being clamped: no legitimate client sends one.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathAboveRoot> {
  fn dots(segment: &str) -> usize {
    match segment.to_ascii_lowercase().as_str() {
      "." | "%2e" => 1,
      ".." | ".%2e" | "%2e." | "%2e%2e" => 2,
      _ => 0,
    }
  }
  let Some(rest) = path.strip_prefix('/') else {
    return Ok(Cow::Borrowed(path));
  };
  let segments: Vec<&str> = rest.split('/').collect();
  if segments.iter().all(|s| dots(s) == 0) {
    return Ok(Cow::Borrowed(path));
  }
  let mut out: Vec<&str> = Vec::with_capacity(segments.len());
  let last = segments.len() - 1;
  for (i, segment) in segments.iter().enumerate() {
    match dots(segment) {
      0 => out.push(segment),
      n => {
        if n == 2 && out.pop().is_none() {
          return Err(PathAboveRoot(path.to_string()));
        }
        // A trailing dot-segment leaves the path ending in a slash.
        if i == last {
          out.push("");
        }
      }
    }
  }
  Ok(Cow::Owned(format!("/{}", out.join("/"))))
}

/// The function name of a request path: the first segment.
pub fn function_of(path: &str) -> Option<&str> {
  let rest = path.strip_prefix('/')?;
  let name = rest.split('/').next().unwrap_or("");
  (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn first_segment_names_the_function() {
    assert_eq!(function_of("/hello"), Some("hello"));
    assert_eq!(function_of("/hello/a/b"), Some("hello"));
    assert_eq!(function_of("/hello/"), Some("hello"));
    assert_eq!(function_of("/"), None);
    assert_eq!(function_of(""), None);
  }

  #[test]
  fn function_extensions_are_module_extensions() {
    use kiln::runtime::JAVASCRIPT_EXTENSIONS;
    use kiln::snapshot::transpile::TYPESCRIPT_EXTENSIONS;
    for ext in EXTENSIONS {
      assert!(
        TYPESCRIPT_EXTENSIONS.contains(&ext) || JAVASCRIPT_EXTENSIONS.contains(&ext),
        "{ext}"
      );
    }
  }

  #[test]
  fn dot_segments_are_removed_before_routing() {
    let n = |p| normalize_path(p).map(Cow::into_owned);
    assert_eq!(n("/echo/a"), Ok("/echo/a".into()));
    assert_eq!(n("/"), Ok("/".into()));
    assert_eq!(n("/echo/../hello"), Ok("/hello".into()));
    assert_eq!(n("/echo/./a/./b"), Ok("/echo/a/b".into()));
    assert_eq!(n("/echo/a/.."), Ok("/echo/".into()));
    assert_eq!(n("/echo/a/."), Ok("/echo/a/".into()));
    assert_eq!(n("/echo/%2E%2e/x"), Ok("/x".into()));
    assert_eq!(n("/echo/.%2e/x/%2e"), Ok("/x/".into()));
    assert_eq!(n("/echo/..."), Ok("/echo/...".into()));
    assert_eq!(n("/a//../b"), Ok("/a/b".into()));
    for above in ["/..", "/echo/../../etc/passwd", "/%2e%2e/x", "/a/./../.."] {
      assert_eq!(n(above), Err(PathAboveRoot(above.into())), "{above}");
    }
  }

  #[test]
  fn discovers_functions_and_reports_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
      "a.ts",
      "a.js",
      "b.mjs",
      "c.d.ts",
      "notes.md",
      "_kiln.ts",
      "bad name.ts",
    ] {
      std::fs::write(dir.path().join(f), "").unwrap();
    }
    std::fs::create_dir(dir.path().join("sub.ts")).unwrap();
    let (found, skipped) = discover(dir.path()).unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(found["a"], dir.path().join("a.ts"));
    let skipped: Vec<_> = skipped
      .iter()
      .map(|s| s.path.file_name().unwrap().to_str().unwrap().to_string())
      .collect();
    assert_eq!(skipped, ["_kiln.ts", "a.js", "bad name.ts"]);
  }
}
