//! kiln's snapshot pipeline: what a build script needs to bake extensions
//! into a V8 startup snapshot, and what a runtime needs to thaw one.
//!
//! - [`container`]: the format (magic, version, fingerprint of a
//!   [`container::Manifest`], one zstd frame);
//! - [`bake`]: [`bake::Baker`], extensions in, a container out (build time);
//! - [`thaw`]: check a container against the extensions a runtime runs with,
//!   decompress it;
//! - [`transpile`]: TypeScript to JavaScript with deno_ast, for extension
//!   glue at bake time and user modules at run time;
//! - [`info`]: a container's header as a report.
//!
//! Nothing here knows kiln's own extensions or runtime: both depend on this
//! crate, never the other way.

pub mod app;
pub mod bake;
pub mod container;
pub mod info;
pub mod memory;
pub mod thaw;
pub mod transpile;
