//! The snapshot container: a fixed header that identifies what a snapshot was
//! baked for, followed by one zstd frame holding deno_core's snapshot bytes.
//!
//! Shared by the bake (build side) and the thaw (run side).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic        8 bytes   b"KILNSNAP"
//! version      u32       FORMAT_VERSION
//! fingerprint  32 bytes  SHA-256 of the manifest
//! raw length   u64       length of the decompressed snapshot
//! manifest len u32       length of the manifest text that follows
//! manifest     UTF-8     what the snapshot was baked for (see `Manifest`)
//! payload      ...       one zstd frame (with content checksum)
//! ```

use sha2::Digest;
use sha2::Sha256;

/// Identifies a kiln snapshot container.
pub const MAGIC: &[u8; 8] = b"KILNSNAP";
/// Bumped whenever the container layout or the manifest text changes.
pub const FORMAT_VERSION: u32 = 1;
/// The deno_core version kiln pins (`deno_core = "=0.413.0"` in Cargo.toml; a
/// unit test keeps the two equal).
pub const DENO_CORE_VERSION: &str = "0.413.0";

/// Bytes before the manifest: magic, version, fingerprint, raw length,
/// manifest length.
const FIXED_HEADER_LEN: usize = 8 + 4 + 32 + 8 + 4;
/// A snapshot larger than this is not something we baked.
const MAX_RAW_LEN: u64 = 1 << 32;

/// Why a container could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
  #[error("snapshot header truncated: {len} bytes, a kiln snapshot header needs at least {needed}")]
  HeaderTruncated { len: usize, needed: usize },
  #[error("snapshot header corrupt: bad magic bytes (not a kiln snapshot)")]
  BadMagic,
  #[error(
    "snapshot format version {found} is not supported (this binary reads version {expected})"
  )]
  UnsupportedVersion { found: u32, expected: u32 },
  #[error("snapshot header corrupt: {0}")]
  CorruptHeader(&'static str),
  #[error("snapshot fingerprint mismatch: baked for {baked}, this binary expects {expected}")]
  FingerprintMismatch { baked: String, expected: String },
  #[error("snapshot payload corrupt: {0}")]
  CorruptPayload(String),
  #[error("snapshot payload truncated: decompressed {actual} bytes, header says {expected}")]
  PayloadTruncated { actual: u64, expected: u64 },
}

/// What a snapshot was baked for: versions, target and the exact extension and
/// op list. Its text form is hashed into the fingerprint and stored in the
/// header, so a mismatch can say what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
  pub deno_core: String,
  pub v8: String,
  pub target: String,
  /// Extension names with their op names, in registration order.
  pub extensions: Vec<(String, Vec<String>)>,
  /// For a snapshot that also holds user code (`kiln compile`, a served
  /// function): the hex SHA-256 of that code. `None` for extension bakes.
  pub app: Option<String>,
}

impl Manifest {
  /// Describes the given extensions for this build of deno_core and V8.
  pub fn new(target: &str, extensions: &[deno_core::Extension]) -> Self {
    Manifest {
      deno_core: DENO_CORE_VERSION.to_string(),
      v8: deno_core::v8::VERSION_STRING.to_string(),
      target: target.to_string(),
      extensions: extensions
        .iter()
        .map(|ext| {
          let ops = ext
            .ops
            .iter()
            .chain(ext.objects.iter().flat_map(|o| {
              o.methods
                .iter()
                .chain(o.static_methods.iter())
                .chain(o.constructor.iter())
            }))
            .map(|op| op.name.to_string())
            .collect();
          (ext.name.to_string(), ops)
        })
        .collect(),
      app: None,
    }
  }

  /// This manifest for a snapshot that also holds the user code whose hash
  /// is `app_hash`.
  pub fn with_app(mut self, app_hash: &[u8; 32]) -> Self {
    self.app = Some(hex(app_hash));
    self
  }

  /// The manifest without its app: what the extensions were baked for.
  pub fn without_app(&self) -> Self {
    Manifest {
      app: None,
      ..self.clone()
    }
  }

  /// The canonical text form: one line per fact, in order.
  pub fn to_text(&self) -> String {
    let mut text = format!(
      "kiln-snapshot {FORMAT_VERSION}\ndeno_core {}\nv8 {}\ntarget {}\n",
      self.deno_core, self.v8, self.target
    );
    if let Some(app) = &self.app {
      text.push_str("app ");
      text.push_str(app);
      text.push('\n');
    }
    for (name, ops) in &self.extensions {
      text.push_str("ext ");
      text.push_str(name);
      for op in ops {
        text.push(' ');
        text.push_str(op);
      }
      text.push('\n');
    }
    text
  }

  /// Parses the text form written by [`Manifest::to_text`].
  pub fn parse(text: &str) -> Option<Self> {
    let mut lines = text.lines();
    let _format = lines.next()?.strip_prefix("kiln-snapshot ")?;
    let deno_core = lines.next()?.strip_prefix("deno_core ")?.to_string();
    let v8 = lines.next()?.strip_prefix("v8 ")?.to_string();
    let target = lines.next()?.strip_prefix("target ")?.to_string();
    let mut extensions = Vec::new();
    let mut app = None;
    for line in lines {
      if extensions.is_empty()
        && app.is_none()
        && let Some(hash) = line.strip_prefix("app ")
      {
        app = Some(hash.to_string());
        continue;
      }
      let mut words = line.strip_prefix("ext ")?.split(' ');
      let name = words.next()?.to_string();
      extensions.push((name, words.map(str::to_string).collect()));
    }
    Some(Manifest {
      deno_core,
      v8,
      target,
      extensions,
      app,
    })
  }

  pub fn fingerprint(&self) -> [u8; 32] {
    Sha256::digest(self.to_text().as_bytes()).into()
  }

  pub fn op_count(&self) -> usize {
    self.extensions.iter().map(|(_, ops)| ops.len()).sum()
  }

  /// One line for error messages: versions, target, sizes, fingerprint.
  pub fn summary(&self) -> String {
    format!(
      "deno_core {}, V8 {}, {}, {} extensions with {} ops (fingerprint {})",
      self.deno_core,
      self.v8,
      self.target,
      self.extensions.len(),
      self.op_count(),
      &hex(&self.fingerprint())[..16]
    )
  }

  /// The first difference between two manifests, for error messages.
  pub fn first_difference(&self, other: &Manifest) -> Option<String> {
    if self.deno_core != other.deno_core {
      return Some(format!(
        "deno_core {} vs {}",
        self.deno_core, other.deno_core
      ));
    }
    if self.v8 != other.v8 {
      return Some(format!("V8 {} vs {}", self.v8, other.v8));
    }
    if self.target != other.target {
      return Some(format!("target {} vs {}", self.target, other.target));
    }
    for (i, pair) in self
      .extensions
      .iter()
      .zip(other.extensions.iter())
      .enumerate()
    {
      let ((a_name, a_ops), (b_name, b_ops)) = pair;
      if a_name != b_name {
        return Some(format!("extension #{i} is '{a_name}' vs '{b_name}'"));
      }
      if a_ops != b_ops {
        return Some(format!(
          "extension '{a_name}' has {} ops vs {}",
          a_ops.len(),
          b_ops.len()
        ));
      }
    }
    if self.extensions.len() != other.extensions.len() {
      return Some(format!(
        "{} extensions vs {}",
        self.extensions.len(),
        other.extensions.len()
      ));
    }
    None
  }
}

/// A parsed container header plus its (still compressed) payload.
#[derive(Debug)]
pub struct SnapshotContainer<'a> {
  pub version: u32,
  pub fingerprint: [u8; 32],
  pub raw_len: u64,
  pub manifest: Manifest,
  pub payload: &'a [u8],
}

impl<'a> SnapshotContainer<'a> {
  /// Wraps raw snapshot bytes: header plus a zstd frame at `level`.
  pub fn encode(manifest: &Manifest, raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let manifest_text = manifest.to_text();
    let mut encoder = zstd::bulk::Compressor::new(level)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    let payload = encoder.compress(raw)?;
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + manifest_text.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&manifest.fingerprint());
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&(manifest_text.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest_text.as_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
  }

  /// Reads and checks the header; the payload is not touched.
  pub fn parse(bytes: &'a [u8]) -> Result<Self, ContainerError> {
    if bytes.len() < FIXED_HEADER_LEN {
      return Err(ContainerError::HeaderTruncated {
        len: bytes.len(),
        needed: FIXED_HEADER_LEN,
      });
    }
    let (magic, rest) = bytes.split_at(8);
    if magic != MAGIC {
      return Err(ContainerError::BadMagic);
    }
    let (version, rest) = rest.split_at(4);
    let version = u32::from_le_bytes(le_array(version));
    if version != FORMAT_VERSION {
      return Err(ContainerError::UnsupportedVersion {
        found: version,
        expected: FORMAT_VERSION,
      });
    }
    let (fingerprint, rest) = rest.split_at(32);
    let fingerprint: [u8; 32] = le_array(fingerprint);
    let (raw_len, rest) = rest.split_at(8);
    let raw_len = u64::from_le_bytes(le_array(raw_len));
    if raw_len == 0 || raw_len > MAX_RAW_LEN {
      return Err(ContainerError::CorruptHeader("implausible raw length"));
    }
    let (manifest_len, rest) = rest.split_at(4);
    let manifest_len = u32::from_le_bytes(le_array(manifest_len)) as usize;
    if manifest_len > rest.len() {
      return Err(ContainerError::HeaderTruncated {
        len: bytes.len(),
        needed: FIXED_HEADER_LEN + manifest_len,
      });
    }
    let (manifest_text, payload) = rest.split_at(manifest_len);
    let manifest = std::str::from_utf8(manifest_text)
      .ok()
      .and_then(Manifest::parse)
      .ok_or(ContainerError::CorruptHeader("unreadable manifest"))?;
    if manifest.fingerprint() != fingerprint {
      return Err(ContainerError::CorruptHeader(
        "fingerprint does not match the manifest",
      ));
    }
    Ok(SnapshotContainer {
      version,
      fingerprint,
      raw_len,
      manifest,
      payload,
    })
  }

  /// Refuses a snapshot baked for anything but `expected`.
  pub fn check_manifest(&self, expected: &Manifest) -> Result<(), ContainerError> {
    if self.fingerprint == expected.fingerprint() {
      return Ok(());
    }
    let diff = self
      .manifest
      .first_difference(expected)
      .map(|d| format!(" [first difference: {d}]"))
      .unwrap_or_default();
    Err(ContainerError::FingerprintMismatch {
      baked: self.manifest.summary(),
      expected: format!("{}{diff}", expected.summary()),
    })
  }

  /// Refuses a container whose extensions were baked for anything but
  /// `expected` (which has no app); the container's own app is not
  /// compared. For app containers: baked by this kiln, for any app.
  pub fn check_extensions(&self, expected: &Manifest) -> Result<(), ContainerError> {
    let kiln_part = self.manifest.without_app();
    if kiln_part.fingerprint() == expected.fingerprint() {
      return Ok(());
    }
    let diff = kiln_part
      .first_difference(expected)
      .map(|d| format!(" [first difference: {d}]"))
      .unwrap_or_default();
    Err(ContainerError::FingerprintMismatch {
      baked: kiln_part.summary(),
      expected: format!("{}{diff}", expected.summary()),
    })
  }

  /// The raw length as a buffer size.
  pub fn raw_size(&self) -> Result<usize, ContainerError> {
    usize::try_from(self.raw_len)
      .map_err(|_| ContainerError::CorruptHeader("raw length does not fit in memory"))
  }

  /// Decompresses the payload into `out`, which must be exactly
  /// [`raw_len`](Self::raw_len) bytes long, verifying zstd's checksum and
  /// the raw length.
  pub fn decompress_into(&self, out: &mut [u8]) -> Result<(), ContainerError> {
    if out.len() as u64 != self.raw_len {
      return Err(ContainerError::PayloadTruncated {
        actual: out.len() as u64,
        expected: self.raw_len,
      });
    }
    let written =
      zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress_to_buffer(self.payload, out));
    match written {
      Ok(n) if n as u64 == self.raw_len => Ok(()),
      Ok(n) => Err(ContainerError::PayloadTruncated {
        actual: n as u64,
        expected: self.raw_len,
      }),
      Err(_) => Err(self.diagnose_failure()),
    }
  }

  /// Decompresses the payload, verifying zstd's checksum and the raw length.
  pub fn decompress(&self) -> Result<Vec<u8>, ContainerError> {
    // One-shot into a buffer of the known size: the fast path.
    let mut out = vec![0; self.raw_size()?];
    self.decompress_into(&mut out)?;
    Ok(out)
  }

  /// Streams the payload to tell a truncated frame from a corrupt one (error
  /// path only).
  fn diagnose_failure(&self) -> ContainerError {
    let mut out = Vec::with_capacity(self.raw_len as usize);
    let decoder = zstd::stream::read::Decoder::with_buffer(self.payload);
    let result = decoder.and_then(|d| std::io::copy(&mut d.single_frame(), &mut out));
    match result {
      Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => ContainerError::PayloadTruncated {
        actual: out.len() as u64,
        expected: self.raw_len,
      },
      Err(e) => ContainerError::CorruptPayload(e.to_string()),
      Ok(_) if (out.len() as u64) < self.raw_len => ContainerError::PayloadTruncated {
        actual: out.len() as u64,
        expected: self.raw_len,
      },
      Ok(_) => ContainerError::CorruptPayload("frame larger than the header says".into()),
    }
  }
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
  let mut out = [0u8; N];
  out.copy_from_slice(&bytes[..N]);
  out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
  bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  fn manifest(ops: &[&str]) -> Manifest {
    Manifest {
      deno_core: DENO_CORE_VERSION.into(),
      v8: "15.0.0".into(),
      target: "x86_64-unknown-linux-gnu".into(),
      extensions: vec![
        ("deno_web".into(), vec!["op_a".into()]),
        (
          "kiln_runtime".into(),
          ops.iter().map(|s| s.to_string()).collect(),
        ),
      ],
      app: None,
    }
  }

  fn sample() -> (Manifest, Vec<u8>, Vec<u8>) {
    let m = manifest(&["op_x", "op_y"]);
    let raw: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = SnapshotContainer::encode(&m, &raw, 3).unwrap();
    (m, raw, bytes)
  }

  fn header_len(bytes: &[u8]) -> usize {
    FIXED_HEADER_LEN + u32::from_le_bytes(le_array(&bytes[52..56])) as usize
  }

  #[test]
  fn round_trip() {
    let (m, raw, bytes) = sample();
    let c = SnapshotContainer::parse(&bytes).unwrap();
    assert_eq!(c.manifest, m);
    assert_eq!(c.raw_len, raw.len() as u64);
    c.check_manifest(&m).unwrap();
    assert_eq!(c.decompress().unwrap(), raw);
    let mut into = vec![0; raw.len()];
    c.decompress_into(&mut into).unwrap();
    assert_eq!(into, raw);
  }

  #[test]
  fn decompress_into_needs_a_buffer_of_the_raw_length() {
    let (_, raw, bytes) = sample();
    let c = SnapshotContainer::parse(&bytes).unwrap();
    for len in [raw.len() - 1, raw.len() + 1] {
      let err = c.decompress_into(&mut vec![0; len]).unwrap_err();
      assert!(
        matches!(err, ContainerError::PayloadTruncated { actual, expected }
          if actual == len as u64 && expected == raw.len() as u64),
        "{err}"
      );
    }
  }

  #[test]
  fn manifest_text_round_trips() {
    let m = manifest(&["op_x"]);
    assert_eq!(Manifest::parse(&m.to_text()), Some(m));
  }
  #[test]
  fn app_manifest_round_trips_and_checks_only_the_extensions() {
    let kiln = manifest(&["op_a"]);
    let app = kiln.clone().with_app(&[7; 32]);
    assert_eq!(Manifest::parse(&app.to_text()), Some(app.clone()));
    assert_ne!(app.fingerprint(), kiln.fingerprint());
    let bytes = SnapshotContainer::encode(&app, b"payload", 3).unwrap();
    let container = SnapshotContainer::parse(&bytes).unwrap();
    container.check_extensions(&kiln).unwrap();
    assert!(container.check_manifest(&kiln).is_err());
    let other = manifest(&["op_a", "op_b"]);
    let err = container.check_extensions(&other).unwrap_err().to_string();
    assert!(err.contains("fingerprint mismatch"), "{err}");
  }

  #[test]
  fn corrupt_magic_is_reported() {
    let (_, _, mut bytes) = sample();
    bytes[0] ^= 0xff;
    assert_eq!(
      SnapshotContainer::parse(&bytes).unwrap_err(),
      ContainerError::BadMagic
    );
  }

  #[test]
  fn short_header_is_reported() {
    let (_, _, bytes) = sample();
    let err = SnapshotContainer::parse(&bytes[..20]).unwrap_err();
    assert!(
      matches!(err, ContainerError::HeaderTruncated { len: 20, .. }),
      "{err}"
    );
    assert!(err.to_string().starts_with("snapshot header truncated"));
  }

  #[test]
  fn other_format_version_is_reported() {
    let (_, _, mut bytes) = sample();
    bytes[8] = 9;
    let err = SnapshotContainer::parse(&bytes).unwrap_err();
    assert_eq!(
      err,
      ContainerError::UnsupportedVersion {
        found: 9,
        expected: FORMAT_VERSION
      }
    );
  }

  #[test]
  fn tampered_manifest_is_reported() {
    let (_, _, mut bytes) = sample();
    // A manifest byte no longer hashes to the stored fingerprint.
    let i = FIXED_HEADER_LEN + 2;
    bytes[i] ^= 0x01;
    let err = SnapshotContainer::parse(&bytes).unwrap_err();
    assert!(matches!(err, ContainerError::CorruptHeader(_)), "{err}");
  }

  #[test]
  fn flipped_payload_byte_is_reported() {
    let (_, _, mut bytes) = sample();
    let i = header_len(&bytes) + (bytes.len() - header_len(&bytes)) / 2;
    bytes[i] ^= 0x55;
    let c = SnapshotContainer::parse(&bytes).unwrap();
    let err = c.decompress().unwrap_err();
    assert!(
      matches!(
        err,
        ContainerError::CorruptPayload(_) | ContainerError::PayloadTruncated { .. }
      ),
      "{err}"
    );
    assert!(err.to_string().starts_with("snapshot payload"), "{err}");
  }

  #[test]
  fn truncated_payload_is_reported() {
    let (_, raw, bytes) = sample();
    let cut = header_len(&bytes) + (bytes.len() - header_len(&bytes)) / 2;
    let c = SnapshotContainer::parse(&bytes[..cut]).unwrap();
    let err = c.decompress().unwrap_err();
    match err {
      ContainerError::PayloadTruncated { expected, .. } => assert_eq!(expected, raw.len() as u64),
      other => panic!("expected PayloadTruncated, got {other}"),
    }
    let err = c.decompress_into(&mut vec![0; raw.len()]).unwrap_err();
    assert!(
      matches!(err, ContainerError::PayloadTruncated { .. }),
      "expected PayloadTruncated, got {err}"
    );
    assert!(err_text(&bytes[..cut]).starts_with("snapshot payload truncated"));
  }

  fn err_text(bytes: &[u8]) -> String {
    SnapshotContainer::parse(bytes)
      .unwrap()
      .decompress()
      .unwrap_err()
      .to_string()
  }

  #[test]
  fn wrong_fingerprint_names_both_sides() {
    let (_, _, bytes) = sample();
    let c = SnapshotContainer::parse(&bytes).unwrap();
    let other = manifest(&["op_x", "op_y", "op_z"]);
    let err = c.check_manifest(&other).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ContainerError::FingerprintMismatch { .. }));
    assert!(
      text.starts_with("snapshot fingerprint mismatch: baked for deno_core"),
      "{text}"
    );
    assert!(text.contains("this binary expects"), "{text}");
    assert!(text.contains("2 extensions with 3 ops"), "{text}");
    assert!(
      text.contains("extension 'kiln_runtime' has 2 ops vs 3"),
      "{text}"
    );
  }

  #[test]
  fn encode_is_deterministic() {
    let (m, raw, bytes) = sample();
    assert_eq!(SnapshotContainer::encode(&m, &raw, 3).unwrap(), bytes);
  }

  #[test]
  fn pinned_deno_core_version_matches_cargo_toml() {
    // The workspace manifest holds the one pinned version.
    let toml = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"));
    let pin = format!("deno_core = \"={DENO_CORE_VERSION}\"");
    assert!(toml.contains(&pin), "Cargo.toml must pin {pin}");
  }
}

/// The parser must answer any input with a result: arbitrary bytes, and a
/// real container with bits flipped, never panic.
#[cfg(test)]
mod proptests {
  use proptest::prelude::*;

  use super::*;

  fn container() -> (Manifest, Vec<u8>) {
    let manifest = Manifest {
      deno_core: DENO_CORE_VERSION.into(),
      v8: "15.0.0".into(),
      target: "x86_64-unknown-linux-gnu".into(),
      extensions: vec![("kiln_runtime".into(), vec!["op_a".into(), "op_b".into()])],
      app: None,
    };
    let raw: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let bytes = SnapshotContainer::encode(&manifest, &raw, 3).unwrap();
    (manifest, bytes)
  }

  /// Everything a loader does with untrusted bytes.
  fn read_all(bytes: &[u8], expected: &Manifest) {
    if let Ok(container) = SnapshotContainer::parse(bytes) {
      let _ = container.check_manifest(expected);
      let _ = container.decompress();
      if container.raw_len <= 1 << 20 {
        let _ = container.decompress_into(&mut vec![0; container.raw_len as usize]);
      }
    }
  }

  proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
      let (manifest, _) = container();
      read_all(&bytes, &manifest);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_magic_never_panic(
      version in prop_oneof![Just(FORMAT_VERSION), any::<u32>()],
      tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
      let (manifest, _) = container();
      let mut bytes = MAGIC.to_vec();
      bytes.extend_from_slice(&version.to_le_bytes());
      bytes.extend_from_slice(&tail);
      read_all(&bytes, &manifest);
    }

    #[test]
    fn bit_flips_and_truncation_never_panic(
      flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
      cut in any::<prop::sample::Index>(),
      truncate in any::<bool>(),
    ) {
      let (manifest, mut bytes) = container();
      for (at, bit) in flips {
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
      }
      if truncate {
        bytes.truncate(cut.index(bytes.len()));
      }
      read_all(&bytes, &manifest);
    }
  }
}
