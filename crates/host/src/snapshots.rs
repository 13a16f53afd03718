//! Functions started from a snapshot: every function's module graph, its
//! top level included, is baked (in a child process: a heap V8 cannot
//! serialize aborts that process, not the host) into one snapshot with
//! kiln's extensions, and every instance thaws it, so no module is parsed,
//! compiled or evaluated on the request path. One snapshot for all
//! functions, because V8 keeps one read-only heap per process and each
//! snapshot has its own.
//!
//! The baked snapshot is cached on disk, keyed by this kiln (its
//! fingerprint and embedded snapshot) and the functions' paths, and used only while every source it baked hashes
//! the same: a restart reuses it, an edit re-bakes. A function that cannot
//! be baked is left out (the others are baked again without it) and served
//! from its modules, with one warning naming the cause.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use kiln::app::AppBake;
use kiln::app::AppImage;
use kiln::app::EntryMode;
use kiln::runtime::ModuleAccess;
use sha2::Digest;

/// How functions get their snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
  /// A kiln binary that bakes when run as `<baker> __bake ...` (`kiln serve`
  /// uses itself).
  pub baker: PathBuf,
  /// Where baked snapshots are kept between runs.
  pub cache_dir: PathBuf,
}

/// zstd level of function snapshots: they are written at start-up, where
/// a fast level matters more than the last few percent of size.
const COMPRESSION_LEVEL: i32 = 3;

/// What a function's instances start from.
#[derive(Clone, Default)]
pub(crate) enum StartFrom {
  /// kiln's embedded snapshot; the function's modules load per instance
  /// (snapshots are off, or the host's could not be baked).
  #[default]
  Embedded,
  /// The host's snapshot, without this function (it could not be baked):
  /// its modules load per instance. Not the embedded snapshot: V8 cannot
  /// thaw snapshots of two origins in one process (see
  /// `kiln::runtime::check_read_only_heap`).
  Base(AppImage),
  /// The host's snapshot, where this function's module graph is baked and
  /// evaluated.
  Function(AppImage),
}

/// The one snapshot of a host: every function's module graph, baked
/// together. V8 shares one read-only heap per process and every snapshot
/// has its own, so all instances of all functions must thaw the same one;
/// each instance then uses its own function's part.
pub(crate) struct HostSnapshot {
  /// (name, path) of every function, sorted by path.
  functions: Vec<(String, PathBuf)>,
  access: ModuleAccess,
  options: SnapshotOptions,
  timeout: Duration,
  /// An instance's heap cap: the snapshot must fit in it with room to run.
  max_heap_bytes: usize,
  image: tokio::sync::OnceCell<Option<AppImage>>,
}

impl HostSnapshot {
  pub(crate) fn new(
    mut functions: Vec<(String, PathBuf)>,
    access: ModuleAccess,
    options: SnapshotOptions,
    timeout: Duration,
    max_heap_bytes: usize,
  ) -> Self {
    functions.sort_by(|a, b| a.1.cmp(&b.1));
    HostSnapshot {
      functions,
      access,
      options,
      timeout,
      max_heap_bytes,
      image: tokio::sync::OnceCell::new(),
    }
  }

  /// What the function at `path` starts from; the first caller bakes (or
  /// reads the cache), the others wait for it.
  pub(crate) async fn start_from(self: &std::sync::Arc<Self>, path: &Path) -> StartFrom {
    let this = self.clone();
    let image = self
      .image
      .get_or_init(|| async move {
        tokio::task::spawn_blocking(move || this.prepare())
          .await
          .ok()
          .flatten()
      })
      .await;
    let Some(image) = image else {
      return StartFrom::Embedded;
    };
    match deno_core::ModuleSpecifier::from_file_path(path) {
      Ok(specifier) if image.has_entry(&specifier) => StartFrom::Function(image.clone()),
      _ => StartFrom::Base(image.clone()),
    }
  }

  fn name_of<'a>(&'a self, specifier: &'a str) -> &'a str {
    self
      .functions
      .iter()
      .find(|(_, path)| {
        deno_core::ModuleSpecifier::from_file_path(path).is_ok_and(|s| s.as_str() == specifier)
      })
      .map_or(specifier, |(name, _)| name.as_str())
  }

  fn report_unbaked(&self, image: &AppImage) {
    for (specifier, reason) in image.unbaked() {
      tracing::warn!(
        "function '{}' cannot be started from a snapshot, serving it from its modules: {reason}",
        self.name_of(specifier)
      );
    }
  }

  /// The image if instances can thaw it within their heap cap: V8 aborts
  /// the process when a snapshot does not fit the heap it is thawed into,
  /// before any limit handling exists.
  fn fits(&self, image: AppImage) -> Option<AppImage> {
    let needed = image.snapshot().len().saturating_mul(2);
    if needed <= self.max_heap_bytes {
      return Some(image);
    }
    tracing::error!(
      "the functions' baked snapshot ({} MiB) is too large for instances of {} MiB (--max-heap-mb; an instance needs about twice the snapshot): every function loads its modules instead",
      image.snapshot().len() >> 20,
      self.max_heap_bytes >> 20
    );
    None
  }

  fn prepare(&self) -> Option<AppImage> {
    self.prepare_image().and_then(|image| self.fits(image))
  }

  fn prepare_image(&self) -> Option<AppImage> {
    let paths: Vec<&Path> = self.functions.iter().map(|(_, p)| p.as_path()).collect();
    let file = cache_file(&self.options.cache_dir, &paths);
    match read_cached(&file, &self.access) {
      Ok(Some(image)) => {
        tracing::info!(
          "snapshot from cache ({}): {} of {} functions baked",
          file.display(),
          self.functions.len() - image.unbaked().len(),
          self.functions.len()
        );
        self.report_unbaked(&image);
        return Some(image);
      }
      Ok(None) => {}
      Err(e) => tracing::warn!("ignoring cached snapshot {}: {e}", file.display()),
    }
    let started = Instant::now();
    let mut entries: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let mut unbaked: Vec<(PathBuf, String)> = Vec::new();
    loop {
      let request = AppBake {
        entries: entries.clone(),
        unbaked: unbaked.clone(),
        root: None,
        mode: EntryMode::Module,
        access: self.access.clone(),
        compression_level: COMPRESSION_LEVEL,
        // A function that takes longer is left out, like one that throws.
        entry_timeout: Some(self.timeout),
        // As much heap as one instance: a function that needs more is left
        // out (its bake aborts), and could not run from the snapshot anyway.
        max_heap_bytes: Some(self.max_heap_bytes),
      };
      // Every remaining function once more, plus kiln's extensions.
      let timeout = self.timeout * (entries.len() as u32 + 1) + Duration::from_secs(10);
      match kiln::app::bake_in_child(&self.options.baker, &request, timeout) {
        Ok((container, output)) => {
          for line in output {
            tracing::info!("bake output: {line}");
          }
          let image = match AppImage::open(&container) {
            Ok(image) => image,
            Err(e) => {
              tracing::error!("cannot use the baked snapshot (functions load their modules): {e}");
              return None;
            }
          };
          tracing::info!(
            "baked a snapshot of {} of {} functions in {} ms ({} modules)",
            entries.len(),
            self.functions.len(),
            started.elapsed().as_millis(),
            image.modules().len()
          );
          self.report_unbaked(&image);
          if let Err(e) = write_atomically(&file, &container) {
            tracing::warn!("cannot cache the snapshot in {}: {e}", file.display());
          }
          return Some(image);
        }
        // One function failed: bake the others without it.
        Err(kiln::app::ChildBakeError::Entry { index, message }) if index < entries.len() => {
          let path = entries.remove(index);
          unbaked.push((path, message));
        }
        Err(e) => {
          tracing::error!(
            "cannot bake the functions' snapshot (functions load their modules): {e}"
          );
          return None;
        }
      }
    }
  }
}

/// `<cache_dir>/functions/<hash of this kiln and the paths>.app`.
fn cache_file(cache_dir: &Path, paths: &[&Path]) -> PathBuf {
  let mut hash = sha2::Sha256::new();
  hash.update(kiln::runtime::expected_manifest().fingerprint());
  // The glue may change without the op list: the embedded snapshot covers it.
  hash.update(sha2::Sha256::digest(
    kiln::snapshot::load::EMBEDDED_SNAPSHOT,
  ));
  for path in paths {
    hash.update(path.as_os_str().as_encoded_bytes());
    hash.update([0]);
  }
  let key: [u8; 32] = hash.finalize().into();
  let name: String = key[..16].iter().map(|b| format!("{b:02x}")).collect();
  cache_dir.join("functions").join(format!("{name}.app"))
}
/// Why a cached snapshot was not used.
#[derive(Debug, thiserror::Error)]
enum CacheError {
  #[error("{0}")]
  Read(std::io::Error),
  #[error(transparent)]
  Container(#[from] kiln::app::AppError),
}

/// The cached snapshot at `file` if it exists, is sound, was baked by this
/// kiln, and every source it baked still hashes the same.
fn read_cached(file: &Path, access: &ModuleAccess) -> Result<Option<AppImage>, CacheError> {
  let bytes = match std::fs::read(file) {
    Ok(bytes) => bytes,
    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
    Err(e) => return Err(CacheError::Read(e)),
  };
  let image = AppImage::open_if(&bytes, |payload| {
    payload.modules.iter().all(|module| {
      let Some(path) = deno_core::ModuleSpecifier::parse(&module.specifier)
        .ok()
        .and_then(|url| url.to_file_path().ok())
      else {
        return false;
      };
      std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() <= access.max_bytes)
        && std::fs::read_to_string(&path)
          .is_ok_and(|text| kiln_pipeline::app::source_hash(&text) == module.source_sha256)
    })
  })?;
  Ok(image)
}

/// Writes `bytes` to `file` through a temporary file and a rename, so a
/// reader never sees half of it.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
  if let Some(dir) = file.parent() {
    std::fs::create_dir_all(dir)?;
  }
  let tmp = file.with_extension(format!("tmp{}", std::process::id()));
  std::fs::write(&tmp, bytes)?;
  std::fs::rename(&tmp, file)
}
