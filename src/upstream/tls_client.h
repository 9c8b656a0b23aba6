/*
 * tls_client.h — TLS toward backends (backend services with protocol HTTPS
 * or HTTP2), OpenSSL 3.
 *
 * Each upstream codec keeps, per worker, a small cache of client SSL_CTX
 * objects: one per distinct {config version, ca_file, verify, ALPN}, so the
 * trust store is loaded once and not once per connection, and a reload (a new
 * config version) reads CA files again. The cache is touched by its worker
 * only (no locks). An evicted SSL_CTX lives on while SSL objects made from it
 * exist (OpenSSL reference counts it).
 *
 * Per connection (tls_client_ssl_new): ALPN "h2" (HTTP2) or "http/1.1"
 * (HTTPS); TLS 1.2 minimum; SNI = tls.sni, else the endpoint's host name as
 * written in the config (none for an IP literal); and when tls.verify is on,
 * chain verification against tls.ca_file (or the system default store when
 * it is unset) plus a check of the certificate's names against that same
 * name (DNS name, or IP address for an IP literal).
 */
#ifndef SY_TLS_CLIENT_H
#define SY_TLS_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "config/config-t.h"
#include "core/tls_bev.h" /* an SSL from here goes under a bufferevent with sy_bev_openssl_new */

struct tls_client_cache;

/* An empty cache; NULL on allocation failure. */
struct tls_client_cache *tls_client_cache_new(void);

/* Free the cache and drop its references to the contexts. NULL is a no-op. */
void tls_client_cache_free(struct tls_client_cache *tc);

/*
 * A new client-mode SSL for a connection to `ep` of `svc` (protocol HTTPS or
 * HTTP2), set up as described above. `version` (the config snapshot's
 * version string) is part of the cache key. The caller owns the SSL.
 * Returns NULL when the context cannot be built (unreadable CA file: logged
 * once per cache entry) or on allocation failure.
 */
/*
 * The name a TLS connection to `ep` of `svc` sends as SNI and verifies the
 * certificate against: tls.sni, else the endpoint's host (a discovered
 * address: its DNS name). "" when none (then an IP literal is verified as
 * an IP). Connections are only shared between requests with the same name.
 */
void tls_client_name(const struct cfg_backend_service *svc, const struct cfg_endpoint *ep,
                     char *out, size_t cap);

SSL *tls_client_ssl_new(struct tls_client_cache *tc, const struct cfg_backend_service *svc,
                        const struct cfg_endpoint *ep, const char *version);

/* After the handshake: did the server select ALPN "h2"? */
bool tls_client_alpn_is_h2(const SSL *ssl);

/*
 * Write a one-line reason for a failed handshake on `ssl` into `buf`
 * (certificate verification result, or the first queued OpenSSL error
 * `err`, 0 = none). Returns buf.
 */
const char *tls_client_error_str(const SSL *ssl, unsigned long err, char *buf, size_t len);

#endif
