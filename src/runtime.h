/*
 * runtime.h — a config snapshot plus what is compiled from it for serving:
 * url map matchers and per-backend-service selection state. Built on the
 * main thread, shared by reference with workers and exchanges (an exchange
 * keeps the runtime it started with, so a reload never changes it mid-way).
 */
#ifndef SY_RUNTIME_H
#define SY_RUNTIME_H

#include <stdbool.h>

#include "config/config-t.h"

struct url_map;
struct service_rt;
struct backend_registry;
struct discovery;
struct stats;
struct stats_service;
struct stats_route;

/*
 * A route action, named for the access log (`route`) and, when it has a
 * request_mirror_policy (exchange/mirror.h), for /metrics and GET /shadow:
 * "URL_MAP/PATH_MATCHER/priority:N" (a route
 * rule), "URL_MAP/PATH_MATCHER/path:FIRST_PATH" (a path rule),
 * "URL_MAP/PATH_MATCHER/default" and "URL_MAP/default" (default actions).
 * Bytes other than printable ASCII, `"` and `\` become `_`.
 */
struct runtime_route {
    const struct cfg_route_action *action;
    struct stats_route *stats; /* mirrored routes: its counters (stats->name == name); else NULL */
    char *name;                /* owned */
};

struct runtime {
    int refcount; /* atomic */
    struct config *cfg;
    struct url_map **url_maps;            /* parallel to cfg->url_maps */
    struct service_rt *services;          /* parallel to cfg->backend_services (backend.h) */
    struct stats *stats;                  /* process counters (not owned) */
    struct stats_service **service_stats; /* parallel to cfg->backend_services */
    struct runtime_route *routes;         /* every route action, sorted by action address */
    size_t n_routes;
    /*
     * Listener slots (listener.h): cfg->listeners[i] is slot listener_slots[i],
     * which is also its index in stats->listeners; slot_listeners[s] is the
     * reverse (-1: not in this config), for s < n_slots. Set by
     * listener_set_prepare() before the runtime is published; NULL (tools):
     * the identity.
     */
    int *listener_slots;
    int *slot_listeners;
    size_t n_slots;
};

/*
 * Build a runtime for `cfg` (takes a reference), with endpoint state from
 * `reg` and the addresses `disc` has now for discovery: DNS names (NULL:
 * none). NULL on allocation failure.
 */
struct runtime *runtime_new(struct config *cfg, struct backend_registry *reg, struct stats *st,
                            const struct discovery *disc);
struct runtime *runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);

/*
 * A worker's local claim on a runtime. The worker owns one atomic reference
 * through the hold; its exchanges count on the hold without atomics (all on
 * the same thread). When a reload replaces the worker's runtime the old hold
 * is retired and lets its reference go with its last exchange.
 */
struct rt_hold {
    struct runtime *rt;
    unsigned refs; /* exchanges holding it (worker thread only) */
    bool retired;  /* the worker moved on to a newer runtime */
};

/* A hold owning `rt` (the caller's reference moves into it); NULL on ENOMEM. */
struct rt_hold *rt_hold_new(struct runtime *rt);
/* An exchange starts on this runtime. */
struct runtime *rt_hold_get(struct rt_hold *h);
/* An exchange ended; frees a retired hold with its last exchange. */
void rt_hold_put(struct rt_hold *h);
/* The worker lets go of the hold (reload or shutdown). */
void rt_hold_retire(struct rt_hold *h);

/*
 * Give `dst` the listener slot maps of `src` (a runtime of the same config:
 * a DNS answer's new runtime). 0, or -1 when out of memory.
 */
int runtime_copy_listener_slots(struct runtime *dst, const struct runtime *src);
/* The slot (and stats index) of one of cfg's listeners. */
int runtime_listener_slot(const struct runtime *rt, const struct cfg_listener *l);

/* The compiled matcher of one of cfg's url maps. */
const struct url_map *runtime_url_map(const struct runtime *rt, const struct cfg_url_map *um);
struct service_rt *runtime_service(const struct runtime *rt, const struct cfg_backend_service *s);
struct stats_service *runtime_service_stats(const struct runtime *rt,
                                            const struct cfg_backend_service *s);
/* The entry of one of the config's route actions (NULL: not one of them). */
const struct runtime_route *runtime_route(const struct runtime *rt,
                                          const struct cfg_route_action *a);

#endif
