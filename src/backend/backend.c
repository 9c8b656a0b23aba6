/*
 * backend.c — backend services at run time (see backend.h): the endpoint
 * registry shared across reloads, and endpoint selection.
 */
#include "backend/backend.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/worker.h"

struct backend_registry {
    pthread_mutex_t lock; /* registry membership only; never on the request path */
    struct endpoint_state **v;
    size_t n, cap;
};

struct service_rt {
    const struct cfg_backend_service *cfg;
    struct backend_registry *reg;
    struct endpoint_state **eps; /* parallel to cfg->endpoints */
    unsigned rr_next;            /* atomic round-robin cursor */
};

struct backend_registry *backend_registry_new(void)
{
    struct backend_registry *reg = calloc(1, sizeof *reg);
    if (reg)
        pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void endpoint_free(struct endpoint_state *e)
{
    free(e->service);
    free(e->address);
    free(e);
}

void backend_registry_free(struct backend_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++)
        endpoint_free(reg->v[i]);
    free(reg->v);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

/* Find or add the entry for (service, address); takes a reference. */
static struct endpoint_state *registry_get(struct backend_registry *reg, const char *service,
                                           const char *address)
{
    struct endpoint_state *e = NULL;
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n && !e; i++)
        if (strcmp(reg->v[i]->service, service) == 0 && strcmp(reg->v[i]->address, address) == 0)
            e = reg->v[i];
    if (!e && reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 16;
        struct endpoint_state **v = realloc(reg->v, cap * sizeof *v);
        if (!v)
            goto out;
        reg->v = v;
        reg->cap = cap;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->service = strdup(service)) || !(e->address = strdup(address))) {
            if (e)
                endpoint_free(e);
            e = NULL;
            goto out;
        }
        e->healthy = 1; /* until a health check says otherwise */
        reg->v[reg->n++] = e;
    }
    __atomic_add_fetch(&e->refcount, 1, __ATOMIC_RELAXED);
out:
    pthread_mutex_unlock(&reg->lock);
    return e;
}

/* Drop a reference; an entry no runtime uses any more leaves the registry. */
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

struct service_rt *backend_services_new(struct backend_registry *reg, const struct config *cfg)
{
    struct service_rt *arr = calloc(cfg->n_backend_services + 1, sizeof *arr);
    if (!arr)
        return NULL;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        struct service_rt *s = &arr[i];
        s->cfg = &cfg->backend_services[i];
        s->reg = reg;
        s->eps = calloc(s->cfg->n_endpoints + 1, sizeof *s->eps);
        if (!s->eps)
            goto fail;
        for (size_t j = 0; j < s->cfg->n_endpoints; j++) {
            s->eps[j] = registry_get(reg, s->cfg->name, s->cfg->endpoints[j].address.text);
            if (!s->eps[j])
                goto fail;
        }
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
        for (size_t j = 0; s->eps && j < s->cfg->n_endpoints; j++)
            if (s->eps[j])
                registry_put(s->reg, s->eps[j]);
        free(s->eps);
    }
    free(arr);
}

struct service_rt *backend_service_at(struct service_rt *arr, size_t i) { return &arr[i]; }

struct endpoint_state *backend_endpoint(const struct service_rt *s, size_t i) { return s->eps[i]; }

static bool tried(const struct pick_ctx *ctx, size_t i)
{
    return i < BACKEND_MAX_TRIED && (ctx->tried[i / 64] >> (i % 64)) & 1;
}

static bool usable(const struct endpoint_state *e, uint64_t now)
{
    return __atomic_load_n(&e->healthy, __ATOMIC_RELAXED) &&
           __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED) <= now;
}

/* Round robin over usable endpoints, preferring ones not tried yet. */
int backend_pick(struct service_rt *s, const struct pick_ctx *ctx)
{
    size_t n = s->cfg->n_endpoints;
    if (n == 0)
        return SY_ENOTFOUND;
    uint64_t now = sy_now_ms();
    unsigned start = __atomic_fetch_add(&s->rr_next, 1, __ATOMIC_RELAXED);
    int fallback = -1;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (!usable(s->eps[i], now))
            continue;
        if (!tried(ctx, i)) {
            __atomic_add_fetch(&s->eps[i]->active, 1, __ATOMIC_RELAXED);
            return (int)i;
        }
        if (fallback < 0)
            fallback = (int)i;
    }
    if (fallback < 0)
        return SY_ENOTFOUND;
    __atomic_add_fetch(&s->eps[fallback]->active, 1, __ATOMIC_RELAXED);
    return fallback;
}

void backend_release(struct service_rt *s, int idx, enum attempt_outcome outcome)
{
    struct endpoint_state *e = s->eps[idx];
    __atomic_sub_fetch(&e->active, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&e->requests_total, 1, __ATOMIC_RELAXED);
}

bool backend_request_hash(const struct service_rt *s, const struct exchange *ex, uint64_t *hash)
{
    return false;
}

int backend_affinity_cookie(const struct service_rt *s, const struct exchange *ex, int idx,
                            char *out, size_t cap)
{
    return 0;
}

bool backend_cb_request_enter(struct service_rt *s) { return true; }
void backend_cb_request_leave(struct service_rt *s) {}
bool backend_cb_retry_enter(struct service_rt *s) { return true; }
void backend_cb_retry_leave(struct service_rt *s) {}
bool backend_cb_pending_enter(struct service_rt *s) { return true; }
void backend_cb_pending_leave(struct service_rt *s) {}
