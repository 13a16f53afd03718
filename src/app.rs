//! User code baked into snapshots: the app containers of `kiln compile`
//! executables and of served functions started from their own snapshots.
//!
//! [`bake`] evaluates an app's modules on top of kiln's extensions (baked
//! again from the sources this binary embeds: deno_core 0.413 cannot layer a
//! snapshot on a thawed one) and wraps the heap in a container whose
//! manifest is kiln's plus the app's hash. [`AppImage::open`] checks such a
//! container was baked by this kiln and thaws it; [`crate::Runtime`] starts
//! from it with [`crate::runtime::RuntimeBuilder::app`].
//!
//! A bake runs V8 in snapshotting mode, which a process can only do before
//! it starts V8 otherwise, and V8 aborts on a heap it cannot serialize: run
//! it in a process of its own (`kiln` does: `kiln compile`, `kiln serve`).

use std::path::Path;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use deno_core::ModuleSpecifier;

use crate::runtime::FsModuleLoader;
use crate::runtime::ModuleAccess;
use crate::runtime::loader::Relocation;
use crate::snapshot::container::ContainerError;
use crate::snapshot::container::Manifest;
use crate::snapshot::container::SnapshotContainer;
use kiln_pipeline::app::AppPayload;
use kiln_pipeline::app::BakedModule;
use kiln_pipeline::bake::BakeError;
use kiln_pipeline::bake::UserModules;

/// The URL a relocated app's root directory is named by: a module
/// `<root>/lib/util.ts` is baked as `file:///app/lib/util.ts`, wherever the
/// app was compiled.
pub const APP_BASE: &str = "file:///app/";

/// Where the app's modules run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
  /// `kiln compile`: the entry's imports are evaluated at bake, its own
  /// body at each launch; unless it exports `main`, then it is baked too
  /// and `main()` runs at launch.
  Program,
  /// A served function: the entry module is evaluated at bake, top level
  /// included.
  Module,
}

/// What to bake.
#[derive(Debug, Clone)]
pub struct AppBake {
  pub entry: PathBuf,
  /// Name modules relative to this directory under [`APP_BASE`] (a
  /// relocatable app); `None` names them by their real paths.
  pub root: Option<PathBuf>,
  pub mode: EntryMode,
  /// Which files the app may import.
  pub access: ModuleAccess,
  /// zstd level of the container.
  pub compression_level: i32,
}

/// Why an app could not be baked or thawed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
  #[error("module not found: {}", .0.display())]
  EntryNotFound(PathBuf),
  #[error("{entry} is outside the app root {}", .root.display())]
  OutsideRoot { entry: String, root: PathBuf },
  #[error("{0}")]
  Load(String),
  #[error(transparent)]
  Bake(#[from] BakeError),
  #[error("cannot compress the app snapshot: {0}")]
  Compress(std::io::Error),
  #[error(transparent)]
  Container(#[from] ContainerError),
  #[error("app container corrupt: {0}")]
  Payload(#[from] kiln_pipeline::app::AppPayloadError),
}

/// The specifier an app module at `path` is baked under.
fn specifier_for(path: &Path, root: Option<&Path>) -> Result<ModuleSpecifier, AppError> {
  let Some(root) = root else {
    return ModuleSpecifier::from_file_path(path).map_err(|_| AppError::EntryNotFound(path.into()));
  };
  let relative = path.strip_prefix(root).map_err(|_| AppError::OutsideRoot {
    entry: path.display().to_string(),
    root: root.to_path_buf(),
  })?;
  let mut url = app_base();
  let segments: Vec<String> = relative
    .components()
    .map(|c| c.as_os_str().to_string_lossy().into_owned())
    .collect();
  url
    .path_segments_mut()
    .map_err(|_| AppError::EntryNotFound(path.into()))?
    .pop_if_empty()
    .extend(segments);
  Ok(url)
}

fn app_base() -> ModuleSpecifier {
  // A constant that parses.
  ModuleSpecifier::parse(APP_BASE).unwrap_or_else(|_| unreachable!("APP_BASE is a URL"))
}

/// Bakes an app into a container for this binary (see the module docs for
/// where to call it).
#[cfg(feature = "embedded-snapshot")]
pub fn bake(request: &AppBake) -> Result<Vec<u8>, AppError> {
  let entry_path = std::path::absolute(&request.entry)
    .map_err(|_| AppError::EntryNotFound(request.entry.clone()))?;
  if !entry_path.is_file() {
    return Err(AppError::EntryNotFound(entry_path));
  }
  let root = match &request.root {
    Some(root) => {
      Some(std::path::absolute(root).map_err(|_| AppError::EntryNotFound(root.clone()))?)
    }
    None => None,
  };
  let entry = specifier_for(&entry_path, root.as_deref())?;
  let mut loader = FsModuleLoader::new(request.access.clone());
  if let Some(root) = &root {
    loader = loader.with_relocation(Relocation {
      base: app_base(),
      root: root.clone(),
    });
  }
  let entry_code = loader
    .load_javascript(&entry)
    .map_err(|e| AppError::Load(e.to_string()))?;
  let facts = kiln_pipeline::transpile::module_facts(&entry, &entry_code)
    .map_err(|e| AppError::Load(e.to_string()))?;
  let main = request.mode == EntryMode::Program && facts.exports_main;
  // A program's body runs at launch: bake only what it imports, in its
  // order, through a module of bare imports beside it.
  let (modules, launch_code, imports_module) = if request.mode == EntryMode::Module || main {
    (vec![entry.clone()], None, None)
  } else {
    let imports_module = entry
      .join("./__kiln_baked_imports__.js")
      .map_err(|e| AppError::Load(e.to_string()))?;
    let mut code = String::new();
    for import in &facts.imports {
      let specifier = serde_json::to_string(&import.specifier).unwrap_or_default();
      let attributes = if import.json {
        " with { type: \"json\" }"
      } else {
        ""
      };
      code.push_str(&format!("import {specifier}{attributes};\n"));
    }
    loader = loader.with_module(&imports_module, code.into());
    (
      vec![imports_module.clone()],
      Some(entry_code.clone()),
      Some(imports_module),
    )
  };
  let loader = Rc::new(loader);
  let extensions = kiln_pipeline::bake::with_embedded_sources(
    kiln_extensions::all(Default::default()),
    crate::snapshot::load::EXTENSION_SOURCES,
  )?;
  let snapshot = kiln_pipeline::bake::snapshot_with_modules(
    extensions,
    UserModules {
      loader: loader.clone(),
      prelude: Some("globalThis.__kilnBakeBegin();".into()),
      modules,
      postlude: Some("globalThis.__kilnBakeEnd();".into()),
    },
  )
  .map_err(|e| match (&imports_module, e) {
    // Name the entry, not the module of its imports.
    (Some(imports), BakeError::Module(message)) => {
      BakeError::Module(message.replace(imports.as_str(), entry.as_str()))
    }
    (_, e) => e,
  })?;

  let mut baked: Vec<BakedModule> = loader
    .loaded_modules()
    .into_iter()
    .filter(|(specifier, _)| {
      Some(specifier.as_str()) != imports_module.as_ref().map(|m| m.as_str())
    })
    .map(|(specifier, source_sha256)| BakedModule {
      specifier,
      source_sha256,
    })
    .collect();
  baked.sort_by(|a, b| a.specifier.cmp(&b.specifier));
  baked.dedup_by(|a, b| a.specifier == b.specifier);
  let maps: Vec<(String, Arc<[u8]>)> = baked
    .iter()
    .filter_map(|m| Some((m.specifier.clone(), loader.source_map(&m.specifier)?)))
    .collect();
  let payload = AppPayload {
    snapshot: &snapshot,
    entry: entry.as_str(),
    main,
    entry_code: launch_code.as_deref(),
    modules: baked,
    source_maps: maps.iter().map(|(s, m)| (s.as_str(), &m[..])).collect(),
  };
  let manifest = crate::runtime::expected_manifest().with_app(&payload.app_hash());
  SnapshotContainer::encode(&manifest, &payload.encode(), request.compression_level)
    .map_err(AppError::Compress)
}

/// A thawed app container: checked against this binary's extensions,
/// decompressed once and kept for the process.
#[derive(Clone)]
pub struct AppImage {
  payload: Arc<AppPayload<'static>>,
  manifest: Arc<Manifest>,
}

impl AppImage {
  /// Checks `container` was baked by this kiln (any app) and thaws it. The
  /// decompressed bytes live for the rest of the process (V8 reads the
  /// snapshot in place).
  pub fn open(container: &[u8]) -> Result<AppImage, AppError> {
    let parsed = SnapshotContainer::parse(container)?;
    parsed.check_extensions(&crate::runtime::expected_manifest())?;
    if parsed.manifest.app.is_none() {
      return Err(AppError::Container(ContainerError::CorruptHeader(
        "not an app container (no app in its manifest)",
      )));
    }
    let raw: &'static [u8] = Box::leak(parsed.decompress()?.into_boxed_slice());
    let payload = AppPayload::decode(raw)?;
    Ok(AppImage {
      payload: Arc::new(payload),
      manifest: Arc::new(parsed.manifest),
    })
  }

  /// deno_core's snapshot bytes.
  pub fn snapshot(&self) -> &'static [u8] {
    self.payload.snapshot
  }

  /// The entry module's specifier.
  pub fn entry(&self) -> Result<ModuleSpecifier, AppError> {
    ModuleSpecifier::parse(self.payload.entry)
      .map_err(|_| AppError::Load(format!("bad entry specifier {}", self.payload.entry)))
  }

  /// The entry exports `main` (baked; `main()` runs at launch).
  pub fn has_main(&self) -> bool {
    self.payload.main
  }

  /// The modules baked in, with their source hashes.
  pub fn modules(&self) -> &[BakedModule] {
    &self.payload.modules
  }

  pub fn manifest(&self) -> &Manifest {
    &self.manifest
  }

  /// The loader a runtime thawed from this image uses: the entry's code
  /// (when it runs at launch) from memory, the baked modules' source maps.
  pub(crate) fn loader(&self, access: ModuleAccess) -> Result<FsModuleLoader, AppError> {
    let mut loader = FsModuleLoader::new(access);
    if let Some(code) = self.payload.entry_code {
      loader = loader.with_module(&self.entry()?, code.into());
    }
    for (specifier, map) in &self.payload.source_maps {
      loader = loader.with_source_map(specifier, Arc::from(*map));
    }
    Ok(loader)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn relocated_specifiers_do_not_name_the_build_machine() {
    let root = Path::new("/home/someone/project");
    let url = specifier_for(&root.join("src/main file.ts"), Some(root)).unwrap();
    assert_eq!(url.as_str(), "file:///app/src/main%20file.ts");
    let err = specifier_for(Path::new("/etc/x.ts"), Some(root)).unwrap_err();
    assert!(err.to_string().contains("outside the app root"), "{err}");
  }
}

/// The hidden subcommand a bake runs under in a child process.
pub const BAKE_SUBCOMMAND: &str = "__bake";

impl AppBake {
  /// The child's arguments (after [`BAKE_SUBCOMMAND`]) for this bake into
  /// `out`.
  fn to_args(&self, out: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
      "--entry".into(),
      self.entry.clone().into(),
      "--out".into(),
      out.into(),
      "--mode".into(),
      match self.mode {
        EntryMode::Program => "program",
        EntryMode::Module => "module",
      }
      .into(),
      "--max-module-bytes".into(),
      self.access.max_bytes.to_string().into(),
      "--compression".into(),
      self.compression_level.to_string().into(),
    ];
    if let Some(root) = &self.root {
      args.extend(["--root".into(), root.clone().into()]);
    }
    if let Some(confine) = &self.access.root {
      args.extend(["--confine".into(), confine.clone().into()]);
    }
    args
  }

  /// Parses what [`AppBake::to_args`] wrote; returns the bake and `out`.
  fn from_args(args: &[std::ffi::OsString]) -> Result<(AppBake, PathBuf), String> {
    let mut bake = AppBake {
      entry: PathBuf::new(),
      root: None,
      mode: EntryMode::Program,
      access: ModuleAccess::default(),
      compression_level: kiln_pipeline::bake::DEFAULT_COMPRESSION_LEVEL,
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
      let value = it
        .next()
        .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
      let text = || value.to_string_lossy().into_owned();
      match flag.to_str() {
        Some("--entry") => bake.entry = value.into(),
        Some("--out") => out = Some(PathBuf::from(value)),
        Some("--root") => bake.root = Some(value.into()),
        Some("--confine") => bake.access.root = Some(value.into()),
        Some("--mode") => {
          bake.mode = match value.to_str() {
            Some("program") => EntryMode::Program,
            Some("module") => EntryMode::Module,
            _ => return Err(format!("unknown mode {}", text())),
          }
        }
        Some("--max-module-bytes") => {
          bake.access.max_bytes = text().parse().map_err(|_| "bad --max-module-bytes")?
        }
        Some("--compression") => {
          bake.compression_level = text().parse().map_err(|_| "bad --compression")?
        }
        _ => return Err(format!("unknown bake argument {}", flag.to_string_lossy())),
      }
    }
    let out = out.ok_or("--out is required")?;
    Ok((bake, out))
  }
}

/// The body of `kiln __bake ...`: bakes and writes the container to the
/// `--out` file. Returns the process exit code; errors go to stderr as one
/// line.
pub fn bake_child_main(args: &[std::ffi::OsString]) -> i32 {
  let (bake_request, out) = match AppBake::from_args(args) {
    Ok(parsed) => parsed,
    Err(e) => {
      eprintln!("{e}");
      return 2;
    }
  };
  match bake(&bake_request).and_then(|container| {
    std::fs::write(&out, container)
      .map_err(|e| AppError::Load(format!("cannot write {}: {e}", out.display())))
  }) {
    Ok(()) => 0,
    Err(e) => {
      // One line: the parent reports it as the cause.
      eprintln!("{}", e.to_string().replace('\n', " | "));
      1
    }
  }
}

/// Why a bake in a child process failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildBakeError {
  #[error("cannot start the bake process {}: {source}", .program.display())]
  Spawn {
    program: PathBuf,
    source: std::io::Error,
  },
  #[error("{0}")]
  Failed(String),
  #[error(
    "V8 aborted while baking (the heap holds something a snapshot cannot, or memory ran out): {0}"
  )]
  Aborted(String),
  #[error("the bake did not finish within {} ms (top-level code that never ends?)", .0.as_millis())]
  Timeout(std::time::Duration),
  #[error("cannot read the baked container: {0}")]
  Read(std::io::Error),
}

/// Runs [`bake`] in a child process (`program __bake ...`, where `program`
/// is a kiln binary that calls [`bake_child_main`] for that subcommand) and
/// returns the container: a heap V8 cannot serialize aborts the child, not
/// the caller. The child is killed after `timeout`.
pub fn bake_in_child(
  program: &Path,
  request: &AppBake,
  timeout: std::time::Duration,
) -> Result<Vec<u8>, ChildBakeError> {
  use std::io::Read;
  use std::os::unix::process::ExitStatusExt;

  let out = tempfile_path();
  let mut child = std::process::Command::new(program)
    .arg(BAKE_SUBCOMMAND)
    .args(request.to_args(&out))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .map_err(|source| ChildBakeError::Spawn {
      program: program.to_path_buf(),
      source,
    })?;
  // Drain stderr on a thread so a chatty bake cannot fill the pipe.
  let stderr = child.stderr.take();
  let reader = std::thread::spawn(move || {
    let mut text = String::new();
    if let Some(mut stderr) = stderr {
      let _ = stderr.read_to_string(&mut text);
    }
    text
  });
  let started = std::time::Instant::now();
  let status = loop {
    match child.try_wait() {
      Ok(Some(status)) => break Ok(status),
      Ok(None) if started.elapsed() >= timeout => {
        let _ = child.kill();
        let _ = child.wait();
        break Err(ChildBakeError::Timeout(timeout));
      }
      Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
      Err(e) => {
        break Err(ChildBakeError::Failed(format!(
          "cannot wait for the bake: {e}"
        )));
      }
    }
  };
  let stderr = reader.join().unwrap_or_default();
  let last_line = stderr
    .lines()
    .rev()
    .find(|l| !l.trim().is_empty())
    .unwrap_or("")
    .trim()
    .to_string();
  let result = match status {
    Err(e) => Err(e),
    Ok(status) if status.success() => std::fs::read(&out).map_err(ChildBakeError::Read),
    Ok(status) if status.signal().is_some() => Err(ChildBakeError::Aborted(format!(
      "signal {}{}",
      status.signal().unwrap_or(0),
      if last_line.is_empty() {
        String::new()
      } else {
        format!(": {last_line}")
      }
    ))),
    Ok(_) => Err(ChildBakeError::Failed(last_line)),
  };
  let _ = std::fs::remove_file(&out);
  result
}

/// A fresh path in the temporary directory for a child's output.
fn tempfile_path() -> PathBuf {
  static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
  let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
  std::env::temp_dir().join(format!("kiln-bake-{}-{n}.app", std::process::id()))
}
