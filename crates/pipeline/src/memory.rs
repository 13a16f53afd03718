//! Memory for decompressed snapshots. A thawed snapshot is written once,
//! read by V8's deserializer, and then kept for the process (V8 holds the
//! baked scripts' sources as external strings pointing into it). Taken
//! from the allocator, its pages fault in one by one while zstd writes
//! them (about 2 000 faults for an 8 MB app snapshot); here it is an
//! anonymous mapping asking for transparent huge pages and populated in
//! one call, so the kernel maps it in a handful of steps.

/// A zeroed buffer of `len` bytes for a snapshot.
pub enum SnapshotBuffer {
  #[cfg(target_os = "linux")]
  Mapped {
    ptr: *mut u8,
    len: usize,
  },
  Heap(Vec<u8>),
}

impl SnapshotBuffer {
  pub fn new(len: usize) -> SnapshotBuffer {
    #[cfg(target_os = "linux")]
    if len > 0 {
      // SAFETY: a fresh private anonymous mapping, owned by the result.
      unsafe {
        let ptr = libc::mmap(
          std::ptr::null_mut(),
          len,
          libc::PROT_READ | libc::PROT_WRITE,
          libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
          -1,
          0,
        );
        if ptr != libc::MAP_FAILED {
          // Both are hints: without huge pages or MADV_POPULATE_WRITE
          // (Linux < 5.14) the pages fault in as they are written.
          libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
          libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE);
          return SnapshotBuffer::Mapped {
            ptr: ptr.cast(),
            len,
          };
        }
      }
    }
    SnapshotBuffer::Heap(vec![0; len])
  }

  pub fn as_slice(&self) -> &[u8] {
    match self {
      #[cfg(target_os = "linux")]
      // SAFETY: `len` bytes mapped readable, owned by self.
      SnapshotBuffer::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
      SnapshotBuffer::Heap(v) => v,
    }
  }

  pub fn as_mut_slice(&mut self) -> &mut [u8] {
    match self {
      #[cfg(target_os = "linux")]
      // SAFETY: `len` bytes mapped readable and writable, owned by self.
      SnapshotBuffer::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts_mut(*ptr, *len) },
      SnapshotBuffer::Heap(v) => v,
    }
  }

  /// Keeps the buffer for the rest of the process.
  pub fn leak(self) -> &'static [u8] {
    let this = std::mem::ManuallyDrop::new(self);
    let bytes = this.as_slice();
    // SAFETY: neither the mapping nor the Vec's buffer is ever released:
    // `this` is never dropped.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) }
  }
}

impl Drop for SnapshotBuffer {
  fn drop(&mut self) {
    #[cfg(target_os = "linux")]
    if let SnapshotBuffer::Mapped { ptr, len } = *self {
      // SAFETY: mapped in `new`, not leaked (leak skips Drop).
      unsafe {
        libc::munmap(ptr.cast(), len);
      }
    }
  }
}

/// Decompresses `container`'s payload into a [`SnapshotBuffer`].
pub fn decompress(
  container: &crate::container::SnapshotContainer<'_>,
) -> Result<SnapshotBuffer, crate::container::ContainerError> {
  let mut buffer = SnapshotBuffer::new(container.raw_size()?);
  container.decompress_into(buffer.as_mut_slice())?;
  Ok(buffer)
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::container::Manifest;
  use crate::container::SnapshotContainer;

  fn container(raw: &[u8]) -> Vec<u8> {
    let manifest = Manifest {
      deno_core: "0.413.0".into(),
      v8: "15".into(),
      target: "test".into(),
      extensions: Vec::new(),
      app: None,
    };
    SnapshotContainer::encode(&manifest, raw, 3).unwrap()
  }

  #[test]
  fn a_snapshot_buffer_holds_the_decompressed_bytes() {
    // Larger than a huge page, so the mapping path is the one taken.
    let raw: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let bytes = container(&raw);
    let parsed = SnapshotContainer::parse(&bytes).unwrap();
    let buffer = decompress(&parsed).unwrap();
    #[cfg(target_os = "linux")]
    assert!(matches!(buffer, SnapshotBuffer::Mapped { .. }));
    assert_eq!(buffer.as_slice(), &raw[..]);
    // A refused buffer is unmapped; a kept one stays readable.
    drop(decompress(&parsed).unwrap());
    let kept = buffer.leak();
    assert_eq!(kept.len(), raw.len());
    assert_eq!(kept[2_999_999], raw[2_999_999]);
  }

  #[test]
  fn an_empty_buffer_is_not_mapped() {
    let mut buffer = SnapshotBuffer::new(0);
    assert!(buffer.as_mut_slice().is_empty());
    assert!(matches!(buffer, SnapshotBuffer::Heap(_)));
  }
}
