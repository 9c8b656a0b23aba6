/*
 * upstream-int.h — private to src/upstream: the upstream codecs behind
 * upstream.h. Each codec keeps its own per-worker pools.
 */
#ifndef SY_UPSTREAM_INT_H
#define SY_UPSTREAM_INT_H

#include "upstream/upstream.h"

struct worker;
struct h1_pools;
struct h2_pools;

struct upstream_pools {
    struct worker *w;
    struct h1_pools *h1; /* HTTP and HTTPS backends */
    struct h2_pools *h2; /* HTTP2 and H2C backends */
};

/* HTTP/1.1 (plain or TLS): keep-alive pools per endpoint (h1_upstream.c). */
struct h1_pools *h1_pools_new(struct worker *w);
void h1_pools_close_idle(struct h1_pools *ps);
void h1_pools_free(struct h1_pools *ps);
int h1_attempt_start(struct h1_pools *ps, const struct upstream_request *r,
                     struct upstream_attempt *out);

/* HTTP/2 (h2 over TLS, or h2c): multiplexed connections (h2_upstream.c). */
struct h2_pools *h2_pools_new(struct worker *w);
void h2_pools_close_idle(struct h2_pools *ps);
void h2_pools_free(struct h2_pools *ps);
int h2_attempt_start(struct h2_pools *ps, const struct upstream_request *r,
                     struct upstream_attempt *out);

#endif
