/*
 * listener.h — listening sockets and downstream connections.
 *
 * listeners_open() binds every configured listener once per worker
 * (SO_REUSEPORT) on the main thread, so that a bad address fails startup.
 * Each worker then accepts on its own sockets and runs the downstream
 * codec (HTTP/1.1 now; TLS and HTTP/2 are added by sniffing here).
 */
#ifndef SY_LISTENER_H
#define SY_LISTENER_H

#include <stddef.h>

#include "config/config-t.h"

struct worker;
struct listener_worker;

typedef struct ssl_ctx_st SSL_CTX;

/* What listeners_open() made: sockets per worker and a TLS context per listener. */
struct listener_set {
    int *fds;      /* fds[worker * n_listeners + i]; -1 once handed to a worker */
    SSL_CTX **tls; /* tls[i]: the context of HTTPS listener i, NULL for HTTP */
    size_t n_listeners;
    int n_workers;
};

/*
 * Bind and listen on every listener of `cfg`, `n_workers` sockets each, and
 * load the TLS certificates of HTTPS listeners. Returns NULL with a one-line
 * reason in `err` (naming the address or file).
 */
struct listener_set *listeners_open(const struct config *cfg, int n_workers, char *err,
                                    size_t errlen);
/* Close the sockets not handed to a worker and free the TLS contexts. */
void listener_set_free(struct listener_set *set);

/* Start accepting on worker `w` with its sockets (takes ownership of them). */
struct listener_worker *listener_worker_new(struct worker *w, struct listener_set *set);

/* Drain: stop accepting, close idle connections, ask for Connection: close. */
void listener_worker_drain(struct listener_worker *lw);

/* Open downstream connections on this worker. */
unsigned listener_worker_conns(const struct listener_worker *lw);

/* Close everything now (drain timeout or shutdown) and free. */
void listener_worker_free(struct listener_worker *lw);

/* Called by the listener module whenever a connection closes while draining. */
typedef void (*listener_idle_fn)(struct worker *w);
void listener_worker_on_idle(struct listener_worker *lw, listener_idle_fn fn);

#endif
