/* runtime.c — see runtime.h. */
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "config/config.h"
#include "core/stats.h"
#include "urlmap/urlmap.h"

/* ---- routes ---------------------------------------------------------------------------- */

/* Name the route of action `a` (see runtime.h) and add it; counters when it has a mirror policy. */
static int add_route(struct runtime *rt, struct stats *st, const struct cfg_route_action *a,
                     const char *um, const char *pm, const char *rule)
{
    char name[256];
    snprintf(name, sizeof name, "%s/%s%s%s", um, pm ? pm : "", pm ? "/" : "", rule);
    for (char *c = name; *c; c++)
        if (*c < 0x21 || *c > 0x7e || *c == '"' || *c == '\\')
            *c = '_';
    struct stats_route *sr = NULL;
    if (a->request_mirror_policy && !(sr = stats_route(st, name)))
        return -1;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    rt->routes[rt->n_routes++] = (struct runtime_route){.action = a, .stats = sr, .name = copy};
    return 0;
}

static int add_matcher_routes(struct runtime *rt, struct stats *st, const struct cfg_url_map *um,
                              const struct cfg_path_matcher *pm)
{
    char rule[128];
    int rc = add_route(rt, st, &pm->default_action, um->name, pm->name, "default");
    for (size_t k = 0; rc == 0 && k < pm->n_route_rules; k++) {
        snprintf(rule, sizeof rule, "priority:%lld", (long long)pm->route_rules[k].priority);
        rc = add_route(rt, st, &pm->route_rules[k].action, um->name, pm->name, rule);
    }
    for (size_t k = 0; rc == 0 && k < pm->n_path_rules; k++) {
        const struct cfg_path_rule *pr = &pm->path_rules[k];
        snprintf(rule, sizeof rule, "path:%s", pr->n_paths ? pr->paths[0] : "");
        rc = add_route(rt, st, &pr->action, um->name, pm->name, rule);
    }
    return rc;
}

static int cmp_route(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct runtime_route *)a)->action;
    uintptr_t y = (uintptr_t)((const struct runtime_route *)b)->action;
    return x < y ? -1 : x > y;
}

/* Every route action of the config with a request_mirror_policy, sorted by address. */
static int build_routes(struct runtime *rt, struct stats *st)
{
    const struct config *cfg = rt->cfg;
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_url_maps; i++) {
        const struct cfg_url_map *um = &cfg->url_maps[i];
        n++;
        for (size_t j = 0; j < um->n_path_matchers; j++)
            n += 1 + um->path_matchers[j].n_route_rules + um->path_matchers[j].n_path_rules;
    }
    rt->routes = calloc(n + 1, sizeof *rt->routes);
    if (!rt->routes)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < cfg->n_url_maps; i++) {
        const struct cfg_url_map *um = &cfg->url_maps[i];
        rc = add_route(rt, st, &um->default_action, um->name, NULL, "default");
        for (size_t j = 0; rc == 0 && j < um->n_path_matchers; j++)
            rc = add_matcher_routes(rt, st, um, &um->path_matchers[j]);
    }
    qsort(rt->routes, rt->n_routes, sizeof *rt->routes, cmp_route);
    return rc;
}

const struct runtime_route *runtime_route(const struct runtime *rt,
                                          const struct cfg_route_action *a)
{
    struct runtime_route key = {.action = a};
    return bsearch(&key, rt->routes, rt->n_routes, sizeof key, cmp_route);
}

/* ---- runtime ------------------------------------------------------------------------ */

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
    if (build_routes(rt, st) != 0)
        goto fail;
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
    for (size_t i = 0; rt->routes && i < rt->n_routes; i++)
        free(rt->routes[i].name);
    free(rt->routes);
    free(rt->listener_slots);
    free(rt->slot_listeners);
    config_unref(rt->cfg);
    free(rt);
}

int runtime_copy_listener_slots(struct runtime *dst, const struct runtime *src)
{
    size_t n = dst->cfg->n_listeners;
    if (!src->listener_slots)
        return 0;
    dst->listener_slots = malloc((n + 1) * sizeof *dst->listener_slots);
    dst->slot_listeners = malloc((src->n_slots + 1) * sizeof *dst->slot_listeners);
    if (!dst->listener_slots || !dst->slot_listeners)
        return -1; /* runtime_unref frees them */
    memcpy(dst->listener_slots, src->listener_slots, n * sizeof *dst->listener_slots);
    memcpy(dst->slot_listeners, src->slot_listeners, src->n_slots * sizeof *dst->slot_listeners);
    dst->n_slots = src->n_slots;
    return 0;
}

int runtime_listener_slot(const struct runtime *rt, const struct cfg_listener *l)
{
    size_t i = (size_t)(l - rt->cfg->listeners);
    return rt->listener_slots ? rt->listener_slots[i] : (int)i;
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
