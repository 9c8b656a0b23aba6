/*
 * config_json.c — config_write_json: the effective config (every default
 * filled in) as pretty-printed JSON for the admin API's GET /config.
 *
 * Shape: the YAML schema's keys, plus "version" and "path" at the top and a
 * "resolved" numeric address next to each address. Durations are strings in
 * the largest exact unit ("30s", "250ms", "2h", "0s"); sizes are integers in
 * bytes; regexes are their source text; enums use the YAML spelling.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "config/config_loader.h"

#define JW_MAX_DEPTH 32

/* A tiny streaming writer: tracks commas and indentation per level. */
struct jw {
    FILE *out;
    int depth;
    bool first[JW_MAX_DEPTH];
};

static const char *const listener_protocols[] = {"HTTP", "HTTPS", "H2C"};
static const char *const backend_protocols[] = {"HTTP", "HTTPS", "HTTP2", "H2C"};
static const char *const lb_policies[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH",
                                          "MAGLEV"};
static const char *const affinities[] = {"NONE", "CLIENT_IP", "HEADER_FIELD", "HTTP_COOKIE",
                                         "GENERATED_COOKIE"};
static const char *const hc_types[] = {"TCP", "HTTP", "HTTPS", "HTTP2", "H2C", "GRPC"};
static const char *const retry_names[] = {
    "5xx",       "gateway-error",     "connect-failure", "retriable-4xx",      "refused-stream",
    "cancelled", "deadline-exceeded", "internal",        "resource-exhausted", "unavailable"};

static void jw_escaped(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\r')
            fputs("\\r", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

/* Separator, newline and indentation, then `"key": ` when key != NULL. */
static void jw_key(struct jw *w, const char *key)
{
    if (w->depth > 0) {
        fputs(w->first[w->depth] ? "\n" : ",\n", w->out);
        w->first[w->depth] = false;
        for (int i = 0; i < w->depth; i++)
            fputs("  ", w->out);
    }
    if (key) {
        jw_escaped(w->out, key);
        fputs(": ", w->out);
    }
}

static void jw_open(struct jw *w, const char *key, char c)
{
    jw_key(w, key);
    fputc(c, w->out);
    if (w->depth + 1 < JW_MAX_DEPTH)
        w->depth++;
    w->first[w->depth] = true;
}

static void jw_close(struct jw *w, char c)
{
    bool empty = w->first[w->depth];

    w->depth--;
    if (!empty) {
        fputc('\n', w->out);
        for (int i = 0; i < w->depth; i++)
            fputs("  ", w->out);
    }
    fputc(c, w->out);
}

static void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    if (s)
        jw_escaped(w->out, s);
    else
        fputs("null", w->out);
}

static void jw_u64(struct jw *w, const char *key, uint64_t v)
{
    jw_key(w, key);
    fprintf(w->out, "%llu", (unsigned long long)v);
}

static void jw_i64(struct jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    fprintf(w->out, "%lld", (long long)v);
}

static void jw_bool(struct jw *w, const char *key, bool v)
{
    jw_key(w, key);
    fputs(v ? "true" : "false", w->out);
}

static void jw_double(struct jw *w, const char *key, double v)
{
    jw_key(w, key);
    fprintf(w->out, "%.15g", v);
}

/* Milliseconds in the largest exact unit: "2h", "5m", "30s", "250ms". */
static void jw_duration(struct jw *w, const char *key, uint64_t ms)
{
    char buf[32];

    if (ms == 0)
        snprintf(buf, sizeof(buf), "0s");
    else if (ms % 3600000 == 0)
        snprintf(buf, sizeof(buf), "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(buf, sizeof(buf), "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, sizeof(buf), "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, sizeof(buf), "%llums", (unsigned long long)ms);
    jw_str(w, key, buf);
}

static void jw_str_list(struct jw *w, const char *key, char *const *items, size_t n)
{
    jw_open(w, key, '[');
    for (size_t i = 0; i < n; i++)
        jw_str(w, NULL, items[i]);
    jw_close(w, ']');
}

/* "address" as written and "resolved" as numeric host:port. */
static void jw_addr(struct jw *w, const char *key, const char *resolved_key,
                    const struct cfg_addr *a)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV], buf[NI_MAXHOST + NI_MAXSERV + 4];

    jw_str(w, key, a->text);
    if (!a->text || getnameinfo((const struct sockaddr *)&a->ss, a->len, host, sizeof(host), serv,
                                sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        jw_str(w, resolved_key, NULL);
        return;
    }
    if (a->ss.ss_family == AF_INET6)
        snprintf(buf, sizeof(buf), "[%s]:%s", host, serv);
    else
        snprintf(buf, sizeof(buf), "%s:%s", host, serv);
    jw_str(w, resolved_key, buf);
}

static void jw_cidr(struct jw *w, const struct cfg_cidr *c)
{
    char ip[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];

    if (!inet_ntop(c->family, c->addr, ip, sizeof(ip)))
        snprintf(ip, sizeof(ip), "?");
    snprintf(buf, sizeof(buf), "%s/%u", ip, c->prefix);
    jw_str(w, NULL, buf);
}

/* ---- url maps ------------------------------------------------------------------- */

static void write_header_adds(struct jw *w, const char *key, const struct cfg_header_add *adds,
                              size_t n)
{
    jw_open(w, key, '[');
    for (size_t i = 0; i < n; i++) {
        jw_open(w, NULL, '{');
        jw_str(w, "header_name", adds[i].name);
        jw_str(w, "header_value", adds[i].value);
        jw_bool(w, "replace", adds[i].replace);
        jw_close(w, '}');
    }
    jw_close(w, ']');
}

static void write_header_action(struct jw *w, const struct cfg_header_action *ha)
{
    if (!ha->n_request_headers_to_add && !ha->n_request_headers_to_remove &&
        !ha->n_response_headers_to_add && !ha->n_response_headers_to_remove)
        return;
    jw_open(w, "header_action", '{');
    write_header_adds(w, "request_headers_to_add", ha->request_headers_to_add,
                      ha->n_request_headers_to_add);
    jw_str_list(w, "request_headers_to_remove", ha->request_headers_to_remove,
                ha->n_request_headers_to_remove);
    write_header_adds(w, "response_headers_to_add", ha->response_headers_to_add,
                      ha->n_response_headers_to_add);
    jw_str_list(w, "response_headers_to_remove", ha->response_headers_to_remove,
                ha->n_response_headers_to_remove);
    jw_close(w, '}');
}

static void write_redirect(struct jw *w, const char *key, const struct cfg_url_redirect *r)
{
    jw_open(w, key, '{');
    jw_str(w, "host_redirect", r->host_redirect);
    jw_str(w, "path_redirect", r->path_redirect);
    jw_str(w, "prefix_redirect", r->prefix_redirect);
    jw_bool(w, "https_redirect", r->https_redirect);
    jw_bool(w, "strip_query", r->strip_query);
    jw_i64(w, "redirect_response_code", r->redirect_response_code);
    jw_close(w, '}');
}

static void write_retry_policy(struct jw *w, const struct cfg_retry_policy *r)
{
    jw_open(w, "retry_policy", '{');
    jw_open(w, "retry_conditions", '[');
    for (size_t i = 0; i < sizeof(retry_names) / sizeof(*retry_names); i++) {
        if (r->retry_conditions & (1u << i))
            jw_str(w, NULL, retry_names[i]);
    }
    jw_close(w, ']');
    jw_u64(w, "num_retries", r->num_retries);
    if (r->per_try_timeout_ms)
        jw_duration(w, "per_try_timeout", r->per_try_timeout_ms);
    jw_close(w, '}');
}

static void write_fault(struct jw *w, const struct cfg_fault_policy *f)
{
    jw_open(w, "fault_injection_policy", '{');
    if (f->delay_set) {
        jw_open(w, "delay", '{');
        jw_duration(w, "fixed_delay", f->fixed_delay_ms);
        jw_double(w, "percentage", f->delay_percentage);
        jw_close(w, '}');
    }
    if (f->abort_set) {
        jw_open(w, "abort", '{');
        if (f->grpc_status >= 0)
            jw_i64(w, "grpc_status", f->grpc_status);
        else
            jw_i64(w, "http_status", f->http_status);
        jw_double(w, "percentage", f->abort_percentage);
        jw_close(w, '}');
    }
    jw_close(w, '}');
}

static void write_weighted(struct jw *w, const struct cfg_route_action *a)
{
    jw_open(w, "weighted_backend_services", '[');
    for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
        const struct cfg_weighted_backend_service *wb = &a->weighted_backend_services[i];
        jw_open(w, NULL, '{');
        jw_str(w, "backend_service", wb->backend_service_name);
        jw_u64(w, "weight", wb->weight);
        write_header_action(w, &wb->header_action);
        jw_close(w, '}');
    }
    jw_close(w, ']');
}

static void write_mirror(struct jw *w, const struct cfg_mirror_policy *m)
{
    jw_open(w, "request_mirror_policy", '{');
    jw_str(w, "backend_service", m->backend_service_name);
    jw_double(w, "mirror_percent", m->mirror_percent);
    jw_u64(w, "max_buffered_bytes", m->max_buffered_bytes);
    jw_open(w, "compare", '{');
    jw_bool(w, "enabled", m->compare.enabled);
    jw_str_list(w, "ignore_headers", m->compare.ignore_headers, m->compare.n_ignore_headers);
    jw_u64(w, "max_body_bytes", m->compare.max_body_bytes);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_cors(struct jw *w, const struct cfg_cors_policy *c)
{
    jw_open(w, "cors_policy", '{');
    jw_str_list(w, "allow_origins", c->allow_origins, c->n_allow_origins);
    jw_str_list(w, "allow_origin_regexes", c->allow_origin_regexes, c->n_allow_origin_regexes);
    jw_str_list(w, "allow_methods", c->allow_methods, c->n_allow_methods);
    jw_str_list(w, "allow_headers", c->allow_headers, c->n_allow_headers);
    jw_str_list(w, "expose_headers", c->expose_headers, c->n_expose_headers);
    if (c->max_age_set)
        jw_duration(w, "max_age", c->max_age_ms);
    jw_bool(w, "allow_credentials", c->allow_credentials);
    jw_bool(w, "disabled", c->disabled);
    jw_close(w, '}');
}

/* A rule's target and route_action, under the given key names. */
static void write_action(struct jw *w, const struct cfg_route_action *a, const char *service_key,
                         const char *action_key, const char *redirect_key)
{
    if (a->service_name)
        jw_str(w, service_key, a->service_name);
    if (a->url_redirect)
        write_redirect(w, redirect_key, a->url_redirect);
    if (!a->n_weighted_backend_services && !a->url_rewrite.path_prefix_rewrite &&
        !a->url_rewrite.host_rewrite && !a->timeout_set && !a->retry_policy.set && !a->fault_set &&
        !a->request_mirror_policy && !a->cors_policy)
        return;
    jw_open(w, action_key, '{');
    if (a->n_weighted_backend_services)
        write_weighted(w, a);
    if (a->url_rewrite.path_prefix_rewrite || a->url_rewrite.host_rewrite) {
        jw_open(w, "url_rewrite", '{');
        jw_str(w, "path_prefix_rewrite", a->url_rewrite.path_prefix_rewrite);
        jw_str(w, "host_rewrite", a->url_rewrite.host_rewrite);
        jw_close(w, '}');
    }
    if (a->timeout_set)
        jw_duration(w, "timeout", a->timeout_ms);
    if (a->retry_policy.set)
        write_retry_policy(w, &a->retry_policy);
    if (a->fault_set)
        write_fault(w, &a->fault_injection_policy);
    if (a->request_mirror_policy)
        write_mirror(w, a->request_mirror_policy);
    if (a->cors_policy)
        write_cors(w, a->cors_policy);
    jw_close(w, '}');
}

static void write_header_match(struct jw *w, const struct cfg_header_match *h)
{
    static const char *const kinds[] = {
        "",           "exact_match", "prefix_match", "suffix_match", "regex_match", "present_match",
        "range_match"};

    jw_open(w, NULL, '{');
    jw_str(w, "header_name", h->header_name);
    if (h->kind == CFG_HDR_PRESENT) {
        jw_bool(w, "present_match", h->present);
    } else if (h->kind == CFG_HDR_RANGE) {
        jw_open(w, "range_match", '{');
        jw_i64(w, "start", h->range_start);
        jw_i64(w, "end", h->range_end);
        jw_close(w, '}');
    } else if (h->kind >= CFG_HDR_EXACT && h->kind <= CFG_HDR_REGEX) {
        jw_str(w, kinds[h->kind], h->value);
    }
    jw_bool(w, "invert_match", h->invert_match);
    jw_close(w, '}');
}

static void write_query_match(struct jw *w, const struct cfg_query_match *q)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", q->name);
    if (q->kind == CFG_QUERY_PRESENT)
        jw_bool(w, "present_match", q->present);
    else
        jw_str(w, q->kind == CFG_QUERY_EXACT ? "exact_match" : "regex_match", q->value);
    jw_close(w, '}');
}

static void write_match_rule(struct jw *w, const struct cfg_match_rule *m)
{
    static const char *const kinds[] = {NULL, "prefix_match", "full_path_match", "regex_match"};

    jw_open(w, NULL, '{');
    if (m->path_kind != CFG_PATH_ANY)
        jw_str(w, kinds[m->path_kind], m->path);
    jw_bool(w, "ignore_case", m->ignore_case);
    jw_open(w, "header_matches", '[');
    for (size_t i = 0; i < m->n_header_matches; i++)
        write_header_match(w, &m->header_matches[i]);
    jw_close(w, ']');
    jw_open(w, "query_parameter_matches", '[');
    for (size_t i = 0; i < m->n_query_parameter_matches; i++)
        write_query_match(w, &m->query_parameter_matches[i]);
    jw_close(w, ']');
    jw_close(w, '}');
}

static void write_path_matcher(struct jw *w, const struct cfg_path_matcher *pm)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", pm->name);
    write_action(w, &pm->default_action, "default_service", "default_route_action",
                 "default_url_redirect");
    write_header_action(w, &pm->header_action);
    if (pm->n_path_rules) {
        jw_open(w, "path_rules", '[');
        for (size_t i = 0; i < pm->n_path_rules; i++) {
            jw_open(w, NULL, '{');
            jw_str_list(w, "paths", pm->path_rules[i].paths, pm->path_rules[i].n_paths);
            write_action(w, &pm->path_rules[i].action, "service", "route_action", "url_redirect");
            jw_close(w, '}');
        }
        jw_close(w, ']');
    }
    if (pm->n_route_rules) {
        jw_open(w, "route_rules", '[');
        for (size_t i = 0; i < pm->n_route_rules; i++) {
            const struct cfg_route_rule *rr = &pm->route_rules[i];
            jw_open(w, NULL, '{');
            jw_i64(w, "priority", rr->priority);
            jw_open(w, "match_rules", '[');
            for (size_t j = 0; j < rr->n_match_rules; j++)
                write_match_rule(w, &rr->match_rules[j]);
            jw_close(w, ']');
            write_action(w, &rr->action, "service", "route_action", "url_redirect");
            write_header_action(w, &rr->header_action);
            jw_close(w, '}');
        }
        jw_close(w, ']');
    }
    jw_close(w, '}');
}

static void write_url_map(struct jw *w, const struct cfg_url_map *um)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", um->name);
    write_action(w, &um->default_action, "default_service", "default_route_action",
                 "default_url_redirect");
    write_header_action(w, &um->header_action);
    jw_open(w, "host_rules", '[');
    for (size_t i = 0; i < um->n_host_rules; i++) {
        jw_open(w, NULL, '{');
        jw_str_list(w, "hosts", um->host_rules[i].hosts, um->host_rules[i].n_hosts);
        jw_str(w, "path_matcher", um->host_rules[i].path_matcher_name);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    jw_open(w, "path_matchers", '[');
    for (size_t i = 0; i < um->n_path_matchers; i++)
        write_path_matcher(w, &um->path_matchers[i]);
    jw_close(w, ']');
    jw_close(w, '}');
}

/* ---- backends and health checks ------------------------------------------------ */

static void write_backend_policies(struct jw *w, const struct cfg_backend_service *b)
{
    jw_str(w, "locality_lb_policy", lb_policies[b->locality_lb_policy]);
    jw_str(w, "session_affinity", affinities[b->session_affinity]);
    jw_open(w, "consistent_hash", '{');
    jw_str(w, "http_header_name", b->consistent_hash.http_header_name);
    jw_open(w, "http_cookie", '{');
    jw_str(w, "name", b->consistent_hash.cookie_name);
    jw_str(w, "path", b->consistent_hash.cookie_path);
    jw_duration(w, "ttl", b->consistent_hash.cookie_ttl_ms);
    jw_close(w, '}');
    jw_u64(w, "minimum_ring_size", b->consistent_hash.minimum_ring_size);
    jw_close(w, '}');
    jw_str_list(w, "health_checks", b->health_check_names, b->n_health_checks);
    jw_u64(w, "max_concurrent_requests_per_endpoint", b->max_concurrent_requests_per_endpoint);
    jw_open(w, "circuit_breakers", '{');
    jw_u64(w, "max_connections", b->circuit_breakers.max_connections);
    jw_u64(w, "max_pending_requests", b->circuit_breakers.max_pending_requests);
    jw_u64(w, "max_requests", b->circuit_breakers.max_requests);
    jw_u64(w, "max_retries", b->circuit_breakers.max_retries);
    jw_close(w, '}');
    jw_open(w, "outlier_detection", '{');
    jw_u64(w, "consecutive_errors", b->outlier_detection.consecutive_errors);
    jw_u64(w, "consecutive_gateway_failure", b->outlier_detection.consecutive_gateway_failure);
    jw_u64(w, "enforcing_consecutive_errors", b->outlier_detection.enforcing_consecutive_errors);
    jw_u64(w, "enforcing_consecutive_gateway_failure",
           b->outlier_detection.enforcing_consecutive_gateway_failure);
    jw_duration(w, "interval", b->outlier_detection.interval_ms);
    jw_duration(w, "base_ejection_time", b->outlier_detection.base_ejection_time_ms);
    jw_u64(w, "max_ejection_percent", b->outlier_detection.max_ejection_percent);
    jw_close(w, '}');
}

static void write_backend_conn(struct jw *w, const struct cfg_backend_service *b)
{
    jw_open(w, "connection_draining", '{');
    jw_duration(w, "draining_timeout", b->draining_timeout_ms);
    jw_close(w, '}');
    jw_open(w, "tls", '{');
    jw_str(w, "ca_file", b->tls.ca_file);
    jw_bool(w, "verify", b->tls.verify);
    jw_str(w, "sni", b->tls.sni);
    jw_close(w, '}');
    jw_open(w, "http2_keepalive", '{');
    jw_duration(w, "time", b->http2_keepalive.time_ms);
    jw_duration(w, "timeout", b->http2_keepalive.timeout_ms);
    jw_close(w, '}');
    jw_u64(w, "retry_buffer_size", b->retry_buffer_size);
    jw_open(w, "retry_backoff", '{');
    jw_duration(w, "base_interval", b->retry_backoff.base_interval_ms);
    jw_duration(w, "max_interval", b->retry_backoff.max_interval_ms);
    jw_close(w, '}');
}

static void write_backend(struct jw *w, const struct cfg_backend_service *b)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", b->name);
    jw_str(w, "protocol", backend_protocols[b->protocol]);
    jw_open(w, "endpoints", '[');
    for (size_t i = 0; i < b->n_endpoints; i++) {
        jw_open(w, NULL, '{');
        jw_addr(w, "address", "resolved", &b->endpoints[i].address);
        jw_u64(w, "weight", b->endpoints[i].weight);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    jw_duration(w, "timeout", b->timeout_ms);
    jw_duration(w, "connect_timeout", b->connect_timeout_ms);
    write_backend_policies(w, b);
    write_backend_conn(w, b);
    jw_close(w, '}');
}

static void write_health_check(struct jw *w, const struct cfg_health_check *h)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", h->name);
    jw_str(w, "type", hc_types[h->type]);
    jw_u64(w, "port", h->port);
    jw_str(w, "request_path", h->request_path);
    jw_str(w, "host", h->host);
    jw_str(w, "response", h->response);
    jw_str(w, "grpc_service_name", h->grpc_service_name);
    jw_duration(w, "check_interval", h->check_interval_ms);
    jw_duration(w, "timeout", h->timeout_ms);
    jw_u64(w, "healthy_threshold", h->healthy_threshold);
    jw_u64(w, "unhealthy_threshold", h->unhealthy_threshold);
    jw_close(w, '}');
}

/* ---- listeners ------------------------------------------------------------------ */

static void write_listener_http2(struct jw *w, const struct cfg_listener *l)
{
    jw_open(w, "http2", '{');
    jw_u64(w, "max_concurrent_streams", l->http2.max_concurrent_streams);
    jw_u64(w, "initial_stream_window_size", l->http2.initial_stream_window_size);
    jw_u64(w, "initial_connection_window_size", l->http2.initial_connection_window_size);
    jw_u64(w, "max_header_list_size", l->http2.max_header_list_size);
    jw_open(w, "keepalive", '{');
    jw_duration(w, "time", l->http2.keepalive_time_ms);
    jw_duration(w, "timeout", l->http2.keepalive_timeout_ms);
    jw_close(w, '}');
    jw_open(w, "ping_policy", '{');
    jw_duration(w, "min_interval_without_data", l->http2.ping_min_interval_without_data_ms);
    jw_bool(w, "permit_without_calls", l->http2.ping_permit_without_calls);
    jw_u64(w, "max_strikes", l->http2.ping_max_strikes);
    jw_close(w, '}');
    jw_duration(w, "max_connection_idle", l->http2.max_connection_idle_ms);
    jw_duration(w, "max_connection_age", l->http2.max_connection_age_ms);
    jw_duration(w, "max_connection_age_grace", l->http2.max_connection_age_grace_ms);
    jw_close(w, '}');
}

static void write_limits(struct jw *w, const struct cfg_limits *l)
{
    jw_open(w, "limits", '{');
    jw_u64(w, "max_connections", l->max_connections);
    jw_u64(w, "max_request_headers", l->max_request_headers);
    jw_u64(w, "max_stalled_streams", l->max_stalled_streams);
    jw_u64(w, "max_buffered_bytes", l->max_buffered_bytes);
}

static void write_listener(struct jw *w, const struct cfg_listener *l)
{
    jw_open(w, NULL, '{');
    jw_str(w, "name", l->name);
    jw_addr(w, "address", "resolved", &l->address);
    jw_str(w, "protocol", listener_protocols[l->protocol]);
    if (l->protocol == CFG_LISTENER_HTTPS) {
        jw_open(w, "tls", '{');
        jw_open(w, "certificates", '[');
        for (size_t i = 0; i < l->tls.n_certificates; i++) {
            jw_open(w, NULL, '{');
            jw_str(w, "cert_file", l->tls.certificates[i].cert_file);
            jw_str(w, "key_file", l->tls.certificates[i].key_file);
            jw_close(w, '}');
        }
        jw_close(w, ']');
        jw_str(w, "min_version", l->tls.min_version == CFG_TLS1_3 ? "TLS1.3" : "TLS1.2");
        jw_str_list(w, "cipher_suites", l->tls.cipher_suites, l->tls.n_cipher_suites);
        jw_str_list(w, "ecdh_curves", l->tls.ecdh_curves, l->tls.n_ecdh_curves);
        jw_duration(w, "session_ticket_rotation", l->tls.session_ticket_rotation_ms);
        jw_close(w, '}');
    }
    jw_str(w, "url_map", l->url_map_name);
    write_listener_http2(w, l);
    jw_open(w, "timeouts", '{');
    jw_duration(w, "http_keepalive", l->timeouts.http_keepalive_ms);
    jw_duration(w, "stream_idle", l->timeouts.stream_idle_ms);
    jw_duration(w, "request_headers", l->timeouts.request_headers_ms);
    jw_close(w, '}');
    jw_u64(w, "max_request_headers_size", l->max_request_headers_size);
    jw_bool(w, "accept_http_10", l->accept_http_10);
    jw_open(w, "xff_trusted_cidrs", '[');
    for (size_t i = 0; i < l->n_xff_trusted_cidrs; i++)
        jw_cidr(w, &l->xff_trusted_cidrs[i]);
    jw_close(w, ']');
    write_limits(w, &l->limits);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_globals(struct jw *w, const struct config *cfg)
{
    if (cfg->admin.set) {
        jw_open(w, "admin", '{');
        jw_addr(w, "address", "resolved", &cfg->admin.address);
        jw_close(w, '}');
    } else {
        jw_str(w, "admin", NULL);
    }
    jw_open(w, "access_log", '{');
    jw_bool(w, "enabled", cfg->access_log.enabled);
    jw_str(w, "path", cfg->access_log.path);
    jw_str(w, "format", cfg->access_log.format == CFG_LOG_TEXT ? "text" : "json");
    jw_close(w, '}');
    jw_open(w, "tracing", '{');
    jw_bool(w, "generate", cfg->tracing.generate);
    jw_double(w, "sampled_percent", cfg->tracing.sampled_percent);
    jw_close(w, '}');
    jw_duration(w, "drain_timeout", cfg->drain_timeout_ms);
    write_limits(w, &cfg->limits);
    jw_open(w, "overload", '{');
    jw_u64(w, "memory", cfg->overload.memory);
    jw_u64(w, "connections", cfg->overload.connections);
    jw_close(w, '}');
    jw_close(w, '}');
}

/* Writes the whole snapshot as one JSON object followed by a newline. */
void config_write_json(const struct config *cfg, FILE *out)
{
    struct jw w;

    if (!cfg || !out)
        return;
    memset(&w, 0, sizeof(w));
    w.out = out;
    jw_open(&w, NULL, '{');
    jw_str(&w, "version", cfg->version);
    jw_str(&w, "path", cfg->path);
    jw_open(&w, "listeners", '[');
    for (size_t i = 0; i < cfg->n_listeners; i++)
        write_listener(&w, &cfg->listeners[i]);
    jw_close(&w, ']');
    write_globals(&w, cfg);
    jw_open(&w, "url_maps", '[');
    for (size_t i = 0; i < cfg->n_url_maps; i++)
        write_url_map(&w, &cfg->url_maps[i]);
    jw_close(&w, ']');
    jw_open(&w, "backend_services", '[');
    for (size_t i = 0; i < cfg->n_backend_services; i++)
        write_backend(&w, &cfg->backend_services[i]);
    jw_close(&w, ']');
    jw_open(&w, "health_checks", '[');
    for (size_t i = 0; i < cfg->n_health_checks; i++)
        write_health_check(&w, &cfg->health_checks[i]);
    jw_close(&w, ']');
    jw_close(&w, '}');
    fputc('\n', out);
}
