//! `kiln_fetch`: what deno_fetch needs from its host.
//!
//! deno_fetch brings `fetch`, `Request`, `Response`, `Headers` and `FormData`.
//! It expects a permission container in the op state and two modules of
//! crates kiln does not link: `ext:deno_net/02_tls.js` (client certificates
//! for `Deno.createHttpClient`, which kiln does not expose) and deno_telemetry
//! (kiln has no OpenTelemetry; the glue installs the telemetry-off objects
//! before fetch loads, see `ext_js/runtime.ts`). This extension provides the
//! first as a lazy script that refuses TLS key pairs, and the permissions:
//! kiln functions may use the network, as on Workers and Deploy; `file:`
//! fetches fail with deno_fetch's own `NetworkError`.

mod permissions;

use std::sync::Arc;

use deno_permissions::PermissionsContainer;

pub use permissions::KilnPermissionDescriptorParser;

deno_core::extension!(
  kiln_fetch,
  deps = [deno_webidl, deno_web, deno_fetch],
  lazy_loaded_js = [dir "../../ext_js", "ext:deno_net/02_tls.js" = "tls.js"],
  state = |state| {
    state.put(PermissionsContainer::allow_all(Arc::new(
      KilnPermissionDescriptorParser,
    )));
  },
);

/// deno_fetch's options as kiln runs it: a `kiln/<version>` user agent, the
/// default (refusing) file fetch handler, and subrequests of served
/// functions marked with their hop count (loop detection, see `serve`).
pub fn fetch_options() -> deno_fetch::Options {
  deno_fetch::Options {
    user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
    request_builder_hook: Some(super::serve::mark_subrequest::<deno_fetch::ReqBody>),
    ..Default::default()
  }
}
