/* listener.c — see listener.h. */
#include "listener/listener.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "core/list.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/tls_bev.h"
#include "core/worker.h"
#include "listener/listener-int.h"
#include "listener/tls_server.h"

/* A TLS handshake in progress; bounded by timeouts.request_headers. */
struct tls_accept {
    struct listener_worker *lw;
    struct bufferevent *bev;
    struct conn_info ci;
    struct event timer_ev;
    struct sy_link link; /* on lw->pending */
};

/*
 * Startup, before any socket of ours is bound: is `l`'s address free? Our
 * sockets set SO_REUSEPORT so that every worker has its own; alone, that
 * would also let them join the port of another process that set it (a
 * second switchyard), the kernel splitting new connections between the
 * two. A bind without SO_REUSEPORT fails wherever anyone else holds the
 * address; SO_REUSEADDR still lets through a port held only by TIME_WAIT
 * connections of a previous run. 0, or -1 with the reason in `err`.
 */
static int address_free(const struct cfg_listener *l, char *err, size_t errlen)
{
    int fd = socket(l->address.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listener %s: socket: %s", l->name, strerror(errno));
        return -1;
    }
    int one = 1, rc = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&l->address.ss, l->address.len) != 0) {
        if (errno == EADDRINUSE)
            snprintf(err, errlen, "listener %s: address %s already in use by another process",
                     l->name, l->address.text);
        else
            snprintf(err, errlen, "listener %s: cannot listen on %s: %s", l->name, l->address.text,
                     strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

static int open_one(const struct cfg_listener *l, char *err, size_t errlen)
{
    int fd = socket(l->address.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listener %s: socket: %s", l->name, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&l->address.ss, l->address.len) != 0 ||
        listen(fd, 1024) != 0) {
        snprintf(err, errlen, "listener %s: cannot listen on %s: %s", l->name, l->address.text,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void listener_set_free(struct listener_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; set->fds && i < set->n_listeners * (size_t)set->n_workers; i++)
        if (set->fds[i] >= 0)
            close(set->fds[i]);
    for (size_t i = 0; set->tls && i < set->n_listeners; i++)
        tls_server_ctx_free(set->tls[i]);
    free(set->fds);
    free(set->tls);
    free(set->_listener_conns);
    free(set->_cap_paused);
    free(set);
}

struct listener_set *listeners_open(const struct config *cfg, int n_workers, char *err,
                                    size_t errlen)
{
    size_t n = cfg->n_listeners * (size_t)n_workers;
    struct listener_set *set = calloc(1, sizeof *set);
    if (!set || !(set->fds = malloc((n + 1) * sizeof *set->fds)) ||
        !(set->tls = calloc(cfg->n_listeners + 1, sizeof *set->tls)) ||
        !(set->_listener_conns = calloc(cfg->n_listeners + 1, sizeof *set->_listener_conns)) ||
        !(set->_cap_paused = calloc((size_t)n_workers + 1, sizeof *set->_cap_paused))) {
        snprintf(err, errlen, "out of memory");
        listener_set_free(set);
        return NULL;
    }
    set->n_listeners = cfg->n_listeners;
    set->n_workers = n_workers;
    for (size_t i = 0; i < n; i++)
        set->fds[i] = -1;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (address_free(&cfg->listeners[i], err, errlen) != 0)
            goto fail;
    for (size_t i = 0; i < n; i++) {
        set->fds[i] = open_one(&cfg->listeners[i % cfg->n_listeners], err, errlen);
        if (set->fds[i] < 0)
            goto fail;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].protocol != CFG_LISTENER_HTTPS)
            continue;
        set->tls[i] = tls_server_ctx_new(&cfg->listeners[i], err, errlen);
        if (!set->tls[i])
            goto fail;
    }
    return set;
fail:
    listener_set_free(set);
    return NULL;
}

int listeners_check_tls(const struct config *cfg, FILE *errs)
{
    int bad = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].protocol != CFG_LISTENER_HTTPS)
            continue;
        char err[512];
        SSL_CTX *ctx = tls_server_ctx_new(&cfg->listeners[i], err, sizeof err);
        if (!ctx && strncmp(err, "listener ", 9) == 0) /* it names the listener already */
            fprintf(errs, "%s\n", err);
        else if (!ctx)
            fprintf(errs, "listener %s: %s\n", cfg->listeners[i].name, err);
        bad += !ctx;
        tls_server_ctx_free(ctx);
    }
    return bad;
}

/* ---- TLS handshakes ------------------------------------------------------------ */

/*
 * End a handshake. `handed_over`: it completed, and its bufferevent and its
 * place in the connection counts go to the session about to start (so that
 * the counts never see the connection twice); otherwise the connection is
 * closed and counted out.
 */
static void tls_accept_free(struct tls_accept *ta, bool handed_over)
{
    struct listener_worker *lw = ta->lw;
    int idx = ta->ci.listener_idx;
    sy_list_unlink(&ta->link);
    event_del(&ta->timer_ev);
    if (!handed_over)
        bufferevent_free(ta->bev);
    free(ta);
    if (!handed_over)
        listener_conn_closed(lw, idx);
}

static void on_tls_event(struct bufferevent *bev, short what, void *arg)
{
    struct tls_accept *ta = arg;
    struct listener_worker *lw = ta->lw;
    if (!(what & BEV_EVENT_CONNECTED)) {
        tls_accept_free(ta, false);
        return;
    }
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(bev), &proto, &len);
    struct conn_info ci = ta->ci;
    tls_accept_free(ta, true); /* the session opened below inherits its count */
    if (len == SY_STRLEN("h2") && memcmp(proto, SY_STRLIT("h2")) == 0)
        h2_downstream_start(lw, bev, &ci, NULL, 0, NULL);
    else
        h1_downstream_start(lw, bev, &ci);
}

static void on_tls_timeout(evutil_socket_t fd, short what, void *arg)
{
    tls_accept_free(arg, false);
}

static void start_tls(struct listener_worker *lw, evutil_socket_t fd, const struct conn_info *ci)
{
    struct worker *w = lw->w;
    struct tls_accept *ta = calloc(1, sizeof *ta);
    /* On failure sy_bev_openssl_new has freed the SSL; the socket is still ours. */
    struct bufferevent *bev =
        ta ? sy_bev_openssl_new(w->base, fd, SSL_new(lw->tls[ci->listener_idx]),
                                BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
           : NULL;
    if (!bev) {
        free(ta);
        close(fd);
        return;
    }
    ta->lw = lw;
    ta->bev = bev;
    ta->ci = *ci;
    evtimer_assign(&ta->timer_ev, w->base, on_tls_timeout, ta);
    /* A client that never completes its handshake holds a descriptor and
     * counts against max_connections: bound it like a request head, or by
     * the idle timeout when request_headers is off. */
    const struct runtime *rt = w->runtime;
    const struct cfg_listener *l = &rt->cfg->listeners[ci->listener_idx];
    uint64_t ms = l->timeouts.request_headers_ms ? l->timeouts.request_headers_ms
                                                 : l->timeouts.http_keepalive_ms;
    if (ms)
        sy_timer_arm_ms(&ta->timer_ev, ms);
    bufferevent_setcb(bev, NULL, NULL, on_tls_event, ta);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    sy_list_insert_head(&lw->pending, &ta->link);
    limits_conn_accepted(lw, ci->listener_idx);
}

/* Abandon every TLS handshake in progress. */
static void close_pending(struct listener_worker *lw)
{
    for (struct sy_link *l; (l = sy_list_first(&lw->pending));)
        tls_accept_free(SY_CONTAINER_OF(l, struct tls_accept, link), false);
}

void listener_tls_close_notify(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        SSL_shutdown(ssl); /* one record, written straight to the socket */
        ERR_clear_error();
    }
}

/* ---- accept ---------------------------------------------------------------------------- */

/* The index in lw->evls of `evl`. */
static size_t evl_index(const struct listener_worker *lw, const struct evconnlistener *evl)
{
    size_t k = 0;
    while (k + 1 < lw->n_evls && lw->evls[k] != evl)
        k++;
    return k;
}

/*
 * libevent accepts in a loop until EAGAIN or until this callback disables
 * the listener: limits_conn_accepted() does so at a max_connections cap.
 */
static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct listener_worker *lw = arg;
    struct conn_info ci = {.listener_idx = lw->listener_idx[evl_index(lw, evl)]};
    limits_accepted(lw);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct stats *st = lw->w->stats;
    if (st && ci.listener_idx >= 0 && (size_t)ci.listener_idx < st->n_listeners)
        stats_inc(&st->listeners[ci.listener_idx].shards[lw->w->id].downstream_connections_total,
                  1);
    memcpy(&ci.peer, sa, (size_t)salen < sizeof ci.peer ? (size_t)salen : sizeof ci.peer);
    socklen_t llen = sizeof ci.local;
    getsockname(fd, (struct sockaddr *)&ci.local, &llen);
    if (lw->tls[ci.listener_idx]) {
        ci.tls = true;
        start_tls(lw, fd, &ci);
        return;
    }
    struct bufferevent *bev = bufferevent_socket_new(lw->w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    limits_conn_accepted(lw, ci.listener_idx);
    const struct runtime *rt = lw->w->runtime;
    if (rt->cfg->listeners[ci.listener_idx].protocol == CFG_LISTENER_H2C)
        h2_downstream_start(lw, bev, &ci, NULL, 0, NULL); /* prior knowledge only */
    else
        h1_downstream_start(lw, bev, &ci);
}

/*
 * accept() failed with something other than EAGAIN, EINTR or ECONNABORTED:
 * EMFILE, ENFILE, ENOBUFS, ENOMEM. The connection stays in the backlog and
 * the socket readable, so accepting pauses for a while (limits.c) instead of
 * spinning on the error.
 */
static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    struct listener_worker *lw = arg;
    limits_accept_failed(lw, evl_index(lw, evl), err);
}

struct listener_worker *listener_worker_new(struct worker *w, struct listener_set *set)
{
    size_t n = set->n_listeners;
    struct listener_worker *lw = calloc(1, sizeof *lw);
    if (!lw)
        return NULL;
    lw->w = w;
    lw->set = set;
    lw->tls = set->tls;
    sy_list_init(&lw->conns);
    sy_list_init(&lw->pending);
    lw->evls = calloc(n + 1, sizeof *lw->evls);
    lw->listener_idx = calloc(n + 1, sizeof *lw->listener_idx);
    lw->paused = calloc(n + 1, sizeof *lw->paused);
    if (!lw->evls || !lw->listener_idx || !lw->paused || limits_worker_init(lw) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        int *fd = &set->fds[(size_t)w->id * n + i];
        lw->evls[i] = evconnlistener_new(w->base, on_accept, lw, LEV_OPT_CLOSE_ON_FREE, -1, *fd);
        if (!lw->evls[i])
            goto fail;
        *fd = -1; /* the evconnlistener owns it now */
        evconnlistener_set_error_cb(lw->evls[i], on_accept_error);
        lw->listener_idx[i] = (int)i;
        lw->n_evls++;
    }
    return lw;
fail:
    listener_worker_free(lw);
    return NULL;
}

static void close_listeners(struct listener_worker *lw)
{
    limits_sockets_closing(lw);
    for (size_t i = 0; i < lw->n_evls; i++)
        if (lw->evls[i])
            evconnlistener_free(lw->evls[i]);
    lw->n_evls = 0;
}

void listener_worker_drain(struct listener_worker *lw)
{
    close_listeners(lw);
    close_pending(lw);
    h1_downstream_close_idle(lw);
    h2_downstream_drain(lw);
    if (lw->n_conns == 0 && lw->on_idle)
        lw->on_idle(lw->w);
}

unsigned listener_worker_conns(const struct listener_worker *lw)
{
    return lw->n_conns;
}

void listener_worker_on_idle(struct listener_worker *lw, listener_idle_fn fn)
{
    lw->on_idle = fn;
}

void listener_worker_free(struct listener_worker *lw)
{
    if (!lw)
        return;
    close_listeners(lw);
    lw->on_idle = NULL;
    close_pending(lw);
    h1_downstream_close_all(lw);
    h2_downstream_close_all(lw);
    limits_worker_fini(lw);
    free(lw->evls);
    free(lw->listener_idx);
    free(lw->paused);
    free(lw);
}
