/* tls_bev.c — see tls_bev.h. */
#include "core/tls_bev.h"

#include <event2/bufferevent.h>
#include <event2/event.h>

/* The ownership rules in tls_bev.h were checked against 2.1.12. */
#if LIBEVENT_VERSION_NUMBER < 0x02010c00
#error "sy_bev_openssl_new: check what this libevent does with the SSL on failure"
#endif

struct bufferevent *sy_bev_openssl_new(struct event_base *base, int fd, SSL *ssl,
                                       enum bufferevent_ssl_state state, int options)
{
    if (!ssl)
        return NULL;
    /* With BEV_OPT_CLOSE_ON_FREE libevent 2.1.12 frees the SSL on each of its
     * failure returns (tls_bev.h): nothing is left for us to free. */
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(base, fd, ssl, state, options | BEV_OPT_CLOSE_ON_FREE);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}
