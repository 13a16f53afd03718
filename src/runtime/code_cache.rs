//! V8 code caches for modules that are not baked (`kiln run`, a served
//! function that could not be baked): the second run of a module skips
//! compiling it, as Deno's does.
//!
//! One file per module under `<dir>/code/`, named by a hash of the
//! specifier: a header (magic, the key, a checksum of the data) and V8's
//! cached data. The key covers the source text, kiln's and V8's versions;
//! V8 checks its own flags and version too and rejects what does not match.
//! A file that is short, foreign, stale or fails its checksum is ignored
//! (and rewritten after the compile): never handed to V8 unchecked.

use std::hash::Hasher;
use std::path::Path;
use std::path::PathBuf;

const MAGIC: &[u8; 8] = b"KILNCC01";
const HEADER_LEN: usize = 8 + 8 + 8;

/// Where code caches live, or nowhere.
#[derive(Debug, Clone)]
pub struct CodeCache {
  dir: PathBuf,
}

/// A stable 64-bit hash (SipHash with fixed keys).
fn hash64(parts: &[&[u8]]) -> u64 {
  #[allow(deprecated)]
  let mut hasher = std::hash::SipHasher::new();
  for part in parts {
    hasher.write(part);
    hasher.write_u8(0xff);
  }
  hasher.finish()
}

impl CodeCache {
  /// Code caches in `<cache_dir>/code/`.
  pub fn new(cache_dir: &Path) -> Self {
    CodeCache {
      dir: cache_dir.join("code"),
    }
  }

  /// The key of a module's cache: its source, kiln's and V8's versions.
  pub fn key(source: &str) -> u64 {
    hash64(&[
      source.as_bytes(),
      env!("CARGO_PKG_VERSION").as_bytes(),
      deno_core::v8::VERSION_STRING.as_bytes(),
    ])
  }

  fn file(&self, specifier: &str) -> PathBuf {
    self
      .dir
      .join(format!("{:016x}.v8", hash64(&[specifier.as_bytes()])))
  }

  /// The cached data for `specifier` if its file is whole and made for
  /// `key`.
  pub fn get(&self, specifier: &str, key: u64) -> Option<Vec<u8>> {
    let bytes = std::fs::read(self.file(specifier)).ok()?;
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
      return None;
    }
    let stored_key = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let checksum = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
    let data = &bytes[HEADER_LEN..];
    (stored_key == key && checksum == hash64(&[data])).then(|| data.to_vec())
  }

  /// Stores V8's cached data for `specifier` (through a rename, so readers
  /// never see half a file). Failures only cost the next run a compile.
  pub fn put(&self, specifier: &str, key: u64, data: &[u8]) {
    let file = self.file(specifier);
    let mut bytes = Vec::with_capacity(HEADER_LEN + data.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&key.to_le_bytes());
    bytes.extend_from_slice(&hash64(&[data]).to_le_bytes());
    bytes.extend_from_slice(data);
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(&self.dir)
      .and_then(|()| std::fs::write(&tmp, &bytes))
      .and_then(|()| std::fs::rename(&tmp, &file));
    if written.is_err() {
      let _ = std::fs::remove_file(&tmp);
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn entries_round_trip_and_damaged_ones_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CodeCache::new(dir.path());
    let key = CodeCache::key("export const a = 1;");
    assert_eq!(cache.get("file:///a.js", key), None);
    cache.put("file:///a.js", key, b"v8 data");
    assert_eq!(
      cache.get("file:///a.js", key).as_deref(),
      Some(&b"v8 data"[..])
    );
    // Another source: another key.
    assert_eq!(cache.get("file:///a.js", CodeCache::key("changed")), None);
    // A flipped data byte fails the checksum; a short file is ignored.
    let file = cache.file("file:///a.js");
    let mut bytes = std::fs::read(&file).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(cache.get("file:///a.js", key), None);
    std::fs::write(&file, b"KILN").unwrap();
    assert_eq!(cache.get("file:///a.js", key), None);
  }
}
