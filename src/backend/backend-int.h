/*
 * backend-int.h — private to the backend-service files (backend.c, lb*.c,
 * affinity.c, outlier.c, breakers.c) and their unit tests: the run-time
 * state of one backend service and the LB policy interface.
 *
 * A service_rt belongs to one runtime snapshot: everything in it is built
 * once by backend_services_new on the main thread and then only read by the
 * workers, except the atomic counters (breakers, round-robin cursor).
 */
#ifndef SY_BACKEND_INT_H
#define SY_BACKEND_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "http/http-t.h"

struct service_rt;

/*
 * What a policy may choose in one pick. Policies call lb_ok() for each
 * candidate; the filter combines health, ejection, weight, the per-endpoint
 * concurrency limit and (first pass) the "not tried yet" preference.
 */
struct rr_cursor {
    unsigned next;
} __attribute__((aligned(64)));

/* How many workers count and pick (backend_registry_set_workers). */
unsigned backend_registry_n_workers(const struct backend_registry *reg);

struct lb_filter {
    const struct service_rt *s;
    const struct pick_ctx *ctx;
    uint64_t now;     /* sy_now_ms */
    bool allow_tried; /* second pass: endpoints this exchange tried may be chosen again */
    uint64_t rnd;     /* random bits for this pick */
};

/* An LB policy (locality_lb_policy). */
struct lb_ops {
    const char *name;
    /* Build the policy's tables for s (main thread). 0 or SY_ENOMEM. */
    int (*build)(struct service_rt *s);
    /*
     * An endpoint index for which lb_ok() holds, or -1 when there is none.
     * Uses f->ctx->hash when f->ctx->has_hash (RING_HASH, MAGLEV).
     */
    int (*pick)(const struct lb_filter *f);
    /* Free what build made (also after a failed build). */
    void (*destroy)(struct service_rt *s);
};

extern const struct lb_ops lb_round_robin;
extern const struct lb_ops lb_least_request;
extern const struct lb_ops lb_random;
extern const struct lb_ops lb_ring_hash;
extern const struct lb_ops lb_maglev;

/* The ops table of a policy. */
const struct lb_ops *lb_ops_for(enum cfg_lb_policy p);

/* Weighted sampling table (Walker's alias method), O(1) per draw. */
struct lb_alias {
    uint32_t *prob;  /* threshold on 32 random bits: keep column i below it */
    uint32_t *alias; /* else take alias[i] */
    size_t n;
};

/* Ketama-style ring: points sorted by hash. */
struct lb_ring_point {
    uint64_t hash;
    uint32_t idx;
};
struct lb_ring {
    struct lb_ring_point *v;
    size_t n;
};

/* Maglev lookup table (MAGLEV_TABLE_SIZE entries of endpoint indexes). */
#define MAGLEV_TABLE_SIZE 65537u
struct lb_maglev_table {
    uint32_t *v;
};

struct service_rt {
    const struct cfg_backend_service *cfg;
    struct backend_registry *reg;
    /* Its endpoints: cfg->endpoints, or for discovery: DNS the configured
     * ones with every name replaced by the addresses it resolves to (owned). */
    const struct cfg_endpoint *ep;
    struct cfg_endpoint *ep_owned;
    size_t n_owned; /* entries of ep_owned made so far (their texts are freed with it) */
    struct endpoint_state **eps; /* parallel to ep */
    size_t n;                    /* endpoints in ep */
    uint64_t *ep_ids;            /* affinity cookie id of each endpoint (affinity.c) */

    const struct lb_ops *lb;
    struct lb_alias alias; /* by weight: RANDOM, LEAST_REQUEST, and every fallback */
    uint32_t *rr_sched;    /* ROUND_ROBIN: smooth weighted schedule of indexes */
    size_t rr_len;
    unsigned rr_next; /* atomic: cursor into rr_sched without rr_cursors */
    /* One cursor per worker ([1 + id]; [0]: callers without one, atomic), each on
     * its own cache line: workers take turns through the schedule apart, as
     * Envoy's per-worker load balancers do, and share no counter. */
    struct rr_cursor *rr_cursors;
    unsigned n_rr_cursors;
    struct lb_ring ring;           /* RING_HASH, or affinity keys under a non-hash policy */
    struct lb_maglev_table maglev; /* MAGLEV */

    /* circuit breakers (atomics) */
    unsigned cb_requests, cb_pending, cb_retries;

    /* Exchanges waiting for endpoint capacity in this service, on any worker,
     * under any runtime: shared by every runtime's service of the same name
     * (they share endpoints, so a release under one may serve a waiter under
     * another). In the registry; NULL only when built outside one. */
    struct capacity_waiters *waiters;
};

/* Waiter counts of one backend service name (registry entry, atomics). */
#define CAPACITY_WAKE_SLOTS 64 /* workers are told apart by id % 64 */
struct capacity_waiters {
    char *service;
    int refs;                              /* service_rts using it (registry lock) */
    unsigned total;                        /* atomic: exchanges waiting, every worker */
    unsigned by_slot[CAPACITY_WAKE_SLOTS]; /* atomic: waiting on workers with id % 64 == i */
};

/* ---- shared helpers (lb.c) ---------------------------------------------------------------- */

/* XXH64 of `len` bytes with `seed` (the xxHash specification). */
uint64_t lb_hash64(const void *data, size_t len, uint64_t seed);

/* May endpoint i be chosen in this pick? */
bool lb_ok(const struct lb_filter *f, size_t i);

/* Weighted draw among the lb_ok endpoints from `rnd` (exact, O(n)); -1 when none. */
int lb_pick_weighted_scan(const struct lb_filter *f, uint64_t rnd);

/* Weighted draw with the alias table, rejecting non-ok ones a few times, then the scan. */
int lb_pick_weighted(const struct lb_filter *f, uint64_t rnd);

int lb_alias_build(struct lb_alias *a, const struct cfg_endpoint *eps, size_t n);
void lb_alias_free(struct lb_alias *a);

/* Ring of about `min_size` points weighted by the endpoints' weights. 0 or SY_ENOMEM. */
int lb_ring_build(struct lb_ring *r, const struct cfg_endpoint *eps, size_t n, uint64_t min_size);
void lb_ring_free(struct lb_ring *r);
/* The first ok endpoint at or after `hash` on the ring; -1 when none. */
int lb_ring_lookup(const struct lb_ring *r, const struct lb_filter *f, uint64_t hash);

int lb_maglev_build(struct lb_maglev_table *t, const struct cfg_endpoint *eps, size_t n);
void lb_maglev_free(struct lb_maglev_table *t);
/* The endpoint of `hash`, or the next acceptable table entry; -1 when none. */
int lb_maglev_lookup(const struct lb_maglev_table *t, const struct lb_filter *f, uint64_t hash);

/* ---- request path internals (testable with an explicit clock) ------------------------------- */

/* backend_pick with `now` (sy_now_ms clock) and random bits `rnd` given. */
int backend_pick_at(struct service_rt *s, const struct pick_ctx *ctx, uint64_t now, uint64_t rnd);

/* backend_release with `now` and random bits `rnd` given (outlier enforcement draws). */
void backend_release_at(struct service_rt *s, int idx, enum attempt_outcome outcome, uint64_t now,
                        uint64_t rnd);

/* Drop a reference on a registry entry (backend.c); the last one frees it. */
void backend_endpoint_unref(struct endpoint_state *e);

/* ---- affinity.c ---------------------------------------------------------------------------- */

/* Compute s->ep_ids. 0 or SY_ENOMEM. */
int affinity_build(struct service_rt *s);

/* The endpoint whose cookie id is `id`, or -1. */
int affinity_endpoint_of_id(const struct service_rt *s, uint64_t id);

/*
 * The value of cookie `name` in a request's Cookie header(s): pointer into
 * the headers and its length; false when absent.
 */
bool affinity_cookie_value(const struct http_headers *h, const char *name, const char **val,
                           size_t *len);

/* ---- outlier.c ----------------------------------------------------------------------------- */

/* Count one attempt outcome on endpoint idx; may eject it. */
void outlier_on_result(struct service_rt *s, size_t idx, enum attempt_outcome o, uint64_t now,
                       uint64_t rnd);

#endif
