//! What a snapshot container was baked for, as the `kiln snapshot info`
//! report.

use crate::container::ContainerError;
use crate::container::SnapshotContainer;
use crate::container::hex;

/// Renders the header of a container as the `snapshot info` report.
pub fn describe(bytes: &[u8]) -> Result<String, ContainerError> {
  let c = SnapshotContainer::parse(bytes)?;
  let mut out = format!(
    "format version: {}\nfingerprint:    {}\ndeno_core:      {}\nv8:             {}\ntarget:         {}\n",
    c.version,
    hex(&c.fingerprint),
    c.manifest.deno_core,
    c.manifest.v8,
    c.manifest.target,
  );
  let compressed = bytes.len();
  out.push_str(&format!(
    "raw size:       {} bytes\ncompressed:     {} bytes ({:.1}% of raw)\n",
    c.raw_len,
    compressed,
    100.0 * compressed as f64 / c.raw_len as f64
  ));
  out.push_str(&format!(
    "extensions:     {} ({} ops)\n",
    c.manifest.extensions.len(),
    c.manifest.op_count()
  ));
  for (name, ops) in &c.manifest.extensions {
    out.push_str(&format!("  {name:<20} {:>4} ops\n", ops.len()));
  }
  let raw = c.decompress()?;
  match V8Sections::of_snapshot(&raw) {
    Some(v8) => {
      out.push_str(&format!(
        "v8 blob:        {}, {} contexts, read-only heap {:08x}\n",
        v8.version,
        v8.contexts.len(),
        v8.read_only_checksum
      ));
      let mut row = |name: &str, len: usize| {
        out.push_str(&format!("  {name:<20} {len:>8} bytes\n"));
      };
      row("isolate", v8.isolate);
      row("read-only", v8.read_only);
      row("shared space", v8.shared);
      for (i, len) in v8.contexts.iter().enumerate() {
        row(&format!("context {i}"), *len);
      }
      // deno_core's part: the sources of the baked scripts (V8 holds them
      // as external strings pointing here, not in its heap), the module
      // map and the op table.
      row("deno_core sidecar", v8.sidecar);
    }
    None => out.push_str("v8 blob:        layout not recognised\n"),
  }
  Ok(out)
}

/// The checksum of the read-only heap a V8 blob (or a deno_core snapshot,
/// which starts with one) was made with: bytes 12..16 of V8's header. Cheap
/// enough for every runtime start, unlike [`V8Sections::parse`].
pub fn read_only_checksum(blob: &[u8]) -> Option<u32> {
  Some(u32::from_le_bytes(blob.get(12..16)?.try_into().ok()?))
}

/// The parts of a V8 startup snapshot blob, in bytes: what deserialising an
/// isolate (isolate, read-only, shared space) and a context costs is
/// roughly proportional to these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V8Sections {
  pub version: String,
  /// The checksum of the read-only heap the snapshot was made with: V8
  /// shares one read-only heap per process, so only snapshots with the same
  /// checksum can be thawed side by side.
  pub read_only_checksum: u32,
  pub isolate: usize,
  pub read_only: usize,
  pub shared: usize,
  pub contexts: Vec<usize>,
  /// Bytes after V8's blob (deno_core's sidecar), 0 for a bare blob.
  pub sidecar: usize,
}

impl V8Sections {
  /// Splits a deno_core snapshot (V8's blob, deno_core's sidecar, then the
  /// blob's length as a little-endian u64) and reads the blob's header.
  pub fn of_snapshot(snapshot: &[u8]) -> Option<V8Sections> {
    let len_at = snapshot.len().checked_sub(8)?;
    let v8_len = u64::from_le_bytes(snapshot.get(len_at..)?.try_into().ok()?);
    let v8_len = usize::try_from(v8_len).ok().filter(|&l| l <= len_at)?;
    let mut sections = V8Sections::parse(&snapshot[..v8_len])?;
    sections.sidecar = len_at - v8_len;
    Some(sections)
  }

  /// Reads V8's blob header (`src/snapshot/snapshot.cc`: context count,
  /// rehashability, two checksums, a 64-byte version string, then the
  /// offsets of the read-only, shared-space and context data; the isolate's
  /// data follows the offsets). `None` if it does not hold together.
  pub fn parse(blob: &[u8]) -> Option<V8Sections> {
    let u32_at = |at: usize| -> Option<usize> {
      let bytes: [u8; 4] = blob.get(at..at + 4)?.try_into().ok()?;
      usize::try_from(u32::from_le_bytes(bytes)).ok()
    };
    let count = u32_at(0)?;
    if count > 64 {
      return None;
    }
    let read_only_checksum = read_only_checksum(blob)?;
    let version = blob.get(16..80)?;
    let version = String::from_utf8_lossy(version.split(|&b| b == 0).next()?).into_owned();
    let read_only = u32_at(80)?;
    let shared = u32_at(84)?;
    let contexts = (0..count)
      .map(|i| u32_at(88 + 4 * i))
      .collect::<Option<Vec<_>>>()?;
    let isolate_start = 88 + 4 * count;
    // Every section starts after the one before it and inside the blob.
    let mut bounds = vec![isolate_start, read_only, shared];
    bounds.extend(&contexts);
    bounds.push(blob.len());
    if bounds.windows(2).any(|w| w[0] > w[1]) {
      return None;
    }
    let len = |i: usize| bounds[i + 1] - bounds[i];
    Some(V8Sections {
      version,
      read_only_checksum,
      isolate: len(0),
      read_only: len(1),
      shared: len(2),
      contexts: (0..count).map(|i| len(3 + i)).collect(),
      sidecar: 0,
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn blob(contexts: &[u32], sections: &[usize]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((contexts.len() as u32).to_le_bytes());
    b.extend([0u8; 8]);
    b.extend(0x9ad1_4d89u32.to_le_bytes());
    let mut version = b"15.0.245.2-rusty".to_vec();
    version.resize(64, 0);
    b.extend(version);
    let offsets_end = 88 + 4 * contexts.len();
    let mut at = offsets_end + sections[0];
    let mut offsets = Vec::new();
    for len in &sections[1..] {
      offsets.push(at as u32);
      at += len;
    }
    for o in &offsets {
      b.extend(o.to_le_bytes());
    }
    b.resize(at, 7);
    b
  }

  #[test]
  fn sections_of_a_blob() {
    let v8 = V8Sections::parse(&blob(&[0, 0], &[100, 200, 30, 40, 500])).unwrap();
    assert_eq!(
      v8,
      V8Sections {
        version: "15.0.245.2-rusty".into(),
        read_only_checksum: 0x9ad1_4d89,
        isolate: 100,
        read_only: 200,
        shared: 30,
        contexts: vec![40, 500],
        sidecar: 0,
      }
    );
  }

  #[test]
  fn sections_of_a_deno_core_snapshot() {
    let mut snapshot = blob(&[0], &[100, 200, 30, 40]);
    let v8_len = snapshot.len() as u64;
    snapshot.extend([1u8; 77]);
    snapshot.extend(v8_len.to_le_bytes());
    let v8 = V8Sections::of_snapshot(&snapshot).unwrap();
    assert_eq!((v8.contexts.clone(), v8.sidecar), (vec![40], 77));
    // A length past the end is not a snapshot.
    let at = snapshot.len() - 8;
    snapshot[at..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(V8Sections::of_snapshot(&snapshot), None);
  }

  #[test]
  fn nonsense_is_not_a_layout() {
    assert_eq!(V8Sections::parse(b"short"), None);
    let mut b = blob(&[0], &[10, 20, 30, 40]);
    // The read-only section claims to start past the end.
    b[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(V8Sections::parse(&b), None);
  }
}
