/*
 * listener.h — listening sockets and downstream connections.
 *
 * listeners_open() binds every configured listener once per worker
 * (SO_REUSEPORT) on the main thread, so that a bad address fails startup.
 * Each worker then accepts on its own sockets, terminates TLS and runs the
 * downstream codecs (HTTP/1.1, HTTP/2). Accepting pauses at the
 * limits.max_connections caps and after accept failures, and new requests
 * are refused while the process is overloaded (limits.c).
 */
#ifndef SY_LISTENER_H
#define SY_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config-t.h"

struct worker;
struct listener_worker;

typedef struct ssl_ctx_st SSL_CTX;

/*
 * What listeners_open() made: sockets per worker and a TLS context per
 * listener, and the process-wide connection counts and overload state that
 * the workers share (limits.c). Owned by the main thread; outlives the
 * workers.
 */
struct listener_set {
    int *fds;      /* fds[worker * n_listeners + i]; -1 once handed to a worker */
    SSL_CTX **tls; /* tls[i]: the context of HTTPS listener i, NULL for HTTP */
    size_t n_listeners;
    int n_workers;
    unsigned _conns;           /* atomic: client connections of the process */
    unsigned *_listener_conns; /* atomic, [n_listeners]: the same per listener */
    unsigned _overload;        /* atomic: enum listener_overload bits */
    bool *_cap_paused;         /* atomic, [n_workers]: a worker paused by a cap */
};

/* Why new requests are refused (limits.overload); bits of listener_set_overload(). */
enum listener_overload {
    LISTENER_OVERLOAD_MEMORY = 1u << 0,      /* resident set past overload.memory */
    LISTENER_OVERLOAD_CONNECTIONS = 1u << 1, /* client connections past overload.connections */
};

/*
 * Bind and listen on every listener of `cfg`, `n_workers` sockets each, and
 * load the TLS certificates of HTTPS listeners. Returns NULL with a one-line
 * reason in `err` (naming the address or file); an address another socket
 * holds already (another process: this one has none open yet) is refused
 * with "address A already in use by another process" instead of being
 * shared through SO_REUSEPORT.
 */
struct listener_set *listeners_open(const struct config *cfg, int n_workers, char *err,
                                    size_t errlen);
/* Close the sockets not handed to a worker and free the TLS contexts. */
void listener_set_free(struct listener_set *set);

/*
 * `switchyard -t`: build the TLS context of every HTTPS listener of `cfg`
 * as startup would (certificates, keys, that each key matches its
 * certificate), bind nothing. Writes one line per failure, naming the
 * file, to `errs`; returns how many.
 */
int listeners_check_tls(const struct config *cfg, FILE *errs);

/*
 * Main thread, every ~100 ms while `cfg` sets limits.overload: sample the
 * resident set size (/proc/self/statm) and update the overload state, which
 * ends once both measures are below 90 % of their limits.
 */
void listener_set_check_overload(struct listener_set *set, const struct config *cfg);
/* Any thread: the current enum listener_overload bits (0 = accepting requests). */
unsigned listener_set_overload(const struct listener_set *set);

/* Start accepting on worker `w` with its sockets (takes ownership of them). */
struct listener_worker *listener_worker_new(struct worker *w, struct listener_set *set);

/* Drain: stop accepting, close idle connections, ask for Connection: close. */
void listener_worker_drain(struct listener_worker *lw);

/*
 * On the worker thread, after a reload or a WORKER_CMD_ACCEPT wake-up:
 * check the caps again and resume accepting where they allow it.
 */
void listener_worker_recheck(struct listener_worker *lw);

/* Open downstream connections on this worker. */
unsigned listener_worker_conns(const struct listener_worker *lw);

/* Close everything now (drain timeout or shutdown) and free. */
void listener_worker_free(struct listener_worker *lw);

/* Called by the listener module whenever a connection closes while draining. */
typedef void (*listener_idle_fn)(struct worker *w);
void listener_worker_on_idle(struct listener_worker *lw, listener_idle_fn fn);

#endif
