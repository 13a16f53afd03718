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

/// zstd level of an executable's app: a fast level, because the app is
/// decompressed at every launch and a baked app heap runs to megabytes
/// (benches/RESULTS.md section 9: level 19 costs ~7 ms per launch on an
/// 8 MB heap).
const APP_COMPRESSION_LEVEL: i32 = -5;

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
  let request = kiln::app::AppBake {
    entries: vec![entry.clone()],
    unbaked: Vec::new(),
    root: Some(root),
    mode: kiln::app::EntryMode::Program,
    access: kiln::runtime::ModuleAccess::default(),
    compression_level: APP_COMPRESSION_LEVEL,
    entry_timeout: None,
    max_heap_bytes: None,
  };
  let (container, output) =
    kiln::app::bake_in_child(&self_path, &request, BAKE_TIMEOUT).map_err(|source| {
      CompileError::Bake {
        entry: entry.clone(),
        source,
      }
    })?;
  // What the program's modules printed while they were evaluated.
  for line in output {
    eprintln!("{line}");
  }
  let kiln_len = write_executable(&self_path, &out, &container)?;
  eprintln!(
    "compiled {} -> {} ({} KiB of app on a {} KiB kiln)",
    entry.display(),
    out.display(),
    container.len() / 1024,
    kiln_len / 1024
  );
  Ok(0)
}

/// Writes this binary (without an app it may carry) plus `container` and
/// the trailer to `path`; returns the length of the kiln part.
fn write_executable(self_path: &Path, path: &Path, container: &[u8]) -> Result<u64, CompileError> {
  use std::io::Write;
  use std::os::unix::fs::PermissionsExt;
  let write_error = |source| CompileError::Write {
    path: path.to_path_buf(),
    source,
  };
  // A new file renamed into place: rewriting a running executable in place
  // would crash it. The copy stays in the kernel (copy_file_range).
  let tmp = path.with_extension("kiln-tmp");
  std::fs::copy(self_path, &tmp).map_err(|source| CompileError::ReadSelf {
    path: self_path.to_path_buf(),
    source,
  })?;
  let mut file = std::fs::OpenOptions::new()
    .read(true)
    .write(true)
    .open(&tmp)
    .map_err(write_error)?;
  // A compiled executable compiling again: keep only the kiln part.
  let mut kiln_len = file.metadata().map_err(write_error)?.len();
  if let Some(Ok(app_len)) = read_trailer(&mut file) {
    kiln_len -= app_len + TRAILER_LEN;
    file.set_len(kiln_len).map_err(write_error)?;
  }
  file.seek(SeekFrom::End(0)).map_err(write_error)?;
  file.write_all(container).map_err(write_error)?;
  file
    .write_all(&(container.len() as u64).to_le_bytes())
    .map_err(write_error)?;
  file.write_all(TRAILER_MAGIC).map_err(write_error)?;
  file
    .set_permissions(std::fs::Permissions::from_mode(0o755))
    .map_err(write_error)?;
  drop(file);
  std::fs::rename(&tmp, path).map_err(write_error)?;
  Ok(kiln_len)
}

/// The length of the app a trailer at the end of `file` announces: `None`
/// without a trailer, an error if the trailer lies.
fn read_trailer(file: &mut std::fs::File) -> Option<std::io::Result<u64>> {
  let size = file.metadata().ok()?.len();
  if size < TRAILER_LEN {
    return None;
  }
  let mut tail = [0u8; TRAILER_LEN as usize];
  file.seek(SeekFrom::Start(size - TRAILER_LEN)).ok()?;
  file.read_exact(&mut tail).ok()?;
  let (len, magic) = tail.split_at(8);
  if magic != TRAILER_MAGIC {
    return None;
  }
  let len = u64::from_le_bytes(len.try_into().ok()?);
  Some(if len <= size - TRAILER_LEN {
    Ok(len)
  } else {
    Err(std::io::Error::new(
      std::io::ErrorKind::InvalidData,
      "its trailer names more bytes than the file has",
    ))
  })
}

/// The app container appended to this executable, if it is a compiled one.
/// It is read once, at launch, and the bytes are kept for the process.
pub fn embedded_app() -> Option<std::io::Result<&'static [u8]>> {
  let path = std::env::current_exe().ok()?;
  let mut file = std::fs::File::open(path).ok()?;
  let len = match read_trailer(&mut file)? {
    Ok(len) => len,
    Err(e) => return Some(Err(e)),
  };
  let mut read = || -> std::io::Result<&'static [u8]> {
    let end = file.seek(SeekFrom::End(-(TRAILER_LEN as i64)))?;
    let start = end - len;
    let len = usize::try_from(len).map_err(|_| {
      std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the app does not fit in memory",
      )
    })?;
    if let Some(mapped) = map_file(&file, start, len) {
      return Ok(mapped);
    }
    let mut container = vec![0; len];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut container)?;
    Ok(Box::leak(container.into_boxed_slice()))
  };
  Some(read())
}

/// `len` bytes of `file` from `start`, mapped read-only and populated in
/// one call: no copy into a buffer and no page fault per page, as a read
/// into a fresh `Vec` had (about 1 000 faults for a 2 MB app). `None` where
/// mapping is not available; the caller reads instead. An executable cannot
/// be written while it runs (ETXTBSY), so the mapping stays valid.
#[cfg(target_os = "linux")]
fn map_file(file: &std::fs::File, start: u64, len: usize) -> Option<&'static [u8]> {
  use std::os::fd::AsRawFd;
  if len == 0 {
    return None;
  }
  // SAFETY: sysconf has no preconditions.
  let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
  let offset = start - start % page.max(1);
  let skip = usize::try_from(start - offset).ok()?;
  let map_len = skip.checked_add(len)?;
  // SAFETY: a private read-only mapping of an open file, never unmapped:
  // the slice lives for the process.
  unsafe {
    let ptr = libc::mmap(
      std::ptr::null_mut(),
      map_len,
      libc::PROT_READ,
      libc::MAP_PRIVATE | libc::MAP_POPULATE,
      file.as_raw_fd(),
      libc::off_t::try_from(offset).ok()?,
    );
    if ptr == libc::MAP_FAILED {
      return None;
    }
    Some(std::slice::from_raw_parts(ptr.cast::<u8>().add(skip), len))
  }
}

#[cfg(not(target_os = "linux"))]
fn map_file(_file: &std::fs::File, _start: u64, _len: usize) -> Option<&'static [u8]> {
  None
}
/// Runs the app of a compiled executable with `args` as `Deno.args`.
pub fn run_compiled(
  container: &[u8],
  args: Vec<String>,
) -> Result<i32, Box<dyn std::error::Error>> {
  let image = kiln::app::AppImage::open(container)
    .map_err(|e| format!("this executable's app cannot run: {e}"))?;
  Ok(crate::run_program(crate::Program::App(image), args, None)?)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn trailer_of(bytes: &[u8]) -> Option<std::io::Result<u64>> {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    read_trailer(&mut file)
  }

  #[test]
  fn trailer_is_found_only_when_whole() {
    let mut bytes = b"kiln binary".to_vec();
    assert!(trailer_of(&bytes).is_none());
    bytes.extend_from_slice(b"APP");
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(TRAILER_MAGIC);
    assert_eq!(trailer_of(&bytes).unwrap().unwrap(), 3);
    let mut lying = b"x".to_vec();
    lying.extend_from_slice(&99u64.to_le_bytes());
    lying.extend_from_slice(TRAILER_MAGIC);
    assert!(trailer_of(&lying).unwrap().is_err());
  }
}
