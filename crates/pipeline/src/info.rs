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
  Ok(out)
}
