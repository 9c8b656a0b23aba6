/*
 * tls_server.h — TLS termination for HTTPS listeners (OpenSSL 3).
 * One SSL_CTX per listener, built on the main thread at startup (and again
 * at a reload that changes its settings or files) and shared read-only by
 * the workers: certificates (the first is the default, the
 * others are chosen by SNI against their SANs), ALPN h2 then http/1.1,
 * min_version, cipher_suites and ecdh_curves, and session resumption (server
 * cache, and tickets).
 *
 * Session tickets are encrypted with the listener's own keys, random and
 * never written anywhere: a new key every tls.session_ticket_rotation, the
 * two previous ones still decrypting, older ones wiped; sessions time out
 * after two rotations. The key set is the one piece of mutable state the
 * workers share: a mutex guards it, held only to rotate (lazily, by the
 * first handshake of a new period) and to copy a key out. Rotation 0 turns
 * tickets off (SSL_OP_NO_TICKET).
 */
#ifndef SY_TLS_SERVER_H
#define SY_TLS_SERVER_H

#include <stddef.h>

#include "config/config-t.h"

typedef struct ssl_ctx_st SSL_CTX;

/*
 * Build the context for `l` (and its ticket keys). On failure returns NULL
 * and writes a one-line reason naming the file into `err` (unreadable file,
 * bad PEM, a key that does not match its certificate; no random bytes for
 * the ticket keys).
 */
SSL_CTX *tls_server_ctx_new(const struct cfg_listener *l, char *err, size_t errlen);
/*
 * The same for a reload: when `old` (the listener's context so far; NULL:
 * none) has session ticket keys with the same rotation period, the new
 * context shares them, so tickets issued before the reload still resume.
 */
SSL_CTX *tls_server_ctx_new_from(const struct cfg_listener *l, SSL_CTX *old, char *err,
                                 size_t errlen);
/* Drops one reference; NULL is a no-op. */
void tls_server_ctx_free(SSL_CTX *ctx);

/*
 * SHA-256 of what a context of `l` is built from: its TLS settings, and
 * the names and bytes of its certificate and key files (read now). Equal
 * digests: the context would be the same. Main thread.
 */
void tls_server_digest(const struct cfg_listener *l, unsigned char out[32]);

#endif
