//! The thaw: reads the container embedded in this binary, checks it against
//! the extension list this binary runs with, and decompresses it once per
//! process. Never panics on a bad container: every failure is a
//! [`ContainerError`].

use std::sync::OnceLock;

use super::container::ContainerError;
use super::container::Manifest;
use super::container::SnapshotContainer;

/// The container `build.rs` baked for this binary.
pub static EMBEDDED_SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln.snap"));

/// The target triple the snapshot was baked for (set by `build.rs`).
pub const TARGET: &str = env!("KILN_TARGET");

mod residual {
  include!(concat!(env!("OUT_DIR"), "/kiln_residual.rs"));
}
pub use residual::RESIDUAL_LAZY_ESM;
pub use residual::RESIDUAL_LAZY_JS;

/// Parses `bytes`, checks it was baked for `expected`, and decompresses it.
pub fn thaw(bytes: &[u8], expected: &Manifest) -> Result<Vec<u8>, ContainerError> {
  let container = SnapshotContainer::parse(bytes)?;
  container.check_manifest(expected)?;
  container.decompress()
}

/// Starts checking and decompressing the embedded snapshot on a background
/// thread, so the work overlaps V8 platform start-up. Only the first call
/// does anything; [`embedded`] waits for the result.
pub fn prefetch_embedded(expected: fn() -> Manifest) {
  static STARTED: std::sync::Once = std::sync::Once::new();
  STARTED.call_once(|| {
    // If no thread can be spawned, `embedded` does the work itself.
    let _ = std::thread::Builder::new()
      .name("kiln-snapshot".into())
      .spawn(move || {
        let _ = embedded(expected);
      });
  });
}

/// The embedded snapshot, checked and decompressed on first use and shared by
/// every runtime in the process. `expected` is only consulted on first use;
/// the embedded extension list is fixed for the process.
pub fn embedded(expected: impl FnOnce() -> Manifest) -> Result<&'static [u8], ContainerError> {
  static THAWED: OnceLock<Result<Box<[u8]>, ContainerError>> = OnceLock::new();
  THAWED
    .get_or_init(|| thaw(EMBEDDED_SNAPSHOT, &expected()).map(Vec::into_boxed_slice))
    .as_deref()
    .map_err(Clone::clone)
}

/// [`thaw`] for `'static` containers other than the embedded one, once per
/// process per (container, expected manifest); the bytes live for the process.
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
