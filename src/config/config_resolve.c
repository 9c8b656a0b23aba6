/*
 * config_resolve.c — the cross-reference pass: unique names, by-name
 * references (listener → url_map, routes → backend_services, host_rules →
 * path_matchers, backend_services → health_checks), then the final touches
 * of a valid snapshot (route rules sorted by priority, path matchers without
 * a default inheriting their url_map's).
 */
#include <stdlib.h>
#include <string.h>

#include "config/config_loader.h"

int ynode_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
              enum cfg_ref_kind kind, char **name, void *slot, const struct cfg_url_map *scope)
{
    if (ynode_name(ld, at, n, name) != 0)
        return -1;
    cfg_add_ref(ld, at, n, kind, *name, slot, scope);
    return 0;
}

int yget_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             enum cfg_ref_kind kind, char **name, void *slot, const struct cfg_url_map *scope)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_ref(ld, &sub, v, kind, name, slot, scope) == 0 ? 1 : -1;
}

void cfg_check_unique(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq,
                      char *const *names, size_t n, const char *what)
{
    for (size_t i = 1; i < n; i++) {
        if (!names[i])
            continue;
        for (size_t j = 0; j < i; j++) {
            if (!names[j] || strcmp(names[i], names[j]) != 0)
                continue;
            yaml_node_t *vi = yfind(ld, yseq_item(ld, seq, i), "name");
            yaml_node_t *vj = yfind(ld, yseq_item(ld, seq, j), "name");
            struct ypath item = {at, NULL, i}, nm = {&item, "name", 0};
            struct cfg_mark first = ymark(vj ? vj : yseq_item(ld, seq, j));
            cfg_error(ld, ymark(vi ? vi : yseq_item(ld, seq, i)), vi ? &nm : &item,
                      "duplicate %s name '%s' (first at %d:%d)", what, names[i], first.line,
                      first.col);
            break;
        }
    }
}

static bool resolve_one(struct cfg_loader *ld, const struct cfg_ref *r)
{
    const struct config *cfg = ld->cfg;

    switch (r->kind) {
    case CFG_REF_URL_MAP:
        for (size_t i = 0; i < cfg->n_url_maps; i++) {
            if (cfg->url_maps[i].name && strcmp(cfg->url_maps[i].name, r->name) == 0)
                return (*r->slot.url_map = &cfg->url_maps[i]) != NULL;
        }
        return false;
    case CFG_REF_BACKEND_SERVICE:
        *r->slot.backend_service = config_find_backend_service(cfg, r->name);
        return *r->slot.backend_service != NULL;
    case CFG_REF_HEALTH_CHECK:
        for (size_t i = 0; i < cfg->n_health_checks; i++) {
            if (cfg->health_checks[i].name && strcmp(cfg->health_checks[i].name, r->name) == 0)
                return (*r->slot.health_check = &cfg->health_checks[i]) != NULL;
        }
        return false;
    case CFG_REF_PATH_MATCHER:
        for (size_t i = 0; i < r->scope->n_path_matchers; i++) {
            struct cfg_path_matcher *pm = &r->scope->path_matchers[i];
            if (pm->name && strcmp(pm->name, r->name) == 0)
                return (*r->slot.path_matcher = pm) != NULL;
        }
        return false;
    }
    return false;
}

static void resolve_refs(struct cfg_loader *ld)
{
    for (size_t i = 0; i < ld->n_refs; i++) {
        const struct cfg_ref *r = &ld->refs[i];
        if (resolve_one(ld, r))
            continue;
        switch (r->kind) {
        case CFG_REF_URL_MAP:
            cfg_error_where(ld, r->mark, r->where, "unknown url_map '%s'", r->name);
            break;
        case CFG_REF_BACKEND_SERVICE:
            cfg_error_where(ld, r->mark, r->where, "unknown backend_service '%s'", r->name);
            break;
        case CFG_REF_HEALTH_CHECK:
            cfg_error_where(ld, r->mark, r->where, "unknown health_check '%s'", r->name);
            break;
        case CFG_REF_PATH_MATCHER:
            cfg_error_where(ld, r->mark, r->where, "unknown path_matcher '%s' in url_map '%s'",
                            r->name, r->scope->name ? r->scope->name : "");
            break;
        }
    }
}

static int route_rule_cmp(const void *a, const void *b)
{
    const struct cfg_route_rule *x = a, *y = b;

    return x->priority < y->priority ? -1 : (x->priority > y->priority);
}

static bool action_has_target(const struct cfg_route_action *a)
{
    return a->service_name || a->n_weighted_backend_services || a->url_redirect;
}

/*
 * A path matcher without a default target takes the url_map's: the whole
 * default action when it set nothing, else just the target (its own
 * default_route_action settings stay).
 */
static void inherit_target(struct cfg_route_action *to, const struct cfg_route_action *from)
{
    if (!to->url_rewrite.path_prefix_rewrite && !to->url_rewrite.host_rewrite && !to->timeout_set &&
        !to->retry_policy.set && !to->fault_set && !to->request_mirror_policy && !to->cors_policy) {
        *to = *from;
        return;
    }
    to->service = from->service;
    to->service_name = from->service_name;
    to->weighted_backend_services = from->weighted_backend_services;
    to->n_weighted_backend_services = from->n_weighted_backend_services;
    to->total_weight = from->total_weight;
    to->url_redirect = from->url_redirect;
}

/* Sorts route rules; gives default-less path matchers the url_map's default. */
static void finish_url_map(struct cfg_url_map *um)
{
    for (size_t i = 0; i < um->n_path_matchers; i++) {
        struct cfg_path_matcher *pm = &um->path_matchers[i];
        if (pm->n_route_rules > 1)
            qsort(pm->route_rules, pm->n_route_rules, sizeof(*pm->route_rules), route_rule_cmp);
        if (!action_has_target(&pm->default_action))
            inherit_target(&pm->default_action, &um->default_action);
    }
}

void cfg_resolve(struct cfg_loader *ld)
{
    resolve_refs(ld);
    free(ld->refs);
    ld->refs = NULL;
    ld->n_refs = ld->cap_refs = 0;
    if (ld->n_errs || ld->oom)
        return;
    for (size_t i = 0; i < ld->cfg->n_url_maps; i++)
        finish_url_map(&ld->cfg->url_maps[i]);
}
