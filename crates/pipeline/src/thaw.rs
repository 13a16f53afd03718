//! The thaw: checks a container against the extension list a runtime runs
//! with and decompresses it. Never panics on a bad container: every failure
//! is a [`ContainerError`].

use std::sync::OnceLock;

use crate::container::ContainerError;
use crate::container::Manifest;
use crate::container::SnapshotContainer;

/// Parses `bytes`, checks it was baked for `expected`, and decompresses it.
pub fn thaw(bytes: &[u8], expected: &Manifest) -> Result<Vec<u8>, ContainerError> {
  let container = SnapshotContainer::parse(bytes)?;
  container.check_manifest(expected)?;
  container.decompress()
}

/// [`thaw`] into memory kept for the rest of the process (a
/// [`SnapshotBuffer`](crate::memory::SnapshotBuffer): huge pages, populated
/// at once).
pub fn thaw_leaked(bytes: &[u8], expected: &Manifest) -> Result<&'static [u8], ContainerError> {
  let container = SnapshotContainer::parse(bytes)?;
  container.check_manifest(expected)?;
  Ok(crate::memory::decompress(&container)?.leak())
}

/// [`thaw_leaked`] for `'static` containers, once per process per
/// (container, expected manifest).
pub fn thaw_cached(
  container: &'static [u8],
  expected: &Manifest,
) -> Result<&'static [u8], ContainerError> {
  type Cache = std::sync::Mutex<std::collections::HashMap<(usize, [u8; 32]), &'static [u8]>>;
  static CACHE: OnceLock<Cache> = OnceLock::new();
  let key = (container.as_ptr() as usize, expected.fingerprint());
  let cache = CACHE.get_or_init(Default::default);
  if let Some(raw) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
    return Ok(raw);
  }
  let raw = thaw_leaked(container, expected)?;
  cache
    .lock()
    .unwrap_or_else(|p| p.into_inner())
    .insert(key, raw);
  Ok(raw)
}
