/*
 * config_backend.c — backend_services (endpoints, LB policy, affinity,
 * circuit breakers, outlier detection, upstream TLS) and health_checks.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_loader.h"
#include "core/parse.h"

static const char *const backend_protocols[] = {"HTTP", "HTTPS", "HTTP2", "H2C", NULL};
static const char *const lb_policies[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM",
                                          "RING_HASH",   "MAGLEV",        NULL};
static const char *const affinities[] = {"NONE",        "CLIENT_IP",        "HEADER_FIELD",
                                         "HTTP_COOKIE", "GENERATED_COOKIE", NULL};
static const char *const hc_types[] = {"TCP", "HTTP", "HTTPS", "HTTP2", "H2C", "GRPC", NULL};
static const char *const discoveries[] = {"STATIC", "DNS", NULL};
static const char *const dns_families[] = {"AUTO", "V4_ONLY", "V6_ONLY", NULL};
static const char *const nxdomain_modes[] = {"KEEP", "CLEAR", NULL};

/* Longest backoff interval / timeout accepted anywhere: a day. */
#define DAY_MS (24ull * 3600 * 1000)

static void backend_defaults(struct cfg_loader *ld, struct cfg_backend_service *b)
{
    b->protocol = CFG_BACKEND_HTTP;
    b->timeout_ms = 30 * 1000;
    b->connect_timeout_ms = 5 * 1000;
    b->dns_refresh_rate_ms = 5 * 1000;
    b->locality_lb_policy = CFG_LB_ROUND_ROBIN;
    b->session_affinity = CFG_AFFINITY_NONE;
    b->consistent_hash.cookie_name = cfg_strdup(ld, "sy");
    b->consistent_hash.cookie_path = cfg_strdup(ld, "/");
    b->consistent_hash.minimum_ring_size = 1024;
    b->circuit_breakers.max_connections = 1024;
    b->circuit_breakers.max_pending_requests = 1024;
    b->circuit_breakers.max_requests = 1024;
    b->circuit_breakers.max_retries = 3;
    b->outlier_detection.consecutive_errors = 5;
    b->outlier_detection.consecutive_gateway_failure = 3;
    b->outlier_detection.enforcing_consecutive_errors = 0;
    b->outlier_detection.enforcing_consecutive_gateway_failure = 100;
    b->outlier_detection.interval_ms = 1000;
    b->outlier_detection.base_ejection_time_ms = 30 * 1000;
    b->outlier_detection.max_ejection_percent = 50;
    b->tls.verify = true;
    b->http2_keepalive.timeout_ms = 20 * 1000;
    b->retry_buffer_size = 64 * 1024;
    b->retry_backoff.base_interval_ms = 25;
    b->retry_backoff.max_interval_ms = 250;
}

/*
 * An endpoint's address. Under discovery: DNS a host name is only checked
 * (the discovery resolves it, again and again); an IP literal stays static.
 * Otherwise it is resolved now, once.
 */
static void parse_endpoint_address(struct cfg_loader *ld, const struct ypath *at,
                                   const yaml_node_t *e, const struct cfg_backend_service *b,
                                   struct cfg_endpoint *ep)
{
    yaml_node_t *v = yfind(ld, e, "address");
    struct ypath sub = {at, "address", 0};
    const char *text;
    char host[256];
    bool numeric;

    if (!v) {
        ymissing(ld, at, e, "address");
        return;
    }
    if (ynode_scalar(ld, &sub, v, "an address", &text) != 0)
        return;
    if (sy_split_addr(text, host, sizeof host, &ep->port, &numeric) != 0) {
        cfg_error(ld, ymark(v), &sub,
                  "bad address '%s' (expected host:port or [v6]:port, port 0..65535)", text);
        return;
    }
    if (b->discovery != CFG_DISCOVERY_DNS || numeric) {
        yget_addr(ld, at, e, "address", &ep->address);
        return;
    }
    if (!sy_valid_dns_name(host)) {
        cfg_error(ld, ymark(v), &sub, "bad host name '%s' in address '%s'", host, text);
        return;
    }
    ep->address.text = cfg_strdup(ld, text);
    ep->dns_name = cfg_strdup(ld, host);
}

static void parse_endpoints(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                            struct cfg_backend_service *b)
{
    static const char *const keys[] = {"address", "weight", NULL};
    struct ypath sub = {at, "endpoints", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n), *v = yfind(ld, n, "endpoints");
    size_t len = yseq_len(seq);
    uint64_t total = 0;
    bool bad_weight = false;

    if (!v || ynull(v) || (seq && len == 0)) {
        cfg_error(ld, ymark(v ? v : n), v ? &sub : at, "%s",
                  v ? "at least one endpoint is required" : "missing required key 'endpoints'");
        return;
    }
    if (!seq)
        return;
    b->endpoints = cfg_calloc_array(ld, len, sizeof(*b->endpoints));
    if (!b->endpoints)
        return;
    b->n_endpoints = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        yaml_node_t *e = yseq_item(ld, seq, i);
        struct cfg_endpoint *ep = &b->endpoints[i];
        ep->weight = 1;
        ep->mark = ymark(e);
        if (!ymap_check(ld, &item, e, keys)) {
            bad_weight = true;
            continue;
        }
        parse_endpoint_address(ld, &item, e, b, ep);
        bad_weight |= yget_u32(ld, &item, e, "weight", 0, 1000, &ep->weight) < 0;
        total += ep->weight;
    }
    if (total == 0 && !bad_weight)
        cfg_error(ld, ymark(seq), &sub, "the endpoints' total weight must be > 0");
}

static void parse_consistent_hash(struct cfg_loader *ld, const struct ypath *at,
                                  const yaml_node_t *n, struct cfg_backend_service *b)
{
    static const char *const keys[] = {"http_header_name", "http_cookie", "minimum_ring_size",
                                       NULL};
    static const char *const cookie_keys[] = {"name", "path", "ttl", NULL};
    struct ypath sub = {at, "consistent_hash", 0}, csub = {&sub, "http_cookie", 0};
    yaml_node_t *ch = ychild_map(ld, &sub, n, keys), *cookie;
    int64_t ring;

    if (!ch)
        return;
    yget_header_name(ld, &sub, ch, "http_header_name", false, &b->consistent_hash.http_header_name);
    if (yget_i64(ld, &sub, ch, "minimum_ring_size", 1, 8 * 1024 * 1024, &ring) == 1)
        b->consistent_hash.minimum_ring_size = (uint64_t)ring;
    cookie = ychild_map(ld, &csub, ch, cookie_keys);
    if (!cookie)
        return;
    yget_name(ld, &csub, cookie, "name", &b->consistent_hash.cookie_name);
    yget_name(ld, &csub, cookie, "path", &b->consistent_hash.cookie_path);
    yget_duration(ld, &csub, cookie, "ttl", &b->consistent_hash.cookie_ttl_ms);
}

static void parse_health_check_refs(struct cfg_loader *ld, const struct ypath *at,
                                    const yaml_node_t *n, struct cfg_backend_service *b)
{
    struct ypath sub = {at, "health_checks", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n);
    size_t len = yseq_len(seq);

    if (len == 0)
        return;
    b->health_check_names = cfg_calloc_array(ld, len, sizeof(*b->health_check_names));
    b->health_checks = cfg_calloc_array(ld, len, sizeof(*b->health_checks));
    if (!b->health_check_names || !b->health_checks)
        return;
    b->n_health_checks = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        ynode_ref(ld, &item, yseq_item(ld, seq, i), CFG_REF_HEALTH_CHECK, &b->health_check_names[i],
                  &b->health_checks[i], NULL);
    }
}

static void parse_limits(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                         struct cfg_backend_service *b)
{
    static const char *const cb_keys[] = {"max_connections", "max_pending_requests", "max_requests",
                                          "max_retries", NULL};
    static const char *const od_keys[] = {"consecutive_errors",
                                          "consecutive_gateway_failure",
                                          "enforcing_consecutive_errors",
                                          "enforcing_consecutive_gateway_failure",
                                          "interval",
                                          "base_ejection_time",
                                          "max_ejection_percent",
                                          NULL};
    struct ypath cb_at = {at, "circuit_breakers", 0}, od_at = {at, "outlier_detection", 0};
    yaml_node_t *cb = ychild_map(ld, &cb_at, n, cb_keys);
    yaml_node_t *od = ychild_map(ld, &od_at, n, od_keys);

    if (cb) {
        yget_u32(ld, &cb_at, cb, "max_connections", 1, UINT32_MAX,
                 &b->circuit_breakers.max_connections);
        yget_u32(ld, &cb_at, cb, "max_pending_requests", 0, UINT32_MAX,
                 &b->circuit_breakers.max_pending_requests);
        yget_u32(ld, &cb_at, cb, "max_requests", 1, UINT32_MAX, &b->circuit_breakers.max_requests);
        yget_u32(ld, &cb_at, cb, "max_retries", 0, UINT32_MAX, &b->circuit_breakers.max_retries);
    }
    if (!od)
        return;
    yget_u32(ld, &od_at, od, "consecutive_errors", 0, UINT32_MAX,
             &b->outlier_detection.consecutive_errors);
    yget_u32(ld, &od_at, od, "consecutive_gateway_failure", 0, UINT32_MAX,
             &b->outlier_detection.consecutive_gateway_failure);
    yget_u32(ld, &od_at, od, "enforcing_consecutive_errors", 0, 100,
             &b->outlier_detection.enforcing_consecutive_errors);
    yget_u32(ld, &od_at, od, "enforcing_consecutive_gateway_failure", 0, 100,
             &b->outlier_detection.enforcing_consecutive_gateway_failure);
    yget_duration(ld, &od_at, od, "interval", &b->outlier_detection.interval_ms);
    if (b->outlier_detection.interval_ms == 0)
        cfg_error(ld, ymark(yfind(ld, od, "interval")), &od_at, "interval must be > 0");
    yget_duration(ld, &od_at, od, "base_ejection_time",
                  &b->outlier_detection.base_ejection_time_ms);
    yget_u32(ld, &od_at, od, "max_ejection_percent", 0, 100,
             &b->outlier_detection.max_ejection_percent);
}

/* tls (HTTPS/HTTP2 only), http2_keepalive, connection_draining. */
static void parse_upstream_conn(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                                struct cfg_backend_service *b)
{
    static const char *const tls_keys[] = {"ca_file", "verify", "sni", NULL};
    static const char *const ka_keys[] = {"time", "timeout", NULL};
    static const char *const dr_keys[] = {"draining_timeout", NULL};
    struct ypath tls_at = {at, "tls", 0}, ka_at = {at, "http2_keepalive", 0};
    struct ypath dr_at = {at, "connection_draining", 0};
    yaml_node_t *tls = ychild_map(ld, &tls_at, n, tls_keys);
    yaml_node_t *ka = ychild_map(ld, &ka_at, n, ka_keys);
    yaml_node_t *dr = ychild_map(ld, &dr_at, n, dr_keys);

    if (tls) {
        yget_name(ld, &tls_at, tls, "ca_file", &b->tls.ca_file);
        yget_bool(ld, &tls_at, tls, "verify", &b->tls.verify);
        yget_name(ld, &tls_at, tls, "sni", &b->tls.sni);
        if (b->protocol != CFG_BACKEND_HTTPS && b->protocol != CFG_BACKEND_HTTP2)
            cfg_error(ld, ymark(yfind_key(ld, n, "tls")), at,
                      "tls is only allowed with protocol HTTPS or HTTP2");
    }
    if (ka) {
        yget_duration(ld, &ka_at, ka, "time", &b->http2_keepalive.time_ms);
        yget_duration(ld, &ka_at, ka, "timeout", &b->http2_keepalive.timeout_ms);
    }
    if (dr)
        yget_duration(ld, &dr_at, dr, "draining_timeout", &b->draining_timeout_ms);
}

static void parse_retry_backoff(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                                struct cfg_backend_service *b)
{
    static const char *const keys[] = {"base_interval", "max_interval", NULL};
    struct ypath sub = {at, "retry_backoff", 0};
    yaml_node_t *rb = ychild_map(ld, &sub, n, keys);
    uint64_t size;

    if (yget_size(ld, at, n, "retry_buffer_size", 0, 1024ull * 1024 * 1024, &size) == 1)
        b->retry_buffer_size = size;
    if (!rb)
        return;
    yget_duration(ld, &sub, rb, "base_interval", &b->retry_backoff.base_interval_ms);
    yget_duration(ld, &sub, rb, "max_interval", &b->retry_backoff.max_interval_ms);
    if (b->retry_backoff.base_interval_ms == 0 ||
        b->retry_backoff.max_interval_ms < b->retry_backoff.base_interval_ms)
        cfg_error(ld, ymark(rb), &sub, "need 0 < base_interval <= max_interval");
}

static void parse_policies(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                           struct cfg_backend_service *b)
{
    int v;

    if (yget_enum(ld, at, n, "locality_lb_policy", lb_policies, &v) == 1)
        b->locality_lb_policy = (enum cfg_lb_policy)v;
    if (yget_enum(ld, at, n, "session_affinity", affinities, &v) == 1)
        b->session_affinity = (enum cfg_session_affinity)v;
    parse_consistent_hash(ld, at, n, b);
    if (b->session_affinity == CFG_AFFINITY_HEADER_FIELD && !b->consistent_hash.http_header_name)
        cfg_error(ld, ymark(yfind(ld, n, "session_affinity")), at,
                  "session_affinity HEADER_FIELD requires consistent_hash.http_header_name");
}

/* discovery and the dns_* keys, which only discovery: DNS takes. */
static void parse_discovery(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                            struct cfg_backend_service *b)
{
    static const char *const dns_keys[] = {"dns_refresh_rate", "respect_dns_ttl",
                                           "dns_lookup_family", "dns_nxdomain", NULL};
    int v;

    if (yget_enum(ld, at, n, "discovery", discoveries, &v) == 1)
        b->discovery = (enum cfg_discovery)v;
    if (b->discovery != CFG_DISCOVERY_DNS) {
        for (size_t i = 0; dns_keys[i]; i++) {
            yaml_node_t *k = yfind_key(ld, n, dns_keys[i]);
            if (k)
                cfg_error(ld, ymark(k), at, "%s applies to discovery: DNS only", dns_keys[i]);
        }
        return;
    }
    if (yget_duration(ld, at, n, "dns_refresh_rate", &b->dns_refresh_rate_ms) == 1 &&
        (b->dns_refresh_rate_ms == 0 || b->dns_refresh_rate_ms > DAY_MS))
        cfg_error(ld, ymark(yfind(ld, n, "dns_refresh_rate")), at,
                  "dns_refresh_rate must be > 0 and at most 24h");
    yget_bool(ld, at, n, "respect_dns_ttl", &b->respect_dns_ttl);
    if (yget_enum(ld, at, n, "dns_lookup_family", dns_families, &v) == 1)
        b->dns_lookup_family = (enum cfg_dns_family)v;
    if (yget_enum(ld, at, n, "dns_nxdomain", nxdomain_modes, &v) == 1)
        b->dns_nxdomain_clear = v == 1;
}

static void parse_backend(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                          struct cfg_backend_service *b)
{
    static const char *const keys[] = {"name",
                                       "protocol",
                                       "endpoints",
                                       "timeout",
                                       "connect_timeout",
                                       "locality_lb_policy",
                                       "session_affinity",
                                       "consistent_hash",
                                       "health_checks",
                                       "max_concurrent_requests_per_endpoint",
                                       "circuit_breakers",
                                       "outlier_detection",
                                       "connection_draining",
                                       "tls",
                                       "http2_keepalive",
                                       "retry_buffer_size",
                                       "retry_backoff",
                                       "discovery",
                                       "dns_refresh_rate",
                                       "respect_dns_ttl",
                                       "dns_lookup_family",
                                       "dns_nxdomain",
                                       NULL};
    int v;

    backend_defaults(ld, b);
    b->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_name(ld, at, n, "name", &b->name) == 0)
        ymissing(ld, at, n, "name");
    if (yget_enum(ld, at, n, "protocol", backend_protocols, &v) == 1)
        b->protocol = (enum cfg_backend_protocol)v;
    parse_discovery(ld, at, n, b);
    parse_endpoints(ld, at, n, b);
    yget_duration(ld, at, n, "timeout", &b->timeout_ms);
    yget_duration(ld, at, n, "connect_timeout", &b->connect_timeout_ms);
    if (b->connect_timeout_ms == 0)
        cfg_error(ld, ymark(yfind(ld, n, "connect_timeout")), at, "connect_timeout must be > 0");
    parse_policies(ld, at, n, b);
    parse_health_check_refs(ld, at, n, b);
    yget_u32(ld, at, n, "max_concurrent_requests_per_endpoint", 0, UINT32_MAX,
             &b->max_concurrent_requests_per_endpoint);
    parse_limits(ld, at, n, b);
    parse_upstream_conn(ld, at, n, b);
    parse_retry_backoff(ld, at, n, b);
}

void cfg_parse_backend_services(struct cfg_loader *ld, const struct ypath *at,
                                const yaml_node_t *seq)
{
    size_t n = yseq_len(seq);
    struct cfg_backend_service *bs = cfg_calloc_array(ld, n, sizeof(*bs));
    char **names = n ? cfg_scratch_alloc(ld, n * sizeof(*names)) : NULL;

    if (!bs || !names)
        return;
    ld->cfg->backend_services = bs;
    ld->cfg->n_backend_services = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {at, NULL, i};
        parse_backend(ld, &item, yseq_item(ld, seq, i), &bs[i]);
        names[i] = bs[i].name;
    }
    cfg_check_unique(ld, at, seq, names, n, "backend_service");
}

/* ---- dns (discovery: DNS) -------------------------------------------------- */

void cfg_parse_dns(struct cfg_loader *ld, const yaml_node_t *root)
{
    static const char *const keys[] = {"resolvers", "timeout", "attempts", NULL};
    struct ypath sub = {NULL, "dns", 0}, rsub = {&sub, "resolvers", 0};
    yaml_node_t *dns, *seq;

    ld->cfg->dns.timeout_ms = 2000;
    ld->cfg->dns.attempts = 2;
    if (!root || !(dns = ychild_map(ld, &sub, root, keys)))
        return;
    if (yget_duration(ld, &sub, dns, "timeout", &ld->cfg->dns.timeout_ms) == 1 &&
        (ld->cfg->dns.timeout_ms == 0 || ld->cfg->dns.timeout_ms > 60 * 1000))
        cfg_error(ld, ymark(yfind(ld, dns, "timeout")), &sub,
                  "timeout must be > 0 and at most 60s");
    yget_u32(ld, &sub, dns, "attempts", 1, 16, &ld->cfg->dns.attempts);
    seq = ychild_seq(ld, &rsub, dns);
    size_t n = yseq_len(seq);
    if (!seq || n == 0)
        return;
    struct cfg_addr *r = cfg_calloc_array(ld, n, sizeof *r);
    if (!r)
        return;
    ld->cfg->dns.resolvers = r;
    ld->cfg->dns.n_resolvers = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&rsub, NULL, i};
        yaml_node_t *v = yseq_item(ld, seq, i);
        const char *text;
        char host[256], buf[300];
        uint16_t port;
        bool numeric;
        if (ynode_scalar(ld, &item, v, "an address", &text) != 0)
            continue;
        /* "IP" alone is port 53. */
        bool bare = sy_split_addr(text, host, sizeof host, &port, &numeric) != 0;
        if (bare)
            snprintf(buf, sizeof buf, strchr(text, ':') ? "[%s]:53" : "%s:53", text);
        else
            snprintf(buf, sizeof buf, "%s", text);
        if (sy_split_addr(buf, host, sizeof host, &port, &numeric) != 0 || !numeric || port == 0 ||
            sy_parse_addr(buf, &r[i].ss, &r[i].len) != 0) {
            cfg_error(ld, ymark(v), &item, "bad resolver '%s' (expected IP, IP:port or [v6]:port)",
                      text);
            continue;
        }
        r[i].text = cfg_strdup(ld, buf);
    }
}

/* ---- health checks -------------------------------------------------------- */

static void parse_health_check(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                               struct cfg_health_check *h)
{
    static const char *const keys[] = {"name",
                                       "type",
                                       "port",
                                       "request_path",
                                       "host",
                                       "response",
                                       "grpc_service_name",
                                       "check_interval",
                                       "timeout",
                                       "healthy_threshold",
                                       "unhealthy_threshold",
                                       NULL};
    int v;

    h->type = CFG_HC_TCP;
    h->request_path = cfg_strdup(ld, "/");
    h->host = cfg_strdup(ld, "");
    h->response = cfg_strdup(ld, "");
    h->grpc_service_name = cfg_strdup(ld, "");
    h->check_interval_ms = 5000;
    h->timeout_ms = 5000;
    h->healthy_threshold = 2;
    h->unhealthy_threshold = 2;
    h->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_name(ld, at, n, "name", &h->name) == 0)
        ymissing(ld, at, n, "name");
    if (yget_enum(ld, at, n, "type", hc_types, &v) == 1)
        h->type = (enum cfg_health_check_type)v;
    yget_u32(ld, at, n, "port", 0, 65535, &h->port);
    if (yget_str(ld, at, n, "request_path", &h->request_path) == 1 && h->request_path[0] != '/')
        cfg_error(ld, ymark(yfind(ld, n, "request_path")), at, "request_path must start with '/'");
    yget_str(ld, at, n, "host", &h->host);
    yget_str(ld, at, n, "response", &h->response);
    yget_str(ld, at, n, "grpc_service_name", &h->grpc_service_name);
    if (yget_duration(ld, at, n, "check_interval", &h->check_interval_ms) == 1 &&
        h->check_interval_ms == 0)
        cfg_error(ld, ymark(yfind(ld, n, "check_interval")), at, "check_interval must be > 0");
    if (yget_duration(ld, at, n, "timeout", &h->timeout_ms) == 1 && h->timeout_ms == 0)
        cfg_error(ld, ymark(yfind(ld, n, "timeout")), at, "timeout must be > 0");
    yget_u32(ld, at, n, "healthy_threshold", 1, 1000, &h->healthy_threshold);
    yget_u32(ld, at, n, "unhealthy_threshold", 1, 1000, &h->unhealthy_threshold);
}

void cfg_parse_health_checks(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *seq)
{
    size_t n = yseq_len(seq);
    struct cfg_health_check *hc = cfg_calloc_array(ld, n, sizeof(*hc));
    char **names = n ? cfg_scratch_alloc(ld, n * sizeof(*names)) : NULL;

    if (!hc || !names)
        return;
    ld->cfg->health_checks = hc;
    ld->cfg->n_health_checks = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {at, NULL, i};
        parse_health_check(ld, &item, yseq_item(ld, seq, i), &hc[i]);
        names[i] = hc[i].name;
    }
    cfg_check_unique(ld, at, seq, names, n, "health_check");
}
