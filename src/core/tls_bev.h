/*
 * tls_bev.h — the one way to put an SSL object under a libevent bufferevent.
 *
 * bufferevent_openssl_socket_new() takes the SSL over only when it succeeds,
 * and what happens to it on failure depends on the flags and on the
 * libevent release. Debian's libevent 2.1.12 (checked: bufferevent_openssl.c,
 * and tests/unit/test_core.c exercises it through libevent's replaceable
 * allocator) frees the SSL on every failure it returns from when
 * BEV_OPT_CLOSE_ON_FREE is given (a BIO fd different from `fd`, or the
 * bufferevent's own allocation failing), never without that flag, and never
 * closes `fd` on those paths. (An allocation failure in its later setup
 * steps crashes inside libevent itself; nothing a caller can handle.)
 *
 * Contract of sy_bev_openssl_new, whatever the caller passes:
 *   success  the bufferevent owns the SSL (freed with it) and, when fd >= 0,
 *            the socket (BEV_OPT_CLOSE_ON_FREE is always added); dirty TLS
 *            shutdowns (a peer closing without close_notify) are allowed.
 *   failure  (NULL) the SSL HAS BEEN FREED, always — the caller never frees
 *            it; `fd` is untouched and still the caller's to close.
 */
#ifndef SY_TLS_BEV_H
#define SY_TLS_BEV_H

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

struct event_base;

/*
 * A TLS bufferevent over `fd` (-1: set later, e.g. by
 * bufferevent_socket_connect) in `state` (BUFFEREVENT_SSL_CONNECTING or
 * _ACCEPTING), with bufferevent `options`. `ssl` may be NULL (then: NULL).
 * See the contract above.
 */
struct bufferevent *sy_bev_openssl_new(struct event_base *base, int fd, SSL *ssl,
                                       enum bufferevent_ssl_state state, int options);

#endif
