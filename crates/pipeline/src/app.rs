//! The app payload: what a snapshot that holds user code carries next to
//! deno_core's snapshot bytes (`kiln compile` executables, served functions
//! started from their own snapshots).
//!
//! It travels as the raw bytes of a [`SnapshotContainer`] whose manifest has
//! an `app` line (the hash of the user code), so the header's fingerprint
//! covers kiln's manifest and the app, and the one zstd frame covers both.
//! Decoding never panics: bytes from a file are checked field by field.
//!
//! Layout (integers little-endian, every string and blob length-prefixed
//! with a u64):
//!
//! ```text
//! magic       8 bytes  b"KILNAPP1"
//! snapshot    blob     deno_core's snapshot
//! entries     u64 n, then n × specifier string: the baked entry modules
//! flags       u8       bit 0: the (one) entry exports `main` and is baked
//! entry code  string   the entry's JavaScript when it runs at launch (else empty)
//! modules     u64 n, then n × (specifier string, source SHA-256 32 bytes)
//! maps        u64 n, then n × (specifier string, source map blob)
//! unbaked     u64 n, then n × (specifier string, reason string)
//! ```
//!
//! [`SnapshotContainer`]: crate::container::SnapshotContainer

use sha2::Digest;
use sha2::Sha256;

const APP_MAGIC: &[u8; 8] = b"KILNAPP1";

/// Why an app payload could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("app payload corrupt: {0}")]
pub struct AppPayloadError(&'static str);

/// A module baked into an app snapshot and the hash of its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedModule {
  pub specifier: String,
  pub source_sha256: [u8; 32],
}

/// What an app snapshot holds besides the V8 heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPayload<'a> {
  /// deno_core's snapshot bytes.
  pub snapshot: &'a [u8],
  /// The entry modules' specifiers: one program (`kiln compile`), or every
  /// served function that could be baked.
  pub entries: Vec<&'a str>,
  /// The (one) entry exports `main`: it was evaluated at bake, `main()`
  /// runs at launch.
  pub main: bool,
  /// The (one) entry's JavaScript, when its body runs at launch.
  pub entry_code: Option<&'a str>,
  /// Every module whose source went into the snapshot (the entry included).
  pub modules: Vec<BakedModule>,
  /// Source maps of transpiled modules, by specifier.
  pub source_maps: Vec<(&'a str, &'a [u8])>,
  /// Entries left out of the snapshot, with why (they load from their
  /// modules at run time); their sources count in `modules` too.
  pub unbaked: Vec<(&'a str, &'a str)>,
}

impl<'a> AppPayload<'a> {
  /// The hash the manifest's `app` line carries: every baked module's
  /// specifier and source hash, in order, and the entry's code.
  pub fn app_hash(&self) -> [u8; 32] {
    let mut hash = Sha256::new();
    for entry in &self.entries {
      hash.update(entry.as_bytes());
      hash.update([0]);
    }
    hash.update([u8::from(self.main)]);
    hash.update(self.entry_code.unwrap_or("").as_bytes());
    for module in &self.modules {
      hash.update(module.specifier.as_bytes());
      hash.update(module.source_sha256);
    }
    hash.finalize().into()
  }

  pub fn encode(&self) -> Vec<u8> {
    let mut out = Vec::with_capacity(self.snapshot.len() + 4096);
    out.extend_from_slice(APP_MAGIC);
    blob(&mut out, self.snapshot);
    out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
    for entry in &self.entries {
      blob(&mut out, entry.as_bytes());
    }
    out.push(u8::from(self.main));
    blob(&mut out, self.entry_code.unwrap_or("").as_bytes());
    out.extend_from_slice(&(self.modules.len() as u64).to_le_bytes());
    for module in &self.modules {
      blob(&mut out, module.specifier.as_bytes());
      out.extend_from_slice(&module.source_sha256);
    }
    out.extend_from_slice(&(self.source_maps.len() as u64).to_le_bytes());
    for (specifier, map) in &self.source_maps {
      blob(&mut out, specifier.as_bytes());
      blob(&mut out, map);
    }
    out.extend_from_slice(&(self.unbaked.len() as u64).to_le_bytes());
    for (specifier, reason) in &self.unbaked {
      blob(&mut out, specifier.as_bytes());
      blob(&mut out, reason.as_bytes());
    }
    out
  }

  pub fn decode(bytes: &'a [u8]) -> Result<Self, AppPayloadError> {
    let mut r = Reader(bytes);
    if r.take(8)? != APP_MAGIC {
      return Err(AppPayloadError("bad magic bytes"));
    }
    let snapshot = r.blob()?;
    let count = r.count()?;
    let mut entries = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
      entries.push(r.str()?);
    }
    let main = r.take(1)?[0] & 1 == 1;
    let entry_code = Some(r.str()?).filter(|_| !main);
    let count = r.count()?;
    let mut modules = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
      let specifier = r.str()?.to_string();
      let mut source_sha256 = [0; 32];
      source_sha256.copy_from_slice(r.take(32)?);
      modules.push(BakedModule {
        specifier,
        source_sha256,
      });
    }
    let count = r.count()?;
    let mut source_maps = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
      source_maps.push((r.str()?, r.blob()?));
    }
    let count = r.count()?;
    let mut unbaked = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
      unbaked.push((r.str()?, r.str()?));
    }
    if !r.0.is_empty() {
      return Err(AppPayloadError("trailing bytes"));
    }
    Ok(AppPayload {
      snapshot,
      entries,
      main,
      entry_code,
      modules,
      source_maps,
      unbaked,
    })
  }
}

fn blob(out: &mut Vec<u8>, bytes: &[u8]) {
  out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
  out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
  fn take(&mut self, n: usize) -> Result<&'a [u8], AppPayloadError> {
    if n > self.0.len() {
      return Err(AppPayloadError("truncated"));
    }
    let (head, rest) = self.0.split_at(n);
    self.0 = rest;
    Ok(head)
  }

  fn count(&mut self) -> Result<usize, AppPayloadError> {
    let mut len = [0; 8];
    len.copy_from_slice(self.take(8)?);
    usize::try_from(u64::from_le_bytes(len)).map_err(|_| AppPayloadError("implausible length"))
  }

  fn blob(&mut self) -> Result<&'a [u8], AppPayloadError> {
    let len = self.count()?;
    self.take(len)
  }

  fn str(&mut self) -> Result<&'a str, AppPayloadError> {
    std::str::from_utf8(self.blob()?).map_err(|_| AppPayloadError("a string is not UTF-8"))
  }
}

/// SHA-256 of a module's source text.
pub fn source_hash(source: &str) -> [u8; 32] {
  Sha256::digest(source.as_bytes()).into()
}

#[cfg(test)]
mod tests {
  use super::*;

  fn sample() -> Vec<u8> {
    AppPayload {
      snapshot: b"heap bytes",
      entries: vec!["file:///app/main.ts"],
      main: false,
      entry_code: Some("import './lib.ts';"),
      modules: vec![BakedModule {
        specifier: "file:///app/lib.ts".into(),
        source_sha256: source_hash("export const x = 1;"),
      }],
      source_maps: vec![("file:///app/lib.ts", b"{}")],
      unbaked: vec![("file:///srv/envy.ts", "it read Deno.env")],
    }
    .encode()
  }

  #[test]
  fn round_trips() {
    let bytes = sample();
    let payload = AppPayload::decode(&bytes).unwrap();
    assert_eq!(payload.snapshot, b"heap bytes");
    assert_eq!(payload.entry_code, Some("import './lib.ts';"));
    assert_eq!(payload.modules.len(), 1);
    assert_eq!(payload.encode(), bytes);
  }

  #[test]
  fn every_truncation_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() {
      assert!(AppPayload::decode(&bytes[..len]).is_err(), "length {len}");
    }
  }

  proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
      let mut with_magic = APP_MAGIC.to_vec();
      with_magic.extend_from_slice(&bytes);
      let _ = AppPayload::decode(&bytes);
      let _ = AppPayload::decode(&with_magic);
    }
  }
}
