/*
 * backend.c — backend services at run time (see backend.h): the endpoint
 * registry shared across reloads, the per-runtime service state, and the
 * common part of endpoint selection (filtering, the concurrency limit, the
 * "not tried yet" preference). The policies are in lb*.c, session affinity
 * in affinity.c, outlier detection in outlier.c, breakers in breakers.c.
 */
#include "backend/backend.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend-int.h"
#include "backend/discovery.h"
#include "core/errors.h"
#include "core/grow.h"
#include "core/worker.h"

struct backend_registry {
    pthread_mutex_t lock; /* registry membership only; never on the request path */
    unsigned n_workers;   /* endpoint_counters copies: 1 + this */
    struct endpoint_state **v;
    size_t n, cap;
    struct capacity_waiters **waits; /* one per backend service name in use */
    size_t n_waits, cap_waits;
};

/* ---- registry (main thread; registry_put also from workers) ---------------------------------- */

struct backend_registry *backend_registry_new(void)
{
    struct backend_registry *reg = calloc(1, sizeof *reg);
    if (reg)
        pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

void backend_registry_set_workers(struct backend_registry *reg, unsigned n_workers)
{
    reg->n_workers = n_workers;
}

unsigned backend_registry_n_workers(const struct backend_registry *reg)
{
    return reg ? reg->n_workers : 0;
}

static void endpoint_free(struct endpoint_state *e)
{
    free(e->counters);
    free(e->service);
    free(e->address);
    free(e);
}

static void waiters_free(struct capacity_waiters *cw)
{
    free(cw->service);
    free(cw);
}

void backend_registry_free(struct backend_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++)
        endpoint_free(reg->v[i]);
    free(reg->v);
    for (size_t i = 0; i < reg->n_waits; i++)
        waiters_free(reg->waits[i]);
    free(reg->waits);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

/* Find or add the entry for (service, address); takes a reference. NULL on ENOMEM. */
static struct endpoint_state *registry_get(struct backend_registry *reg, const char *service,
                                           const char *address)
{
    struct endpoint_state *e = NULL;
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n && !e; i++)
        if (strcmp(reg->v[i]->service, service) == 0 && strcmp(reg->v[i]->address, address) == 0)
            e = reg->v[i];
    if (!e) {
        struct endpoint_state **v = sy_grow(reg->v, &reg->cap, reg->n, sizeof *v, 16);
        if (!v)
            goto out;
        reg->v = v;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        size_t n_counters = 1 + (size_t)reg->n_workers;
        if (e && (e->counters = aligned_alloc(64, n_counters * sizeof *e->counters)) != NULL) {
            memset(e->counters, 0, n_counters * sizeof *e->counters);
            e->n_counters = (unsigned)n_counters;
        }
        if (!e || !e->counters || !(e->service = strdup(service)) ||
            !(e->address = strdup(address))) {
            if (e)
                endpoint_free(e);
            e = NULL;
            goto out;
        }
        e->healthy = 1; /* unknown counts as healthy until a health check says otherwise */
        e->_reg = reg;
        reg->v[reg->n++] = e;
    }
    __atomic_add_fetch(&e->refcount, 1, __ATOMIC_RELAXED);
out:
    pthread_mutex_unlock(&reg->lock);
    return e;
}

/* Drop a reference; an entry nothing uses any more leaves the registry. */
static void registry_put(struct backend_registry *reg, struct endpoint_state *e)
{
    pthread_mutex_lock(&reg->lock);
    if (__atomic_sub_fetch(&e->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        for (size_t i = 0; i < reg->n; i++) {
            if (reg->v[i] == e) {
                reg->v[i] = reg->v[--reg->n];
                break;
            }
        }
        endpoint_free(e);
    }
    pthread_mutex_unlock(&reg->lock);
}

void backend_endpoint_unref(struct endpoint_state *e)
{
    registry_put(e->_reg, e);
}

struct endpoint_state *backend_endpoint_ref(struct endpoint_state *e)
{
    __atomic_add_fetch(&e->refcount, 1, __ATOMIC_RELAXED);
    return e;
}

/* The waiter counts of a service name, found or added; takes a reference. NULL on ENOMEM. */
static struct capacity_waiters *waiters_get(struct backend_registry *reg, const char *service)
{
    struct capacity_waiters *cw = NULL;
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n_waits && !cw; i++)
        if (strcmp(reg->waits[i]->service, service) == 0)
            cw = reg->waits[i];
    if (!cw) {
        struct capacity_waiters **v =
            sy_grow(reg->waits, &reg->cap_waits, reg->n_waits, sizeof *v, 8);
        if (!v)
            goto out;
        reg->waits = v;
    }
    if (!cw) {
        cw = calloc(1, sizeof *cw);
        if (!cw || !(cw->service = strdup(service))) {
            free(cw);
            cw = NULL;
            goto out;
        }
        reg->waits[reg->n_waits++] = cw;
    }
    cw->refs++;
out:
    pthread_mutex_unlock(&reg->lock);
    return cw;
}

/* Drop a reference; the last service of that name gone, the entry goes. */
static void waiters_put(struct backend_registry *reg, struct capacity_waiters *cw)
{
    if (!cw)
        return;
    pthread_mutex_lock(&reg->lock);
    if (--cw->refs == 0) {
        for (size_t i = 0; i < reg->n_waits; i++) {
            if (reg->waits[i] == cw) {
                reg->waits[i] = reg->waits[--reg->n_waits];
                break;
            }
        }
        waiters_free(cw);
    }
    pthread_mutex_unlock(&reg->lock);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

void backend_services_publish(struct service_rt *arr, size_t n)
{
    size_t total = 0, k = 0;
    struct backend_registry *reg = NULL;
    for (size_t i = 0; i < n; i++) {
        total += arr[i].n;
        reg = arr[i].reg;
    }
    if (!reg)
        return;
    struct endpoint_state **cur = calloc(total + 1, sizeof *cur);
    if (!cur)
        return; /* draining deadlines are best effort */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < arr[i].n; j++)
            cur[k++] = arr[i].eps[j];
    qsort(cur, total, sizeof *cur, cmp_ptr);
    uint64_t now = sy_now_ms();
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n; i++) {
        struct endpoint_state *e = reg->v[i];
        bool in = bsearch(&e, cur, total, sizeof *cur, cmp_ptr) != NULL;
        uint64_t was = __atomic_load_n(&e->retired_at_ms, __ATOMIC_RELAXED);
        if (in)
            __atomic_store_n(&e->retired_at_ms, 0, __ATOMIC_RELAXED);
        else if (was == 0)
            __atomic_store_n(&e->retired_at_ms, now ? now : 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&reg->lock);
    free(cur);
}

/* ---- services (main thread)
 * ------------------------------------------------------------------------ */

static bool hash_policy(enum cfg_lb_policy p)
{
    return p == CFG_LB_RING_HASH || p == CFG_LB_MAGLEV;
}

/* Selection tables of one service: the alias table, the policy's, the affinity ring. */
static int service_build(struct service_rt *s)
{
    const struct cfg_backend_service *c = s->cfg;
    if (s->n == 0)
        return 0; /* a DNS name with no address (yet): backend_pick finds nothing */
    s->lb = lb_ops_for(c->locality_lb_policy);
    if (affinity_build(s) != 0 || lb_alias_build(&s->alias, s->ep, s->n) != 0 ||
        s->lb->build(s) != 0)
        return SY_ENOMEM;
    /* Affinity keys under ROUND_ROBIN / LEAST_REQUEST / RANDOM go through a ring. */
    if (c->session_affinity != CFG_AFFINITY_NONE && !hash_policy(c->locality_lb_policy))
        return lb_ring_build(&s->ring, s->ep, s->n, c->consistent_hash.minimum_ring_size);
    return 0;
}

static bool listed(const struct cfg_endpoint *v, size_t n, const char *text)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].address.text, text))
            return true;
    return false;
}

/* An endpoint for one resolved address of `ep` (address text allocated). */
static int resolved_endpoint(struct cfg_endpoint *out, const struct cfg_endpoint *ep,
                             const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 8];
    bool v6 = ss->ss_family == AF_INET6;
    const void *src = v6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                         : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (!inet_ntop(ss->ss_family, src, ip, sizeof ip))
        return SY_EINVAL;
    snprintf(text, sizeof text, v6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)ep->port);
    *out = (struct cfg_endpoint){
        .address = {.text = strdup(text),
                    .ss = *ss,
                    .len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)},
        .weight = ep->weight,
        .mark = ep->mark,
        .port = ep->port,
        .origin = ep->address.text,
    };
    return out->address.text ? 0 : SY_ENOMEM;
}

/*
 * s->ep and s->n: the configured endpoints, or under discovery: DNS each
 * name replaced by its current addresses (an address listed twice counts
 * once, its first time).
 */
static int service_endpoints(struct service_rt *s, const struct discovery *disc)
{
    const struct cfg_backend_service *c = s->cfg;
    if (c->discovery != CFG_DISCOVERY_DNS) {
        s->ep = c->endpoints;
        s->n = c->n_endpoints;
        return 0;
    }
    size_t total = 0;
    const struct sockaddr_storage *addrs;
    for (size_t j = 0; j < c->n_endpoints; j++)
        total +=
            c->endpoints[j].dns_name ? discovery_addresses(disc, c, &c->endpoints[j], &addrs) : 1;
    struct cfg_endpoint *v = calloc(total + 1, sizeof *v);
    if (!v)
        return SY_ENOMEM;
    s->ep = s->ep_owned = v;
    for (size_t j = 0; j < c->n_endpoints; j++) {
        const struct cfg_endpoint *ep = &c->endpoints[j];
        if (!ep->dns_name) {
            if (!listed(v, s->n, ep->address.text))
                v[s->n++] = *ep;
            continue;
        }
        size_t n = discovery_addresses(disc, c, ep, &addrs);
        for (size_t k = 0; k < n; k++) {
            struct cfg_endpoint e;
            int rc = resolved_endpoint(&e, ep, &addrs[k]);
            if (rc == SY_EINVAL)
                continue;
            if (rc)
                return rc;
            if (listed(v, s->n, e.address.text))
                free(e.address.text);
            else
                v[s->n++] = e;
            s->n_owned = s->n;
        }
    }
    return 0;
}

static void service_endpoints_free(struct service_rt *s)
{
    for (size_t j = 0; j < s->n_owned; j++)
        if (s->ep_owned[j].origin)
            free(s->ep_owned[j].address.text);
    free(s->ep_owned);
}

struct service_rt *backend_services_new(struct backend_registry *reg, const struct config *cfg,
                                        const struct discovery *disc)
{
    struct service_rt *arr = calloc(cfg->n_backend_services + 1, sizeof *arr);
    if (!arr)
        return NULL;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        struct service_rt *s = &arr[i];
        s->cfg = &cfg->backend_services[i];
        s->reg = reg;
        int rc = service_endpoints(s, disc);
        size_t n = s->n;
        s->n = 0; /* from here: the endpoint states taken */
        if (rc != 0)
            goto fail;
        s->eps = calloc(n + 1, sizeof *s->eps);
        s->waiters = waiters_get(reg, s->cfg->name);
        if (!s->eps || !s->waiters)
            goto fail;
        for (size_t j = 0; j < n; j++) {
            s->eps[j] = registry_get(reg, s->cfg->name, s->ep[j].address.text);
            if (!s->eps[j])
                goto fail;
            s->n = j + 1;
        }
        if (service_build(s) != 0)
            goto fail;
    }
    return arr;
fail:
    backend_services_free(arr, cfg->n_backend_services);
    return NULL;
}

void backend_services_free(struct service_rt *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++) {
        struct service_rt *s = &arr[i];
        for (size_t j = 0; j < s->n; j++)
            registry_put(s->reg, s->eps[j]);
        waiters_put(s->reg, s->waiters);
        if (s->lb)
            s->lb->destroy(s);
        lb_alias_free(&s->alias);
        lb_ring_free(&s->ring);
        free(s->ep_ids);
        free(s->eps);
        service_endpoints_free(s);
    }
    free(arr);
}

struct service_rt *backend_service_at(struct service_rt *arr, size_t i)
{
    return &arr[i];
}

struct endpoint_state *backend_endpoint(const struct service_rt *s, size_t i)
{
    return s->eps[i];
}

const struct cfg_endpoint *backend_endpoint_cfg(const struct service_rt *s, size_t i)
{
    return &s->ep[i];
}

size_t backend_endpoint_count(const struct service_rt *s)
{
    return s->n;
}

/* ---- selection (any worker)
 * ----------------------------------------------------------------------- */

static bool tried(const struct pick_ctx *ctx, size_t i)
{
    return i < BACKEND_MAX_TRIED && (ctx->tried[i / 64] >> (i % 64)) & 1;
}

/* Healthy, not ejected, and with a weight: may get traffic at all. */
static bool usable(const struct service_rt *s, size_t i, uint64_t now)
{
    const struct endpoint_state *e = s->eps[i];
    return s->ep[i].weight > 0 && __atomic_load_n(&e->healthy, __ATOMIC_RELAXED) &&
           __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED) <= now;
}

bool lb_ok(const struct lb_filter *f, size_t i)
{
    const struct service_rt *s = f->s;
    if (!usable(s, i, f->now) || (!f->allow_tried && tried(f->ctx, i)))
        return false;
    uint32_t lim = s->cfg->max_concurrent_requests_per_endpoint;
    return lim == 0 || __atomic_load_n(&s->eps[i]->active, __ATOMIC_RELAXED) < lim;
}

static bool cookie_affinity(const struct cfg_backend_service *c)
{
    return c->session_affinity == CFG_AFFINITY_GENERATED_COOKIE ||
           c->session_affinity == CFG_AFFINITY_HTTP_COOKIE;
}

/* One pass of the choice under filter f; -1 when nothing passes it. */
static int choose(const struct lb_filter *f)
{
    const struct service_rt *s = f->s;
    if (f->ctx->has_hash) {
        if (cookie_affinity(s->cfg)) {
            int id = affinity_endpoint_of_id(s, f->ctx->hash);
            if (id >= 0 && lb_ok(f, (size_t)id))
                return id;
        }
        if (s->ring.n && !hash_policy(s->cfg->locality_lb_policy))
            return lb_ring_lookup(&s->ring, f, f->ctx->hash);
    }
    return s->lb->pick(f);
}

/* Count one more exchange on endpoint idx unless it reached its limit meanwhile. */
static bool acquire(struct service_rt *s, size_t idx)
{
    struct endpoint_state *e = s->eps[idx];
    uint32_t lim = s->cfg->max_concurrent_requests_per_endpoint;
    if (lim == 0) {
        __atomic_add_fetch(&e->active, 1, __ATOMIC_RELAXED);
        return true;
    }
    unsigned v = __atomic_load_n(&e->active, __ATOMIC_RELAXED);
    while (v < lim)
        if (__atomic_compare_exchange_n(&e->active, &v, v + 1, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return true;
    return false;
}

/*
 * Add n to one of e's counters (its offset in struct endpoint_counters):
 * worker w's own copy with a plain load and store, or, without a worker,
 * the shared copy with an atomic add.
 */
static void counter_add(struct endpoint_state *e, const struct worker *w, size_t off, uint64_t n)
{
    unsigned i = w ? (unsigned)w->id + 1 : 0;
    if (i >= e->n_counters)
        i = 0;
    uint64_t *c = (uint64_t *)((char *)&e->counters[i] + off);
    if (i)
        stats_inc(c, n);
    else
        __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

int backend_pick_at(struct service_rt *s, const struct pick_ctx *ctx, uint64_t now, uint64_t rnd)
{
    if (s->n == 0)
        return SY_ENOTFOUND;
    /* A few rounds: another worker may take an endpoint's last slot between
     * the filter and acquire(). */
    for (int round = 0; round < 4; round++) {
        struct lb_filter f = {.s = s, .ctx = ctx, .now = now, .rnd = rnd};
        int idx = choose(&f);
        if (idx < 0) {
            f.allow_tried = true;
            idx = choose(&f);
        }
        if (idx < 0)
            break;
        if (acquire(s, (size_t)idx)) {
            counter_add(s->eps[idx], ctx->w, offsetof(struct endpoint_counters, requests_total), 1);
            return idx;
        }
        rnd = mix64(rnd + 1);
    }
    for (size_t i = 0; i < s->n; i++)
        if (usable(s, i, now))
            return SY_ELIMIT; /* usable ones exist: all at max_concurrent_requests_per_endpoint */
    return SY_ENOTFOUND;
}

int backend_pick(struct service_rt *s, const struct pick_ctx *ctx)
{
    uint64_t now_us = sy_now_us();
    uint64_t rnd = ctx->w ? worker_rand(ctx->w) : mix64(now_us ^ (uintptr_t)ctx);
    return backend_pick_at(s, ctx, now_us / 1000, rnd);
}

void backend_release_at(struct service_rt *s, int idx, enum attempt_outcome outcome, uint64_t now,
                        uint64_t rnd)
{
    if (idx < 0 || (size_t)idx >= s->n)
        return;
    __atomic_sub_fetch(&s->eps[idx]->active, 1, __ATOMIC_RELAXED);
    outlier_on_result(s, (size_t)idx, outcome, now, rnd);
}

void backend_release(struct service_rt *s, int idx, enum attempt_outcome outcome)
{
    uint64_t now_us = sy_now_us();
    /* No worker here: enforcement draws come from a hash of the clock and counters. */
    uint64_t rnd = mix64(now_us ^ ((uint64_t)(unsigned)idx << 48) ^
                         (idx >= 0 && (size_t)idx < s->n
                              ? __atomic_load_n(&s->eps[idx]->active, __ATOMIC_RELAXED)
                              : 0));
    /* The coarse clock, as everything that reads the ejection end compares
     * with it (the fine one runs up to a tick ahead: an ejection would
     * look up to 4 ms longer than configured). */
    backend_release_at(s, idx, outcome, sy_now_ms(), rnd);
}

/* ---- waiting for capacity (any worker) ------------------------------------------------------- */

void backend_capacity_wait_enter(struct service_rt *s, int worker_id)
{
    struct capacity_waiters *cw = s->waiters;
    if (!cw)
        return;
    __atomic_add_fetch(&cw->by_slot[(unsigned)worker_id % CAPACITY_WAKE_SLOTS], 1,
                       __ATOMIC_RELAXED);
    __atomic_add_fetch(&cw->total, 1, __ATOMIC_RELAXED);
    /* Our count before the caller's next look at the endpoints' active
     * counts (backend.h: the releaser fences between its two steps too). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void backend_capacity_wait_leave(struct service_rt *s, int worker_id)
{
    struct capacity_waiters *cw = s->waiters;
    if (!cw)
        return;
    __atomic_sub_fetch(&cw->total, 1, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&cw->by_slot[(unsigned)worker_id % CAPACITY_WAKE_SLOTS], 1,
                       __ATOMIC_RELAXED);
}

uint64_t backend_capacity_waiters(const struct service_rt *s)
{
    const struct capacity_waiters *cw = s->waiters;
    if (!cw)
        return 0;
    /* The release (an active count going down) before our look at the waiters. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&cw->total, __ATOMIC_RELAXED) == 0)
        return 0;
    uint64_t mask = 0;
    for (unsigned i = 0; i < CAPACITY_WAKE_SLOTS; i++)
        if (__atomic_load_n(&cw->by_slot[i], __ATOMIC_RELAXED))
            mask |= 1ull << i;
    return mask;
}

/* ---- introspection and draining -------------------------------------------------------------- */

enum endpoint_health backend_endpoint_health(const struct endpoint_state *e)
{
    if (!__atomic_load_n(&e->healthy, __ATOMIC_RELAXED))
        return ENDPOINT_HEALTH_UNHEALTHY;
    return __atomic_load_n(&e->health_known, __ATOMIC_RELAXED) ? ENDPOINT_HEALTH_HEALTHY
                                                               : ENDPOINT_HEALTH_UNKNOWN;
}

const char *endpoint_health_str(enum endpoint_health h)
{
    switch (h) {
    case ENDPOINT_HEALTH_HEALTHY: return "healthy";
    case ENDPOINT_HEALTH_UNHEALTHY: return "unhealthy";
    case ENDPOINT_HEALTH_UNKNOWN: break;
    }
    return "unknown";
}

void backend_endpoint_stats(const struct endpoint_state *e, struct endpoint_stats *out)
{
    *out = (struct endpoint_stats){0};
    for (unsigned i = 0; i < e->n_counters; i++) {
        const struct endpoint_counters *c = &e->counters[i];
        out->requests += __atomic_load_n(&c->requests_total, __ATOMIC_RELAXED);
        out->responses_5xx += __atomic_load_n(&c->responses_5xx, __ATOMIC_RELAXED);
        out->failures += __atomic_load_n(&c->failures, __ATOMIC_RELAXED);
        for (size_t b = 0; b <= STATS_N_BUCKETS; b++)
            out->latency_bucket[b] += __atomic_load_n(&c->latency_bucket[b], __ATOMIC_RELAXED);
        out->latency_us_sum += __atomic_load_n(&c->latency_us_sum, __ATOMIC_RELAXED);
    }
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++)
        out->latency_count += out->latency_bucket[b];
    out->health_transitions = __atomic_load_n(&e->health_transitions, __ATOMIC_RELAXED);
    out->ejections = __atomic_load_n(&e->ejections_total, __ATOMIC_RELAXED);
}

uint64_t backend_endpoint_requests(const struct endpoint_state *e)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < e->n_counters; i++)
        n += __atomic_load_n(&e->counters[i].requests_total, __ATOMIC_RELAXED);
    return n;
}

void backend_endpoint_observe(struct endpoint_state *e, const struct worker *w, int status,
                              uint64_t upstream_us)
{
    if (status == 0)
        counter_add(e, w, offsetof(struct endpoint_counters, failures), 1);
    else if (status >= 500)
        counter_add(e, w, offsetof(struct endpoint_counters, responses_5xx), 1);
    counter_add(e, w,
                offsetof(struct endpoint_counters, latency_bucket) +
                    stats_bucket_of(upstream_us) * sizeof(uint64_t),
                1);
    counter_add(e, w, offsetof(struct endpoint_counters, latency_us_sum), upstream_us);
}

bool backend_endpoint_ejected(const struct endpoint_state *e, uint64_t now_ms)
{
    return __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED) > now_ms;
}

uint64_t backend_endpoint_drain_deadline_ms(const struct service_rt *s, int idx)
{
    if (idx < 0 || (size_t)idx >= s->n || s->cfg->draining_timeout_ms == 0)
        return 0;
    uint64_t at = __atomic_load_n(&s->eps[idx]->retired_at_ms, __ATOMIC_RELAXED);
    return at ? at + s->cfg->draining_timeout_ms : 0;
}
