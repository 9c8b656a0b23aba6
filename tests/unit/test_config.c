/*
 * test_config.c — the config loader: a config using every key loads with the
 * right values, a minimal one gets every default, and each kind of error is
 * reported as "FILE:LINE:COL: message" at the offending key or value.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config/config.h"
#include "test.h"

/* A valid skeleton (9 lines) that error cases extend or tweak. */
#define LISTENER "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: main\n"
#define URL_MAP  "url_maps:\n  - name: main\n    default_service: be\n"
#define BACKEND  "backend_services:\n  - name: be\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"
#define BASE     LISTENER URL_MAP BACKEND
/* Lines inserted into the url_map (they start at line 7). */
#define BASE_URL_MAP_PM(lines) LISTENER URL_MAP lines BACKEND
/* Route rules of path matcher "pm" starting at line 10. */
#define RULES(lines)                                                                               \
    BASE_URL_MAP_PM("    path_matchers:\n      - name: pm\n        route_rules:\n" lines)
/* One route rule to service "be"; `lines` continue it at line 12. */
#define RULE(lines) RULES("          - priority: 1\n            service: be\n" lines)

static struct config *load(const char *yaml, struct config_errors *e)
{
    return config_load_string("t.yaml", yaml, strlen(yaml), e);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void dump_errors(const struct config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    got: %s\n", e->msgs[i]);
}

/* The load fails with exactly one error starting with `want`. */
static void expect_error(const char *name, const char *yaml, const char *want)
{
    struct config_errors e = {0};
    struct config *cfg;

    TEST_CASE(name);
    cfg = load(yaml, &e);
    CHECK(cfg == NULL);
    CHECK(e.n == 1);
    CHECK(e.n >= 1 && strncmp(e.msgs[0], want, strlen(want)) == 0);
    if (e.n != 1 || strncmp(e.msgs[0], want, strlen(want)) != 0) {
        fprintf(stderr, "    want: %s\n", want);
        dump_errors(&e);
    }
    config_unref(cfg);
    config_errors_free(&e);
}

/* The load succeeds (for short valid variations). */
static struct config *expect_ok(const char *name, const char *yaml)
{
    struct config_errors e = {0};
    struct config *cfg;

    TEST_CASE(name);
    cfg = load(yaml, &e);
    CHECK(cfg != NULL);
    CHECK(e.n == 0);
    dump_errors(&e);
    config_errors_free(&e);
    return cfg;
}

/* Does a compiled (anchored) regex match all of `s`? */
static bool re_match(void *code, const char *s)
{
    pcre2_match_data *md;
    int rc;

    if (!code)
        return false;
    md = pcre2_match_data_create_from_pattern(code, NULL);
    if (!md)
        return false;
    rc = pcre2_match(code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* ---- a config with every key ------------------------------------------------------ */

static const char full_yaml[] =
    "listeners:\n"
    "  - name: internal\n"
    "    address: \"127.0.0.1:8080\"\n"
    "    protocol: HTTPS\n"
    "    tls:\n"
    "      certificates:\n"
    "        - {cert_file: certs/a.pem, key_file: certs/a.key}\n"
    "        - {cert_file: certs/b.pem, key_file: certs/b.key}\n"
    "      min_version: TLS1.3\n"
    "      cipher_suites: [ECDHE-RSA-AES256-GCM-SHA384, TLS_AES_128_GCM_SHA256]\n"
    "      ecdh_curves: [P-384, X25519]\n"
    "      session_ticket_rotation: 30m\n"
    "    url_map: main\n"
    "    http2:\n"
    "      max_concurrent_streams: 50\n"
    "      initial_stream_window_size: 128KiB\n"
    "      initial_connection_window_size: 2MiB\n"
    "      max_header_list_size: 32KiB\n"
    "      keepalive: {time: 1h, timeout: 10s}\n"
    "      ping_policy:\n"
    "        min_interval_without_data: 1m\n"
    "        permit_without_calls: true\n"
    "        max_strikes: 3\n"
    "      max_connection_idle: 15m\n"
    "      max_connection_age: 1h\n"
    "      max_connection_age_grace: 30s\n"
    "    timeouts:\n"
    "      http_keepalive: 120s\n"
    "      stream_idle: 60s\n"
    "      request_headers: 5s\n"
    "    accept_http_10: true\n"
    "    max_request_headers_size: 32KiB\n"
    "    xff_trusted_cidrs: [\"10.0.0.0/8\", \"::1\"]\n"
    "  - address: \"[::1]:0\"\n"
    "    url_map: main\n"
    "    xff_trusted_cidrs: []\n"
    "admin:\n"
    "  address: \"127.0.0.1:9901\"\n"
    "access_log:\n"
    "  enabled: false\n"
    "  path: /var/log/sy.log\n"
    "  format: text\n"
    "drain_timeout: 1.5s\n"
    "url_maps:\n"
    "  - name: main\n"
    "    default_service: legacy\n"
    "    header_action:\n"
    "      request_headers_to_add: [{header_name: X-A, header_value: \"1\", replace: true}]\n"
    "      request_headers_to_remove: [X-B]\n"
    "      response_headers_to_add: [{header_name: x-c, header_value: v}]\n"
    "      response_headers_to_remove: [x-d]\n"
    "    host_rules:\n"
    "      - hosts: [\"API.internal\", \"*.svc.internal\"]\n"
    "        path_matcher: api\n"
    "      - hosts: [static.internal]\n"
    "        path_matcher: files\n"
    "    path_matchers:\n"
    "      - name: files\n"
    "        path_rules:\n"
    "          - paths: [/video, /video/*]\n"
    "            service: video\n"
    "          - paths: [/old/*]\n"
    "            url_redirect: {host_redirect: new.internal, prefix_redirect: /new/,\n"
    "                           https_redirect: true, strip_query: true,\n"
    "                           redirect_response_code: FOUND}\n"
    "          - paths: [/split]\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - {backend_service: api-v1, weight: 1}\n"
    "                - {backend_service: api-v2, weight: 3}\n"
    "      - name: api\n"
    "        default_service: legacy\n"
    "        header_action: {request_headers_to_remove: [x-internal]}\n"
    "        route_rules:\n"
    "          - priority: 30\n"
    "            match_rules: [{prefix_match: /old/}]\n"
    "            url_redirect: {path_redirect: /new, redirect_response_code: 308}\n"
    "          - priority: 10\n"
    "            match_rules:\n"
    "              - prefix_match: /images/\n"
    "                ignore_case: true\n"
    "                header_matches:\n"
    "                  - {header_name: X-Canary, exact_match: \"true\"}\n"
    "                  - {header_name: x-p, prefix_match: ab}\n"
    "                  - {header_name: x-s, suffix_match: yz}\n"
    "                  - {header_name: x-r, regex_match: \"v[0-9]+\"}\n"
    "                  - {header_name: x-present, present_match: true, invert_match: true}\n"
    "                  - {header_name: x-range, range_match: {start: 10, end: 20}}\n"
    "                  - {header_name: \":method\", exact_match: GET}\n"
    "                query_parameter_matches:\n"
    "                  - {name: debug, present_match: true}\n"
    "                  - {name: v, exact_match: \"2\"}\n"
    "                  - {name: r, regex_match: \"a.*\"}\n"
    "              - full_path_match: /exact\n"
    "              - regex_match: \"/re/[a-z]+\"\n"
    "            service: images\n"
    "            route_action:\n"
    "              url_rewrite: {path_prefix_rewrite: /, host_rewrite: images.internal}\n"
    "              timeout: 10s\n"
    "              retry_policy:\n"
    "                retry_conditions: [5xx, gateway-error, connect-failure, retriable-4xx,\n"
    "                                   refused-stream, cancelled, deadline-exceeded,\n"
    "                                   internal, resource-exhausted, unavailable]\n"
    "                num_retries: 2\n"
    "                per_try_timeout: 3s\n"
    "              fault_injection_policy:\n"
    "                delay: {fixed_delay: 2s, percentage: 50}\n"
    "                abort: {http_status: 503, percentage: 10.5}\n"
    "            header_action:\n"
    "              response_headers_to_add: [{header_name: x-route, header_value: images}]\n"
    "          - priority: 20\n"
    "            match_rules: [{prefix_match: /api/}]\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - backend_service: api-v2\n"
    "                  weight: 10\n"
    "                  header_action:\n"
    "                    request_headers_to_add: [{header_name: x-v, header_value: \"2\"}]\n"
    "                - {backend_service: api-v1, weight: 90}\n"
    "              retry_policy: {num_retries: 3}\n"
    "              fault_injection_policy:\n"
    "                abort: {grpc_status: 14}\n"
    "          - priority: 40\n"
    "            service: legacy\n"
    "            route_action: {timeout: 0s}\n"
    "backend_services:\n"
    "  - name: legacy\n"
    "    endpoints:\n"
    "      - {address: \"127.0.0.1:9001\"}\n"
    "  - name: video\n"
    "    protocol: HTTPS\n"
    "    endpoints: [{address: \"127.0.0.1:9002\", weight: 5}, {address: \"[::1]:9003\", weight: "
    "0}]\n"
    "    timeout: 0s\n"
    "    connect_timeout: 250ms\n"
    "    locality_lb_policy: RING_HASH\n"
    "    session_affinity: HEADER_FIELD\n"
    "    consistent_hash:\n"
    "      http_header_name: X-User\n"
    "      http_cookie: {name: vid, path: /v, ttl: 1h}\n"
    "      minimum_ring_size: 2048\n"
    "    health_checks: [hc-http, hc-grpc]\n"
    "    max_concurrent_requests_per_endpoint: 10\n"
    "    circuit_breakers: {max_connections: 1, max_pending_requests: 2, max_requests: 3,\n"
    "                       max_retries: 4}\n"
    "    outlier_detection: {consecutive_errors: 6, consecutive_gateway_failure: 7,\n"
    "                        enforcing_consecutive_errors: 8,\n"
    "                        enforcing_consecutive_gateway_failure: 9, interval: 2s,\n"
    "                        base_ejection_time: 1m, max_ejection_percent: 11}\n"
    "    connection_draining: {draining_timeout: 5s}\n"
    "    tls: {ca_file: certs/ca.pem, verify: false, sni: backend.internal}\n"
    "    http2_keepalive: {time: 30s, timeout: 5s}\n"
    "    retry_buffer_size: 1MiB\n"
    "    retry_backoff: {base_interval: 10ms, max_interval: 1s}\n"
    "  - name: images\n"
    "    protocol: H2C\n"
    "    endpoints: [{address: \"127.0.0.1:9004\"}]\n"
    "  - name: api-v1\n"
    "    protocol: HTTP2\n"
    "    endpoints: [{address: \"127.0.0.1:9005\"}]\n"
    "  - name: api-v2\n"
    "    endpoints: [{address: \"127.0.0.1:9006\"}]\n"
    "health_checks:\n"
    "  - name: hc-http\n"
    "    type: HTTP\n"
    "    port: 8081\n"
    "    request_path: /healthz\n"
    "    host: health.internal\n"
    "    response: OK\n"
    "    check_interval: 2s\n"
    "    timeout: 1s\n"
    "    healthy_threshold: 3\n"
    "    unhealthy_threshold: 4\n"
    "  - name: hc-grpc\n"
    "    type: GRPC\n"
    "    grpc_service_name: my.Service\n";

static void check_full_listeners(const struct config *c)
{
    const struct cfg_listener *l = &c->listeners[0], *l2 = &c->listeners[1];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->address.ss;

    CHECK(c->n_listeners == 2);
    CHECK_STR(l->name, "internal");
    CHECK_STR(l->address.text, "127.0.0.1:8080");
    CHECK(sin->sin_family == AF_INET && ntohs(sin->sin_port) == 8080);
    CHECK(l->protocol == CFG_LISTENER_HTTPS);
    CHECK(l->tls.n_certificates == 2);
    CHECK_STR(l->tls.certificates[1].cert_file, "certs/b.pem");
    CHECK_STR(l->tls.certificates[1].key_file, "certs/b.key");
    CHECK(l->tls.min_version == 0x0304);
    CHECK(l->tls.n_cipher_suites == 2);
    CHECK_STR(l->tls.cipher_suites[0], "ECDHE-RSA-AES256-GCM-SHA384");
    CHECK_STR(l->tls.tls12_cipher_list, "ECDHE-RSA-AES256-GCM-SHA384");
    CHECK_STR(l->tls.tls13_ciphersuites, "TLS_AES_128_GCM_SHA256");
    CHECK(l->tls.n_ecdh_curves == 2 && strcmp(l->tls.ecdh_curves[1], "X25519") == 0);
    CHECK_STR(l->tls.groups_list, "P-384:X25519");
    CHECK(l->tls.session_ticket_rotation_ms == 30 * 60 * 1000);
    CHECK(l->url_map == &c->url_maps[0] && strcmp(l->url_map_name, "main") == 0);
    CHECK(l->http2.max_concurrent_streams == 50);
    CHECK(l->http2.initial_stream_window_size == 128 * 1024);
    CHECK(l->http2.initial_connection_window_size == 2 * 1024 * 1024);
    CHECK(l->http2.max_header_list_size == 32 * 1024);
    CHECK(l->http2.keepalive_time_ms == 3600000 && l->http2.keepalive_timeout_ms == 10000);
    CHECK(l->http2.ping_min_interval_without_data_ms == 60000);
    CHECK(l->http2.ping_permit_without_calls && l->http2.ping_max_strikes == 3);
    CHECK(l->http2.max_connection_idle_ms == 900000);
    CHECK(l->http2.max_connection_age_ms == 3600000);
    CHECK(l->http2.max_connection_age_grace_ms == 30000);
    CHECK(l->timeouts.http_keepalive_ms == 120000 && l->timeouts.stream_idle_ms == 60000);
    CHECK(l->timeouts.request_headers_ms == 5000);
    CHECK(l->accept_http_10 && l->max_request_headers_size == 32 * 1024);
    CHECK(l->n_xff_trusted_cidrs == 2 && l->xff_trusted_cidrs[0].prefix == 8);
    CHECK(l->xff_trusted_cidrs[1].family == AF_INET6 && l->xff_trusted_cidrs[1].prefix == 128);
    CHECK_STR(l2->name, "[::1]:0"); /* the address is the default name */
    CHECK(l2->address.ss.ss_family == AF_INET6 && l2->n_xff_trusted_cidrs == 0);
    CHECK(config_find_listener(c, "internal") == l);
    CHECK(config_find_listener(c, "[::1]:0") == l2);
    CHECK(config_find_listener(c, "nope") == NULL);
    CHECK(c->admin.set && strcmp(c->admin.address.text, "127.0.0.1:9901") == 0);
    CHECK(!c->access_log.enabled && c->access_log.format == CFG_LOG_TEXT);
    CHECK_STR(c->access_log.path, "/var/log/sy.log");
    CHECK(c->drain_timeout_ms == 1500);
}

static void check_full_path_rules(const struct config *c)
{
    const struct cfg_url_map *um = &c->url_maps[0];
    const struct cfg_path_matcher *files = &um->path_matchers[0];
    const struct cfg_path_rule *pr = files->path_rules;
    const struct cfg_url_redirect *r = pr[1].action.url_redirect;

    CHECK_STR(files->name, "files");
    CHECK(files->n_path_rules == 3 && files->n_route_rules == 0);
    /* no default of its own: the url_map's */
    CHECK(files->default_action.service == config_find_backend_service(c, "legacy"));
    CHECK(pr[0].n_paths == 2 && strcmp(pr[0].paths[1], "/video/*") == 0);
    CHECK(pr[0].action.service == config_find_backend_service(c, "video"));
    CHECK(pr[0].mark.line == 60 && pr[0].mark.col == 13);
    CHECK(r && pr[1].action.service == NULL);
    CHECK(r && strcmp(r->host_redirect, "new.internal") == 0 && r->path_redirect == NULL);
    CHECK(r && strcmp(r->prefix_redirect, "/new/") == 0 && r->https_redirect);
    CHECK(r && r->strip_query && r->redirect_response_code == 302);
    CHECK(pr[2].action.n_weighted_backend_services == 2 && pr[2].action.total_weight == 4);
    CHECK(pr[2].action.weighted_backend_services[1].backend_service ==
          config_find_backend_service(c, "api-v2"));
}

static void check_full_url_map(const struct config *c)
{
    const struct cfg_url_map *um = &c->url_maps[0];
    const struct cfg_header_action *ha = &um->header_action;

    CHECK(c->n_url_maps == 1 && strcmp(um->name, "main") == 0);
    CHECK(um->default_action.service == config_find_backend_service(c, "legacy"));
    CHECK(ha->n_request_headers_to_add == 1 && ha->request_headers_to_add[0].replace);
    CHECK_STR(ha->request_headers_to_add[0].name, "x-a"); /* lower-cased */
    CHECK_STR(ha->request_headers_to_add[0].value, "1");
    CHECK(ha->n_request_headers_to_remove == 1);
    CHECK_STR(ha->request_headers_to_remove[0], "x-b");
    CHECK(ha->n_response_headers_to_add == 1 && !ha->response_headers_to_add[0].replace);
    CHECK(ha->n_response_headers_to_remove == 1);
    CHECK(um->n_host_rules == 2 && um->host_rules[0].n_hosts == 2);
    CHECK_STR(um->host_rules[0].hosts[0], "api.internal");
    CHECK_STR(um->host_rules[0].hosts[1], "*.svc.internal");
    CHECK(um->host_rules[0].path_matcher == &um->path_matchers[1]);
    CHECK(um->host_rules[1].path_matcher == &um->path_matchers[0]);
    CHECK(um->n_path_matchers == 2);
    check_full_path_rules(c);
}

static void check_full_match(const struct cfg_route_rule *rr)
{
    const struct cfg_match_rule *m = rr->match_rules;
    const struct cfg_header_match *h = m[0].header_matches;
    const struct cfg_query_match *q = m[0].query_parameter_matches;

    CHECK(rr->n_match_rules == 3);
    CHECK(m[0].path_kind == CFG_PATH_PREFIX && strcmp(m[0].path, "/images/") == 0);
    CHECK(m[0].ignore_case && m[0].n_header_matches == 7);
    CHECK(h[0].kind == CFG_HDR_EXACT && strcmp(h[0].header_name, "x-canary") == 0);
    CHECK_STR(h[0].value, "true");
    CHECK(h[1].kind == CFG_HDR_PREFIX && h[2].kind == CFG_HDR_SUFFIX);
    CHECK(h[3].kind == CFG_HDR_REGEX && re_match(h[3].regex, "v12"));
    CHECK(!re_match(h[3].regex, "xv12") && !re_match(h[3].regex, "v12x")); /* full match */
    CHECK(h[4].kind == CFG_HDR_PRESENT && h[4].present && h[4].invert_match);
    CHECK(h[5].kind == CFG_HDR_RANGE && h[5].range_start == 10 && h[5].range_end == 20);
    CHECK(h[6].kind == CFG_HDR_EXACT && strcmp(h[6].header_name, ":method") == 0);
    CHECK(m[0].n_query_parameter_matches == 3);
    CHECK(q[0].kind == CFG_QUERY_PRESENT && q[0].present && strcmp(q[0].name, "debug") == 0);
    CHECK(q[1].kind == CFG_QUERY_EXACT && strcmp(q[1].value, "2") == 0);
    CHECK(q[2].kind == CFG_QUERY_REGEX && re_match(q[2].regex, "abc"));
    CHECK(m[1].path_kind == CFG_PATH_FULL && strcmp(m[1].path, "/exact") == 0);
    CHECK(m[2].path_kind == CFG_PATH_REGEX && re_match(m[2].path_regex, "/re/abc"));
    CHECK(!re_match(m[2].path_regex, "/re/abc/d"));
}

static void check_full_route_action(const struct config *c, const struct cfg_route_rule *rr)
{
    const struct cfg_route_action *a = &rr->action;

    CHECK(a->service == config_find_backend_service(c, "images"));
    CHECK_STR(a->url_rewrite.path_prefix_rewrite, "/");
    CHECK_STR(a->url_rewrite.host_rewrite, "images.internal");
    CHECK(a->timeout_set && a->timeout_ms == 10000);
    CHECK(a->retry_policy.set && a->retry_policy.retry_conditions == 0x3ff);
    CHECK(a->retry_policy.num_retries == 2 && a->retry_policy.per_try_timeout_ms == 3000);
    CHECK(a->fault_set && a->fault_injection_policy.delay_set);
    CHECK(a->fault_injection_policy.fixed_delay_ms == 2000);
    CHECK(a->fault_injection_policy.delay_percentage == 50.0);
    CHECK(a->fault_injection_policy.abort_set && a->fault_injection_policy.http_status == 503);
    CHECK(a->fault_injection_policy.grpc_status == -1);
    CHECK(a->fault_injection_policy.abort_percentage == 10.5);
    CHECK(rr->header_action.n_response_headers_to_add == 1);
}

static void check_full_route_rules(const struct config *c)
{
    const struct cfg_path_matcher *api = &c->url_maps[0].path_matchers[1];
    const struct cfg_route_rule *rr = api->route_rules;
    const struct cfg_route_action *split;

    CHECK(api->n_route_rules == 4 && api->n_path_rules == 0);
    CHECK(api->header_action.n_request_headers_to_remove == 1);
    /* sorted by priority */
    CHECK(rr[0].priority == 10 && rr[1].priority == 20);
    CHECK(rr[2].priority == 30 && rr[3].priority == 40);
    check_full_match(&rr[0]);
    check_full_route_action(c, &rr[0]);
    split = &rr[1].action;
    CHECK(split->service == NULL && split->n_weighted_backend_services == 2);
    CHECK(split->total_weight == 100 && split->weighted_backend_services[0].weight == 10);
    CHECK(split->weighted_backend_services[0].header_action.n_request_headers_to_add == 1);
    CHECK(split->retry_policy.set && split->retry_policy.num_retries == 3);
    CHECK(split->retry_policy.retry_conditions == CFG_RETRY_GATEWAY_ERROR);
    CHECK(split->fault_injection_policy.grpc_status == 14);
    CHECK(split->fault_injection_policy.http_status == 0);
    CHECK(split->fault_injection_policy.abort_percentage == 100.0);
    CHECK(rr[2].action.url_redirect && rr[2].action.url_redirect->redirect_response_code == 308);
    CHECK_STR(rr[2].action.url_redirect->path_redirect, "/new");
    CHECK(rr[3].n_match_rules == 1 && rr[3].match_rules[0].path_kind == CFG_PATH_ANY);
    CHECK(rr[3].action.timeout_set && rr[3].action.timeout_ms == 0);
}

static void check_full_backend(const struct config *c)
{
    const struct cfg_backend_service *b = config_find_backend_service(c, "video");

    CHECK(c->n_backend_services == 5 && b == &c->backend_services[1]);
    if (!b)
        return;
    CHECK(b->protocol == CFG_BACKEND_HTTPS && b->n_endpoints == 2);
    CHECK(b->endpoints[0].weight == 5 && b->endpoints[1].weight == 0);
    CHECK(b->endpoints[1].address.ss.ss_family == AF_INET6);
    CHECK(b->timeout_ms == 0 && b->connect_timeout_ms == 250);
    CHECK(b->locality_lb_policy == CFG_LB_RING_HASH);
    CHECK(b->session_affinity == CFG_AFFINITY_HEADER_FIELD);
    CHECK_STR(b->consistent_hash.http_header_name, "x-user");
    CHECK_STR(b->consistent_hash.cookie_name, "vid");
    CHECK_STR(b->consistent_hash.cookie_path, "/v");
    CHECK(b->consistent_hash.cookie_ttl_ms == 3600000);
    CHECK(b->consistent_hash.minimum_ring_size == 2048);
    CHECK(b->n_health_checks == 2 && b->health_checks[1] == &c->health_checks[1]);
    CHECK_STR(b->health_check_names[0], "hc-http");
    CHECK(b->max_concurrent_requests_per_endpoint == 10);
    CHECK(b->circuit_breakers.max_connections == 1 && b->circuit_breakers.max_retries == 4);
    CHECK(b->circuit_breakers.max_pending_requests == 2);
    CHECK(b->circuit_breakers.max_requests == 3);
    CHECK(b->outlier_detection.consecutive_errors == 6);
    CHECK(b->outlier_detection.consecutive_gateway_failure == 7);
    CHECK(b->outlier_detection.enforcing_consecutive_errors == 8);
    CHECK(b->outlier_detection.enforcing_consecutive_gateway_failure == 9);
    CHECK(b->outlier_detection.interval_ms == 2000);
    CHECK(b->outlier_detection.base_ejection_time_ms == 60000);
    CHECK(b->outlier_detection.max_ejection_percent == 11);
    CHECK(b->draining_timeout_ms == 5000);
    CHECK(!b->tls.verify && strcmp(b->tls.ca_file, "certs/ca.pem") == 0);
    CHECK_STR(b->tls.sni, "backend.internal");
    CHECK(b->http2_keepalive.time_ms == 30000 && b->http2_keepalive.timeout_ms == 5000);
    CHECK(b->retry_buffer_size == 1024 * 1024);
    CHECK(b->retry_backoff.base_interval_ms == 10 && b->retry_backoff.max_interval_ms == 1000);
    CHECK(c->backend_services[2].protocol == CFG_BACKEND_H2C);
    CHECK(c->backend_services[3].protocol == CFG_BACKEND_HTTP2);
}

static void check_full_health_checks(const struct config *c)
{
    const struct cfg_health_check *h = &c->health_checks[0], *g = &c->health_checks[1];

    CHECK(c->n_health_checks == 2);
    CHECK(h->type == CFG_HC_HTTP && h->port == 8081);
    CHECK_STR(h->request_path, "/healthz");
    CHECK_STR(h->host, "health.internal");
    CHECK_STR(h->response, "OK");
    CHECK(h->check_interval_ms == 2000 && h->timeout_ms == 1000);
    CHECK(h->healthy_threshold == 3 && h->unhealthy_threshold == 4);
    CHECK(g->type == CFG_HC_GRPC && strcmp(g->grpc_service_name, "my.Service") == 0);
}

static void test_full(void)
{
    struct config *c = expect_ok("config: every key", full_yaml);
    struct config *again;
    char *json = NULL;
    size_t json_len = 0;
    FILE *f;

    if (!c)
        return;
    CHECK(c->refcount == 1 && strlen(c->version) == 16);
    CHECK_STR(c->path, "t.yaml");
    check_full_listeners(c);
    check_full_url_map(c);
    check_full_route_rules(c);
    check_full_backend(c);
    check_full_health_checks(c);

    TEST_CASE("config: JSON");
    f = open_memstream(&json, &json_len);
    CHECK(f != NULL);
    if (f) {
        config_write_json(c, f);
        fclose(f);
        CHECK(json && strstr(json, "\"drain_timeout\": \"1500ms\""));
        CHECK(json && strstr(json, "\"ecdh_curves\": [\n          \"P-384\",\n"));
        CHECK(json && strstr(json, "\"session_ticket_rotation\": \"30m\""));
        CHECK(json && strstr(json, "\"keepalive\": {\n          \"time\": \"1h\""));
        CHECK(json && strstr(json, "\"regex_match\": \"/re/[a-z]+\""));
        CHECK(json && strstr(json, "\"resolved\": \"[::1]:9003\""));
        CHECK(json && strstr(json, "\"xff_trusted_cidrs\": [\n        \"10.0.0.0/8\""));
        CHECK(json && json[json_len - 2] == '}');
    }
    free(json);

    TEST_CASE("config: refcount");
    again = config_ref(c);
    CHECK(again == c && c->refcount == 2);
    config_unref(c);
    CHECK(again->refcount == 1);
    config_unref(again);
    config_unref(NULL);
}

/* ---- defaults --------------------------------------------------------------------- */

static void check_listener_defaults(const struct cfg_listener *l)
{
    CHECK_STR(l->name, "127.0.0.1:8080");
    CHECK(l->protocol == CFG_LISTENER_HTTP && l->tls.n_certificates == 0);
    CHECK(l->tls.min_version == 0x0303);
    CHECK(l->tls.n_cipher_suites == 9 && l->tls.n_ecdh_curves == 3);
    CHECK_STR(l->tls.tls12_cipher_list,
              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
    CHECK_STR(l->tls.tls13_ciphersuites,
              "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
    CHECK_STR(l->tls.groups_list, "X25519:P-256:P-384");
    CHECK(l->tls.session_ticket_rotation_ms == 3600 * 1000);
    CHECK(l->http2.max_concurrent_streams == 100);
    CHECK(l->http2.initial_stream_window_size == 65536);
    CHECK(l->http2.initial_connection_window_size == 1048576);
    CHECK(l->http2.max_header_list_size == 65536);
    CHECK(l->http2.keepalive_time_ms == 7200000 && l->http2.keepalive_timeout_ms == 20000);
    CHECK(l->http2.ping_min_interval_without_data_ms == 300000);
    CHECK(!l->http2.ping_permit_without_calls && l->http2.ping_max_strikes == 2);
    CHECK(l->http2.max_connection_idle_ms == 0 && l->http2.max_connection_age_ms == 0);
    CHECK(l->http2.max_connection_age_grace_ms == 0);
    CHECK(l->timeouts.http_keepalive_ms == 600000 && l->timeouts.stream_idle_ms == 300000);
    CHECK(l->timeouts.request_headers_ms == 10000);
    CHECK(l->max_request_headers_size == 61440 && !l->accept_http_10);
    CHECK(l->n_xff_trusted_cidrs == 2);
    CHECK(l->xff_trusted_cidrs[0].family == AF_INET && l->xff_trusted_cidrs[0].prefix == 0);
    CHECK(l->xff_trusted_cidrs[1].family == AF_INET6 && l->xff_trusted_cidrs[1].prefix == 0);
    CHECK(l->mark.line == 2 && l->mark.col == 5);
}

static void check_backend_defaults(const struct cfg_backend_service *b)
{
    CHECK(b->protocol == CFG_BACKEND_HTTP && b->n_endpoints == 1);
    CHECK(b->endpoints[0].weight == 1);
    CHECK(b->timeout_ms == 30000 && b->connect_timeout_ms == 5000);
    CHECK(b->locality_lb_policy == CFG_LB_ROUND_ROBIN);
    CHECK(b->session_affinity == CFG_AFFINITY_NONE);
    CHECK(b->consistent_hash.http_header_name == NULL);
    CHECK_STR(b->consistent_hash.cookie_name, "sy");
    CHECK_STR(b->consistent_hash.cookie_path, "/");
    CHECK(b->consistent_hash.cookie_ttl_ms == 0);
    CHECK(b->consistent_hash.minimum_ring_size == 1024);
    CHECK(b->n_health_checks == 0 && b->max_concurrent_requests_per_endpoint == 0);
    CHECK(b->circuit_breakers.max_connections == 1024);
    CHECK(b->circuit_breakers.max_pending_requests == 1024);
    CHECK(b->circuit_breakers.max_requests == 1024);
    CHECK(b->circuit_breakers.max_retries == 3);
    CHECK(b->outlier_detection.consecutive_errors == 5);
    CHECK(b->outlier_detection.consecutive_gateway_failure == 3);
    CHECK(b->outlier_detection.enforcing_consecutive_errors == 0);
    CHECK(b->outlier_detection.enforcing_consecutive_gateway_failure == 100);
    CHECK(b->outlier_detection.interval_ms == 1000);
    CHECK(b->outlier_detection.base_ejection_time_ms == 30000);
    CHECK(b->outlier_detection.max_ejection_percent == 50);
    CHECK(b->draining_timeout_ms == 0);
    CHECK(b->tls.ca_file == NULL && b->tls.verify && b->tls.sni == NULL);
    CHECK(b->http2_keepalive.time_ms == 0 && b->http2_keepalive.timeout_ms == 20000);
    CHECK(b->retry_buffer_size == 65536);
    CHECK(b->retry_backoff.base_interval_ms == 25 && b->retry_backoff.max_interval_ms == 250);
}

static void check_health_check_defaults(const struct cfg_health_check *h)
{
    CHECK(h->type == CFG_HC_TCP && h->port == 0);
    CHECK_STR(h->request_path, "/");
    CHECK_STR(h->host, "");
    CHECK_STR(h->response, "");
    CHECK_STR(h->grpc_service_name, "");
    CHECK(h->check_interval_ms == 5000 && h->timeout_ms == 5000);
    CHECK(h->healthy_threshold == 2 && h->unhealthy_threshold == 2);
}

static void test_defaults(void)
{
    static const char yaml[] = BASE "health_checks: [{name: hc}]\n";
    struct config *c = expect_ok("config: defaults", yaml);
    const struct cfg_route_action *a;

    if (!c)
        return;
    check_listener_defaults(&c->listeners[0]);
    check_backend_defaults(&c->backend_services[0]);
    check_health_check_defaults(&c->health_checks[0]);
    CHECK(!c->admin.set);
    CHECK(c->access_log.enabled && c->access_log.format == CFG_LOG_JSON);
    CHECK_STR(c->access_log.path, "-");
    CHECK(c->drain_timeout_ms == 30000);
    a = &c->url_maps[0].default_action;
    CHECK(a->service == &c->backend_services[0] && !a->timeout_set && !a->retry_policy.set);
    CHECK(!a->fault_set && a->url_redirect == NULL && a->n_weighted_backend_services == 0);
    CHECK(c->url_maps[0].n_host_rules == 0 && c->url_maps[0].n_path_matchers == 0);
    config_unref(c);
}

/* ---- ${ENV} expansion ------------------------------------------------------------- */

static void test_env(void)
{
    static const char yaml[] =
        "listeners:\n"
        "  - address: \"127.0.0.1:${SY_TEST_PORT}\"\n"
        "    name: \"${SY_TEST_UNSET_1:-dflt}-${SY_TEST_EMPTY:-e}-$$-${SY_TEST_EMPTY}x\"\n"
        "    url_map: main\n" URL_MAP BACKEND;
    struct config *c;

    setenv("SY_TEST_PORT", "8123", 1);
    setenv("SY_TEST_EMPTY", "", 1);
    unsetenv("SY_TEST_UNSET_1");
    unsetenv("SY_TEST_UNSET_2");
    c = expect_ok("config: env expansion", yaml);
    if (c) {
        CHECK_STR(c->listeners[0].address.text, "127.0.0.1:8123");
        CHECK_STR(c->listeners[0].name, "dflt-e-$$-x");
        config_unref(c);
    }
    expect_error("config: unset env var",
                 "listeners:\n  - address: \"127.0.0.1:${SY_TEST_UNSET_2}\"\n"
                 "    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:2:14: listeners[0].address: environment variable 'SY_TEST_UNSET_2' "
                 "is not set");
    expect_error("config: unterminated ${",
                 "listeners:\n  - address: \"127.0.0.1:${SY_TEST_PORT\"\n"
                 "    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:2:14: listeners[0].address: unterminated '${'");
    expect_error("config: bad env name",
                 "listeners:\n  - address: \"127.0.0.1:${1X}\"\n"
                 "    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:2:14: listeners[0].address: bad environment variable reference "
                 "'${1X}'");
    c = expect_ok("config: env default with port",
                  "listeners:\n  - address: \"0.0.0.0:${SY_TEST_UNSET_1:-8080}\"\n"
                  "    url_map: main\n" URL_MAP BACKEND);
    if (c)
        CHECK_STR(c->listeners[0].address.text, "0.0.0.0:8080");
    config_unref(c);
}

/* ---- errors ----------------------------------------------------------------------- */

static void test_errors_structure(void)
{
    expect_error("error: unknown top-level key", BASE "listner: {}\n",
                 "t.yaml:10:1: unknown top-level key 'listner' (did you mean 'listeners'?)");
    expect_error("error: unknown key with hint",
                 "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: main\n"
                 "    adress: x\n" URL_MAP BACKEND,
                 "t.yaml:4:5: listeners[0]: unknown key 'adress' (did you mean 'address'?)");
    expect_error("error: unknown nested key",
                 LISTENER "    http2: {keepalive: {time: 1s, bogus: 2}}\n" URL_MAP BACKEND,
                 "t.yaml:4:35: listeners[0].http2.keepalive: unknown key 'bogus'");
    expect_error("error: mapping where a string is expected",
                 LISTENER "    name: {a: b}\n" URL_MAP BACKEND,
                 "t.yaml:4:11: listeners[0].name: expected a string, got a mapping");
    expect_error("error: scalar where a sequence is expected", "listeners: oops\n" URL_MAP BACKEND,
                 "t.yaml:1:12: listeners: expected a sequence, got a scalar");
    expect_error("error: sequence where a mapping is expected",
                 LISTENER "    timeouts: [1s]\n" URL_MAP BACKEND,
                 "t.yaml:4:15: listeners[0].timeouts: expected a mapping, got a sequence");
    expect_error("error: bad boolean", LISTENER "    accept_http_10: yes\n" URL_MAP BACKEND,
                 "t.yaml:4:21: listeners[0].accept_http_10: expected true or false, got 'yes'");
    expect_error("error: duplicate key", LISTENER "    url_map: other\n" URL_MAP BACKEND,
                 "t.yaml:4:5: listeners[0]: duplicate key 'url_map' (first at 3:5)");
    expect_error("error: YAML syntax",
                 "listeners:\n  - address: \"127.0.0.1:8080\n    url_map: main\n",
                 "t.yaml:4:1: YAML syntax error: found unexpected end of stream");
    expect_error("error: YAML block structure", "listeners:\n  - address: x\n   url_map: main\n",
                 "t.yaml:3:4: YAML syntax error: did not find expected '-' indicator");
    expect_error("error: empty document", "", "t.yaml:1:1: missing required key 'listeners'");
    expect_error("error: no listeners", "listeners: []\n" URL_MAP BACKEND,
                 "t.yaml:1:12: listeners: at least one listener is required");
    expect_error("error: two documents", BASE "---\nlisteners: []\n",
                 "t.yaml:11:1: only one YAML document is allowed");
}

static void test_errors_required(void)
{
    expect_error("error: missing listener address",
                 "listeners:\n  - url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:2:5: listeners[0]: missing required key 'address'");
    expect_error("error: missing listener url_map",
                 "listeners:\n  - address: \"127.0.0.1:8080\"\n" URL_MAP BACKEND,
                 "t.yaml:2:5: listeners[0]: missing required key 'url_map'");
    expect_error("error: missing url_map name",
                 LISTENER URL_MAP "  - default_service: be\n" BACKEND,
                 "t.yaml:7:5: url_maps[1]: missing required key 'name'");
    expect_error("error: missing url_map default_service",
                 LISTENER "url_maps:\n  - name: main\n" BACKEND,
                 "t.yaml:5:5: url_maps[0]: missing required key 'default_service'");
    expect_error("error: missing backend endpoints",
                 LISTENER URL_MAP "backend_services:\n  - name: be\n",
                 "t.yaml:8:5: backend_services[0]: missing required key 'endpoints'");
    expect_error("error: empty endpoints",
                 LISTENER URL_MAP "backend_services:\n  - name: be\n    endpoints: []\n",
                 "t.yaml:9:16: backend_services[0].endpoints: at least one endpoint is required");
    expect_error("error: missing backend name",
                 LISTENER URL_MAP "backend_services:\n  - name: be\n"
                                  "    endpoints: [{address: \"127.0.0.1:9001\"}]\n"
                                  "  - endpoints: [{address: \"127.0.0.1:9002\"}]\n",
                 "t.yaml:10:5: backend_services[1]: missing required key 'name'");
    expect_error("error: missing path_matcher name",
                 BASE_URL_MAP_PM("    path_matchers: [{default_service: be}]\n"),
                 "t.yaml:7:21: url_maps[0].path_matchers[0]: missing required key 'name'");
    expect_error("error: missing host_rules hosts",
                 LISTENER URL_MAP "    host_rules: [{path_matcher: pm}]\n"
                                  "    path_matchers: [{name: pm}]\n" BACKEND,
                 "t.yaml:7:18: url_maps[0].host_rules[0]: missing required key 'hosts'");
    expect_error("error: missing host_rules path_matcher",
                 LISTENER URL_MAP "    host_rules: [{hosts: [a]}]\n" BACKEND,
                 "t.yaml:7:18: url_maps[0].host_rules[0]: missing required key 'path_matcher'");
    expect_error("error: route rule without priority",
                 LISTENER URL_MAP "    path_matchers:\n      - name: pm\n"
                                  "        route_rules: [{service: be}]\n" BACKEND,
                 "t.yaml:9:23: url_maps[0].path_matchers[0].route_rules[0]: missing required "
                 "key 'priority'");
}

static void test_errors_names(void)
{
    expect_error("error: duplicate backend_service",
                 BASE "  - name: be\n    endpoints: [{address: \"127.0.0.1:9002\"}]\n",
                 "t.yaml:10:11: backend_services[1].name: duplicate backend_service name 'be' "
                 "(first at 8:11)");
    expect_error("error: duplicate listener name",
                 "listeners:\n  - {name: a, address: \"127.0.0.1:1\", url_map: main}\n"
                 "  - {name: a, address: \"127.0.0.1:2\", url_map: main}\n" URL_MAP BACKEND,
                 "t.yaml:3:12: listeners[1].name: duplicate listener name 'a' (first at 2:12)");
    expect_error("error: duplicate url_map", BASE "url_maps:\n",
                 "t.yaml:10:1: duplicate key 'url_maps' (first at 4:1)");
    expect_error("error: duplicate url_map name",
                 LISTENER URL_MAP "  - {name: main, default_service: be}\n" BACKEND,
                 "t.yaml:7:12: url_maps[1].name: duplicate url_map name 'main' (first at 5:11)");
    expect_error("error: duplicate path_matcher",
                 BASE_URL_MAP_PM("    path_matchers: [{name: pm}, {name: pm}]\n"),
                 "t.yaml:7:40: url_maps[0].path_matchers[1].name: duplicate path_matcher "
                 "name 'pm' (first at 7:28)");
    expect_error("error: duplicate health_check", BASE "health_checks: [{name: h}, {name: h}]\n",
                 "t.yaml:10:35: health_checks[1].name: duplicate health_check name 'h' "
                 "(first at 10:24)");
    expect_error("error: duplicate host",
                 BASE_URL_MAP_PM("    host_rules: [{hosts: [a, B], path_matcher: pm},\n"
                                 "                 {hosts: [b], path_matcher: pm}]\n"
                                 "    path_matchers: [{name: pm}]\n"),
                 "t.yaml:8:27: url_maps[0].host_rules[1].hosts[0]: host 'b' is already used "
                 "by host_rules[0]");
}

static void test_errors_refs(void)
{
    expect_error("error: dangling listener url_map",
                 "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: nope\n" URL_MAP BACKEND,
                 "t.yaml:3:14: listeners[0].url_map: unknown url_map 'nope'");
    expect_error("error: dangling default_service",
                 LISTENER "url_maps:\n  - name: main\n    default_service: nope\n" BACKEND,
                 "t.yaml:6:22: url_maps[0].default_service: unknown backend_service 'nope'");
    expect_error("error: dangling path rule service",
                 BASE_URL_MAP_PM("    path_matchers:\n      - name: pm\n"
                                 "        path_rules: [{paths: [/a], service: nope}]\n"),
                 "t.yaml:9:45: url_maps[0].path_matchers[0].path_rules[0].service: unknown "
                 "backend_service 'nope'");
    expect_error("error: dangling weighted backend_service",
                 RULES("          - priority: 1\n"
                       "            route_action:\n"
                       "              weighted_backend_services:\n"
                       "                - {backend_service: be, weight: 1}\n"
                       "                - {backend_service: gone, weight: 1}\n"),
                 "t.yaml:14:37: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "weighted_backend_services[1].backend_service: unknown backend_service 'gone'");
    expect_error("error: dangling host_rules path_matcher",
                 BASE_URL_MAP_PM("    host_rules: [{hosts: [a], path_matcher: pm2}]\n"
                                 "    path_matchers: [{name: pm}]\n"),
                 "t.yaml:7:45: url_maps[0].host_rules[0].path_matcher: unknown path_matcher "
                 "'pm2' in url_map 'main'");
    expect_error("error: dangling health_check", BASE "    health_checks: [hc]\n",
                 "t.yaml:10:21: backend_services[0].health_checks[0]: unknown health_check 'hc'");
}

static void test_errors_values(void)
{
    expect_error("error: bad duration unit", BASE "    timeout: 5x\n",
                 "t.yaml:10:14: backend_services[0].timeout: bad duration '5x'");
    expect_error("error: negative duration", BASE "    connect_timeout: -1s\n",
                 "t.yaml:10:22: backend_services[0].connect_timeout: bad duration '-1s'");
    expect_error("error: duration without unit", BASE "drain_timeout: 30\n",
                 "t.yaml:10:16: drain_timeout: bad duration '30'");
    expect_error("error: bad size",
                 LISTENER "    http2: {max_header_list_size: 64XB}\n" URL_MAP BACKEND,
                 "t.yaml:4:35: listeners[0].http2.max_header_list_size: bad size '64XB'");
    expect_error("error: size out of range",
                 LISTENER "    http2: {initial_connection_window_size: 1KiB}\n" URL_MAP BACKEND,
                 "t.yaml:4:45: listeners[0].http2.initial_connection_window_size: size 1KiB "
                 "out of range 65535..2147483647 bytes");
    expect_error("error: address without port",
                 "listeners:\n  - address: \"127.0.0.1\"\n    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:2:14: listeners[0].address: bad address '127.0.0.1'");
    expect_error("error: address port out of range",
                 LISTENER URL_MAP "backend_services:\n  - name: be\n"
                                  "    endpoints: [{address: \"127.0.0.1:70000\"}]\n",
                 "t.yaml:9:27: backend_services[0].endpoints[0].address: bad address "
                 "'127.0.0.1:70000'");
    expect_error("error: bad CIDR",
                 LISTENER "    xff_trusted_cidrs: [10.0.0.0/8, 10.0.0.0/33]\n" URL_MAP BACKEND,
                 "t.yaml:4:37: listeners[0].xff_trusted_cidrs[1]: bad CIDR '10.0.0.0/33'");
    expect_error("error: bad protocol", LISTENER "    protocol: HTTP3\n" URL_MAP BACKEND,
                 "t.yaml:4:15: listeners[0].protocol: bad value 'HTTP3' (expected one of: "
                 "HTTP, HTTPS, H2C)");
    expect_error("error: bad lb policy", BASE "    locality_lb_policy: round_robin\n",
                 "t.yaml:10:25: backend_services[0].locality_lb_policy: bad value "
                 "'round_robin'");
    expect_error("error: bad TLS version",
                 "listeners:\n  - address: \"127.0.0.1:8443\"\n    protocol: HTTPS\n"
                 "    tls: {certificates: [{cert_file: a, key_file: b}], min_version: TLS1.1}\n"
                 "    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:4:69: listeners[0].tls.min_version: bad value 'TLS1.1'");
    expect_error("error: endpoints' total weight 0",
                 LISTENER URL_MAP "backend_services:\n  - name: be\n"
                                  "    endpoints: [{address: \"127.0.0.1:9001\", weight: 0}]\n",
                 "t.yaml:9:16: backend_services[0].endpoints: the endpoints' total weight must "
                 "be > 0");
    expect_error("error: HEADER_FIELD without header", BASE "    session_affinity: HEADER_FIELD\n",
                 "t.yaml:10:23: backend_services[0]: session_affinity HEADER_FIELD requires "
                 "consistent_hash.http_header_name");
    expect_error("error: tls on an H2C backend", BASE "    protocol: H2C\n    tls: {}\n",
                 "t.yaml:11:5: backend_services[0]: tls is only allowed with protocol HTTPS or "
                 "HTTP2");
    expect_error("error: health check thresholds",
                 BASE "health_checks:\n  - name: h\n"
                      "    healthy_threshold: 0\n",
                 "t.yaml:12:24: health_checks[0].healthy_threshold: value 0 out of range 1..1000");
}

static void test_errors_actions(void)
{
    expect_error("error: bad retry condition",
                 RULE("            route_action: {retry_policy: {retry_conditions: [5xx, 503]}}\n"),
                 "t.yaml:12:67: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "retry_policy.retry_conditions[1]: bad value '503'");
    expect_error("error: weight out of range",
                 RULES("          - priority: 1\n            route_action:\n"
                       "              weighted_backend_services:\n"
                       "                - {backend_service: be, weight: 1001}\n"),
                 "t.yaml:13:49: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "weighted_backend_services[0].weight: value 1001 out of range 0..1000");
    expect_error("error: split total weight 0",
                 RULES("          - priority: 1\n            route_action:\n"
                       "              weighted_backend_services:\n"
                       "                - {backend_service: be, weight: 0}\n"),
                 "t.yaml:13:17: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "weighted_backend_services: the total weight must be > 0");
    expect_error("error: percentage out of range",
                 RULE("            route_action: {fault_injection_policy: {delay: "
                      "{fixed_delay: 1s, percentage: 100.5}}}\n"),
                 "t.yaml:12:90: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "fault_injection_policy.delay.percentage: value 100.5 out of range 0..100");
    expect_error("error: http_status out of range",
                 RULE("            route_action: {fault_injection_policy: {abort: "
                      "{http_status: 600}}}\n"),
                 "t.yaml:12:74: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "fault_injection_policy.abort.http_status: value 600 out of range 200..599");
    expect_error("error: grpc_status out of range",
                 RULE("            route_action: {fault_injection_policy: {abort: "
                      "{grpc_status: 17}}}\n"),
                 "t.yaml:12:74: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "fault_injection_policy.abort.grpc_status: value 17 out of range 0..16");
    expect_error("error: abort with both statuses",
                 RULE("            route_action: {fault_injection_policy: {abort: "
                      "{http_status: 503, grpc_status: 14}}}\n"),
                 "t.yaml:12:60: url_maps[0].path_matchers[0].route_rules[0].route_action."
                 "fault_injection_policy.abort: abort needs exactly one of http_status or "
                 "grpc_status");
    expect_error("error: bad redirect code",
                 RULES("          - priority: 1\n"
                       "            url_redirect: {redirect_response_code: 304}\n"),
                 "t.yaml:11:52: url_maps[0].path_matchers[0].route_rules[0].url_redirect."
                 "redirect_response_code: bad redirect_response_code '304'");
    expect_error("error: signed redirect code",
                 RULES("          - priority: 1\n"
                       "            url_redirect: {redirect_response_code: +301}\n"),
                 "t.yaml:11:52: url_maps[0].path_matchers[0].route_rules[0].url_redirect."
                 "redirect_response_code: bad redirect_response_code '+301'");
    expect_error("error: integer past int64",
                 RULES("          - priority: 9223372036854775808\n"
                       "            service: be\n"),
                 "t.yaml:10:23: url_maps[0].path_matchers[0].route_rules[0].priority: expected "
                 "an integer, got '9223372036854775808'");
    expect_error("error: integer with a plus sign",
                 RULES("          - priority: +1\n"
                       "            service: be\n"),
                 "t.yaml:10:23: url_maps[0].path_matchers[0].route_rules[0].priority: expected "
                 "an integer, got '+1'");
    expect_error("error: path and prefix redirect",
                 RULES("          - priority: 1\n"
                       "            url_redirect: {path_redirect: /a, prefix_redirect: /b}\n"),
                 "t.yaml:11:47: url_maps[0].path_matchers[0].route_rules[0].url_redirect: "
                 "path_redirect and prefix_redirect are exclusive");
    expect_error("error: service and url_redirect",
                 RULE("            url_redirect: {host_redirect: x}\n"),
                 "t.yaml:12:13: url_maps[0].path_matchers[0].route_rules[0]: only one of "
                 "'service', 'route_action.weighted_backend_services' or 'url_redirect' is "
                 "allowed");
    expect_error("error: rule without target",
                 RULES("          - priority: 1\n            match_rules: [{prefix_match: /a}]\n"),
                 "t.yaml:10:13: url_maps[0].path_matchers[0].route_rules[0]: missing required "
                 "key 'service'");
    expect_error("error: header to add without value",
                 BASE_URL_MAP_PM("    header_action: {request_headers_to_add: "
                                 "[{header_name: x}]}\n"),
                 "t.yaml:7:46: url_maps[0].header_action.request_headers_to_add[0]: missing "
                 "required key 'header_value'");
    expect_error("error: bad header name",
                 BASE_URL_MAP_PM("    header_action: {request_headers_to_remove: [\"a b\"]}\n"),
                 "t.yaml:7:49: url_maps[0].header_action.request_headers_to_remove[0]: bad "
                 "header name 'a b'");
}

static void test_errors_rules(void)
{
    expect_error("error: bad path regex",
                 RULE("            match_rules: [{regex_match: \"/a(\"}]\n"),
                 "t.yaml:12:41: url_maps[0].path_matchers[0].route_rules[0].match_rules[0]."
                 "regex_match: bad regex '/a(': missing closing parenthesis at offset 3");
    expect_error("error: bad header regex",
                 RULE("            match_rules: [{header_matches: [{header_name: x, "
                      "regex_match: \"[z-a]\"}]}]\n"),
                 "t.yaml:12:75: url_maps[0].path_matchers[0].route_rules[0].match_rules[0]."
                 "header_matches[0].regex_match: bad regex '[z-a]': range out of order in "
                 "character class");
    expect_error("error: two header match kinds",
                 RULE("            match_rules: [{header_matches: [{header_name: x, "
                      "exact_match: a, present_match: true}]}]\n"),
                 "t.yaml:12:78: url_maps[0].path_matchers[0].route_rules[0].match_rules[0]."
                 "header_matches[0]: only one of exact_match, prefix_match");
    expect_error("error: path_rules and route_rules",
                 BASE_URL_MAP_PM("    path_matchers:\n      - name: pm\n"
                                 "        path_rules: [{paths: [/a], service: be}]\n"
                                 "        route_rules: [{priority: 1, service: be}]\n"),
                 "t.yaml:10:9: url_maps[0].path_matchers[0]: path_rules and route_rules are "
                 "exclusive");
    expect_error("error: duplicate priority",
                 RULES("          - {priority: 5, service: be}\n"
                       "          - {priority: 5, service: be}\n"),
                 "t.yaml:11:24: url_maps[0].path_matchers[0].route_rules[1]: duplicate "
                 "priority 5 (also used by route_rules[0] at 10:24)");
    expect_error("error: star inside a path",
                 BASE_URL_MAP_PM("    path_matchers:\n      - name: pm\n"
                                 "        path_rules: [{paths: [/a/*/b], service: be}]\n"),
                 "t.yaml:9:31: url_maps[0].path_matchers[0].path_rules[0].paths[0]: bad path "
                 "'/a/*/b'");
    expect_error("error: path without slash",
                 BASE_URL_MAP_PM("    path_matchers:\n      - name: pm\n"
                                 "        path_rules: [{paths: [a/b], service: be}]\n"),
                 "t.yaml:9:31: url_maps[0].path_matchers[0].path_rules[0].paths[0]: bad path "
                 "'a/b'");
    expect_error("error: HTTPS without certificates",
                 "listeners:\n  - address: \"127.0.0.1:8443\"\n    protocol: HTTPS\n"
                 "    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:3:15: listeners[0]: protocol HTTPS requires tls.certificates");
    expect_error("error: HTTP with tls",
                 LISTENER
                 "    tls: {certificates: [{cert_file: a, key_file: b}]}\n" URL_MAP BACKEND,
                 "t.yaml:4:5: listeners[0]: tls is only allowed with protocol HTTPS");
    expect_error("error: certificate without key",
                 "listeners:\n  - address: \"127.0.0.1:8443\"\n    protocol: HTTPS\n"
                 "    tls: {certificates: [{cert_file: a}]}\n    url_map: main\n" URL_MAP BACKEND,
                 "t.yaml:4:26: listeners[0].tls.certificates[0]: missing required key "
                 "'key_file'");
}

static void test_errors_many(void)
{
    static const char yaml[] = "listeners:\n"
                               "  - address: \"127.0.0.1:99999\"\n"
                               "    url_map: nope\n"
                               "url_maps:\n"
                               "  - name: main\n"
                               "    default_service: be\n"
                               "    bogus: 1\n"
                               "backend_services:\n"
                               "  - name: be\n"
                               "    endpoints: [{address: \"127.0.0.1:9001\"}]\n"
                               "    timeout: 10q\n";
    struct config_errors e = {0};
    struct config *c;

    TEST_CASE("error: several in one run, in file order");
    c = load(yaml, &e);
    CHECK(c == NULL && e.n == 4);
    if (e.n == 4) {
        CHECK(starts_with(e.msgs[0], "t.yaml:2:14: listeners[0].address: bad address"));
        CHECK(starts_with(e.msgs[1], "t.yaml:3:14: listeners[0].url_map: unknown url_map"));
        CHECK_STR(e.msgs[2], "t.yaml:7:5: url_maps[0]: unknown key 'bogus'");
        CHECK(starts_with(e.msgs[3], "t.yaml:11:14: backend_services[0].timeout: bad duration"));
    } else {
        dump_errors(&e);
    }
    config_errors_free(&e);

    TEST_CASE("error: unreadable file");
    c = config_load("/nonexistent/switchyard.yaml", &e);
    CHECK(c == NULL && e.n == 1);
    if (e.n == 1)
        CHECK_STR(e.msgs[0], "/nonexistent/switchyard.yaml: No such file or directory");
    config_errors_free(&e);
}

static void test_valid_variations(void)
{
    struct config *c;

    c = expect_ok("config: redirect as url_map default",
                  LISTENER "url_maps:\n  - name: main\n"
                           "    default_url_redirect: {https_redirect: true}\n" BACKEND);
    if (c) {
        CHECK(c->url_maps[0].default_action.url_redirect != NULL);
        CHECK(c->url_maps[0].default_action.url_redirect->redirect_response_code == 301);
        CHECK(c->url_maps[0].default_action.url_redirect->https_redirect);
    }
    config_unref(c);
    c = expect_ok("config: retry policy with empty conditions",
                  RULE("            route_action: {retry_policy: {retry_conditions: []}}\n"));
    if (c) {
        const struct cfg_retry_policy *r =
            &c->url_maps[0].path_matchers[0].route_rules[0].action.retry_policy;
        CHECK(r->set && r->retry_conditions == 0 && r->num_retries == 1);
    }
    config_unref(c);
    c = expect_ok("config: anchors and aliases",
                  "listeners:\n  - address: &addr \"127.0.0.1:8080\"\n    url_map: main\n" URL_MAP
                  "backend_services:\n  - name: be\n    endpoints: [{address: *addr}]\n");
    if (c)
        CHECK_STR(c->backend_services[0].endpoints[0].address.text, "127.0.0.1:8080");
    config_unref(c);
    c = expect_ok("config: redirect code by name",
                  RULES("          - priority: 1\n            url_redirect: "
                        "{redirect_response_code: MOVED_PERMANENTLY_DEFAULT}\n"));
    if (c)
        CHECK(c->url_maps[0]
                  .path_matchers[0]
                  .route_rules[0]
                  .action.url_redirect->redirect_response_code == 301);
    config_unref(c);
}

static void test_limits(void)
{
    struct config *c = expect_ok("config: limits defaults", BASE);
    if (c) {
        const struct cfg_limits *l = &c->listeners[0].limits;
        CHECK(c->limits.max_connections == 0 && c->limits.max_request_headers == 100);
        CHECK(l->max_connections == 0 && l->max_request_headers == 100);
        CHECK(l->max_stalled_streams == 8 && l->max_buffered_bytes == 1024 * 1024);
        CHECK(c->overload.memory == 0 && c->overload.connections == 0);
        config_unref(c);
    }
    /* Top-level values are the listeners' defaults, except max_connections. */
    c = expect_ok("config: limits inherited and overridden",
                  "listeners:\n"
                  "  - {address: \"127.0.0.1:8080\", url_map: main, protocol: H2C}\n"
                  "  - address: \"127.0.0.1:8081\"\n"
                  "    url_map: main\n"
                  "    limits: {max_connections: 7, max_request_headers: 20}\n"
                  "limits:\n"
                  "  max_connections: 1000\n"
                  "  max_request_headers: 50\n"
                  "  max_stalled_streams: 3\n"
                  "  max_buffered_bytes: 256KiB\n"
                  "  overload: {memory: 1GiB, connections: 900}\n" URL_MAP BACKEND);
    if (c) {
        CHECK(c->listeners[0].protocol == CFG_LISTENER_H2C);
        CHECK(c->limits.max_connections == 1000 && c->limits.max_request_headers == 50);
        CHECK(c->listeners[0].limits.max_connections == 0);
        CHECK(c->listeners[0].limits.max_request_headers == 50);
        CHECK(c->listeners[0].limits.max_stalled_streams == 3);
        CHECK(c->listeners[0].limits.max_buffered_bytes == 256 * 1024);
        CHECK(c->listeners[1].limits.max_connections == 7);
        CHECK(c->listeners[1].limits.max_request_headers == 20);
        CHECK(c->listeners[1].limits.max_stalled_streams == 3);
        CHECK(c->overload.memory == 1024ull * 1024 * 1024 && c->overload.connections == 900);
        config_unref(c);
    }
    expect_error("config: limits out of range", BASE "limits: {max_request_headers: 0}\n",
                 "t.yaml:10:31: limits.max_request_headers: value 0 out of range 1..10000");
    expect_error("config: overload only at the top",
                 "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: main\n"
                 "    limits: {overload: {memory: 1GiB}}\n" URL_MAP BACKEND,
                 "t.yaml:4:14: listeners[0].limits: unknown key 'overload'");
    expect_error("config: H2C listener takes no tls",
                 "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: main\n"
                 "    protocol: H2C\n    tls: {min_version: TLS1.3}\n" URL_MAP BACKEND,
                 "t.yaml:5:5: listeners[0]: tls is only allowed with protocol HTTPS");
}

/* ---- DNS discovery ------------------------------------------------------------------- */

/* A DNS backend service "be" whose mapping continues with `lines` (from line 10). */
#define DNS_BACKEND(lines)                                                                         \
    LISTENER URL_MAP "backend_services:\n  - name: be\n    discovery: DNS\n" lines

static void test_dns(void)
{
    struct config *c = expect_ok("config: dns defaults", BASE);
    if (c) {
        const struct cfg_backend_service *b = &c->backend_services[0];
        CHECK(b->discovery == CFG_DISCOVERY_STATIC && b->endpoints[0].dns_name == NULL);
        CHECK(b->dns_refresh_rate_ms == 5000 && !b->respect_dns_ttl);
        CHECK(b->dns_lookup_family == CFG_DNS_AUTO && !b->dns_nxdomain_clear);
        CHECK(c->dns.n_resolvers == 0 && c->dns.timeout_ms == 2000 && c->dns.attempts == 2);
        config_unref(c);
    }
    /* A name is not resolved at load; a literal stays static. */
    c = expect_ok(
        "config: dns service",
        DNS_BACKEND("    dns_refresh_rate: 250ms\n    respect_dns_ttl: true\n"
                    "    dns_lookup_family: V4_ONLY\n    dns_nxdomain: CLEAR\n"
                    "    endpoints:\n"
                    "      - {address: \"api.invalid:8080\", weight: 3}\n"
                    "      - {address: \"127.0.0.1:9001\"}\n"
                    "      - {address: \"[::1]:9002\"}\n") "dns:\n"
                                                           "  resolvers: [\"127.0.0.1:5353\", "
                                                           "\"10.0.0.2\", \"::1\", "
                                                           "\"[fe80::1]:53\"]\n"
                                                           "  timeout: 500ms\n  attempts: 3\n");
    if (c) {
        const struct cfg_backend_service *b = &c->backend_services[0];
        CHECK(b->discovery == CFG_DISCOVERY_DNS && b->dns_refresh_rate_ms == 250);
        CHECK(b->respect_dns_ttl && b->dns_lookup_family == CFG_DNS_V4_ONLY);
        CHECK(b->dns_nxdomain_clear);
        CHECK(b->endpoints[0].dns_name && !strcmp(b->endpoints[0].dns_name, "api.invalid"));
        CHECK(b->endpoints[0].port == 8080 && b->endpoints[0].weight == 3);
        CHECK(b->endpoints[0].address.len == 0);
        CHECK(!strcmp(b->endpoints[0].address.text, "api.invalid:8080"));
        CHECK(b->endpoints[1].dns_name == NULL && b->endpoints[1].address.len > 0);
        CHECK(b->endpoints[2].dns_name == NULL && b->endpoints[2].port == 9002);
        CHECK(c->dns.n_resolvers == 4 && c->dns.timeout_ms == 500 && c->dns.attempts == 3);
        CHECK(c->dns.n_resolvers == 4 && !strcmp(c->dns.resolvers[0].text, "127.0.0.1:5353"));
        CHECK(c->dns.n_resolvers == 4 && !strcmp(c->dns.resolvers[1].text, "10.0.0.2:53"));
        CHECK(c->dns.n_resolvers == 4 && !strcmp(c->dns.resolvers[2].text, "[::1]:53"));
        config_unref(c);
    }
    expect_error(
        "config: dns keys need discovery DNS",
        "listeners:\n  - address: \"127.0.0.1:8080\"\n    url_map: main\n" URL_MAP
        "backend_services:\n  - name: be\n    dns_refresh_rate: 1s\n"
        "    endpoints: [{address: \"127.0.0.1:9001\"}]\n",
        "t.yaml:9:5: backend_services[0]: dns_refresh_rate applies to discovery: DNS only");
    expect_error("config: dns bad host name",
                 DNS_BACKEND("    endpoints: [{address: \"bad..name:80\"}]\n"),
                 "t.yaml:10:27: backend_services[0].endpoints[0].address: bad host name "
                 "'bad..name' in address 'bad..name:80'");
    expect_error("config: dns name needs a port", DNS_BACKEND("    endpoints: [{address: api}]\n"),
                 "t.yaml:10:27: backend_services[0].endpoints[0].address: bad address 'api'");
    expect_error("config: dns refresh rate 0",
                 DNS_BACKEND("    dns_refresh_rate: 0s\n"
                             "    endpoints: [{address: \"api:80\"}]\n"),
                 "t.yaml:10:23: backend_services[0]: dns_refresh_rate must be > 0 and at most 24h");
    expect_error("config: dns family",
                 DNS_BACKEND("    dns_lookup_family: V5\n"
                             "    endpoints: [{address: \"api:80\"}]\n"),
                 "t.yaml:10:24: backend_services[0].dns_lookup_family:");
    expect_error("config: dns resolver must be numeric",
                 BASE "dns: {resolvers: [\"ns.example\"]}\n",
                 "t.yaml:10:19: dns.resolvers[0]: bad resolver 'ns.example'");
    expect_error("config: dns attempts", BASE "dns: {attempts: 0}\n",
                 "t.yaml:10:17: dns.attempts: value 0 out of range 1..16");
    expect_error("config: dns unknown key", BASE "dns: {servers: []}\n",
                 "t.yaml:10:7: dns: unknown key 'servers'");
}

/* ---- listener TLS parameters -------------------------------------------------------- */

/* An HTTPS listener whose tls mapping ends with `lines` (from line 6, indented 6). */
#define TLS_LISTENER(lines)                                                                        \
    "listeners:\n  - address: \"127.0.0.1:8443\"\n    protocol: HTTPS\n    tls:\n"                 \
    "      certificates: [{cert_file: a.pem, key_file: a.key}]\n" lines                            \
    "    url_map: main\n" URL_MAP BACKEND

static void test_tls_params(void)
{
    struct config *c;

    expect_error("error: unknown cipher suite",
                 TLS_LISTENER("      cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, NOPE]\n"),
                 "t.yaml:6:52: listeners[0].tls.cipher_suites[1]: unknown cipher suite 'NOPE'");
    expect_error("error: cipher keyword", TLS_LISTENER("      cipher_suites: [HIGH]\n"),
                 "t.yaml:6:23: listeners[0].tls.cipher_suites[0]: unknown cipher suite 'HIGH'");
    expect_error("error: two suites in one item",
                 TLS_LISTENER("      cipher_suites: [\"AES128-SHA:AES256-SHA\"]\n"),
                 "t.yaml:6:23: listeners[0].tls.cipher_suites[0]: unknown cipher suite");
    expect_error("error: unknown TLS 1.3 suite", TLS_LISTENER("      cipher_suites: [TLS_NOPE]\n"),
                 "t.yaml:6:23: listeners[0].tls.cipher_suites[0]: unknown cipher suite "
                 "'TLS_NOPE'");
    expect_error("error: IANA name of a TLS 1.2 suite",
                 TLS_LISTENER("      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"),
                 "t.yaml:6:23: listeners[0].tls.cipher_suites[0]: "
                 "'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256' is a TLS 1.2 suite: write its OpenSSL "
                 "name 'ECDHE-RSA-AES128-GCM-SHA256'");
    expect_error("error: duplicate suite",
                 TLS_LISTENER("      cipher_suites: [TLS_AES_128_GCM_SHA256, "
                              "TLS_AES_128_GCM_SHA256]\n"),
                 "t.yaml:6:47: listeners[0].tls.cipher_suites[1]: duplicate cipher suite "
                 "'TLS_AES_128_GCM_SHA256' (same as 'TLS_AES_128_GCM_SHA256' at 6:23)");
    expect_error("error: no suites", TLS_LISTENER("      cipher_suites: []\n"),
                 "t.yaml:6:22: listeners[0].tls.cipher_suites: must name at least one cipher "
                 "suite");
    expect_error("error: suite not a string", TLS_LISTENER("      cipher_suites: [{a: b}]\n"),
                 "t.yaml:6:23: listeners[0].tls.cipher_suites[0]: expected a string");
    expect_error("error: unknown curve", TLS_LISTENER("      ecdh_curves: [X25519, P-999]\n"),
                 "t.yaml:6:29: listeners[0].tls.ecdh_curves[1]: unknown curve 'P-999'");
    expect_error("error: two names of one curve",
                 TLS_LISTENER("      ecdh_curves: [P-256, prime256v1]\n"),
                 "t.yaml:6:28: listeners[0].tls.ecdh_curves[1]: duplicate curve 'prime256v1' "
                 "(same as 'P-256' at 6:21)");
    expect_error("error: no curves", TLS_LISTENER("      ecdh_curves: []\n"),
                 "t.yaml:6:20: listeners[0].tls.ecdh_curves: must name at least one curve");
    expect_error("error: rotation below 1s", TLS_LISTENER("      session_ticket_rotation: 999ms\n"),
                 "t.yaml:6:32: listeners[0].tls.session_ticket_rotation: 999ms out of range: 0s "
                 "(no session tickets) or 1s..24h");
    expect_error("error: rotation above 24h", TLS_LISTENER("      session_ticket_rotation: 25h\n"),
                 "t.yaml:6:32: listeners[0].tls.session_ticket_rotation: 25h out of range");
    expect_error("error: bad rotation", TLS_LISTENER("      session_ticket_rotation: 1x\n"),
                 "t.yaml:6:32: listeners[0].tls.session_ticket_rotation: bad duration '1x'");

    c = expect_ok("config: TLS 1.2 suites only keep the TLS 1.3 defaults",
                  TLS_LISTENER("      cipher_suites: [ECDHE-ECDSA-CHACHA20-POLY1305]\n"
                               "      session_ticket_rotation: 0s\n"));
    if (c) {
        const struct cfg_listener *l = &c->listeners[0];
        CHECK(l->tls.n_cipher_suites == 4);
        CHECK_STR(l->tls.cipher_suites[0], "ECDHE-ECDSA-CHACHA20-POLY1305");
        CHECK_STR(l->tls.cipher_suites[1], "TLS_AES_256_GCM_SHA384");
        CHECK_STR(l->tls.tls12_cipher_list, "ECDHE-ECDSA-CHACHA20-POLY1305");
        CHECK_STR(l->tls.tls13_ciphersuites,
                  "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
        CHECK(l->tls.session_ticket_rotation_ms == 0);
    }
    config_unref(c);
    c = expect_ok("config: TLS 1.3 suites only keep the TLS 1.2 defaults",
                  TLS_LISTENER("      cipher_suites: [TLS_CHACHA20_POLY1305_SHA256]\n"
                               "      ecdh_curves: [x25519, secp384r1]\n"
                               "      session_ticket_rotation: 24h\n"));
    if (c) {
        const struct cfg_listener *l = &c->listeners[0];
        CHECK(l->tls.n_cipher_suites == 7);
        CHECK_STR(l->tls.cipher_suites[1], "ECDHE-ECDSA-AES128-GCM-SHA256");
        CHECK_STR(l->tls.tls13_ciphersuites, "TLS_CHACHA20_POLY1305_SHA256");
        CHECK(strncmp(l->tls.tls12_cipher_list, "ECDHE-ECDSA-AES128-GCM-SHA256:", 30) == 0);
        CHECK_STR(l->tls.groups_list, "x25519:secp384r1");
        CHECK(l->tls.session_ticket_rotation_ms == 24ull * 3600 * 1000);
    }
    config_unref(c);
    c = expect_ok("config: empty cipher_suites value is the default",
                  TLS_LISTENER("      cipher_suites:\n      ecdh_curves: ~\n"));
    if (c)
        CHECK(c->listeners[0].tls.n_cipher_suites == 9 && c->listeners[0].tls.n_ecdh_curves == 3);
    config_unref(c);
}

void test_config_suite(void)
{
    test_limits();
    test_full();
    test_defaults();
    test_env();
    test_errors_structure();
    test_errors_required();
    test_errors_names();
    test_errors_refs();
    test_errors_values();
    test_errors_actions();
    test_errors_rules();
    test_errors_many();
    test_valid_variations();
    test_tls_params();
    test_dns();
}
