//! A host served in process on 127.0.0.1:0, for the serving benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;

use kiln_host::Host;
use kiln_host::HostOptions;

/// Starts a host with `options` and serves it on a loopback port (until
/// the process ends).
pub fn serve(tokio: &tokio::runtime::Runtime, options: HostOptions) -> (Arc<Host>, SocketAddr) {
  tokio.block_on(async {
    let host = Host::new(options).expect("host");
    host.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
      .await
      .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(kiln_host::serve(
      host.clone(),
      listener,
      std::future::pending(),
    ));
    (host, addr)
  })
}
