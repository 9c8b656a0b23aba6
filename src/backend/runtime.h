/*
 * runtime.h — a config snapshot plus what is compiled from it for serving:
 * url map matchers and per-backend-service selection state. Built on the
 * main thread, shared by reference with workers and exchanges (an exchange
 * keeps the runtime it started with, so a reload never changes it mid-way).
 */
#ifndef SY_RUNTIME_H
#define SY_RUNTIME_H

#include "config/config-t.h"

struct url_map;
struct service_rt;
struct backend_registry;
struct stats;
struct stats_service;

struct runtime {
    int refcount; /* atomic */
    struct config *cfg;
    struct url_map **url_maps;   /* parallel to cfg->url_maps */
    struct service_rt *services; /* parallel to cfg->backend_services (backend.h) */
    struct stats *stats;                 /* process counters (not owned) */
    struct stats_service **service_stats; /* parallel to cfg->backend_services */
};

/*
 * Build a runtime for `cfg` (takes a reference), with endpoint state from
 * `reg`. NULL on allocation failure.
 */
struct runtime *runtime_new(struct config *cfg, struct backend_registry *reg, struct stats *st);
struct runtime *runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);

/* The compiled matcher of one of cfg's url maps. */
const struct url_map *runtime_url_map(const struct runtime *rt, const struct cfg_url_map *um);
struct service_rt *runtime_service(const struct runtime *rt, const struct cfg_backend_service *s);
struct stats_service *runtime_service_stats(const struct runtime *rt,
                                            const struct cfg_backend_service *s);

#endif
