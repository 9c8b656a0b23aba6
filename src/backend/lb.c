/*
 * lb.c — load-balancing policies without a hash (ROUND_ROBIN, LEAST_REQUEST,
 * RANDOM), the weighted sampling they share with every fallback, and the
 * 64-bit hash used by the consistent-hash policies and affinity.
 *
 * Every policy picks only endpoints for which lb_ok() holds (backend.c:
 * healthy, not ejected, weight > 0, under the concurrency limit, and on the
 * first pass not yet tried by the exchange), and returns -1 only when none
 * does: each ends, if its fast path fails, on an exact weighted scan.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend-int.h"
#include "core/errors.h"
#include "core/worker.h"

/* ---- XXH64 -------------------------------------------------------------------------------- */

#define XP1 11400714785074694791ull
#define XP2 14029467366897019727ull
#define XP3 1609587929392839161ull
#define XP4 9650029242287828579ull
#define XP5 2870177450012600261ull

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts (x86-64, arm64) */
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t xround(uint64_t acc, uint64_t in)
{
    acc += in * XP2;
    acc = rotl64(acc, 31);
    return acc * XP1;
}

static uint64_t xmerge(uint64_t acc, uint64_t v)
{
    acc ^= xround(0, v);
    return acc * XP1 + XP4;
}

uint64_t lb_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + XP1 + XP2, v2 = seed + XP2, v3 = seed, v4 = seed - XP1;
        for (; p + 32 <= end; p += 32) {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(xmerge(xmerge(xmerge(h, v1), v2), v3), v4);
    } else {
        h = seed + XP5;
    }
    h += len;
    for (; p + 8 <= end; p += 8) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * XP1 + XP4;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)rd32(p) * XP1;
        h = rotl64(h, 23) * XP2 + XP3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)*p * XP5;
        h = rotl64(h, 11) * XP1;
    }
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    return h ^ (h >> 32);
}

static uint64_t remix(uint64_t x, uint64_t k)
{
    return lb_hash64(&x, sizeof x, k);
}

/* ---- weighted sampling ------------------------------------------------------------------------
 */

int lb_pick_weighted_scan(const struct lb_filter *f, uint64_t rnd)
{
    const struct cfg_endpoint *eps = f->s->ep;
    uint64_t total = 0;
    for (size_t i = 0; i < f->s->n; i++)
        if (lb_ok(f, i))
            total += eps[i].weight;
    if (total == 0)
        return -1;
    uint64_t r = rnd % total;
    for (size_t i = 0; i < f->s->n; i++) {
        if (!lb_ok(f, i))
            continue;
        if (r < eps[i].weight)
            return (int)i;
        r -= eps[i].weight;
    }
    return -1; /* an endpoint changed state during the scan */
}

/* Draws from the alias table before giving up on rejection sampling. */
#define ALIAS_TRIES 8

int lb_pick_weighted(const struct lb_filter *f, uint64_t rnd)
{
    const struct lb_alias *a = &f->s->alias;
    for (int k = 0; a->n && k < ALIAS_TRIES; k++) {
        uint64_t r = k ? remix(rnd, (uint64_t)k) : rnd;
        size_t col = (size_t)((uint32_t)r % a->n);
        size_t i = (uint32_t)(r >> 32) < a->prob[col] ? col : a->alias[col];
        if (lb_ok(f, i))
            return (int)i;
    }
    int i = lb_pick_weighted_scan(f, remix(rnd, ALIAS_TRIES));
    return i >= 0 ? i : lb_pick_weighted_scan(f, rnd);
}

void lb_alias_free(struct lb_alias *a)
{
    free(a->prob);
    free(a->alias);
    memset(a, 0, sizeof *a);
}

/* Vose's construction. Endpoints of weight 0 are never drawn. */
int lb_alias_build(struct lb_alias *a, const struct cfg_endpoint *eps, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += eps[i].weight;
    if (n == 0 || total == 0)
        return 0;
    double *p = calloc(n, sizeof *p);
    size_t *small = calloc(n, sizeof *small), *large = calloc(n, sizeof *large);
    a->prob = calloc(n, sizeof *a->prob);
    a->alias = calloc(n, sizeof *a->alias);
    int rc = SY_ENOMEM;
    if (!p || !small || !large || !a->prob || !a->alias)
        goto out;
    a->n = n;
    size_t ns = 0, nl = 0;
    for (size_t i = 0; i < n; i++) {
        p[i] = (double)eps[i].weight * (double)n / (double)total;
        if (p[i] < 1.0)
            small[ns++] = i;
        else
            large[nl++] = i;
    }
    size_t first_large = large[0]; /* the mean is 1: at least one is large */
    while (ns && nl) {
        size_t s = small[--ns], l = large[nl - 1];
        a->prob[s] = (uint32_t)(p[s] * 4294967296.0);
        a->alias[s] = (uint32_t)l;
        p[l] -= 1.0 - p[s];
        if (p[l] < 1.0) {
            nl--;
            small[ns++] = l;
        }
    }
    while (nl) {
        size_t l = large[--nl];
        a->prob[l] = UINT32_MAX;
        a->alias[l] = (uint32_t)l;
    }
    while (ns) { /* rounding leftovers keep themselves; weight 0 goes to a weighted one */
        size_t s = small[--ns];
        a->prob[s] = eps[s].weight ? UINT32_MAX : 0;
        a->alias[s] = (uint32_t)(eps[s].weight ? s : first_large);
    }
    rc = 0;
out:
    free(p);
    free(small);
    free(large);
    if (rc != 0)
        lb_alias_free(a);
    return rc;
}

/* ---- ROUND_ROBIN ----------------------------------------------------------------------------- */

/*
 * The schedule: one cycle of a smooth weighted round robin, computed once
 * per runtime so that workers only share an atomic cursor. Endpoint i's
 * k-th turn is due at (2k+1)/(2 w_i) (the midpoint rule): turns interleave
 * evenly (weights 5,1,1 give a a a b c a a) instead of in bursts. Weights
 * are divided by their gcd; a cycle longer than RR_MAX_SCHED is scaled down
 * (each endpoint keeps at least one turn).
 */
#define RR_MAX_SCHED 65536u
/* Slots consumed looking for an acceptable endpoint before the weighted draw. */
#define RR_MAX_SKIPS 16

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

struct rr_turn {
    uint32_t idx;
    uint64_t w, k; /* weight and turns taken */
};

/* Is a's next turn due before b's? (2ka+1)/wa < (2kb+1)/wb, ties by index. */
static bool turn_before(const struct rr_turn *a, const struct rr_turn *b)
{
    uint64_t l = (2 * a->k + 1) * b->w, r = (2 * b->k + 1) * a->w;
    return l != r ? l < r : a->idx < b->idx;
}

static void heap_down(struct rr_turn *h, size_t n, size_t i)
{
    for (;;) {
        size_t m = i, l = 2 * i + 1, r = l + 1;
        if (l < n && turn_before(&h[l], &h[m]))
            m = l;
        if (r < n && turn_before(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct rr_turn t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int rr_build(struct service_rt *s)
{
    const struct cfg_endpoint *eps = s->ep;
    uint64_t g = 0, total = 0;
    size_t m = 0;
    for (size_t i = 0; i < s->n; i++)
        if (eps[i].weight) {
            g = gcd64(g, eps[i].weight);
            total += eps[i].weight;
            m++;
        }
    if (m == 0)
        return 0;
    struct rr_turn *h = calloc(m, sizeof *h);
    if (!h)
        return SY_ENOMEM;
    total /= g;
    size_t len = 0, j = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!eps[i].weight)
            continue;
        uint64_t w = eps[i].weight / g;
        if (total > RR_MAX_SCHED) {
            w = w * RR_MAX_SCHED / total;
            w = w ? w : 1;
        }
        h[j++] = (struct rr_turn){.idx = (uint32_t)i, .w = w};
        len += w;
    }
    s->rr_sched = calloc(len, sizeof *s->rr_sched);
    if (!s->rr_sched) {
        free(h);
        return SY_ENOMEM;
    }
    for (size_t i = m; i-- > 0;)
        heap_down(h, m, i);
    for (size_t t = 0; t < len; t++) {
        s->rr_sched[t] = h[0].idx;
        h[0].k++;
        heap_down(h, m, 0);
    }
    s->rr_len = len;
    free(h);
    size_t nc = 1 + (size_t)backend_registry_n_workers(s->reg);
    s->rr_cursors = aligned_alloc(64, nc * sizeof *s->rr_cursors);
    if (s->rr_cursors) { /* without them: the shared cursor */
        for (size_t i = 0; i < nc; i++)
            s->rr_cursors[i].next = (unsigned)i; /* workers start one turn apart */
        s->n_rr_cursors = (unsigned)nc;
    }
    return 0;
}

static int rr_pick(const struct lb_filter *f)
{
    struct service_rt *s = (struct service_rt *)f->s; /* only the cursors change */
    unsigned wi = f->ctx && f->ctx->w ? (unsigned)f->ctx->w->id + 1 : 0;
    unsigned *mine = wi && wi < s->n_rr_cursors ? &s->rr_cursors[wi].next : NULL;
    /* A skipped slot is consumed: the others keep their shares of the cycle. */
    for (int k = 0; s->rr_len && k < RR_MAX_SKIPS; k++) {
        unsigned c = mine ? (*mine)++ : __atomic_fetch_add(&s->rr_next, 1, __ATOMIC_RELAXED);
        uint32_t i = s->rr_sched[c % s->rr_len];
        if (lb_ok(f, i))
            return (int)i;
    }
    return lb_pick_weighted(f, f->rnd);
}

static void rr_destroy(struct service_rt *s)
{
    free(s->rr_sched);
    s->rr_sched = NULL;
    s->rr_len = 0;
    free(s->rr_cursors);
    s->rr_cursors = NULL;
    s->n_rr_cursors = 0;
}

const struct lb_ops lb_round_robin = {"ROUND_ROBIN", rr_build, rr_pick, rr_destroy};

/* ---- LEAST_REQUEST, RANDOM ------------------------------------------------------------------- */

static int no_build(struct service_rt *s)
{
    return 0;
}
static void no_destroy(struct service_rt *s) {}

/*
 * Power of two choices: two endpoints drawn in proportion to their weights;
 * the one with fewer requests in flight wins, the first on a tie (so an idle
 * service is balanced exactly by weight).
 */
static int lr_pick(const struct lb_filter *f)
{
    int a = lb_pick_weighted(f, f->rnd);
    if (a < 0)
        return -1;
    int b = lb_pick_weighted(f, remix(f->rnd, 0x9e3779b97f4a7c15ull));
    if (b >= 0 && __atomic_load_n(&f->s->eps[b]->active, __ATOMIC_RELAXED) <
                      __atomic_load_n(&f->s->eps[a]->active, __ATOMIC_RELAXED))
        return b;
    return a;
}

const struct lb_ops lb_least_request = {"LEAST_REQUEST", no_build, lr_pick, no_destroy};

static int random_pick(const struct lb_filter *f)
{
    return lb_pick_weighted(f, f->rnd);
}

const struct lb_ops lb_random = {"RANDOM", no_build, random_pick, no_destroy};

const struct lb_ops *lb_ops_for(enum cfg_lb_policy p)
{
    switch (p) {
    case CFG_LB_LEAST_REQUEST: return &lb_least_request;
    case CFG_LB_RANDOM: return &lb_random;
    case CFG_LB_RING_HASH: return &lb_ring_hash;
    case CFG_LB_MAGLEV: return &lb_maglev;
    case CFG_LB_ROUND_ROBIN: break;
    }
    return &lb_round_robin;
}
