//! The one extension list.
//!
//! `all()` is the only place that names kiln's extensions and their order.
//! `build.rs` bakes exactly this list and the runtime thaws with exactly this
//! list; the snapshot fingerprint covers it, so a change here re-bakes and a
//! stale snapshot is refused instead of crashing V8.
//!
//! Each extension is a folder here with its glue in the repository's
//! `ext_js/` (referenced as `../../ext_js` by the `extension!` macros; it is
//! read at bake time only). This crate knows nothing of the runtime or the
//! host: both depend on it.

pub mod cron;
pub mod fetch;
pub mod runtime;
pub mod serve;

pub use cron::LocalCronHandler;
pub use runtime::RuntimeConfig;

/// Run-time options of the baked extensions. Nothing here is baked: the bake
/// uses `Default`, the runtime passes the real values at init.
pub struct ExtensionOptions<C: cron::CronHandler = LocalCronHandler> {
  pub runtime: RuntimeConfig,
  /// The `Deno.cron` backend.
  pub cron: C,
}

impl Default for ExtensionOptions {
  fn default() -> Self {
    ExtensionOptions {
      runtime: RuntimeConfig::default(),
      cron: LocalCronHandler::default(),
    }
  }
}

/// kiln's extensions, in order.
pub fn all<C: cron::CronHandler + 'static>(
  options: ExtensionOptions<C>,
) -> Vec<deno_core::Extension> {
  vec![
    deno_webidl::deno_webidl::init(),
    deno_web::deno_web::init(
      deno_web::BlobStore::default_arc(),
      None,
      false,
      deno_web::InMemoryBroadcastChannel::default(),
    ),
    // Web Crypto. No seed: randomness comes from the OS at run time.
    deno_crypto::deno_crypto::init(None),
    deno_fetch::deno_fetch::init(fetch::fetch_options()),
    // The `WebSocket` client, and the server sockets of
    // `Deno.upgradeWebSocket` (see `serve`).
    deno_websocket::deno_websocket::init(),
    fetch::kiln_fetch::init(),
    runtime::kiln_runtime::init(options.runtime),
    cron::kiln_cron::init(options.cron),
    serve::kiln_serve::init(),
  ]
}
