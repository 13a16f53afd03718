//! The snapshot pipeline (re-exported from `kiln-pipeline`) and, in
//! [`load`], the snapshot this crate's `build.rs` baked.

pub use kiln_pipeline::bake;
pub use kiln_pipeline::container;
pub use kiln_pipeline::info;
pub use kiln_pipeline::memory;
pub use kiln_pipeline::transpile;

pub mod load;
