/*
 * listener-int.h — private to src/listener: the per-worker listener state
 * shared by the accept code and the downstream codecs.
 */
#ifndef SY_LISTENER_INT_H
#define SY_LISTENER_INT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "core/list.h"
#include "listener/listener.h"

struct evconnlistener;
struct bufferevent;
struct exchange;
struct h1_down;
struct h2_down;
struct tls_accept;

struct listener_worker {
    struct worker *w;
    struct evconnlistener **evls;
    int *listener_idx; /* per evl: index into cfg->listeners */
    size_t n_evls;
    SSL_CTX **tls;          /* per listener index; NULL for HTTP listeners */
    struct sy_link conns;   /* every open HTTP/1.1 connection (struct h1_down) */
    struct h2_down *h2;     /* the worker's HTTP/2 downstream (h2_downstream.c) */
    struct sy_link pending; /* TLS handshakes in progress (struct tls_accept) */
    unsigned n_conns;       /* all of the above */
    listener_idle_fn on_idle;
};

/* What a downstream session knows of its connection. */
struct conn_info {
    int listener_idx;
    bool tls;
    struct sockaddr_storage peer;
    struct sockaddr_storage local;
};

/* Start an HTTP/1.1 session on a connected bufferevent (owned from now on). */
void h1_downstream_start(struct listener_worker *lw, struct bufferevent *bev,
                         const struct conn_info *ci);
void h1_downstream_close_idle(struct listener_worker *lw);
void h1_downstream_close_all(struct listener_worker *lw);

/*
 * Start an HTTP/2 session on `bev` (owned from now on). Bytes already in its
 * input buffer are processed first. For an HTTP/1.1 Upgrade: h2c,
 * `upgrade_settings` is the decoded HTTP2-Settings payload and `upgrade_ex`
 * the request that becomes stream 1 (its head complete, no body).
 */
void h2_downstream_start(struct listener_worker *lw, struct bufferevent *bev,
                         const struct conn_info *ci, const uint8_t *upgrade_settings,
                         size_t upgrade_settings_len, struct exchange *upgrade_ex);
/* Drain: GOAWAY to every HTTP/2 client; close idle ones. */
void h2_downstream_drain(struct listener_worker *lw);
void h2_downstream_close_all(struct listener_worker *lw);

/* Send TLS close_notify on a TLS bufferevent whose output is flushed (no-op otherwise). */
void listener_tls_close_notify(struct bufferevent *bev);

/* Bookkeeping for the codecs: every session (and TLS handshake) opens and closes once. */
void listener_conn_opened(struct listener_worker *lw);
void listener_conn_closed(struct listener_worker *lw);

#endif
