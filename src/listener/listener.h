/*
 * listener.h — listening sockets and downstream connections.
 *
 * listener_set_prepare() binds every configured listener once per worker
 * (SO_REUSEPORT) on the main thread, so that a bad address fails startup
 * or refuses a reload.
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

#include <pthread.h>

#include "config/config-t.h"

struct worker;
struct runtime;
struct rt_hold;
struct stats;
struct listener_worker;

typedef struct ssl_ctx_st SSL_CTX;

/*
 * A listener name's place for the life of the process: its index (a
 * "slot") is the listener's index in stats->listeners, and connections
 * name their listener by it, so a reload that adds, removes or reorders
 * listeners changes no live connection's listener.
 */
struct listener_slot {
    char *name;      /* NULL: unused */
    char *addr_text; /* the address its sockets are bound to */
    enum cfg_listener_protocol protocol;
    int *fds;     /* [n_workers]: sockets waiting for their worker to take them, else -1 */
    SSL_CTX *tls; /* the context new handshakes use (the set's reference); NULL for HTTP */
    unsigned char tls_digest[32]; /* SHA-256 of the settings and files `tls` was built from */
};

/*
 * Every listener the process has served, and the process-wide connection
 * counts and overload state that the workers share (limits.c). Owned by
 * the main thread; outlives the workers. A reload changes the slots
 * (listener_set_prepare / _commit) under `lock`; a worker takes its new
 * sockets and TLS contexts from them under `lock` when it hears of the
 * reload (listener_worker_sync), never on the request path.
 */
struct listener_set {
    pthread_mutex_t lock;
    struct listener_slot *slots; /* [STATS_MAX_LISTENERS], indexed like stats->listeners */
    size_t n_slots;              /* slots ever used */
    int n_workers;
    struct stats *stats;       /* names the slots (stats_listener) */
    unsigned _conns;           /* atomic: client connections of the process */
    unsigned *_listener_conns; /* atomic, [STATS_MAX_LISTENERS]: the same per slot */
    unsigned _overload;        /* atomic: enum listener_overload bits */
    bool *_cap_paused;         /* atomic, [n_workers]: a worker paused by a cap */
};

/* Why new requests are refused (limits.overload); bits of listener_set_overload(). */
enum listener_overload {
    LISTENER_OVERLOAD_MEMORY = 1u << 0,      /* resident set past overload.memory */
    LISTENER_OVERLOAD_CONNECTIONS = 1u << 1, /* client connections past overload.connections */
};

/*
 * A set for `n_workers` workers, with no listener yet. NULL: out of memory.
 * `stats` names the slots (stats_listener) and outlives the set.
 */
struct listener_set *listener_set_new(int n_workers, struct stats *stats);
/* Close the sockets not handed to a worker and free the TLS contexts. */
void listener_set_free(struct listener_set *set);

/*
 * What a reload changes in the set (opaque): sockets opened for listeners
 * that are new or whose address or protocol changed, TLS contexts rebuilt
 * because their settings or the bytes of their certificate or key files
 * changed, and listeners removed.
 */
struct listener_change;

/*
 * Main thread, at startup and at each reload, before `rt` is published:
 * prepare what serving rt->cfg takes, without touching what serves now.
 * Binds the new addresses (`n_workers` sockets each, SO_REUSEPORT; an
 * address no listener of ours holds is first checked free: "address A
 * already in use by another process"), loads the TLS contexts that changed
 * (session ticket keys carry over when the rotation period did not
 * change), and fills rt's listener slot maps. Returns the change, or NULL
 * with a one-line reason in `err` naming the listener and the address or
 * file: then nothing changed and `rt` must not be published.
 */
struct listener_change *listener_set_prepare(struct listener_set *set, struct runtime *rt,
                                             char *err, size_t errlen);
/*
 * Whether a TLS context of `cfg`'s HTTPS listeners would differ from the
 * one serving now (settings, or the bytes of a certificate or key file).
 * Main thread; for --watch-config, which reloads a config whose bytes did
 * not change only when this is true.
 */
bool listener_set_tls_changed(const struct listener_set *set, const struct config *cfg);
/* Whether the change leaves every listener as it is (no socket, no TLS context, none removed). */
bool listener_change_empty(const struct listener_change *c);
/*
 * Make the change the set's (frees `c`); publish the runtime right after:
 * each worker applies it when it gets WORKER_CMD_SWAP. Old TLS contexts
 * live on in the handshakes and connections that use them.
 */
void listener_set_commit(struct listener_set *set, struct listener_change *c);
/* Abandon a prepared change: close its sockets, free its contexts. NULL is a no-op. */
void listener_change_free(struct listener_change *c);

/* The certificate and key files of rt's HTTPS listeners (for --watch-config); NULL-ended,
 * one free() releases it. NULL when out of memory. */
char **listener_tls_files(const struct config *cfg);

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

/*
 * On the worker thread, at WORKER_CMD_SWAP, once w->runtime is the new one
 * and before `old` (the worker's previous hold) is retired: take the new
 * sockets and TLS contexts, stop accepting on listeners the runtime no
 * longer has and drain their connections as a drain would (HTTP/1.1:
 * idle ones close, the response in flight says Connection: close;
 * HTTP/2: GOAWAY), which keep serving on `old`'s config until they end. A
 * listener whose address or protocol changed drains its old connections
 * the same way, on the new config. Returns how many sockets it could not
 * take (out of memory: logged; the listener does not accept on this worker).
 */
int listener_worker_sync(struct listener_worker *lw, struct rt_hold *old);

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
