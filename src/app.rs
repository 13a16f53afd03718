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

pub use crate::runtime::APP_BASE;

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
  /// The entry modules: exactly one program ([`EntryMode::Program`]), or
  /// any number of served functions ([`EntryMode::Module`], each evaluated
  /// in turn; none bakes kiln's extensions alone).
  pub entries: Vec<PathBuf>,
  /// Functions left out, with why (recorded in the container; their
  /// sources are hashed so an edit re-bakes).
  pub unbaked: Vec<(PathBuf, String)>,
  /// Name modules relative to this directory under [`APP_BASE`] (a
  /// relocatable app); `None` names them by their real paths.
  pub root: Option<PathBuf>,
  pub mode: EntryMode,
  /// Which files the app may import.
  pub access: ModuleAccess,
  /// zstd level of the container.
  pub compression_level: i32,
  /// Longest one entry's top-level evaluation may take at bake.
  pub entry_timeout: Option<std::time::Duration>,
  /// The bake's V8 heap cap (the bake process aborts past it).
  pub max_heap_bytes: Option<usize>,
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
  /// Entry `index` of [`AppBake::entries`] failed to bake.
  #[error("{message}")]
  Entry { index: usize, message: String },
  #[error("kiln compile bakes exactly one entry, not {0}")]
  EntryCount(usize),
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
  let relocation = Relocation {
    base: app_base(),
    root: root.to_path_buf(),
  };
  relocation
    .specifier_of(path)
    .ok_or_else(|| AppError::OutsideRoot {
      entry: path.display().to_string(),
      root: root.to_path_buf(),
    })
}

fn app_base() -> ModuleSpecifier {
  // A constant that parses.
  ModuleSpecifier::parse(APP_BASE).unwrap_or_else(|_| unreachable!("APP_BASE is a URL"))
}

/// Bakes an app into a container for this binary (see the module docs for
/// where to call it).
#[cfg(feature = "embedded-snapshot")]
pub fn bake(request: &AppBake) -> Result<Vec<u8>, AppError> {
  let Some(root) = &request.root else {
    return bake_named(request);
  };
  // Errors are read on the machine that bakes: name its files.
  let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
  let real = |message: String| {
    let url = ModuleSpecifier::from_directory_path(&root)
      .map(|u| u.to_string())
      .unwrap_or_default();
    message
      .replace(APP_BASE, &url)
      .replace(" /app/", &format!(" {}/", root.display()))
  };
  bake_named(request).map_err(|e| match e {
    AppError::Load(message) => AppError::Load(real(message)),
    AppError::Entry { index, message } => AppError::Entry {
      index,
      message: real(message),
    },
    e => e,
  })
}

/// [`bake`], with errors naming modules as they are baked.
#[cfg(feature = "embedded-snapshot")]
fn bake_named(request: &AppBake) -> Result<Vec<u8>, AppError> {
  let root = match &request.root {
    Some(root) => {
      Some(std::path::absolute(root).map_err(|_| AppError::EntryNotFound(root.clone()))?)
    }
    None => None,
  };
  let mut loader = FsModuleLoader::new(request.access.clone()).recording();
  if let Some(root) = &root {
    loader = loader.with_relocation(Relocation {
      base: app_base(),
      root: root.clone(),
    });
  }
  let mut entries = Vec::new();
  for path in &request.entries {
    let path = std::path::absolute(path).map_err(|_| AppError::EntryNotFound(path.clone()))?;
    if !path.is_file() {
      return Err(AppError::EntryNotFound(path));
    }
    entries.push(specifier_for(&path, root.as_deref())?);
  }
  // One module evaluated per entry: the entry itself, or for a program
  // whose body runs at launch, a module of its imports.
  let mut modules = Vec::new();
  let mut main = false;
  let mut launch_code = None;
  let mut imports_module = None;
  match request.mode {
    EntryMode::Module => modules.extend(entries.iter().cloned()),
    EntryMode::Program => {
      let [entry] = entries.as_slice() else {
        return Err(AppError::EntryCount(entries.len()));
      };
      let code = loader
        .load_javascript(entry)
        .map_err(|e| AppError::Load(e.to_string()))?;
      let facts = kiln_pipeline::transpile::module_facts(entry, &code)
        .map_err(|e| AppError::Load(e.to_string()))?;
      main = facts.exports_main;
      if main {
        modules.push(entry.clone());
      } else {
        // Bake only what the body imports, in its order, through a module
        // of bare imports beside it.
        let imports = entry
          .join("./__kiln_baked_imports__.js")
          .map_err(|e| AppError::Load(e.to_string()))?;
        let mut imports_code = String::new();
        for import in &facts.imports {
          let specifier = serde_json::to_string(&import.specifier).unwrap_or_default();
          let attributes = if import.json {
            " with { type: \"json\" }"
          } else {
            ""
          };
          imports_code.push_str(&format!("import {specifier}{attributes};\n"));
        }
        loader = loader.with_module(&imports, imports_code.into());
        modules.push(imports.clone());
        launch_code = Some(code);
        imports_module = Some(imports);
      }
    }
  }
  // Unbaked functions' sources count too: an edit may make them bakeable.
  let mut unbaked = Vec::new();
  let mut unbaked_sources = Vec::new();
  for (path, reason) in &request.unbaked {
    let specifier = specifier_for(path, root.as_deref())?;
    if let Ok(text) = std::fs::read_to_string(path) {
      unbaked_sources.push(BakedModule {
        specifier: specifier.to_string(),
        source_sha256: kiln_pipeline::app::source_hash(&text),
      });
    }
    unbaked.push((specifier.to_string(), reason.clone()));
  }
  let loader = Rc::new(loader);
  let extensions = kiln_pipeline::bake::with_embedded_sources(
    kiln_extensions::all(Default::default()),
    crate::snapshot::load::EXTENSION_SOURCES,
  )?;
  // Cron jobs are recorded under the entry whose modules declared them.
  let serving = matches!(request.mode, EntryMode::Module);
  let mut user = crate::runtime::user_modules_for(loader.clone(), modules, &entries, serving);
  user.on_module = Some(Box::new(|i| eprintln!("{ENTRY_STARTED} {i}")));
  user.timeout = request.entry_timeout;
  user.max_heap_bytes = request.max_heap_bytes;
  let snapshot =
    kiln_pipeline::bake::snapshot_with_modules(extensions, user).map_err(|e| match e {
      BakeError::AtModule { index, source } => {
        let mut message = source.to_string();
        // Name the entry, not the module of its imports.
        if let (Some(imports), Some(entry)) = (&imports_module, entries.first()) {
          message = message.replace(imports.as_str(), entry.as_str());
        }
        AppError::Entry { index, message }
      }
      e => AppError::Bake(e),
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
    .chain(unbaked_sources)
    .collect();
  baked.sort_by(|a, b| a.specifier.cmp(&b.specifier));
  baked.dedup_by(|a, b| a.specifier == b.specifier);
  let maps: Vec<(String, Arc<[u8]>)> = baked
    .iter()
    .filter_map(|m| Some((m.specifier.clone(), loader.source_map(&m.specifier)?)))
    .collect();
  let payload = AppPayload {
    snapshot: &snapshot,
    entries: entries.iter().map(|e| e.as_str()).collect(),
    main,
    entry_code: launch_code.as_deref(),
    modules: baked,
    source_maps: maps.iter().map(|(s, m)| (s.as_str(), &m[..])).collect(),
    unbaked: unbaked
      .iter()
      .map(|(s, r)| (s.as_str(), r.as_str()))
      .collect(),
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
    Self::open_if(container, |_| true)?.ok_or_else(|| AppError::Load("app image refused".into()))
  }

  /// [`AppImage::open`], keeping the image only if `keep` accepts its
  /// payload (e.g. its baked modules' sources are unchanged); a refused one
  /// is dropped, not kept for the process.
  pub fn open_if(
    container: &[u8],
    keep: impl FnOnce(&AppPayload<'_>) -> bool,
  ) -> Result<Option<AppImage>, AppError> {
    let parsed = SnapshotContainer::parse(container)?;
    parsed.check_extensions(&crate::runtime::expected_manifest())?;
    if parsed.manifest.app.is_none() {
      return Err(AppError::Container(ContainerError::CorruptHeader(
        "not an app container (no app in its manifest)",
      )));
    }
    let raw = kiln_pipeline::memory::decompress(&parsed)?;
    if !keep(&AppPayload::decode(raw.as_slice())?) {
      return Ok(None);
    }
    let raw = raw.leak();
    let payload = AppPayload::decode(raw)?;
    Ok(Some(AppImage {
      payload: Arc::new(payload),
      manifest: Arc::new(parsed.manifest),
    }))
  }

  /// deno_core's snapshot bytes.
  pub fn snapshot(&self) -> &'static [u8] {
    self.payload.snapshot
  }

  /// The program's entry module (the first entry).
  pub fn entry(&self) -> Result<ModuleSpecifier, AppError> {
    let entry = self.payload.entries.first().copied().unwrap_or("");
    ModuleSpecifier::parse(entry)
      .map_err(|_| AppError::Load(format!("bad entry specifier '{entry}'")))
  }

  /// Whether `specifier` is a baked entry (a served function evaluated at
  /// bake).
  pub fn has_entry(&self, specifier: &ModuleSpecifier) -> bool {
    self.payload.entries.contains(&specifier.as_str())
  }

  /// Entries left out of the snapshot, with why.
  pub fn unbaked(&self) -> &[(&'static str, &'static str)] {
    &self.payload.unbaked
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
    // A host's image may hold no entry at all (none of its functions
    // could be baked): then there is no entry code either.
    if let Some(code) = self.payload.entry_code
      && !self.payload.entries.is_empty()
    {
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
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for entry in &self.entries {
      args.extend(["--entry".into(), entry.clone().into()]);
    }
    for (path, reason) in &self.unbaked {
      args.extend([
        "--unbaked".into(),
        path.clone().into(),
        "--reason".into(),
        reason.into(),
      ]);
    }
    let mode = match self.mode {
      EntryMode::Program => "program",
      EntryMode::Module => "module",
    };
    let fixed: [std::ffi::OsString; 8] = [
      "--out".into(),
      out.into(),
      "--mode".into(),
      mode.into(),
      "--max-module-bytes".into(),
      self.access.max_bytes.to_string().into(),
      "--compression".into(),
      self.compression_level.to_string().into(),
    ];
    args.extend(fixed);
    if let Some(root) = &self.root {
      args.extend(["--root".into(), root.clone().into()]);
    }
    if let Some(confine) = &self.access.root {
      args.extend(["--confine".into(), confine.clone().into()]);
    }
    if let Some(max) = self.max_heap_bytes {
      args.extend(["--max-heap-bytes".into(), max.to_string().into()]);
    }
    if let Some(timeout) = self.entry_timeout {
      args.extend([
        "--entry-timeout-ms".into(),
        timeout.as_millis().to_string().into(),
      ]);
    }
    args
  }

  /// Parses what [`AppBake::to_args`] wrote; returns the bake and `out`.
  fn from_args(args: &[std::ffi::OsString]) -> Result<(AppBake, PathBuf), String> {
    let mut bake = AppBake {
      entries: Vec::new(),
      unbaked: Vec::new(),
      root: None,
      mode: EntryMode::Program,
      access: ModuleAccess::default(),
      compression_level: kiln_pipeline::bake::DEFAULT_COMPRESSION_LEVEL,
      entry_timeout: None,
      max_heap_bytes: None,
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
      let value = it
        .next()
        .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
      let text = || value.to_string_lossy().into_owned();
      match flag.to_str() {
        Some("--entry") => bake.entries.push(value.into()),
        Some("--unbaked") => bake.unbaked.push((value.into(), String::new())),
        Some("--reason") => match bake.unbaked.last_mut() {
          Some((_, reason)) => *reason = text(),
          None => return Err("--reason without --unbaked".into()),
        },
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
        Some("--max-heap-bytes") => {
          bake.max_heap_bytes = Some(text().parse().map_err(|_| "bad --max-heap-bytes")?)
        }
        Some("--entry-timeout-ms") => {
          let ms = text().parse().map_err(|_| "bad --entry-timeout-ms")?;
          bake.entry_timeout = Some(std::time::Duration::from_millis(ms));
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
  let result = bake(&bake_request).and_then(|container| {
    std::fs::write(&out, container)
      .map_err(|e| AppError::Load(format!("cannot write {}: {e}", out.display())))
  });
  match result {
    Ok(()) => 0,
    // One line each: the parent reports the last one as the cause.
    Err(AppError::Entry { index, message }) => {
      eprintln!("{ENTRY_FAILED} {index} {}", message.replace('\n', " | "));
      1
    }
    Err(e) => {
      eprintln!("{}", e.to_string().replace('\n', " | "));
      1
    }
  }
}

/// How a bake child reports that one entry failed: `<this> <index>
/// <message>` on its last line of stderr.
const ENTRY_FAILED: &str = "kiln-bake-entry-failed";
/// How a bake child reports that it starts evaluating an entry: `<this>
/// <index>` on a line of stderr (so an abort can be blamed on it).
const ENTRY_STARTED: &str = "kiln-bake-entry-started";

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
  /// Entry `index` of the request failed (the others may bake without it).
  #[error("{message}")]
  Entry { index: usize, message: String },
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
/// returns the container and what the code printed while it was baked (one
/// string per line): a heap V8 cannot serialize aborts the child, not the
/// caller. The child is killed after `timeout`.
pub fn bake_in_child(
  program: &Path,
  request: &AppBake,
  timeout: std::time::Duration,
) -> Result<(Vec<u8>, Vec<String>), ChildBakeError> {
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
    Ok(status) if status.success() => std::fs::read(&out)
      .map(|container| {
        // What the code printed while it was baked.
        let output = stderr
          .lines()
          .filter(|l| !l.starts_with(ENTRY_STARTED))
          .map(str::to_string)
          .collect();
        (container, output)
      })
      .map_err(ChildBakeError::Read),
    Ok(status) if status.signal().is_some() => {
      let what = abort_cause(&stderr);
      let detail = format!("signal {}: {what}", status.signal().unwrap_or(0));
      // Blame the entry being evaluated, if any: the others may bake.
      match stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(ENTRY_STARTED))
      {
        Some(index) => match index.trim().parse() {
          Ok(index) => Err(ChildBakeError::Entry {
            index,
            message: format!(
              "cannot bake: V8 aborted while its top level was evaluated ({detail})"
            ),
          }),
          Err(_) => Err(ChildBakeError::Aborted(detail)),
        },
        None => Err(ChildBakeError::Aborted(detail)),
      }
    }
    Ok(_) => Err(entry_failure(&last_line).unwrap_or(ChildBakeError::Failed(last_line))),
  };
  let _ = std::fs::remove_file(&out);
  result
}

/// Why a bake process aborted, from its stderr, in a few words.
fn abort_cause(stderr: &str) -> String {
  // deno_core has no cppgc heap while snapshotting: creating a
  // cppgc-backed Web API object then panics across the V8 boundary.
  if stderr.contains("out of memory") || stderr.contains("heap limit") {
    return "it ran out of memory (the bake's heap is capped like an instance's)".into();
  }
  if stderr.contains("cppgc.rs") {
    return "it created a Web API object a snapshot cannot hold (a text decoder, a compression stream, a Web Crypto key...): create it at launch, in main() or a handler".into();
  }
  stderr
    .lines()
    .filter(|l| !l.starts_with(ENTRY_STARTED) && !l.trim().is_empty())
    .find(|l| l.contains("panicked") || l.contains("Fatal") || l.contains("Check failed"))
    .unwrap_or("no message")
    .trim()
    .to_string()
}

/// An [`ENTRY_FAILED`] line as its error.
fn entry_failure(line: &str) -> Option<ChildBakeError> {
  let rest = line.strip_prefix(ENTRY_FAILED)?.strip_prefix(' ')?;
  let (index, message) = rest.split_once(' ')?;
  Some(ChildBakeError::Entry {
    index: index.parse().ok()?,
    message: message.to_string(),
  })
}

/// A fresh path in the temporary directory for a child's output.
fn tempfile_path() -> PathBuf {
  static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
  let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
  std::env::temp_dir().join(format!("kiln-bake-{}-{n}.app", std::process::id()))
}
