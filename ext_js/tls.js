// Stands in for deno_net's `02_tls.js`, which deno_fetch loads for
// `Deno.createHttpClient` client certificates. kiln links no deno_net and
// does not expose `Deno.createHttpClient`; a key pair is refused clearly.
(function () {
const { primordials } = __bootstrap;
const { TypeError } = primordials;

function loadTlsKeyPair(api, _options) {
  throw new TypeError(`${api}: TLS client certificates are not supported by kiln`);
}

return { loadTlsKeyPair };
})();
