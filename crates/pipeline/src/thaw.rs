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

/// [`thaw`] for `'static` containers, once per process per (container,
/// expected manifest); the bytes live for the process.
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
  let raw: &'static [u8] = Box::leak(thaw(container, expected)?.into_boxed_slice());
  cache
    .lock()
    .unwrap_or_else(|p| p.into_inner())
    .insert(key, raw);
  Ok(raw)
}
