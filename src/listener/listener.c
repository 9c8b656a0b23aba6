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
#include "core/bev_flush.h"
#include "core/list.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/tls_bev.h"
#include "core/worker.h"
#include "exchange/exchange.h"
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

/* ---- the set of listener slots -------------------------------------------------- */

/* What one listener of the new config needs (listener_set_prepare). */
struct change_item {
    int slot;
    bool new_slot; /* its name was never served: the slot is set up at commit */
    int *fds;      /* [n_workers] new sockets, or NULL: keep the slot's */
    SSL_CTX *tls;  /* a new context, or NULL: keep the slot's */
    bool tls_off;  /* the listener is no longer HTTPS */
    unsigned char digest[32];
    const struct cfg_listener *l;
};

struct listener_change {
    int n_workers;
    struct change_item *items; /* [n_listeners of the new config] */
    size_t n_items;
    bool *removed; /* [STATS_MAX_LISTENERS]: slots served now and not by the new config */
    bool any;      /* anything besides nothing */
};

static void close_fds(int *fds, int n)
{
    for (int i = 0; fds && i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
}

struct listener_set *listener_set_new(int n_workers, struct stats *stats)
{
    struct listener_set *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    if (pthread_mutex_init(&set->lock, NULL) != 0) {
        free(set);
        return NULL;
    }
    set->n_workers = n_workers;
    set->stats = stats;
    set->slots = calloc(STATS_MAX_LISTENERS, sizeof *set->slots);
    set->_listener_conns = calloc(STATS_MAX_LISTENERS, sizeof *set->_listener_conns);
    set->_cap_paused = calloc((size_t)n_workers + 1, sizeof *set->_cap_paused);
    if (!set->slots || !set->_listener_conns || !set->_cap_paused) {
        listener_set_free(set);
        return NULL;
    }
    return set;
}

void listener_set_free(struct listener_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; set->slots && i < set->n_slots; i++) {
        struct listener_slot *sl = &set->slots[i];
        close_fds(sl->fds, set->n_workers);
        tls_server_ctx_free(sl->tls);
        free(sl->name);
        free(sl->addr_text);
    }
    free(set->slots);
    free(set->_listener_conns);
    free(set->_cap_paused);
    pthread_mutex_destroy(&set->lock);
    free(set);
}

void listener_change_free(struct listener_change *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_items; i++) {
        close_fds(c->items[i].fds, c->n_workers);
        tls_server_ctx_free(c->items[i].tls);
    }
    free(c->items);
    free(c->removed);
    free(c);
}

bool listener_change_empty(const struct listener_change *c)
{
    return !c->any;
}

/* The stats index of listener name `name`, or -1 (a name never served). */
static int stats_find(const struct stats *st, const char *name)
{
    for (size_t i = 0; i < st->n_listeners; i++)
        if (!strcmp(st->listeners[i].name, name))
            return (int)i;
    return -1;
}

/* The served slot bound to `addr`, or -1. Main thread. */
static int slot_bound_to(const struct listener_set *set, const bool *active, const char *addr)
{
    for (size_t i = 0; i < set->n_slots; i++)
        if (active[i] && set->slots[i].addr_text && !strcmp(set->slots[i].addr_text, addr))
            return (int)i;
    return -1;
}

/* Sockets for `l`, one per worker; NULL with the reason in err. */
static int *open_all(const struct listener_set *set, const struct cfg_listener *l, bool ours,
                     char *err, size_t errlen)
{
    if (!ours && address_free(l, err, errlen) != 0)
        return NULL;
    int *fds = malloc(((size_t)set->n_workers + 1) * sizeof *fds);
    if (!fds) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < set->n_workers; i++)
        fds[i] = -1;
    for (int i = 0; i < set->n_workers; i++)
        if ((fds[i] = open_one(l, err, errlen)) < 0) {
            close_fds(fds, set->n_workers);
            return NULL;
        }
    return fds;
}

/* Sockets and TLS context for item `it` of the new config. 0, or -1 with err. */
static int prepare_item(struct listener_set *set, struct change_item *it, const bool *active,
                        char *err, size_t errlen)
{
    const struct cfg_listener *l = it->l;
    struct listener_slot *sl = it->new_slot ? NULL : &set->slots[it->slot];
    bool served = sl && active[it->slot];
    if (!served || strcmp(sl->addr_text, l->address.text) != 0 || sl->protocol != l->protocol) {
        /* An address one of our own listeners holds is shared through
         * SO_REUSEPORT until that one closes (a rename, a move). */
        bool ours = slot_bound_to(set, active, l->address.text) >= 0;
        if (!(it->fds = open_all(set, l, ours, err, errlen)))
            return -1;
    }
    if (l->protocol != CFG_LISTENER_HTTPS) {
        it->tls_off = sl && sl->tls;
        return 0;
    }
    tls_server_digest(l, it->digest);
    if (sl && sl->tls && !memcmp(sl->tls_digest, it->digest, sizeof it->digest))
        return 0; /* the same settings and the same bytes: keep it (and its session cache) */
    char why[512];
    it->tls = tls_server_ctx_new_from(l, sl ? sl->tls : NULL, why, sizeof why);
    if (!it->tls) {
        if (strncmp(why, "listener ", 9) == 0) /* it names the listener already */
            snprintf(err, errlen, "%s", why);
        else
            snprintf(err, errlen, "listener %s: %s", l->name, why);
        return -1;
    }
    return 0;
}

struct listener_change *listener_set_prepare(struct listener_set *set, struct runtime *rt,
                                             char *err, size_t errlen)
{
    const struct config *cfg = rt->cfg;
    struct listener_change *c = calloc(1, sizeof *c);
    bool active[STATS_MAX_LISTENERS] = {false};
    int *slots = calloc(cfg->n_listeners + 1, sizeof *slots);
    int *rev = calloc(STATS_MAX_LISTENERS, sizeof *rev);
    if (!c || !slots || !rev || !(c->removed = calloc(STATS_MAX_LISTENERS, sizeof *c->removed)) ||
        !(c->items = calloc(cfg->n_listeners + 1, sizeof *c->items))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->n_workers = set->n_workers;
    for (size_t i = 0; i < set->n_slots; i++)
        active[i] = set->slots[i].addr_text != NULL; /* removed slots have none */
    for (size_t i = 0; i < STATS_MAX_LISTENERS; i++)
        rev[i] = -1;
    size_t next = set->stats->n_listeners; /* the stats index the next new name gets */
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct change_item *it = &c->items[c->n_items++];
        it->l = &cfg->listeners[i];
        it->slot = stats_find(set->stats, it->l->name);
        if (it->slot < 0 && next == STATS_MAX_LISTENERS) {
            snprintf(err, errlen, "listener %s: no room for another listener name (%d since start)",
                     it->l->name, STATS_MAX_LISTENERS);
            goto fail;
        }
        if (it->slot < 0)
            it->slot = (int)next++;
        it->new_slot = (size_t)it->slot >= set->n_slots || !set->slots[it->slot].name;
        if (prepare_item(set, it, active, err, errlen) != 0)
            goto fail;
        slots[i] = it->slot;
        rev[it->slot] = (int)i;
        c->any = c->any || it->new_slot || it->fds || it->tls || it->tls_off;
    }
    for (size_t i = 0; i < set->n_slots; i++)
        if (active[i] && rev[i] < 0)
            c->any = c->removed[i] = true;
    /* Only now, when nothing else can fail, do new names get their counters
     * (in the order the indexes were given out above): a refused reload
     * leaves no trace in /metrics. */
    for (size_t i = 0; i < c->n_items; i++)
        if ((size_t)c->items[i].slot >= set->stats->n_listeners &&
            stats_listener(set->stats, c->items[i].l->name) != c->items[i].slot) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    free(rt->listener_slots);
    free(rt->slot_listeners);
    rt->listener_slots = slots;
    rt->slot_listeners = rev;
    rt->n_slots = STATS_MAX_LISTENERS;
    return c;
fail:
    free(slots);
    free(rev);
    listener_change_free(c);
    return NULL;
}

void listener_set_commit(struct listener_set *set, struct listener_change *c)
{
    pthread_mutex_lock(&set->lock);
    for (size_t i = 0; i < c->n_items; i++) {
        struct change_item *it = &c->items[i];
        struct listener_slot *sl = &set->slots[it->slot];
        if (it->fds)
            log_info("listener %s %s %s", it->l->name,
                     it->new_slot || !sl->addr_text ? "added on" : "moved to", it->l->address.text);
        if (it->tls && !it->new_slot && sl->tls)
            log_info("listener %s: new TLS context (certificates or settings changed); new "
                     "handshakes use it",
                     it->l->name);
        if (it->new_slot) {
            sl->name = strdup(it->l->name);
            if ((size_t)it->slot >= set->n_slots)
                set->n_slots = (size_t)it->slot + 1;
        }
        if (it->fds) {
            close_fds(sl->fds, set->n_workers); /* never taken: the worker gets the new ones */
            sl->fds = it->fds;
            it->fds = NULL;
            free(sl->addr_text);
            sl->addr_text = strdup(it->l->address.text);
            sl->protocol = it->l->protocol;
        }
        if (it->tls || it->tls_off) {
            tls_server_ctx_free(sl->tls); /* handshakes and workers hold their own references */
            sl->tls = it->tls;
            it->tls = NULL;
            memcpy(sl->tls_digest, it->digest, sizeof sl->tls_digest);
        }
    }
    for (size_t i = 0; i < set->n_slots; i++) {
        if (!c->removed[i])
            continue;
        struct listener_slot *sl = &set->slots[i];
        log_info("listener %s on %s removed: its connections drain", sl->name, sl->addr_text);
        close_fds(sl->fds, set->n_workers);
        sl->fds = NULL;
        free(sl->addr_text);
        sl->addr_text = NULL; /* removed: no address; its name keeps the slot */
        tls_server_ctx_free(sl->tls);
        sl->tls = NULL;
        memset(sl->tls_digest, 0, sizeof sl->tls_digest);
    }
    pthread_mutex_unlock(&set->lock);
    listener_change_free(c);
}

bool listener_set_tls_changed(const struct listener_set *set, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (l->protocol != CFG_LISTENER_HTTPS)
            continue;
        unsigned char d[32];
        tls_server_digest(l, d);
        size_t k = 0;
        while (k < set->n_slots && (!set->slots[k].name || strcmp(set->slots[k].name, l->name)))
            k++;
        if (k == set->n_slots || !set->slots[k].tls || memcmp(set->slots[k].tls_digest, d, 32))
            return true;
    }
    return false;
}

char **listener_tls_files(const struct config *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].protocol == CFG_LISTENER_HTTPS)
            n += 2 * cfg->listeners[i].tls.n_certificates;
    char **v = calloc(n + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; v && i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        for (size_t j = 0; l->protocol == CFG_LISTENER_HTTPS && j < l->tls.n_certificates; j++) {
            v[k++] = l->tls.certificates[j].cert_file;
            v[k++] = l->tls.certificates[j].key_file;
        }
    }
    return v;
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
    const struct cfg_listener *l = listener_slot_cfg(lw, ci->listener_idx);
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
    if (st && (size_t)ci.listener_idx < st->n_listeners)
        stats_inc(&st->listeners[ci.listener_idx].shards[lw->w->id].downstream_connections_total,
                  1);
    memcpy(&ci.peer, sa, (size_t)salen < sizeof ci.peer ? (size_t)salen : sizeof ci.peer);
    socklen_t llen = sizeof ci.local;
    getsockname(fd, &ci.local.sa, &llen);
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
    sy_bev_direct_read(bev);
    limits_conn_accepted(lw, ci.listener_idx);
    if (listener_slot_cfg(lw, ci.listener_idx)->protocol == CFG_LISTENER_H2C)
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

/* ---- the listeners of a worker ------------------------------------------------------ */

/* cfg->listeners index of `slot` in `rt`, or -1. */
static int slot_index(const struct runtime *rt, int slot)
{
    if (!rt->slot_listeners)
        return slot < (int)rt->cfg->n_listeners ? slot : -1;
    return (size_t)slot < rt->n_slots ? rt->slot_listeners[slot] : -1;
}

bool listener_slot_removed(const struct listener_worker *lw, int slot)
{
    return slot_index(lw->w->runtime, slot) < 0;
}

const struct cfg_listener *listener_slot_cfg(const struct listener_worker *lw, int slot)
{
    const struct runtime *rt = lw->w->runtime;
    int i = slot_index(rt, slot);
    if (i < 0 && lw->retired[slot]) {
        rt = lw->retired[slot]->rt;
        i = slot_index(rt, slot);
    }
    return i < 0 ? NULL : &rt->cfg->listeners[i];
}

struct exchange *listener_exchange_new(struct listener_worker *lw, int slot)
{
    struct worker *w = lw->w;
    if (slot_index(w->runtime, slot) >= 0 || !lw->retired[slot])
        return exchange_new(w, listener_slot_cfg(lw, slot));
    return exchange_new_held(w, lw->retired[slot], listener_slot_cfg(lw, slot));
}

/* Stop accepting on slot k of this worker (its connections are not touched). */
static void close_socket(struct listener_worker *lw, size_t k)
{
    if (!lw->evls[k])
        return;
    limits_socket_closing(lw, k);
    evconnlistener_free(lw->evls[k]);
    lw->evls[k] = NULL;
}

/* Accept on `fd` (owned from now on) for slot k. 0 or -1 (fd closed). */
static int open_socket(struct listener_worker *lw, size_t k, int fd)
{
    lw->evls[k] = evconnlistener_new(lw->w->base, on_accept, lw, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!lw->evls[k]) {
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(lw->evls[k], on_accept_error);
    return 0;
}

/* Drain the connections of slot k, as a drain would. */
static void drain_slot(struct listener_worker *lw, size_t k)
{
    h1_downstream_drain_listener(lw, (int)k);
    h2_downstream_drain_listener(lw, (int)k);
}

/* With set->lock held: this worker's reference to slot k's TLS context follows the set's. */
static void sync_tls(struct listener_worker *lw, size_t k)
{
    SSL_CTX *now = lw->set->slots[k].tls;
    if (lw->tls[k] == now)
        return;
    if (now)
        SSL_CTX_up_ref(now);
    tls_server_ctx_free(lw->tls[k]); /* handshakes under way hold their own references */
    lw->tls[k] = now;
}

int listener_worker_sync(struct listener_worker *lw, struct rt_hold *old)
{
    int failed = 0;
    struct listener_set *set = lw->set;
    const struct runtime *rt = lw->w->runtime;
    pthread_mutex_lock(&set->lock);
    size_t n = set->n_slots;
    bool draining = lw->w->draining;
    for (size_t k = 0; k < n; k++) {
        struct listener_slot *sl = &set->slots[k];
        int *fd = sl->fds ? &sl->fds[lw->w->id] : NULL;
        sync_tls(lw, k);
        if (slot_index(rt, (int)k) < 0) { /* removed (or never ours) */
            if (lw->evls[k]) {
                close_socket(lw, k);
                drain_slot(lw, k);
            }
            if (lw->slot_conns[k] && !lw->retired[k] && old && slot_index(old->rt, (int)k) >= 0) {
                rt_hold_get(old); /* released with the slot's last connection here */
                lw->retired[k] = old;
            }
            continue;
        }
        if (lw->retired[k]) { /* a name served again: its connections follow the new config */
            rt_hold_put(lw->retired[k]);
            lw->retired[k] = NULL;
        }
        if (!fd || *fd < 0 || draining)
            continue;
        if (lw->evls[k]) { /* a new address or protocol: the old connections drain */
            close_socket(lw, k);
            drain_slot(lw, k);
        }
        int taken = *fd;
        *fd = -1;
        if (open_socket(lw, k, taken) != 0) {
            log_error("worker %d: cannot accept on listener %s: out of memory", lw->w->id,
                      sl->name);
            failed++;
        }
    }
    pthread_mutex_unlock(&set->lock);
    if (!draining)
        lw->n_evls = n;
    return failed;
}

/* A connection of slot `slot` ended on this worker (limits.c). */
void listener_slot_conn_closed(struct listener_worker *lw, int slot)
{
    if (--lw->slot_conns[slot] || !lw->retired[slot])
        return;
    rt_hold_put(lw->retired[slot]); /* the removed listener's last connection here */
    lw->retired[slot] = NULL;
}

struct listener_worker *listener_worker_new(struct worker *w, struct listener_set *set)
{
    size_t n = STATS_MAX_LISTENERS;
    struct listener_worker *lw = calloc(1, sizeof *lw);
    if (!lw)
        return NULL;
    lw->w = w;
    lw->set = set;
    sy_list_init(&lw->conns);
    sy_list_init(&lw->pending);
    lw->evls = calloc(n, sizeof *lw->evls);
    lw->listener_idx = calloc(n, sizeof *lw->listener_idx);
    lw->paused = calloc(n, sizeof *lw->paused);
    lw->slot_conns = calloc(n, sizeof *lw->slot_conns);
    lw->retired = calloc(n, sizeof *lw->retired);
    lw->tls = calloc(n, sizeof *lw->tls);
    if (!lw->evls || !lw->listener_idx || !lw->paused || !lw->slot_conns || !lw->retired ||
        !lw->tls || limits_worker_init(lw) != 0)
        goto fail;
    for (size_t k = 0; k < n; k++)
        lw->listener_idx[k] = (int)k;
    if (listener_worker_sync(lw, NULL) != 0)
        goto fail; /* at startup every listener must accept on every worker */
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
    for (size_t i = 0; i < lw->n_evls; i++)
        lw->evls[i] = NULL;
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
    if (lw->evls)
        close_listeners(lw);
    lw->on_idle = NULL;
    close_pending(lw);
    h1_downstream_close_all(lw);
    h2_downstream_close_all(lw);
    limits_worker_fini(lw);
    for (size_t k = 0; lw->retired && k < STATS_MAX_LISTENERS; k++)
        if (lw->retired[k])
            rt_hold_put(lw->retired[k]);
    for (size_t k = 0; lw->tls && k < STATS_MAX_LISTENERS; k++)
        tls_server_ctx_free(lw->tls[k]);
    free(lw->evls);
    free(lw->listener_idx);
    free(lw->paused);
    free(lw->slot_conns);
    free(lw->retired);
    free(lw->tls);
    free(lw);
}
