/* runtime.c — see runtime.h. */
#include "runtime.h"

#include <stdlib.h>

#include "backend/backend.h"
#include "config/config.h"
#include "core/stats.h"
#include "urlmap/urlmap.h"

struct runtime *runtime_new(struct config *cfg, struct backend_registry *reg, struct stats *st,
                            const struct discovery *disc)
{
    struct runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->refcount = 1;
    rt->cfg = config_ref(cfg);
    rt->url_maps = calloc(cfg->n_url_maps + 1, sizeof *rt->url_maps);
    rt->services = backend_services_new(reg, cfg, disc);
    rt->stats = st;
    rt->service_stats = calloc(cfg->n_backend_services + 1, sizeof *rt->service_stats);
    if (!rt->url_maps || !rt->services || !rt->service_stats)
        goto fail;
    for (size_t i = 0; i < cfg->n_backend_services; i++)
        if (!(rt->service_stats[i] = stats_service(st, cfg->backend_services[i].name)))
            goto fail;
    for (size_t i = 0; i < cfg->n_url_maps; i++) {
        rt->url_maps[i] = url_map_compile(&cfg->url_maps[i]);
        if (!rt->url_maps[i])
            goto fail;
    }
    return rt;
fail:
    runtime_unref(rt);
    return NULL;
}

struct runtime *runtime_ref(struct runtime *rt)
{
    __atomic_add_fetch(&rt->refcount, 1, __ATOMIC_RELAXED);
    return rt;
}

void runtime_unref(struct runtime *rt)
{
    if (!rt || __atomic_sub_fetch(&rt->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (rt->url_maps)
        for (size_t i = 0; i < rt->cfg->n_url_maps; i++)
            url_map_free(rt->url_maps[i]);
    free(rt->url_maps);
    if (rt->services)
        backend_services_free(rt->services, rt->cfg->n_backend_services);
    free(rt->service_stats);
    config_unref(rt->cfg);
    free(rt);
}

const struct url_map *runtime_url_map(const struct runtime *rt, const struct cfg_url_map *um)
{
    return rt->url_maps[um - rt->cfg->url_maps];
}

struct service_rt *runtime_service(const struct runtime *rt, const struct cfg_backend_service *s)
{
    return backend_service_at(rt->services, (size_t)(s - rt->cfg->backend_services));
}

struct stats_service *runtime_service_stats(const struct runtime *rt,
                                            const struct cfg_backend_service *s)
{
    return rt->service_stats[s - rt->cfg->backend_services];
}

struct rt_hold *rt_hold_new(struct runtime *rt)
{
    struct rt_hold *h = calloc(1, sizeof *h);
    if (h)
        h->rt = rt;
    return h;
}

struct runtime *rt_hold_get(struct rt_hold *h)
{
    h->refs++;
    return h->rt;
}

static void rt_hold_free(struct rt_hold *h)
{
    runtime_unref(h->rt);
    free(h);
}

void rt_hold_put(struct rt_hold *h)
{
    if (--h->refs == 0 && h->retired)
        rt_hold_free(h);
}

void rt_hold_retire(struct rt_hold *h)
{
    if (!h)
        return;
    h->retired = true;
    if (h->refs == 0)
        rt_hold_free(h);
}
