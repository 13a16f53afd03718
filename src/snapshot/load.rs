//! The run side: the container `build.rs` embedded in this crate (with the
//! `embedded-snapshot` feature), checked against the extension list this
//! binary runs with and decompressed once per process, and the thaw of any
//! other container. Never panics on a bad container: every failure is a
//! [`ContainerError`].

#[cfg(feature = "embedded-snapshot")]
use std::sync::OnceLock;

#[cfg(feature = "embedded-snapshot")]
use super::container::ContainerError;
#[cfg(feature = "embedded-snapshot")]
use super::container::Manifest;

pub use kiln_pipeline::thaw::thaw;
pub use kiln_pipeline::thaw::thaw_cached;
pub use kiln_pipeline::thaw::thaw_leaked;

/// The target triple this crate was built for (set by `build.rs`); part of
/// every snapshot's manifest.
pub const TARGET: &str = env!("KILN_TARGET");

/// The container `build.rs` baked for this binary.
#[cfg(feature = "embedded-snapshot")]
pub static EMBEDDED_SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln.snap"));

#[cfg(feature = "embedded-snapshot")]
mod residual {
  include!(concat!(env!("OUT_DIR"), "/kiln_residual.rs"));
}
/// Lazily loaded sources of the embedded snapshot that no baked code
/// consumed (the runtime must carry them).
#[cfg(feature = "embedded-snapshot")]
pub use residual::RESIDUAL_LAZY_ESM;
#[cfg(feature = "embedded-snapshot")]
pub use residual::RESIDUAL_LAZY_JS;

#[cfg(feature = "embedded-snapshot")]
mod sources {
  include!(concat!(env!("OUT_DIR"), "/kiln_sources.rs"));
}
/// Every source of kiln's extensions as the bake read it, so this binary can
/// bake them again together with user code (`kiln compile`, served
/// functions) where the source files do not exist.
#[cfg(feature = "embedded-snapshot")]
pub use sources::EXTENSION_SOURCES;

/// Starts checking and decompressing the embedded snapshot on a background
/// thread, so the work overlaps V8 platform start-up. Only the first call
/// does anything; [`embedded`] waits for the result.
#[cfg(feature = "embedded-snapshot")]
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
#[cfg(feature = "embedded-snapshot")]
pub fn embedded(expected: impl FnOnce() -> Manifest) -> Result<&'static [u8], ContainerError> {
  static THAWED: OnceLock<Result<&'static [u8], ContainerError>> = OnceLock::new();
  THAWED
    .get_or_init(|| thaw_leaked(EMBEDDED_SNAPSHOT, &expected()))
    .clone()
}
