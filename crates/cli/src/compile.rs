//! `kiln compile`: a standalone executable made of this binary with an app
//! container appended, and the launch of such an executable.
//!
//! Layout of a compiled executable: the kiln binary, the app container
//! (`kiln::app`), then a trailer of the container's length (u64,
//! little-endian) and [`TRAILER_MAGIC`]. `main` looks for the trailer in its
//! own executable before parsing any arguments.

use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// Marks the end of a compiled executable.
const TRAILER_MAGIC: &[u8; 8] = b"KILNEXE1";
const TRAILER_LEN: u64 = 16;

/// How long a compile-time bake may run.
const BAKE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why `kiln compile` failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
  #[error("module not found: {}", .0.display())]
  EntryNotFound(PathBuf),
  #[error("cannot compile {}: {source}", .entry.display())]
  Bake {
    entry: PathBuf,
    source: kiln::app::ChildBakeError,
  },
  #[error("cannot read this kiln binary ({}): {source}", .path.display())]
  ReadSelf {
    path: PathBuf,
    source: std::io::Error,
  },
  #[error("cannot write {}: {source}", .path.display())]
  Write {
    path: PathBuf,
    source: std::io::Error,
  },
}

/// Bakes `entry` and writes the executable to `out`; returns what was
/// written, for the summary line.
pub fn compile(
  entry: &Path,
  out: Option<PathBuf>,
  root: Option<PathBuf>,
) -> Result<i32, CompileError> {
  if !entry.is_file() {
    return Err(CompileError::EntryNotFound(entry.to_path_buf()));
  }
  let entry = std::path::absolute(entry).map_err(|_| CompileError::EntryNotFound(entry.into()))?;
  let root = match root {
    Some(root) => root,
    None => entry.parent().map(Path::to_path_buf).unwrap_or_default(),
  };
  let out = out.unwrap_or_else(|| {
    PathBuf::from(
      entry
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "app".into()),
    )
  });
  let self_path = std::env::current_exe().map_err(|source| CompileError::ReadSelf {
    path: PathBuf::from("/proc/self/exe"),
    source,
  })?;
  let read_self = |source| CompileError::ReadSelf {
    path: self_path.clone(),
    source,
  };
  let request = kiln::app::AppBake {
    entry: entry.clone(),
    root: Some(root),
    mode: kiln::app::EntryMode::Program,
    access: kiln::runtime::ModuleAccess::default(),
    compression_level: kiln::snapshot::bake::DEFAULT_COMPRESSION_LEVEL,
  };
  let container =
    kiln::app::bake_in_child(&self_path, &request, BAKE_TIMEOUT).map_err(|source| {
      CompileError::Bake {
        entry: entry.clone(),
        source,
      }
    })?;
  let mut binary = std::fs::read(&self_path).map_err(read_self)?;
  // A compiled executable compiling again: keep only the kiln part.
  if let Some(len) = trailer(&binary) {
    binary.truncate(binary.len() - len as usize - TRAILER_LEN as usize);
  }
  let kiln_len = binary.len();
  binary.extend_from_slice(&container);
  binary.extend_from_slice(&(container.len() as u64).to_le_bytes());
  binary.extend_from_slice(TRAILER_MAGIC);
  write_executable(&out, &binary)?;
  eprintln!(
    "compiled {} -> {} ({} KiB of app on a {} KiB kiln)",
    entry.display(),
    out.display(),
    container.len() / 1024,
    kiln_len / 1024
  );
  Ok(0)
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), CompileError> {
  use std::os::unix::fs::OpenOptionsExt;
  let write_error = |source| CompileError::Write {
    path: path.to_path_buf(),
    source,
  };
  // A new file: replacing a running executable in place would crash it.
  let tmp = path.with_extension("kiln-tmp");
  let mut file = std::fs::OpenOptions::new()
    .write(true)
    .create(true)
    .truncate(true)
    .mode(0o755)
    .open(&tmp)
    .map_err(write_error)?;
  std::io::Write::write_all(&mut file, bytes).map_err(write_error)?;
  drop(file);
  std::fs::rename(&tmp, path).map_err(write_error)
}

/// The container length a trailer at the end of `bytes` announces.
fn trailer(bytes: &[u8]) -> Option<u64> {
  let start = bytes.len().checked_sub(TRAILER_LEN as usize)?;
  let (len, magic) = bytes[start..].split_at(8);
  if magic != TRAILER_MAGIC {
    return None;
  }
  let len = u64::from_le_bytes(len.try_into().ok()?);
  (len <= start as u64).then_some(len)
}

/// The app container appended to this executable, if it is a compiled one.
pub fn embedded_app() -> Option<std::io::Result<Vec<u8>>> {
  let path = std::env::current_exe().ok()?;
  let mut file = std::fs::File::open(path).ok()?;
  let size = file.metadata().ok()?.len();
  if size < TRAILER_LEN {
    return None;
  }
  let mut tail = [0u8; TRAILER_LEN as usize];
  file.seek(SeekFrom::Start(size - TRAILER_LEN)).ok()?;
  file.read_exact(&mut tail).ok()?;
  if &tail[8..] != TRAILER_MAGIC {
    return None;
  }
  let len = u64::from_le_bytes(tail[..8].try_into().ok()?);
  let mut read = || -> std::io::Result<Vec<u8>> {
    let start = (size - TRAILER_LEN).checked_sub(len).ok_or_else(|| {
      std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "trailer names more bytes than the file has",
      )
    })?;
    let mut container = vec![0; len as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut container)?;
    Ok(container)
  };
  Some(read())
}

/// Runs the app of a compiled executable with `args` as `Deno.args`.
pub fn run_compiled(
  container: &[u8],
  args: Vec<String>,
) -> Result<i32, Box<dyn std::error::Error>> {
  let image = kiln::app::AppImage::open(container)
    .map_err(|e| format!("this executable's app cannot run: {e}"))?;
  let tokio = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .map_err(|e| kiln::Error::Init(format!("cannot start tokio: {e}")))?;
  let (runtime, result) = tokio.block_on(async move {
    let options = kiln::RuntimeOptions {
      args,
      stop_on_closed_stdout: true,
      env: kiln::runtime::Env::Process,
    };
    let mut runtime = kiln::Runtime::builder()
      .app(image)
      .options(options)
      .build()?;
    let result = runtime.run_app().await;
    Ok::<_, kiln::Error>((runtime, result))
  })?;
  // About to exit: no teardown (see `run`).
  std::mem::forget(runtime);
  std::mem::forget(tokio);
  Ok(result?)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn trailer_is_found_only_when_whole() {
    let mut bytes = b"kiln binary".to_vec();
    assert_eq!(trailer(&bytes), None);
    bytes.extend_from_slice(b"APP");
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(TRAILER_MAGIC);
    assert_eq!(trailer(&bytes), Some(3));
    let mut lying = b"x".to_vec();
    lying.extend_from_slice(&99u64.to_le_bytes());
    lying.extend_from_slice(TRAILER_MAGIC);
    assert_eq!(trailer(&lying), None);
  }
}
