/*
 * worker.h — an event-loop thread. Each worker owns a libevent base, its own
 * accepting sockets (SO_REUSEPORT), its downstream connections and its
 * upstream pools; an exchange lives and dies on one worker. Other threads
 * talk to a worker only through worker_post() (command bits + an eventfd):
 * the main thread for reloads and drains, other workers to wake exchanges
 * waiting for endpoint capacity or accepting sockets paused at a cap.
 */
#ifndef SY_WORKER_H
#define SY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/defer.h"
#include "core/mem_cache.h"

struct event_base;
struct event;
struct worker;

/* Command bits posted to a worker. */
enum worker_cmd {
    WORKER_CMD_SWAP = 1u << 0,   /* a new runtime snapshot was published */
    WORKER_CMD_DRAIN = 1u << 1,  /* stop accepting, finish in-flight, then exit */
    WORKER_CMD_STOP = 1u << 2,   /* drain timeout: close everything now and exit */
    WORKER_CMD_WAKE = 1u << 3,   /* endpoint capacity was freed (posted by any worker) */
    WORKER_CMD_ACCEPT = 1u << 4, /* a connection closed below a max_connections cap */
};

/* Runs on the worker thread with the command bits that were posted. */
typedef void (*worker_cmd_fn)(struct worker *w, unsigned cmds);

struct worker {
    int id;
    struct event_base *base;
    pthread_t thread;
    struct event *cmd_ev;
    int cmd_fd;     /* eventfd the main thread writes to (worker_post) */
    unsigned _cmds; /* atomic: pending command bits */
    worker_cmd_fn on_cmd;
    uint64_t rng; /* xorshift64* state, this thread only */
    bool draining;
    void *runtime;        /* struct runtime * in use (backend/runtime.h), owned by rt_hold */
    void *rt_hold;        /* struct rt_hold *: the worker's claim on `runtime` */
    void *listeners;      /* listener module's per-worker state */
    void *pools;          /* backend module's per-worker upstream state */
    void *exchanges;      /* exchange module's per-worker state (router.c) */
    struct worker *peers; /* every worker of the process (peers[id] is this one) */
    int n_peers;
    void *stats;                 /* per-worker stats shard */
    void *owner;                 /* the process-level state that started this worker (main.c) */
    int access_log_fd;           /* -1 = access log off; shared fd, one write(2) per line */
    struct mem_cache h2_mem;     /* small-object cache for this worker's nghttp2 sessions */
    struct sy_defer_queue defer; /* work put off to later in the loop turn (defer.h) */
};

/*
 * Create the worker's event base and command event; does not start the
 * thread. Returns 0 or SY_ENOMEM.
 */
int worker_init(struct worker *w, int id, worker_cmd_fn on_cmd);

/* Start the thread running the loop until it is broken. 0 or SY_EIO. */
int worker_start(struct worker *w);

/* From any thread: post command bits; the worker's on_cmd runs soon. */
void worker_post(struct worker *w, unsigned cmds);

/* Join the thread and free the base. */
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

/* Per-worker random numbers (not for cryptography). */
uint64_t worker_rand(struct worker *w);

/* Monotonic clock: milliseconds (coarse, ~4 ms steps) / microseconds (precise). */
uint64_t sy_now_ms(void);
uint64_t sy_now_us(void);

/* Write a random UUIDv4 (36 chars + NUL) into out. */
void sy_uuid4(struct worker *w, char out[37]);
/* n random lower-case hex digits, not all zero (n a multiple of 16), then a NUL. */
void sy_random_hex(struct worker *w, char *out, size_t n);
/* true with probability pct/100 (pct a percentage with decimals: 0.0001 steps). */
bool worker_chance(struct worker *w, double pct);

#endif
