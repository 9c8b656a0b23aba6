/*
 * lb_maglev.c — MAGLEV: the lookup table of Eisenbud et al., "Maglev: A
 * Fast and Reliable Software Network Load Balancer" (NSDI 2016), section
 * 3.4, with Envoy's weighting; built once per runtime.
 *
 * Each endpoint has a permutation of the table's M = 65537 slots
 * (offset = XXH64(address, 0) mod M, skip = XXH64(address, 1) mod (M-1) + 1,
 * slot j = (offset + j * skip) mod M); endpoints take turns claiming their
 * next preferred free slot until the table is full, an endpoint of weight w
 * taking a turn in w/max_weight of the rounds. A request's hash selects slot
 * hash mod M. When that endpoint cannot take the request, the following
 * slots are tried (they belong to endpoints spread by weight), and the key
 * keeps going to the same substitute. Removing one endpoint moves about its
 * share of the keys (the paper's minimal disruption).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend-int.h"
#include "core/errors.h"

#define MAGLEV_EMPTY UINT32_MAX
/* Slots tried after an unusable one before the weighted fallback. */
#define MAGLEV_MAX_PROBES 256

struct mg_entry {
    uint32_t idx;
    uint64_t offset, skip, next; /* permutation and position in it */
    uint64_t weight, target;     /* Envoy's round gating */
};

void lb_maglev_free(struct lb_maglev_table *t)
{
    free(t->v);
    t->v = NULL;
}

int lb_maglev_build(struct lb_maglev_table *t, const struct cfg_endpoint *eps, size_t n)
{
    const uint64_t M = MAGLEV_TABLE_SIZE;
    size_t m = 0;
    uint64_t max_w = 0;
    for (size_t i = 0; i < n; i++) {
        m += eps[i].weight > 0;
        if (eps[i].weight > max_w)
            max_w = eps[i].weight;
    }
    if (m == 0)
        return 0;
    struct mg_entry *e = calloc(m, sizeof *e);
    t->v = malloc(M * sizeof *t->v);
    if (!e || !t->v) {
        free(e);
        lb_maglev_free(t);
        return SY_ENOMEM;
    }
    memset(t->v, 0xff, M * sizeof *t->v);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (!eps[i].weight)
            continue;
        const char *a = eps[i].address.text;
        size_t len = strlen(a);
        e[j++] = (struct mg_entry){.idx = (uint32_t)i,
                                   .offset = lb_hash64(a, len, 0) % M,
                                   .skip = lb_hash64(a, len, 1) % (M - 1) + 1,
                                   .weight = eps[i].weight};
    }
    uint64_t filled = 0;
    for (uint64_t round = 0; filled < M; round++) {
        for (size_t k = 0; k < m && filled < M; k++) {
            struct mg_entry *x = &e[k];
            /* A heavy endpoint (weight = max) takes every round, one of a third its weight every
             * third. */
            if (round * x->weight < x->target)
                continue;
            x->target += max_w;
            uint64_t c = (x->offset + x->next * x->skip) % M;
            while (t->v[c] != MAGLEV_EMPTY) {
                x->next++;
                c = (x->offset + x->next * x->skip) % M;
            }
            t->v[c] = x->idx;
            x->next++;
            filled++;
        }
    }
    free(e);
    return 0;
}

int lb_maglev_lookup(const struct lb_maglev_table *t, const struct lb_filter *f, uint64_t hash)
{
    if (!t->v)
        return lb_pick_weighted_scan(f, hash);
    uint64_t pos = hash % MAGLEV_TABLE_SIZE;
    for (unsigned k = 0; k < MAGLEV_MAX_PROBES; k++) {
        uint32_t i = t->v[(pos + k) % MAGLEV_TABLE_SIZE];
        if (i != MAGLEV_EMPTY && lb_ok(f, i))
            return (int)i;
    }
    return lb_pick_weighted_scan(f, hash); /* still a function of the key */
}

static int maglev_build(struct service_rt *s)
{
    return lb_maglev_build(&s->maglev, s->ep, s->n);
}

/* Without an affinity key: a random slot (by weight). */
static int maglev_pick(const struct lb_filter *f)
{
    return lb_maglev_lookup(&f->s->maglev, f, f->ctx->has_hash ? f->ctx->hash : f->rnd);
}

static void maglev_destroy(struct service_rt *s)
{
    lb_maglev_free(&s->maglev);
}

const struct lb_ops lb_maglev = {"MAGLEV", maglev_build, maglev_pick, maglev_destroy};
