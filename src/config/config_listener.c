/*
 * config_listener.c — the root mapping of the config file and its global
 * sections: listeners, admin, access_log, drain_timeout. url_maps and
 * backend_services/health_checks are delegated to their own files.
 */
#include <string.h>

#include "config/config_loader.h"

/* HTTP/2 window sizes: RFC 9113 maximum; the connection window can only grow. */
#define H2_MAX_WINDOW     2147483647u
#define H2_DEFAULT_WINDOW 65535u

static const char *const listener_protocols[] = {"HTTP", "HTTPS", "H2C", NULL};
static const char *const tls_versions[] = {"TLS1.2", "TLS1.3", NULL};
static const char *const log_formats[] = {"json", "text", NULL};

static void listener_defaults(struct cfg_listener *l)
{
    l->protocol = CFG_LISTENER_HTTP;
    l->tls.min_version = CFG_TLS1_2;
    l->http2.max_concurrent_streams = 100;
    l->http2.initial_stream_window_size = 64 * 1024;
    l->http2.initial_connection_window_size = 1024 * 1024;
    l->http2.max_header_list_size = 64 * 1024;
    l->http2.keepalive_time_ms = 2 * 3600 * 1000;
    l->http2.keepalive_timeout_ms = 20 * 1000;
    l->http2.ping_min_interval_without_data_ms = 5 * 60 * 1000;
    l->http2.ping_permit_without_calls = false;
    l->http2.ping_max_strikes = 2;
    l->timeouts.http_keepalive_ms = 600 * 1000;
    l->timeouts.stream_idle_ms = 300 * 1000;
    l->timeouts.request_headers_ms = 10 * 1000;
    l->max_request_headers_size = 60 * 1024;
    l->accept_http_10 = false;
}

static void parse_certificates(struct cfg_loader *ld, const struct ypath *at,
                               const yaml_node_t *tls, struct cfg_listener *l)
{
    static const char *const keys[] = {"cert_file", "key_file", NULL};
    struct ypath sub = {at, "certificates", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, tls);
    size_t n = yseq_len(seq);

    if (n == 0)
        return;
    l->tls.certificates = cfg_calloc_array(ld, n, sizeof(*l->tls.certificates));
    if (!l->tls.certificates)
        return;
    l->tls.n_certificates = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        yaml_node_t *c = yseq_item(ld, seq, i);
        struct cfg_certificate *cert = &l->tls.certificates[i];
        if (!ymap_check(ld, &item, c, keys))
            continue;
        if (yget_name(ld, &item, c, "cert_file", &cert->cert_file) == 0)
            ymissing(ld, &item, c, "cert_file");
        if (yget_name(ld, &item, c, "key_file", &cert->key_file) == 0)
            ymissing(ld, &item, c, "key_file");
    }
}

/* tls: and its agreement with `protocol` (HTTPS needs certificates). */
static void parse_listener_tls(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                               struct cfg_listener *l)
{
    static const char *const keys[] = {"certificates", "min_version", NULL};
    struct ypath sub = {at, "tls", 0};
    yaml_node_t *tls = ychild_map(ld, &sub, n, keys);
    int v;

    if (tls) {
        parse_certificates(ld, &sub, tls, l);
        if (yget_enum(ld, &sub, tls, "min_version", tls_versions, &v) == 1)
            l->tls.min_version = v == 0 ? CFG_TLS1_2 : CFG_TLS1_3;
    }
    if (l->protocol == CFG_LISTENER_HTTPS && l->tls.n_certificates == 0) {
        yaml_node_t *where = tls ? tls : yfind(ld, n, "protocol");
        cfg_error(ld, ymark(where), tls ? &sub : at, "protocol HTTPS requires tls.certificates");
    } else if (l->protocol != CFG_LISTENER_HTTPS && tls) {
        cfg_error(ld, ymark(yfind_key(ld, n, "tls")), at,
                  "tls is only allowed with protocol HTTPS");
    }
}

static void parse_keepalive(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *h2,
                            struct cfg_listener *l)
{
    static const char *const ka_keys[] = {"time", "timeout", NULL};
    static const char *const ping_keys[] = {"min_interval_without_data", "permit_without_calls",
                                            "max_strikes", NULL};
    struct ypath ka_at = {at, "keepalive", 0}, ping_at = {at, "ping_policy", 0};
    yaml_node_t *ka = ychild_map(ld, &ka_at, h2, ka_keys);
    yaml_node_t *ping = ychild_map(ld, &ping_at, h2, ping_keys);

    if (ka) {
        yget_duration(ld, &ka_at, ka, "time", &l->http2.keepalive_time_ms);
        yget_duration(ld, &ka_at, ka, "timeout", &l->http2.keepalive_timeout_ms);
    }
    if (ping) {
        yget_duration(ld, &ping_at, ping, "min_interval_without_data",
                      &l->http2.ping_min_interval_without_data_ms);
        yget_bool(ld, &ping_at, ping, "permit_without_calls", &l->http2.ping_permit_without_calls);
        yget_u32(ld, &ping_at, ping, "max_strikes", 0, 1000, &l->http2.ping_max_strikes);
    }
}

/* A size into a uint32_t field. */
static void get_size32(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                       const char *key, uint64_t min, uint64_t max, uint32_t *out)
{
    uint64_t v;

    if (yget_size(ld, at, map, key, min, max, &v) == 1)
        *out = (uint32_t)v;
}

static void parse_listener_http2(struct cfg_loader *ld, const struct ypath *at,
                                 const yaml_node_t *n, struct cfg_listener *l)
{
    static const char *const keys[] = {"max_concurrent_streams",
                                       "initial_stream_window_size",
                                       "initial_connection_window_size",
                                       "max_header_list_size",
                                       "keepalive",
                                       "ping_policy",
                                       "max_connection_idle",
                                       "max_connection_age",
                                       "max_connection_age_grace",
                                       NULL};
    struct ypath sub = {at, "http2", 0};
    yaml_node_t *h2 = ychild_map(ld, &sub, n, keys);

    if (!h2)
        return;
    yget_u32(ld, &sub, h2, "max_concurrent_streams", 1, H2_MAX_WINDOW,
             &l->http2.max_concurrent_streams);
    get_size32(ld, &sub, h2, "initial_stream_window_size", 1, H2_MAX_WINDOW,
               &l->http2.initial_stream_window_size);
    get_size32(ld, &sub, h2, "initial_connection_window_size", H2_DEFAULT_WINDOW, H2_MAX_WINDOW,
               &l->http2.initial_connection_window_size);
    get_size32(ld, &sub, h2, "max_header_list_size", 1024, UINT32_MAX,
               &l->http2.max_header_list_size);
    parse_keepalive(ld, &sub, h2, l);
    yget_duration(ld, &sub, h2, "max_connection_idle", &l->http2.max_connection_idle_ms);
    yget_duration(ld, &sub, h2, "max_connection_age", &l->http2.max_connection_age_ms);
    yget_duration(ld, &sub, h2, "max_connection_age_grace", &l->http2.max_connection_age_grace_ms);
}

static void parse_listener_timeouts(struct cfg_loader *ld, const struct ypath *at,
                                    const yaml_node_t *n, struct cfg_listener *l)
{
    static const char *const keys[] = {"http_keepalive", "stream_idle", "request_headers", NULL};
    struct ypath sub = {at, "timeouts", 0};
    yaml_node_t *t = ychild_map(ld, &sub, n, keys);

    if (!t)
        return;
    yget_duration(ld, &sub, t, "http_keepalive", &l->timeouts.http_keepalive_ms);
    yget_duration(ld, &sub, t, "stream_idle", &l->timeouts.stream_idle_ms);
    yget_duration(ld, &sub, t, "request_headers", &l->timeouts.request_headers_ms);
}

/* xff_trusted_cidrs; absent means everyone (0.0.0.0/0 and ::/0), as GCP. */
static void parse_xff(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                      struct cfg_listener *l)
{
    struct ypath sub = {at, "xff_trusted_cidrs", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, n);
    size_t len = yseq_len(seq);

    if (!seq) {
        yaml_node_t *v = yfind(ld, n, "xff_trusted_cidrs");
        if (v && !ynull(v))
            return; /* wrong type, reported */
        l->xff_trusted_cidrs = cfg_calloc_array(ld, 2, sizeof(*l->xff_trusted_cidrs));
        if (!l->xff_trusted_cidrs)
            return;
        l->n_xff_trusted_cidrs = 2;
        l->xff_trusted_cidrs[0].family = AF_INET;
        l->xff_trusted_cidrs[1].family = AF_INET6;
        return;
    }
    l->xff_trusted_cidrs = cfg_calloc_array(ld, len, sizeof(*l->xff_trusted_cidrs));
    if (len && !l->xff_trusted_cidrs)
        return;
    l->n_xff_trusted_cidrs = len;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        ynode_cidr(ld, &item, yseq_item(ld, seq, i), &l->xff_trusted_cidrs[i]);
    }
}

static void parse_listener(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                           struct cfg_listener *l)
{
    static const char *const keys[] = {"name",
                                       "address",
                                       "protocol",
                                       "tls",
                                       "url_map",
                                       "http2",
                                       "timeouts",
                                       "accept_http_10",
                                       "xff_trusted_cidrs",
                                       "max_request_headers_size",
                                       "limits",
                                       NULL};
    int proto;
    uint64_t size;

    listener_defaults(l);
    l->limits = ld->cfg->limits;
    l->limits.max_connections = 0; /* the top-level one counts the whole process */
    l->mark = ymark(n);
    if (!ymap_check(ld, at, n, keys))
        return;
    if (yget_addr(ld, at, n, "address", &l->address) == 0)
        ymissing(ld, at, n, "address");
    if (yget_name(ld, at, n, "name", &l->name) == 0 && l->address.text)
        l->name = cfg_strdup(ld, l->address.text); /* default: the address */
    if (yget_enum(ld, at, n, "protocol", listener_protocols, &proto) == 1)
        l->protocol = (enum cfg_listener_protocol)proto;
    parse_listener_tls(ld, at, n, l);
    if (yget_ref(ld, at, n, "url_map", CFG_REF_URL_MAP, &l->url_map_name, &l->url_map, NULL) == 0)
        ymissing(ld, at, n, "url_map");
    parse_listener_http2(ld, at, n, l);
    parse_listener_timeouts(ld, at, n, l);
    yget_bool(ld, at, n, "accept_http_10", &l->accept_http_10);
    if (yget_size(ld, at, n, "max_request_headers_size", 1024, 16 * 1024 * 1024, &size) == 1)
        l->max_request_headers_size = (uint32_t)size;
    parse_xff(ld, at, n, l);
    cfg_parse_limits(ld, at, n, false, &l->limits);
}

static void parse_listeners(struct cfg_loader *ld, const yaml_node_t *root)
{
    struct ypath sub = {NULL, "listeners", 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, root), *v = yfind(ld, root, "listeners");
    size_t n = yseq_len(seq);
    char **names;

    if (!v || ynull(v)) {
        ymissing(ld, NULL, root, "listeners");
        return;
    }
    if (!seq)
        return;
    if (n == 0) {
        cfg_error(ld, ymark(seq), &sub, "at least one listener is required");
        return;
    }
    ld->cfg->listeners = cfg_calloc_array(ld, n, sizeof(*ld->cfg->listeners));
    names = cfg_scratch_alloc(ld, n * sizeof(*names));
    if (!ld->cfg->listeners || !names)
        return;
    ld->cfg->n_listeners = n;
    for (size_t i = 0; i < n; i++) {
        struct ypath item = {&sub, NULL, i};
        parse_listener(ld, &item, yseq_item(ld, seq, i), &ld->cfg->listeners[i]);
        names[i] = ld->cfg->listeners[i].name;
    }
    cfg_check_unique(ld, &sub, seq, names, n, "listener");
}

static void parse_admin(struct cfg_loader *ld, const yaml_node_t *root)
{
    static const char *const keys[] = {"address", NULL};
    struct ypath sub = {NULL, "admin", 0};
    yaml_node_t *admin = ychild_map(ld, &sub, root, keys);

    if (!admin)
        return;
    ld->cfg->admin.set = true;
    if (yget_addr(ld, &sub, admin, "address", &ld->cfg->admin.address) == 0)
        ymissing(ld, &sub, admin, "address");
}

static void parse_access_log(struct cfg_loader *ld, const yaml_node_t *root)
{
    static const char *const keys[] = {"enabled", "path", "format", NULL};
    struct ypath sub = {NULL, "access_log", 0};
    yaml_node_t *al = ychild_map(ld, &sub, root, keys);
    int fmt;

    ld->cfg->access_log.enabled = true;
    ld->cfg->access_log.format = CFG_LOG_JSON;
    if (al) {
        yget_bool(ld, &sub, al, "enabled", &ld->cfg->access_log.enabled);
        yget_name(ld, &sub, al, "path", &ld->cfg->access_log.path);
        if (yget_enum(ld, &sub, al, "format", log_formats, &fmt) == 1)
            ld->cfg->access_log.format = (enum cfg_log_format)fmt;
    }
    if (!ld->cfg->access_log.path)
        ld->cfg->access_log.path = cfg_strdup(ld, "-");
}

/* Parses a top-level named section with `fn` when present. */
static void parse_section(struct cfg_loader *ld, const yaml_node_t *root, const char *key,
                          void (*fn)(struct cfg_loader *, const struct ypath *,
                                     const yaml_node_t *))
{
    struct ypath sub = {NULL, key, 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, root);

    if (seq)
        fn(ld, &sub, seq);
}

void cfg_parse_root(struct cfg_loader *ld, const yaml_node_t *root)
{
    static const char *const keys[] = {"listeners",     "admin",    "access_log",
                                       "drain_timeout", "url_maps", "backend_services",
                                       "health_checks", "limits",   NULL};

    ld->cfg->drain_timeout_ms = 30 * 1000;
    cfg_limits_defaults(&ld->cfg->limits);
    if (!root || ynull(root)) {
        cfg_error(ld, ymark(root), NULL, "missing required key 'listeners'");
        parse_access_log(ld, NULL);
        return;
    }
    if (!ymap_check(ld, NULL, root, keys)) {
        parse_access_log(ld, NULL);
        return;
    }
    parse_access_log(ld, root);
    parse_admin(ld, root);
    yget_duration(ld, NULL, root, "drain_timeout", &ld->cfg->drain_timeout_ms);
    parse_section(ld, root, "health_checks", cfg_parse_health_checks);
    parse_section(ld, root, "backend_services", cfg_parse_backend_services);
    parse_section(ld, root, "url_maps", cfg_parse_url_maps);
    cfg_parse_limits(ld, NULL, root, true, &ld->cfg->limits);
    parse_listeners(ld, root);
}
