/*
 * listener-int.h — private to src/listener: the per-worker listener state
 * shared by the accept code and the downstream codecs.
 */
#ifndef SY_LISTENER_INT_H
#define SY_LISTENER_INT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "listener/listener.h"

struct evconnlistener;
struct bufferevent;
struct h1_down;

struct listener_worker {
    struct worker *w;
    struct evconnlistener **evls;
    int *listener_idx; /* per evl: index into cfg->listeners */
    size_t n_evls;
    struct h1_down *conns; /* every open HTTP/1.1 connection */
    unsigned n_conns;
    listener_idle_fn on_idle;
};

/* Start an HTTP/1.1 session on an accepted socket. */
void h1_downstream_accept(struct listener_worker *lw, int listener_idx, evutil_socket_t fd,
                          const struct sockaddr *peer, socklen_t peer_len);

/* Close idle connections (drain), or every connection (shutdown). */
void h1_downstream_close_idle(struct listener_worker *lw);
void h1_downstream_close_all(struct listener_worker *lw);

/* Bookkeeping for the codecs. */
void listener_conn_closed(struct listener_worker *lw);

#endif
