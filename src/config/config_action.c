/*
 * config_action.c — what a matched rule does: header_action, the rule's
 * target (service, weighted split or url_redirect) and route_action (rewrite,
 * timeout, retry_policy, fault_injection_policy).
 */
#include <stdlib.h>
#include <string.h>

#include "config/config_loader.h"
#include "core/parse.h"

static const char *const retry_condition_names[] = {
    "5xx",       "gateway-error",     "connect-failure", "retriable-4xx",      "refused-stream",
    "cancelled", "deadline-exceeded", "internal",        "resource-exhausted", "unavailable",
    NULL};

static const char *const redirect_code_names[] = {
    "MOVED_PERMANENTLY_DEFAULT", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT",
    "PERMANENT_REDIRECT",        NULL};
static const int redirect_codes[] = {301, 302, 303, 307, 308};

/* ---- header_action ---------------------------------------------------------- */

static void parse_header_adds(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ha,
                              const char *key, struct cfg_header_add **out, size_t *n_out)
{
    static const char *const keys[] = {"header_name", "header_value", "replace", NULL};
    struct ypath sub = {at, key, 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, ha);
    size_t n = yseq_len(seq);
    struct cfg_header_add *adds;

    if (n == 0)
        return;
    adds = cfg_calloc_array(ld, n, sizeof(*adds));
    if (!adds)
        return;
    *out = adds;
    *n_out = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        yaml_node_t *a = yseq_item(ld, seq, i);
        if (!ymap_check(ld, &item, a, keys))
            continue;
        if (yget_header_name(ld, &item, a, "header_name", false, &adds[i].name) == 0)
            ymissing(ld, &item, a, "header_name");
        if (yget_header_value(ld, &item, a, "header_value", &adds[i].value) == 0)
            ymissing(ld, &item, a, "header_value");
        yget_bool(ld, &item, a, "replace", &adds[i].replace);
    }
}

void cfg_parse_header_action(struct cfg_loader *ld, const struct ypath *at,
                             const yaml_node_t *parent, struct cfg_header_action *ha)
{
    static const char *const keys[] = {"request_headers_to_add", "request_headers_to_remove",
                                       "response_headers_to_add", "response_headers_to_remove",
                                       NULL};
    struct ypath sub = {at, "header_action", 0};
    yaml_node_t *n = ychild_map(ld, &sub, parent, keys);

    if (!n)
        return;
    parse_header_adds(ld, &sub, n, "request_headers_to_add", &ha->request_headers_to_add,
                      &ha->n_request_headers_to_add);
    parse_header_adds(ld, &sub, n, "response_headers_to_add", &ha->response_headers_to_add,
                      &ha->n_response_headers_to_add);
    yget_header_list(ld, &sub, n, "request_headers_to_remove", &ha->request_headers_to_remove,
                     &ha->n_request_headers_to_remove);
    yget_header_list(ld, &sub, n, "response_headers_to_remove", &ha->response_headers_to_remove,
                     &ha->n_response_headers_to_remove);
}

/* ---- route_action pieces -------------------------------------------------------- */

/* weighted_backend_services; returns whether a split was given. */
static bool parse_weighted(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                           struct cfg_route_action *act)
{
    static const char *const keys[] = {"backend_service", "weight", "header_action", NULL};
    struct ypath sub = {at, "weighted_backend_services", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, ra), *v = yfind(ld, ra, "weighted_backend_services");
    size_t n = yseq_len(seq);
    struct cfg_weighted_backend_service *w;
    bool bad_weight = false;

    if (!seq)
        return v && !ynull(v);
    if (n == 0) {
        cfg_error(ld, ymark(seq), &sub, "at least one backend service is required");
        return true;
    }
    w = cfg_calloc_array(ld, n, sizeof(*w));
    if (!w)
        return true;
    act->weighted_backend_services = w;
    act->n_weighted_backend_services = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        yaml_node_t *e = yseq_item(ld, seq, i);
        int rc;
        if (!ymap_check(ld, &item, e, keys)) {
            bad_weight = true;
            continue;
        }
        if (yget_ref(ld, &item, e, "backend_service", CFG_REF_BACKEND_SERVICE,
                     &w[i].backend_service_name, &w[i].backend_service, NULL) == 0)
            ymissing(ld, &item, e, "backend_service");
        rc = yget_u32(ld, &item, e, "weight", 0, 1000, &w[i].weight);
        if (rc == 0)
            ymissing(ld, &item, e, "weight");
        bad_weight |= rc != 1;
        cfg_parse_header_action(ld, &item, e, &w[i].header_action);
        act->total_weight += w[i].weight;
    }
    if (act->total_weight == 0 && !bad_weight)
        cfg_error(ld, ymark(seq), &sub, "the total weight must be > 0");
    return true;
}

static void parse_url_rewrite(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                              struct cfg_route_action *act)
{
    static const char *const keys[] = {"path_prefix_rewrite", "host_rewrite", NULL};
    struct ypath sub = {at, "url_rewrite", 0};
    yaml_node_t *n = ychild_map(ld, &sub, ra, keys);

    if (!n)
        return;
    if (yget_name(ld, &sub, n, "path_prefix_rewrite", &act->url_rewrite.path_prefix_rewrite) == 1 &&
        act->url_rewrite.path_prefix_rewrite[0] != '/')
        cfg_error(ld, ymark(yfind(ld, n, "path_prefix_rewrite")), &sub,
                  "path_prefix_rewrite must start with '/'");
    yget_name(ld, &sub, n, "host_rewrite", &act->url_rewrite.host_rewrite);
}

static void parse_retry_conditions(struct cfg_loader *ld, const struct ypath *at,
                                   const yaml_node_t *rp, struct cfg_retry_policy *r)
{
    struct ypath sub = {at, "retry_conditions", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, rp), *v = yfind(ld, rp, "retry_conditions");
    size_t n = yseq_len(seq);
    int idx;

    if (!seq) {
        if (!v) /* no conditions given: the SPEC's default one */
            r->retry_conditions = CFG_RETRY_GATEWAY_ERROR;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        if (ynode_enum(ld, &item, yseq_item(ld, seq, i), retry_condition_names, &idx) == 0)
            r->retry_conditions |= 1u << idx;
    }
}

static void parse_retry_policy(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                               struct cfg_retry_policy *r)
{
    static const char *const keys[] = {"retry_conditions", "num_retries", "per_try_timeout", NULL};
    struct ypath sub = {at, "retry_policy", 0};
    yaml_node_t *n = ychild_map(ld, &sub, ra, keys);

    if (!n)
        return;
    r->set = true;
    r->num_retries = 1;
    parse_retry_conditions(ld, &sub, n, r);
    yget_u32(ld, &sub, n, "num_retries", 0, 100, &r->num_retries);
    yget_duration(ld, &sub, n, "per_try_timeout", &r->per_try_timeout_ms);
}

static void parse_abort(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *fp,
                        struct cfg_fault_policy *f)
{
    static const char *const keys[] = {"http_status", "grpc_status", "percentage", NULL};
    struct ypath sub = {at, "abort", 0};
    yaml_node_t *n = ychild_map(ld, &sub, fp, keys);
    uint32_t http = 0, grpc = 0;
    int has_http, has_grpc;

    if (!n)
        return;
    f->abort_set = true;
    f->abort_percentage = 100;
    has_http = yget_u32(ld, &sub, n, "http_status", 200, 599, &http);
    has_grpc = yget_u32(ld, &sub, n, "grpc_status", 0, 16, &grpc);
    yget_double(ld, &sub, n, "percentage", 0, 100, &f->abort_percentage);
    if ((has_http != 0) == (has_grpc != 0)) {
        cfg_error(ld, ymark(n), &sub, "abort needs exactly one of http_status or grpc_status");
        return;
    }
    f->http_status = has_http ? (int)http : 0;
    f->grpc_status = has_grpc ? (int)grpc : -1;
}

static void parse_fault(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                        struct cfg_route_action *act)
{
    static const char *const keys[] = {"delay", "abort", NULL};
    static const char *const delay_keys[] = {"fixed_delay", "percentage", NULL};
    struct ypath sub = {at, "fault_injection_policy", 0}, dsub = {&sub, "delay", 0};
    yaml_node_t *n = ychild_map(ld, &sub, ra, keys), *d;
    struct cfg_fault_policy *f = &act->fault_injection_policy;

    f->grpc_status = -1;
    if (!n)
        return;
    act->fault_set = true;
    d = ychild_map(ld, &dsub, n, delay_keys);
    if (d) {
        f->delay_set = true;
        f->delay_percentage = 100;
        if (yget_duration(ld, &dsub, d, "fixed_delay", &f->fixed_delay_ms) == 0)
            ymissing(ld, &dsub, d, "fixed_delay");
        yget_double(ld, &dsub, d, "percentage", 0, 100, &f->delay_percentage);
    }
    parse_abort(ld, &sub, n, f);
}

static void parse_mirror(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                         struct cfg_route_action *act)
{
    static const char *const keys[] = {"backend_service", "mirror_percent", "max_buffered_bytes",
                                       "compare", NULL};
    static const char *const compare_keys[] = {"enabled", "ignore_headers", "max_body_bytes", NULL};
    struct ypath sub = {at, "request_mirror_policy", 0}, csub = {&sub, "compare", 0};
    yaml_node_t *n = ychild_map(ld, &sub, ra, keys), *c;
    struct cfg_mirror_policy *m;

    if (!n || !(m = cfg_alloc(ld, sizeof *m)))
        return;
    act->request_mirror_policy = m;
    m->mark = ymark(n);
    m->mirror_percent = 100;
    m->max_buffered_bytes = 64 * 1024;
    m->compare.max_body_bytes = 64 * 1024;
    if (yget_ref(ld, &sub, n, "backend_service", CFG_REF_BACKEND_SERVICE, &m->backend_service_name,
                 &m->backend_service, NULL) == 0)
        ymissing(ld, &sub, n, "backend_service");
    yget_double(ld, &sub, n, "mirror_percent", 0, 100, &m->mirror_percent);
    yget_size(ld, &sub, n, "max_buffered_bytes", 0, 1024ull * 1024 * 1024, &m->max_buffered_bytes);
    c = ychild_map(ld, &csub, n, compare_keys);
    if (!c)
        return;
    m->compare.enabled = true; /* a compare block turns it on unless it says enabled: false */
    yget_bool(ld, &csub, c, "enabled", &m->compare.enabled);
    yget_header_list(ld, &csub, c, "ignore_headers", &m->compare.ignore_headers,
                     &m->compare.n_ignore_headers);
    yget_size(ld, &csub, c, "max_body_bytes", 0, 1024ull * 1024 * 1024, &m->compare.max_body_bytes);
}

/* allow_origin_regexes: each an anchored regex over the whole Origin value. */
static void parse_origin_regexes(struct cfg_loader *ld, const struct ypath *at,
                                 const yaml_node_t *n, struct cfg_cors_policy *c)
{
    struct ypath sub = {at, "allow_origin_regexes", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n);
    size_t len = yseq_len(seq);

    if (!seq || len == 0)
        return;
    c->allow_origin_regexes = cfg_calloc_array(ld, len, sizeof(char *));
    c->allow_origin_regex_codes = cfg_calloc_array(ld, len, sizeof(void *));
    if (!c->allow_origin_regexes || !c->allow_origin_regex_codes)
        return;
    c->n_allow_origin_regexes = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        ynode_regex(ld, &item, yseq_item(ld, seq, i), &c->allow_origin_regexes[i],
                    &c->allow_origin_regex_codes[i]);
    }
}

static void parse_cors(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *ra,
                       struct cfg_route_action *act)
{
    static const char *const keys[] = {"allow_origins",
                                       "allow_origin_regexes",
                                       "allow_methods",
                                       "allow_headers",
                                       "expose_headers",
                                       "max_age",
                                       "allow_credentials",
                                       "disabled",
                                       NULL};
    struct ypath sub = {at, "cors_policy", 0};
    yaml_node_t *n = ychild_map(ld, &sub, ra, keys);
    struct cfg_cors_policy *c;

    if (!n || !(c = cfg_alloc(ld, sizeof *c)))
        return;
    act->cors_policy = c;
    c->mark = ymark(n);
    yget_str_list(ld, &sub, n, "allow_origins", &c->allow_origins, &c->n_allow_origins);
    parse_origin_regexes(ld, &sub, n, c);
    yget_str_list(ld, &sub, n, "allow_methods", &c->allow_methods, &c->n_allow_methods);
    yget_header_list(ld, &sub, n, "allow_headers", &c->allow_headers, &c->n_allow_headers);
    yget_header_list(ld, &sub, n, "expose_headers", &c->expose_headers, &c->n_expose_headers);
    if (yget_duration(ld, &sub, n, "max_age", &c->max_age_ms) == 1)
        c->max_age_set = true;
    yget_bool(ld, &sub, n, "allow_credentials", &c->allow_credentials);
    yget_bool(ld, &sub, n, "disabled", &c->disabled);
    for (size_t i = 0; c->allow_credentials && i < c->n_allow_origins; i++)
        if (!strcmp(c->allow_origins[i], "*"))
            cfg_error(ld, ymark(yfind(ld, n, "allow_origins")), &sub,
                      "allow_origins '*' cannot be used with allow_credentials: true (the Fetch "
                      "standard forbids a wildcard origin on a credentialed response)");
}

/* route_action; returns whether it holds a weighted split (a target). */
static bool parse_route_action(struct cfg_loader *ld, const struct ypath *at,
                               const yaml_node_t *map, const char *key,
                               struct cfg_route_action *act)
{
    static const char *const keys[] = {
        "weighted_backend_services", "url_rewrite",           "timeout",     "retry_policy",
        "fault_injection_policy",    "request_mirror_policy", "cors_policy", NULL};
    struct ypath sub = {at, key, 0};
    yaml_node_t *ra = ychild_map(ld, &sub, map, keys);
    bool split;

    act->fault_injection_policy.grpc_status = -1;
    if (!ra)
        return false;
    split = parse_weighted(ld, &sub, ra, act);
    parse_url_rewrite(ld, &sub, ra, act);
    if (yget_duration(ld, &sub, ra, "timeout", &act->timeout_ms) == 1)
        act->timeout_set = true;
    parse_retry_policy(ld, &sub, ra, &act->retry_policy);
    parse_fault(ld, &sub, ra, act);
    parse_mirror(ld, &sub, ra, act);
    parse_cors(ld, &sub, ra, act);
    return split;
}

/* ---- url_redirect ----------------------------------------------------------------- */

static void parse_redirect_code(struct cfg_loader *ld, const struct ypath *at,
                                const yaml_node_t *map, struct cfg_url_redirect *r)
{
    struct ypath sub = {at, "redirect_response_code", 0};
    yaml_node_t *v = yfind(ld, map, "redirect_response_code");
    const char *s;
    uint64_t code;
    bool numeric;

    if (!v || ynode_scalar(ld, &sub, v, "a redirect code", &s) != 0)
        return;
    for (size_t i = 0; redirect_code_names[i]; i++) {
        if (strcmp(s, redirect_code_names[i]) == 0) {
            r->redirect_response_code = redirect_codes[i];
            return;
        }
    }
    numeric = sy_parse_dec(s, strlen(s), 999, &code) == 0;
    for (size_t i = 0; numeric && i < sizeof(redirect_codes) / sizeof(*redirect_codes); i++) {
        if (code == (uint64_t)redirect_codes[i]) {
            r->redirect_response_code = (int)code;
            return;
        }
    }
    cfg_error(ld, ymark(v), &sub,
              "bad redirect_response_code '%s' (expected MOVED_PERMANENTLY_DEFAULT, FOUND, "
              "SEE_OTHER, TEMPORARY_REDIRECT, PERMANENT_REDIRECT or 301, 302, 303, 307, 308)",
              s);
}

/* True when mark a comes after mark b in the file. */
static bool mark_after(struct cfg_mark a, struct cfg_mark b)
{
    return a.line > b.line || (a.line == b.line && a.col > b.col);
}

static void check_redirect_path(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                                const char *key, const char *val)
{
    if (val && val[0] != '/')
        cfg_error(ld, ymark(yfind(ld, n, key)), at, "%s must start with '/'", key);
}

static bool parse_redirect(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                           const char *key, struct cfg_route_action *act)
{
    static const char *const keys[] = {"host_redirect",
                                       "path_redirect",
                                       "prefix_redirect",
                                       "https_redirect",
                                       "strip_query",
                                       "redirect_response_code",
                                       NULL};
    struct ypath sub = {at, key, 0};
    yaml_node_t *n = ychild_map(ld, &sub, map, keys), *kp, *kx;
    struct cfg_url_redirect *r;

    if (!n)
        return false;
    r = cfg_alloc(ld, sizeof(*r));
    if (!r)
        return true;
    act->url_redirect = r;
    r->redirect_response_code = 301;
    yget_name(ld, &sub, n, "host_redirect", &r->host_redirect);
    yget_name(ld, &sub, n, "path_redirect", &r->path_redirect);
    yget_name(ld, &sub, n, "prefix_redirect", &r->prefix_redirect);
    yget_bool(ld, &sub, n, "https_redirect", &r->https_redirect);
    yget_bool(ld, &sub, n, "strip_query", &r->strip_query);
    parse_redirect_code(ld, &sub, n, r);
    check_redirect_path(ld, &sub, n, "path_redirect", r->path_redirect);
    check_redirect_path(ld, &sub, n, "prefix_redirect", r->prefix_redirect);
    kp = yfind_key(ld, n, "path_redirect");
    kx = yfind_key(ld, n, "prefix_redirect");
    if (kp && kx)
        cfg_error(ld, ymark(mark_after(ymark(kp), ymark(kx)) ? kp : kx), &sub,
                  "path_redirect and prefix_redirect are exclusive");
    return true;
}

/* ---- the target ----------------------------------------------------------------- */

bool cfg_parse_target(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                      const char *service_key, const char *action_key, const char *redirect_key,
                      bool required, struct cfg_route_action *act)
{
    yaml_node_t *keys[3], *ra = yfind(ld, map, action_key);
    size_t n = 0;
    bool split;

    if (yget_ref(ld, at, map, service_key, CFG_REF_BACKEND_SERVICE, &act->service_name,
                 &act->service, NULL) != 0)
        keys[n++] = yfind_key(ld, map, service_key);
    split = parse_route_action(ld, at, map, action_key, act);
    if (split)
        keys[n++] = yfind_key(ld, map, action_key);
    if (parse_redirect(ld, at, map, redirect_key, act)) {
        keys[n++] = yfind_key(ld, map, redirect_key);
        if (!split && ra && !ynull(ra)) /* a redirect is answered locally */
            cfg_error(ld, ymark(yfind_key(ld, map, action_key)), at, "%s is not allowed with %s",
                      action_key, redirect_key);
    }
    if (n > 1) {
        yaml_node_t *later = mark_after(ymark(keys[1]), ymark(keys[0])) ? keys[1] : keys[0];
        if (n == 3 && mark_after(ymark(keys[2]), ymark(later)))
            later = keys[2];
        cfg_error(ld, ymark(later), at,
                  "only one of '%s', '%s.weighted_backend_services' or '%s' is allowed",
                  service_key, action_key, redirect_key);
    } else if (n == 0 && required) {
        cfg_error(ld, ymark(map), at,
                  "missing required key '%s' (or %s.weighted_backend_services, or %s)", service_key,
                  action_key, redirect_key);
    }
    return n > 0;
}
