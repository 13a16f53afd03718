//! The snapshot pipeline: container format, transpiler, bake (build side) and
//! load (run side).

pub mod bake;
pub mod container;
pub mod info;
pub mod load;
pub mod transpile;
