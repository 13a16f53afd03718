//! kiln: a JS runtime whose extensions are baked into a V8 startup snapshot
//! at build time, so a runtime starts in a few milliseconds.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln::Error> {
//! let mut runtime = kiln::Runtime::new(kiln::RuntimeOptions {
//!   args: vec!["--verbose".into()],
//!   ..Default::default()
//! })?;
//! let exit_code = runtime.run_main_module(std::path::Path::new("main.ts")).await?;
//! # let _ = exit_code; Ok(()) }
//! ```
//!
//! A [`Runtime`] must be created inside a tokio runtime and stays on its
//! thread. This crate is the runtime layer of the workspace: it depends on
//! the pipeline (`kiln-pipeline`) and the extensions (`kiln-extensions`),
//! re-exported here as [`snapshot`] and [`extensions`]; the function host
//! and the CLI build on it. With the default `embedded-snapshot` feature its
//! `build.rs` bakes kiln's extensions and the snapshot is embedded
//! ([`Runtime::new`]); an embedder that bakes its own turns the feature off.
//! The `cron-postgres` feature adds `extensions::cron::postgres`, the
//! `Deno.cron` backend that runs each tick once across processes sharing a
//! PostgreSQL database (give it to [`runtime::RuntimeBuilder::cron_handler`]).

#[cfg(feature = "embedded-snapshot")]
pub mod app;
pub mod runtime;

pub use kiln_extensions as extensions;

pub mod snapshot;

pub use runtime::Error;
pub use runtime::Runtime;
pub use runtime::RuntimeOptions;
