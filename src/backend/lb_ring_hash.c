/*
 * lb_ring_hash.c — RING_HASH: a ketama-style consistent-hash ring, built
 * once per runtime.
 *
 * Each endpoint owns points XXH64("<address>_<k>") on a 64-bit circle:
 * weight × P of them, P being the smallest power of two that makes the ring
 * at least minimum_ring_size points (so between 1× and 2× that; at most
 * RING_MAX_SIZE in all). A request's hash goes to the first point at
 * or after it; an endpoint that cannot take the request (unhealthy, ejected,
 * at its limit, already tried) passes it on to the next point of another
 * endpoint. Points depend only on the address, so removing one endpoint
 * moves only the keys it owned.
 */
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend-int.h"
#include "core/errors.h"

#define RING_MAX_SIZE (8u * 1024 * 1024)
/* Points walked past an unusable endpoint before the weighted fallback. */
#define RING_MAX_WALK 4096

static int cmp_point(const void *a, const void *b)
{
    const struct lb_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

void lb_ring_free(struct lb_ring *r)
{
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

int lb_ring_build(struct lb_ring *r, const struct cfg_endpoint *eps, size_t n, uint64_t min_size)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += eps[i].weight;
    if (total == 0)
        return 0;
    /* Points per unit of weight: the power of two that makes the ring at
     * least min_size points. A power of two rarely changes when an endpoint
     * comes or goes, and then no other endpoint's points move. */
    uint64_t per = 1;
    while (per * total < min_size && per * total * 2 <= RING_MAX_SIZE)
        per *= 2;
    if (per * total > RING_MAX_SIZE)
        per = RING_MAX_SIZE / total ? RING_MAX_SIZE / total : 1;
    r->v = calloc(per * total, sizeof *r->v);
    if (!r->v)
        return SY_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        for (uint64_t k = 0; k < per * eps[i].weight; k++) {
            char key[300];
            int len =
                snprintf(key, sizeof key, "%s_%llu", eps[i].address.text, (unsigned long long)k);
            if (len >= (int)sizeof key)
                len = (int)sizeof key - 1;
            r->v[r->n++] = (struct lb_ring_point){lb_hash64(key, (size_t)len, 0), (uint32_t)i};
        }
    }
    qsort(r->v, r->n, sizeof *r->v, cmp_point);
    return 0;
}

int lb_ring_lookup(const struct lb_ring *r, const struct lb_filter *f, uint64_t hash)
{
    if (r->n == 0)
        return lb_pick_weighted_scan(f, hash);
    size_t lo = 0, hi = r->n; /* first point with point.hash >= hash */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->v[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t walk = r->n < RING_MAX_WALK ? r->n : RING_MAX_WALK;
    for (size_t k = 0; k < walk; k++) {
        uint32_t i = r->v[(lo + k) % r->n].idx;
        if (lb_ok(f, i))
            return (int)i;
    }
    return lb_pick_weighted_scan(f, hash); /* still a function of the key */
}

static int ring_build(struct service_rt *s)
{
    return lb_ring_build(&s->ring, s->ep, s->n, s->cfg->consistent_hash.minimum_ring_size);
}

/* Without an affinity key the request lands on a random point (by weight). */
static int ring_pick(const struct lb_filter *f)
{
    return lb_ring_lookup(&f->s->ring, f, f->ctx->has_hash ? f->ctx->hash : f->rnd);
}

static void ring_destroy(struct service_rt *s)
{
    lb_ring_free(&s->ring);
}

const struct lb_ops lb_ring_hash = {"RING_HASH", ring_build, ring_pick, ring_destroy};
