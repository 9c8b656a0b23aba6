/*
 * listener-int.h — private to src/listener: the per-worker listener state
 * shared by the accept code and the downstream codecs.
 */
#ifndef SY_LISTENER_INT_H
#define SY_LISTENER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/list.h"
#include "core/parse.h"
#include "listener/listener.h"

struct evconnlistener;
struct bufferevent;
struct exchange;
struct h1_down;
struct h2_down;
struct tls_accept;

/* Why an accepting socket is paused: bits of listener_worker.paused[k] (limits.c). */
enum accept_pause {
    ACCEPT_PAUSE_LISTENER_CAP = 1u << 0, /* its listener's limits.max_connections */
    ACCEPT_PAUSE_PROCESS_CAP = 1u << 1,  /* the top-level limits.max_connections */
    ACCEPT_PAUSE_ERROR = 1u << 2,        /* accept failed (descriptors, memory): backoff */
};

struct listener_worker {
    struct worker *w;
    struct listener_set *set; /* process-wide counts and overload state */
    /* Per slot (listener.h; [STATS_MAX_LISTENERS], k < n_evls): the accepting
     * socket (NULL: none on this worker, the slot unused or removed), the
     * slot number itself (listener_idx[k] == k), the enum accept_pause bits
     * (it accepts when 0). */
    struct evconnlistener **evls;
    int *listener_idx;
    unsigned *paused;
    size_t n_evls;            /* slots to look at; 0 once the sockets are closed (drain) */
    unsigned *slot_conns;     /* per slot: this worker's connections (counted as n_conns) */
    struct rt_hold **retired; /* per slot a reload removed, while it has connections here:
                               * the hold of the last runtime that had it */
    struct event *backoff_ev; /* ends an ACCEPT_PAUSE_ERROR pause */
    uint64_t backoff_ms;      /* length of the last such pause; 0 after an accept */
    struct {
        unsigned errors;    /* failed accepts in this episode; 0 = none going on */
        int first_errno;    /* what the first one said */
        uint64_t since_ms;  /* when it began (sy_now_ms) */
    } accept_trouble;       /* logged when it begins and when it ends, not per error */
    SSL_CTX **tls;          /* per slot: this worker's reference to the slot's context */
    struct sy_link conns;   /* every open HTTP/1.1 connection (struct h1_down) */
    struct h2_down *h2;     /* the worker's HTTP/2 downstream (h2_downstream.c) */
    struct sy_link pending; /* TLS handshakes in progress (struct tls_accept) */
    unsigned n_conns;       /* all of the above */
    listener_idle_fn on_idle;
};

/* What a downstream session knows of its connection. */
struct conn_info {
    int listener_idx; /* its listener's slot (listener.h) */
    bool tls;
    union sy_inet_addr peer, local; /* TCP: IPv4 or IPv6; 28 bytes each, not 128 */
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

/*
 * The config of the listener in slot `slot` for a connection of this
 * worker: from the worker's runtime, or, for a listener a reload removed,
 * from the last runtime that had it (kept while the slot has connections
 * here). NULL only for a slot with no connection here and not in the
 * current config.
 */
const struct cfg_listener *listener_slot_cfg(const struct listener_worker *lw, int slot);
/* Whether the worker's runtime no longer has the listener of `slot` (a reload removed it). */
bool listener_slot_removed(const struct listener_worker *lw, int slot);
/* A connection of `slot` ended on this worker (limits.c calls it). */
void listener_slot_conn_closed(struct listener_worker *lw, int slot);
/* A new exchange for a request on a connection of `slot` (exchange_new on the right runtime). */
struct exchange *listener_exchange_new(struct listener_worker *lw, int slot);

/* Drain the connections of one slot only (its listener was removed or re-bound). */
void h1_downstream_drain_listener(struct listener_worker *lw, int slot);
void h2_downstream_drain_listener(struct listener_worker *lw, int slot);

/* Send TLS close_notify on a TLS bufferevent whose output is flushed (no-op otherwise). */
void listener_tls_close_notify(struct bufferevent *bev);

/*
 * Connection counts, naming the listener (conn_info.listener_idx). The
 * accept code counts one (limits_conn_accepted) for each accepted connection; the session started
 * on it (h1/h2_downstream_start, after a TLS handshake too) inherits it and
 * closes it when it ends, even when it fails to start. A session handing
 * its connection to another one (HTTP/1.1 Upgrade: h2c) passes its count
 * on and holds the worker (listener_worker_hold) until it is reaped, so the
 * connection never counts twice. These counts are the limits.max_connections caps and
 * overload.connections: opening may pause accepting, closing may resume it
 * on any worker (limits.c). Neither calls back into a codec; closing the
 * last one while draining calls the worker's on_idle.
 */
void listener_conn_closed(struct listener_worker *lw, int listener_idx);
/* Keep a draining worker from going idle while a session that counts no connection is alive. */
void listener_worker_hold(struct listener_worker *lw);
void listener_worker_release(struct listener_worker *lw);

/*
 * Ask once at the start of every new request (HTTP/1.1: its head parsed;
 * HTTP/2: the HEADERS opening a stream). true: the process is overloaded
 * (limits.overload) and the request must be refused without routing it:
 * HTTP/1.1 503 with Connection: close, HTTP/2 RST_STREAM REFUSED_STREAM.
 * The refusal is counted on the listener.
 */
bool listener_refuse_request(struct listener_worker *lw, int listener_idx);

/* limits.c, for the accept code in listener.c. */
int limits_worker_init(struct listener_worker *lw);               /* 0 or SY_ENOMEM */
void limits_sockets_closing(struct listener_worker *lw);          /* before the sockets are freed */
void limits_socket_closing(struct listener_worker *lw, size_t k); /* before evls[k] is freed */
void limits_worker_fini(struct listener_worker *lw);
void limits_accepted(struct listener_worker *lw); /* an accept succeeded */
/* Count a connection just accepted (see above); it may enter the overload state. */
void limits_conn_accepted(struct listener_worker *lw, int listener_idx);
/* accept() on socket k failed with `err`: pause every socket of the worker for a backoff. */
void limits_accept_failed(struct listener_worker *lw, size_t k, int err);

#endif
