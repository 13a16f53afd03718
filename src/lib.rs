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
//! thread. See DESIGN.md for the pipeline.

pub mod extensions;
pub mod host;
pub mod runtime;
pub mod snapshot;

pub use runtime::Error;
pub use runtime::Runtime;
pub use runtime::RuntimeOptions;
