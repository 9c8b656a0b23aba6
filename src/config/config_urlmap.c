/*
 * config_urlmap.c — url_maps: host_rules, path_matchers and their
 * path_rules / route_rules. Targets and actions are in config_action.c,
 * match rules in config_match.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "config/config_loader.h"

/* A path rule path starts with a slash, has a star only as a final "/" "*", no ? or #. */
static bool path_rule_path_ok(const char *p)
{
    const char *star = strchr(p, '*');
    size_t len = strlen(p);

    if (p[0] != '/' || strpbrk(p, "?#"))
        return false;
    return !star || (star == p + len - 1 && len >= 2 && p[len - 2] == '/');
}

/* Host names: lower-cased in place; '*' only as the first character. */
static bool host_ok(char *h)
{
    if (!*h)
        return false;
    for (char *p = h; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (*p == '*' && p != h)
            return false;
        if (!isalnum((unsigned char)*p) && !strchr("*-.:[]_", *p))
            return false;
    }
    return true;
}

static void parse_path_rule(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                            struct cfg_path_rule *pr)
{
    static const char *const keys[] = {"paths", "service", "route_action", "url_redirect", NULL};
    struct ypath psub = {at, "paths", 0};
    yaml_node_t *seq = yfind(ld, n, "paths");
    int rc;

    pr->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    rc = yget_str_list(ld, at, n, "paths", &pr->paths, &pr->n_paths);
    if (rc == 0 || (rc == 1 && pr->n_paths == 0))
        cfg_error(ld, ymark(rc ? seq : n), rc ? &psub : at, "%s",
                  rc ? "at least one path is required" : "missing required key 'paths'");
    for (size_t i = 0; i < pr->n_paths; i++) {
        struct ypath item = {&psub, NULL, i};
        if (!path_rule_path_ok(pr->paths[i]))
            cfg_error(ld, ymark(yseq_item(ld, seq, i)), &item,
                      "bad path '%s' (must start with '/'; '*' only as a final '/*')",
                      pr->paths[i]);
    }
    cfg_parse_target(ld, at, n, "service", "route_action", "url_redirect", true, &pr->action);
}

/* A path may appear in only one path rule of a matcher. */
static void check_unique_paths(struct cfg_loader *ld, const struct ypath *at,
                               const yaml_node_t *seq, const struct cfg_path_matcher *pm)
{
    for (size_t i = 0; i < pm->n_path_rules; i++) {
        for (size_t k = 0; k < pm->path_rules[i].n_paths; k++) {
            const char *p = pm->path_rules[i].paths[k];
            for (size_t j = 0; j <= i; j++) {
                const struct cfg_path_rule *o = &pm->path_rules[j];
                size_t lim = j == i ? k : o->n_paths;
                for (size_t m = 0; m < lim; m++) {
                    if (strcmp(o->paths[m], p) != 0)
                        continue;
                    struct ypath item = {at, NULL, i}, paths = {&item, "paths", 0};
                    struct ypath pi = {&paths, NULL, k};
                    yaml_node_t *v = yseq_item(ld, yfind(ld, yseq_item(ld, seq, i), "paths"), k);
                    cfg_error(ld, ymark(v), &pi, "duplicate path '%s'", p);
                    goto next;
                }
            }
        next:;
        }
    }
}

static void parse_path_rules(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq,
                             struct cfg_path_matcher *pm)
{
    size_t n = yseq_len(seq);

    pm->path_rules = cfg_calloc_array(ld, n, sizeof(*pm->path_rules));
    if (!pm->path_rules)
        return;
    pm->n_path_rules = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {at, NULL, i};
        parse_path_rule(ld, &item, yseq_item(ld, seq, i), &pm->path_rules[i]);
    }
    check_unique_paths(ld, at, seq, pm);
}

static void parse_route_rule(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                             struct cfg_route_rule *rr)
{
    static const char *const keys[] = {"priority",     "match_rules",   "service", "route_action",
                                       "url_redirect", "header_action", NULL};

    rr->mark = ymark(n);
    rr->priority = -1;
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_i64(ld, at, n, "priority", 0, 2147483647, &rr->priority) == 0)
        ymissing(ld, at, n, "priority");
    cfg_parse_match_rules(ld, at, n, rr);
    cfg_parse_target(ld, at, n, "service", "route_action", "url_redirect", true, &rr->action);
    cfg_parse_header_action(ld, at, n, &rr->header_action);
}

/* Priorities are unique within a matcher; the error names both rules. */
static void check_unique_priorities(struct cfg_loader *ld, const struct ypath *at,
                                    const yaml_node_t *seq, const struct cfg_path_matcher *pm)
{
    for (size_t i = 1; i < pm->n_route_rules; i++) {
        if (pm->route_rules[i].priority < 0)
            continue;
        for (size_t j = 0; j < i; j++) {
            if (pm->route_rules[j].priority != pm->route_rules[i].priority)
                continue;
            struct ypath item = {at, NULL, i};
            struct cfg_mark first = ymark(yfind(ld, yseq_item(ld, seq, j), "priority"));
            cfg_error(ld, ymark(yfind(ld, yseq_item(ld, seq, i), "priority")), &item,
                      "duplicate priority %lld (also used by route_rules[%zu] at %d:%d)",
                      (long long)pm->route_rules[i].priority, j, first.line, first.col);
            break;
        }
    }
}

static void parse_route_rules(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq,
                              struct cfg_path_matcher *pm)
{
    size_t n = yseq_len(seq);

    pm->route_rules = cfg_calloc_array(ld, n, sizeof(*pm->route_rules));
    if (!pm->route_rules)
        return;
    pm->n_route_rules = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {at, NULL, i};
        parse_route_rule(ld, &item, yseq_item(ld, seq, i), &pm->route_rules[i]);
    }
    check_unique_priorities(ld, at, seq, pm);
}

static void parse_path_matcher(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                               struct cfg_path_matcher *pm)
{
    static const char *const keys[] = {
        "name",          "default_service", "default_route_action", "default_url_redirect",
        "header_action", "path_rules",      "route_rules",          NULL};
    struct ypath psub = {at, "path_rules", 0}, rsub = {at, "route_rules", 0};
    yaml_node_t *paths, *routes;

    pm->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_name(ld, at, n, "name", &pm->name) == 0)
        ymissing(ld, at, n, "name");
    /* Without a default of its own, the url_map's default applies (resolve). */
    cfg_parse_target(ld, at, n, "default_service", "default_route_action", "default_url_redirect",
                     false, &pm->default_action);
    cfg_parse_header_action(ld, at, n, &pm->header_action);
    paths = ychild_seq(ld, &psub, n);
    routes = ychild_seq(ld, &rsub, n);
    if (paths && routes) {
        cfg_error(ld, ymark(yfind_key(ld, n, "route_rules")), at,
                  "path_rules and route_rules are exclusive (use one of them)");
        return;
    }
    if (paths)
        parse_path_rules(ld, &psub, paths, pm);
    if (routes)
        parse_route_rules(ld, &rsub, routes, pm);
}

static void parse_host_rule(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                            struct cfg_url_map *um, struct cfg_host_rule *hr)
{
    static const char *const keys[] = {"hosts", "path_matcher", NULL};
    struct ypath hsub = {at, "hosts", 0};
    yaml_node_t *seq = yfind(ld, n, "hosts");
    int rc;

    hr->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    rc = yget_str_list(ld, at, n, "hosts", &hr->hosts, &hr->n_hosts);
    if (rc == 0 || (rc == 1 && hr->n_hosts == 0))
        cfg_error(ld, ymark(rc ? seq : n), rc ? &hsub : at, "%s",
                  rc ? "at least one host is required" : "missing required key 'hosts'");
    for (size_t i = 0; i < hr->n_hosts; i++) {
        struct ypath item = {&hsub, NULL, i};
        if (!host_ok(hr->hosts[i]))
            cfg_error(ld, ymark(yseq_item(ld, seq, i)), &item,
                      "bad host '%s' ('*' only as the first character)", hr->hosts[i]);
    }
    if (yget_ref(ld, at, n, "path_matcher", CFG_REF_PATH_MATCHER, &hr->path_matcher_name,
                 &hr->path_matcher, um) == 0)
        ymissing(ld, at, n, "path_matcher");
}

/* A host may appear in only one host rule of a url_map (as GCP requires). */
static void check_unique_hosts(struct cfg_loader *ld, const struct ypath *at,
                               const yaml_node_t *seq, const struct cfg_url_map *um)
{
    for (size_t i = 0; i < um->n_host_rules; i++) {
        const struct cfg_host_rule *hr = &um->host_rules[i];
        for (size_t k = 0; k < hr->n_hosts; k++) {
            for (size_t j = 0; j <= i; j++) {
                const struct cfg_host_rule *o = &um->host_rules[j];
                size_t lim = j == i ? k : o->n_hosts, m;
                for (m = 0; m < lim && strcmp(o->hosts[m], hr->hosts[k]) != 0; m++)
                    ;
                if (m == lim)
                    continue;
                struct ypath item = {at, NULL, i}, hosts = {&item, "hosts", 0};
                struct ypath hi = {&hosts, NULL, k};
                cfg_error(ld, ymark(yseq_item(ld, yfind(ld, yseq_item(ld, seq, i), "hosts"), k)),
                          &hi, "host '%s' is already used by host_rules[%zu]", hr->hosts[k], j);
                break;
            }
        }
    }
}

static void parse_host_rules(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                             struct cfg_url_map *um)
{
    struct ypath sub = {at, "host_rules", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n);
    size_t len = yseq_len(seq);

    um->host_rules = cfg_calloc_array(ld, len, sizeof(*um->host_rules));
    if (!um->host_rules)
        return;
    um->n_host_rules = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        parse_host_rule(ld, &item, yseq_item(ld, seq, i), um, &um->host_rules[i]);
    }
    check_unique_hosts(ld, &sub, seq, um);
}

static void parse_path_matchers(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                                struct cfg_url_map *um)
{
    struct ypath sub = {at, "path_matchers", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n);
    size_t len = yseq_len(seq);
    char **names = len ? cfg_scratch_alloc(ld, len * sizeof(*names)) : NULL;

    um->path_matchers = cfg_calloc_array(ld, len, sizeof(*um->path_matchers));
    if (!um->path_matchers || !names)
        return;
    um->n_path_matchers = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        parse_path_matcher(ld, &item, yseq_item(ld, seq, i), &um->path_matchers[i]);
        names[i] = um->path_matchers[i].name;
    }
    cfg_check_unique(ld, &sub, seq, names, len, "path_matcher");
}

static void parse_url_map(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                          struct cfg_url_map *um)
{
    static const char *const keys[] = {
        "name",          "default_service", "default_route_action", "default_url_redirect",
        "header_action", "host_rules",      "path_matchers",        NULL};

    um->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_name(ld, at, n, "name", &um->name) == 0)
        ymissing(ld, at, n, "name");
    cfg_parse_target(ld, at, n, "default_service", "default_route_action", "default_url_redirect",
                     true, &um->default_action);
    cfg_parse_header_action(ld, at, n, &um->header_action);
    parse_path_matchers(ld, at, n, um);
    parse_host_rules(ld, at, n, um);
}

void cfg_parse_url_maps(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq)
{
    size_t n = yseq_len(seq);
    struct cfg_url_map *ums = cfg_calloc_array(ld, n, sizeof(*ums));
    char **names = n ? cfg_scratch_alloc(ld, n * sizeof(*names)) : NULL;

    if (!ums || !names)
        return;
    ld->cfg->url_maps = ums;
    ld->cfg->n_url_maps = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {at, NULL, i};
        parse_url_map(ld, &item, yseq_item(ld, seq, i), &ums[i]);
        names[i] = ums[i].name;
    }
    cfg_check_unique(ld, at, seq, names, n, "url_map");
}
