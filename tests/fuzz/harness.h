/*
 * harness.h — the proxy's request path in one process, for the fuzz targets
 * (fuzz_h1.c, fuzz_h2.c) and the allocation-failure sweep
 * (tests/alloc/alloc_sweep.c).
 *
 * A harness is one worker (worker_init; no thread: harness_run turns its
 * event base), a runtime made from a fixed config, the worker's upstream
 * pools, exchange state and listener_worker, and an in-process backend: an
 * evconnlistener on 127.0.0.1:0 in the same base that answers every request
 * it parses, by path: "200 ok" (content-length: 2) by default; /big 100 KiB,
 * /chunked with a trailer, /close delimited by the close, /204, /503, and
 * /upgrade (with Upgrade) 101 and then an echo. So the whole path runs:
 * downstream codec → router → url map → h1 upstream → backend → response →
 * downstream codec, flow control and tunnels included.
 *
 * harness_run feeds one input to a new client connection on 127.0.0.1,
 * accepted by the worker's own listener code (on_accept, then the HTTP/1.1
 * codec; for HARNESS_H2 the client preface goes first, so the HTTP/1.1
 * codec hands the connection to h2_downstream_start as for prior-knowledge
 * h2c), turns the loop until nothing happens, half-closes the client side,
 * turns it until the connection is gone, then closes whatever is left so
 * that nothing carries over to the next input: a client connection still
 * open by force, the pooled upstream connections from the backend's side
 * (a reset, as a backend ending kept-alive connections). The config has no
 * retries, no fault delays and only long timers, so no input waits on a
 * clock.
 */
#ifndef SY_FUZZ_HARNESS_H
#define SY_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct harness;

enum harness_proto {
    HARNESS_H1, /* the input is what a client sends on a fresh connection */
    HARNESS_H2, /* the input follows the client preface, which the harness sends */
};

/*
 * Hooks for the allocation sweep: the harness's own bookkeeping (its backend,
 * its sockets) runs between quiet(ctx, true) and quiet(ctx, false), so a
 * failure injected there is not blamed on the proxy. Calls nest.
 */
struct harness_hooks {
    void (*quiet)(void *ctx, bool on);
    void *ctx;
};

/* What one input did. */
struct harness_result {
    size_t out_bytes;        /* bytes the proxy wrote to the client */
    unsigned turns;          /* event loop turns */
    unsigned backend_reqs;   /* requests the backend answered */
    bool client_forced;      /* the client connection outlived the input; closed by force */
    unsigned exchanges_left; /* exchanges alive once the client connection was gone (bug) */
    bool upstream_forced;    /* ... and the backend had to close their connections */
};

/*
 * A harness, or NULL with the reason on stderr (the config, a socket; not
 * said when `hooks` has a quiet hook: the sweep fails it on purpose).
 * `hooks` may be NULL; it is copied.
 */
struct harness *harness_new(const struct harness_hooks *hooks);
void harness_free(struct harness *h);

/* Run one input; `res` may be NULL. 0, or -1 if the harness could not make its sockets. */
int harness_run(struct harness *h, enum harness_proto proto, const uint8_t *data, size_t size,
                struct harness_result *res);

/*
 * The body of a codec fuzz target: run one input on a process-wide harness
 * made on first use, print a line per input when SY_FUZZ_VERBOSE is set, and
 * abort when the harness fails or an exchange outlived its connection (a
 * lost cleanup). `name` labels the messages. Returns 0.
 */
int harness_fuzz_one(enum harness_proto proto, const char *name, const uint8_t *data, size_t size);

#endif
