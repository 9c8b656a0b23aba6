/*
 * config-t.h — the validated, immutable configuration snapshot.
 *
 * Types only. A `struct config` is built by config_load() (config.h) on the
 * main thread, never modified afterwards, and shared by reference count with
 * the workers. Every string and array below is owned by the snapshot and is
 * freed by the last config_unref(). Names follow ../shared/SPEC.md.
 *
 * Conventions:
 *   - durations are milliseconds (uint64_t, field suffix _ms);
 *   - sizes are bytes (uint64_t / uint32_t);
 *   - arrays are a pointer plus an `n_` count (NULL/0 when empty);
 *   - cross references (a route naming a backend service) are resolved to
 *     pointers at load time; a dangling name is a load error.
 */
#ifndef SY_CONFIG_T_H
#define SY_CONFIG_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Where a value came from in the YAML file, for late errors (1-based). */
struct cfg_mark {
    int line;
    int col;
};

/* A resolved socket address ("127.0.0.1:8080", "[::1]:80", "host:port"). */
struct cfg_addr {
    char *text; /* as written, after ${ENV} expansion */
    struct sockaddr_storage ss;
    socklen_t len;
};

/* An address range for xff_trusted_cidrs. */
struct cfg_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network byte order; first 4 bytes for v4 */
    unsigned prefix;  /* 0..32 or 0..128 */
};

/* ---- header_action ---------------------------------------------------- */

struct cfg_header_add {
    char *name; /* lower-cased */
    char *value;
    bool replace; /* true: drop existing values first; default false */
};

struct cfg_header_action {
    struct cfg_header_add *request_headers_to_add;
    size_t n_request_headers_to_add;
    char **request_headers_to_remove; /* lower-cased */
    size_t n_request_headers_to_remove;
    struct cfg_header_add *response_headers_to_add;
    size_t n_response_headers_to_add;
    char **response_headers_to_remove;
    size_t n_response_headers_to_remove;
};

/* ---- matches ------------------------------------------------------------ */

enum cfg_path_match_kind {
    CFG_PATH_ANY = 0, /* no path condition in this match rule */
    CFG_PATH_PREFIX,  /* prefix_match */
    CFG_PATH_FULL,    /* full_path_match */
    CFG_PATH_REGEX,   /* regex_match */
};

enum cfg_header_match_kind {
    CFG_HDR_EXACT = 1,
    CFG_HDR_PREFIX,
    CFG_HDR_SUFFIX,
    CFG_HDR_REGEX,
    CFG_HDR_PRESENT,
    CFG_HDR_RANGE,
};

struct cfg_header_match {
    char *header_name; /* lower-cased; may be ":method", ":authority", ":scheme" */
    enum cfg_header_match_kind kind;
    char *value;         /* EXACT/PREFIX/SUFFIX/REGEX */
    void *regex;         /* REGEX: pcre2_code *, compiled (JIT) at load */
    bool present;        /* PRESENT: must the header be present */
    int64_t range_start; /* RANGE: start <= value < end (GCP semantics) */
    int64_t range_end;
    bool invert_match;
    struct cfg_mark mark;
};

enum cfg_query_match_kind {
    CFG_QUERY_PRESENT = 1,
    CFG_QUERY_EXACT,
    CFG_QUERY_REGEX,
};

struct cfg_query_match {
    char *name;
    enum cfg_query_match_kind kind;
    char *value;  /* EXACT/REGEX */
    void *regex;  /* REGEX: pcre2_code * */
    bool present; /* PRESENT */
    struct cfg_mark mark;
};

struct cfg_match_rule {
    enum cfg_path_match_kind path_kind;
    char *path;       /* prefix, full path or regex source */
    void *path_regex; /* CFG_PATH_REGEX: pcre2_code * */
    bool ignore_case;
    struct cfg_header_match *header_matches;
    size_t n_header_matches;
    struct cfg_query_match *query_parameter_matches;
    size_t n_query_parameter_matches;
    struct cfg_mark mark;
};

/* ---- route actions -------------------------------------------------------- */

/* Retry conditions, a bit set (SPEC: retry_conditions). */
enum cfg_retry_cond {
    CFG_RETRY_5XX = 1u << 0,
    CFG_RETRY_GATEWAY_ERROR = 1u << 1,
    CFG_RETRY_CONNECT_FAILURE = 1u << 2,
    CFG_RETRY_RETRIABLE_4XX = 1u << 3,
    CFG_RETRY_REFUSED_STREAM = 1u << 4,
    CFG_RETRY_CANCELLED = 1u << 5,
    CFG_RETRY_DEADLINE_EXCEEDED = 1u << 6,
    CFG_RETRY_INTERNAL = 1u << 7,
    CFG_RETRY_RESOURCE_EXHAUSTED = 1u << 8,
    CFG_RETRY_UNAVAILABLE = 1u << 9,
};

struct cfg_retry_policy {
    bool set;                    /* false: no retry_policy given (SPEC default applies) */
    uint32_t retry_conditions;   /* enum cfg_retry_cond bits */
    uint32_t num_retries;        /* default 1 */
    uint64_t per_try_timeout_ms; /* 0 = not set (the route timeout applies) */
};

struct cfg_fault_policy {
    bool delay_set;
    uint64_t fixed_delay_ms;
    double delay_percentage; /* 0..100, decimals allowed */
    bool abort_set;
    int http_status;         /* 200..599, or 0 when grpc_status is used */
    int grpc_status;         /* 0..16, or -1 when http_status is used */
    double abort_percentage; /* 0..100 */
};

struct cfg_url_rewrite {
    char *path_prefix_rewrite; /* NULL = none */
    char *host_rewrite;        /* NULL = none */
};

struct cfg_url_redirect {
    char *host_redirect;   /* NULL = keep */
    char *path_redirect;   /* NULL = keep; exclusive with prefix_redirect */
    char *prefix_redirect; /* NULL = none */
    bool https_redirect;
    bool strip_query;
    int redirect_response_code; /* 301, 302, 303, 307 or 308; default 301 */
};

struct cfg_backend_service;

struct cfg_weighted_backend_service {
    char *backend_service_name;
    struct cfg_backend_service *backend_service; /* resolved */
    uint32_t weight;                             /* 0..1000 */
    struct cfg_header_action header_action;
};

/*
 * What a matched rule does. Exactly one of: `service` (single backend),
 * `weighted_backend_services` (split), `url_redirect` (answered locally).
 */
/* route_action.request_mirror_policy (GCP), with compare (switchyard's). */
struct cfg_mirror_policy {
    char *backend_service_name;
    struct cfg_backend_service *backend_service; /* resolved */
    double mirror_percent;                       /* 0..100, default 100 */
    uint64_t max_buffered_bytes; /* request body copied to the mirror; default 64KiB */
    struct {
        bool enabled;
        char **ignore_headers; /* lower-cased names */
        size_t n_ignore_headers;
        uint64_t max_body_bytes; /* bytes of each body compared; default 64KiB */
    } compare;
    struct cfg_mark mark;
};

/* route_action.cors_policy (GCP's CorsPolicy). */
struct cfg_cors_policy {
    char **allow_origins; /* exact, or "*" */
    size_t n_allow_origins;
    char **allow_origin_regexes;     /* source text */
    void **allow_origin_regex_codes; /* pcre2_code *, anchored */
    size_t n_allow_origin_regexes;
    char **allow_methods;
    size_t n_allow_methods;
    char **allow_headers; /* lower-cased */
    size_t n_allow_headers;
    char **expose_headers; /* lower-cased */
    size_t n_expose_headers;
    bool max_age_set;
    uint64_t max_age_ms;
    bool allow_credentials;
    bool disabled;
    struct cfg_mark mark;
};

struct cfg_route_action {
    struct cfg_backend_service *service; /* NULL when split or redirect */
    char *service_name;
    struct cfg_weighted_backend_service *weighted_backend_services;
    size_t n_weighted_backend_services;
    uint32_t total_weight;                 /* sum of weights; a split with 0 total is an error */
    struct cfg_url_redirect *url_redirect; /* NULL unless a redirect */
    struct cfg_url_rewrite url_rewrite;
    bool timeout_set;
    uint64_t timeout_ms; /* when timeout_set; 0 = no limit */
    struct cfg_retry_policy retry_policy;
    bool fault_set;
    struct cfg_fault_policy fault_injection_policy;
    struct cfg_mirror_policy *request_mirror_policy; /* NULL = none */
    struct cfg_cors_policy *cors_policy;             /* NULL = none */
};

struct cfg_path_rule {
    char **paths; /* exact "/a" or prefix "/a/" followed by a star */
    size_t n_paths;
    struct cfg_route_action action;
    struct cfg_mark mark;
};

struct cfg_route_rule {
    int64_t priority; /* unique within the path matcher; lower runs first */
    struct cfg_match_rule *match_rules;
    size_t n_match_rules;
    struct cfg_route_action action;
    struct cfg_header_action header_action;
    struct cfg_mark mark;
};

struct cfg_path_matcher {
    char *name;
    struct cfg_route_action default_action; /* default_service (or default_url_redirect) */
    struct cfg_header_action header_action;
    struct cfg_path_rule *path_rules; /* at most one of path_rules/route_rules */
    size_t n_path_rules;
    struct cfg_route_rule *route_rules; /* sorted by priority at load */
    size_t n_route_rules;
    struct cfg_mark mark;
};

struct cfg_host_rule {
    char **hosts; /* lower-cased: "api.internal", "*.svc.internal", "*" */
    size_t n_hosts;
    char *path_matcher_name;
    struct cfg_path_matcher *path_matcher; /* resolved */
    struct cfg_mark mark;
};

struct cfg_url_map {
    char *name;
    struct cfg_route_action default_action; /* default_service */
    struct cfg_header_action header_action;
    struct cfg_host_rule *host_rules;
    size_t n_host_rules;
    struct cfg_path_matcher *path_matchers;
    size_t n_path_matchers;
    struct cfg_mark mark;
};

/* ---- backends ------------------------------------------------------------ */

enum cfg_backend_protocol {
    CFG_BACKEND_HTTP = 0, /* HTTP/1.1 */
    CFG_BACKEND_HTTPS,    /* HTTP/1.1 over TLS */
    CFG_BACKEND_HTTP2,    /* h2 over TLS (ALPN) */
    CFG_BACKEND_H2C,      /* h2 cleartext, prior knowledge */
};

enum cfg_lb_policy {
    CFG_LB_ROUND_ROBIN = 0,
    CFG_LB_LEAST_REQUEST,
    CFG_LB_RANDOM,
    CFG_LB_RING_HASH,
    CFG_LB_MAGLEV,
};

enum cfg_session_affinity {
    CFG_AFFINITY_NONE = 0,
    CFG_AFFINITY_CLIENT_IP,
    CFG_AFFINITY_HEADER_FIELD,
    CFG_AFFINITY_HTTP_COOKIE,
    CFG_AFFINITY_GENERATED_COOKIE,
};

struct cfg_endpoint {
    struct cfg_addr address; /* a name under discovery: DNS is not resolved here (len 0) */
    uint32_t weight;         /* default 1, 0..1000 */
    struct cfg_mark mark;
    char *dns_name; /* discovery: DNS and a host name: the name to resolve; NULL = static */
    uint16_t port;  /* the port of address.text */
    /* An endpoint a runtime made from a DNS answer: the configured "name:port"
     * it came from (address is the record's "IP:port"); NULL otherwise. */
    const char *origin;
};

enum cfg_discovery {
    CFG_DISCOVERY_STATIC = 0, /* numeric, or a name resolved once at load */
    CFG_DISCOVERY_DNS,        /* names re-resolved (Envoy STRICT_DNS) */
};

enum cfg_dns_family {
    CFG_DNS_AUTO = 0, /* AAAA, then A when there is no AAAA (Envoy's AUTO) */
    CFG_DNS_V4_ONLY,
    CFG_DNS_V6_ONLY,
};

struct cfg_health_check;

struct cfg_backend_service {
    char *name;
    enum cfg_backend_protocol protocol;
    struct cfg_endpoint *endpoints;
    size_t n_endpoints;
    enum cfg_discovery discovery;
    uint64_t dns_refresh_rate_ms; /* default 5s */
    bool respect_dns_ttl;         /* refresh at the answer's TTL (at least 1 s) */
    enum cfg_dns_family dns_lookup_family;
    bool dns_nxdomain_clear;     /* dns_nxdomain: CLEAR (default KEEP) */
    uint64_t timeout_ms;         /* default 30s; 0 = no limit */
    uint64_t connect_timeout_ms; /* default 5s */
    enum cfg_lb_policy locality_lb_policy;
    enum cfg_session_affinity session_affinity;
    struct {
        char *http_header_name;     /* NULL = none */
        char *cookie_name;          /* default "sy" (GENERATED_COOKIE) */
        char *cookie_path;          /* default "/" */
        uint64_t cookie_ttl_ms;     /* default 0 = session cookie */
        uint64_t minimum_ring_size; /* RING_HASH, default 1024 */
    } consistent_hash;
    char **health_check_names;
    struct cfg_health_check **health_checks; /* resolved */
    size_t n_health_checks;
    uint32_t max_concurrent_requests_per_endpoint; /* 0 = unlimited */
    struct {
        uint32_t max_connections;      /* default 1024 */
        uint32_t max_pending_requests; /* default 1024 */
        uint32_t max_requests;         /* default 1024 */
        uint32_t max_retries;          /* default 3 */
    } circuit_breakers;
    struct {
        uint32_t consecutive_errors;                    /* default 5 */
        uint32_t consecutive_gateway_failure;           /* default 3 */
        uint32_t enforcing_consecutive_errors;          /* percent, default 0 */
        uint32_t enforcing_consecutive_gateway_failure; /* percent, default 100 */
        uint64_t interval_ms;                           /* default 1s */
        uint64_t base_ejection_time_ms;                 /* default 30s */
        uint32_t max_ejection_percent;                  /* default 50 */
    } outlier_detection;
    uint64_t draining_timeout_ms; /* connection_draining.draining_timeout, default 0 */
    struct {
        char *ca_file; /* NULL = system default store */
        bool verify;   /* default true */
        char *sni;     /* NULL = none */
    } tls;
    struct {
        uint64_t time_ms;    /* 0 = off (default) */
        uint64_t timeout_ms; /* default 20s */
    } http2_keepalive;
    uint64_t retry_buffer_size; /* bytes of request body kept for retry, default 64KiB */
    struct {
        uint64_t base_interval_ms; /* retry_backoff.base_interval, default 25ms */
        uint64_t max_interval_ms;  /* retry_backoff.max_interval, default 250ms */
    } retry_backoff;
    struct cfg_mark mark;
};

enum cfg_health_check_type {
    CFG_HC_TCP = 0,
    CFG_HC_HTTP,
    CFG_HC_HTTPS,
    CFG_HC_HTTP2,
    CFG_HC_H2C,
    CFG_HC_GRPC,
};

struct cfg_health_check {
    char *name;
    enum cfg_health_check_type type; /* default TCP */
    uint32_t port;                   /* 0 = the endpoint's port */
    char *request_path;              /* default "/" */
    char *host;                      /* "" = the endpoint address */
    char *response;                  /* "" = any body */
    char *grpc_service_name;         /* "" */
    uint64_t check_interval_ms;      /* default 5s */
    uint64_t timeout_ms;             /* default 5s */
    uint32_t healthy_threshold;      /* default 2 */
    uint32_t unhealthy_threshold;    /* default 2 */
    struct cfg_mark mark;
};

/* ---- listeners ------------------------------------------------------------ */

enum cfg_listener_protocol {
    CFG_LISTENER_HTTP = 0, /* HTTP/1.1 + h2c */
    CFG_LISTENER_HTTPS,    /* TLS, ALPN h2 and http/1.1 */
    CFG_LISTENER_H2C,      /* HTTP/2 prior knowledge only: anything else is closed */
};

/*
 * limits: at the top level for the process (max_connections counts every
 * listener) and as the defaults of each listener's own `limits`.
 */
struct cfg_limits {
    uint32_t max_connections;     /* client connections; 0 = no cap but descriptors */
    uint32_t max_request_headers; /* header fields in one request; default 100 */
    uint32_t max_stalled_streams; /* per client connection: responses waiting on the
                                     client's window (HTTP/2); default 8 */
    uint64_t max_buffered_bytes;  /* per client connection: response bytes held for a
                                     client that does not read; default 1MiB */
};

struct cfg_certificate {
    char *cert_file;
    char *key_file;
};

struct cfg_listener {
    char *name;
    struct cfg_addr address;
    enum cfg_listener_protocol protocol;
    struct {
        struct cfg_certificate *certificates;
        size_t n_certificates;
        int min_version; /* TLS1_2_VERSION (default) or TLS1_3_VERSION */
        /*
         * Effective suites, OpenSSL names: those listed, plus the default
         * half for a TLS version the list names no suite of ("TLS_*" names
         * are TLS 1.3). Default: ECDHE with AEAD for TLS 1.2, OpenSSL's
         * TLS 1.3 suites. Validated by the loader on a scratch SSL_CTX.
         */
        char **cipher_suites;
        size_t n_cipher_suites;
        char *tls12_cipher_list;  /* its TLS 1.2 names joined by ':' (set_cipher_list) */
        char *tls13_ciphersuites; /* its "TLS_*" names joined by ':' (set_ciphersuites) */
        char **ecdh_curves;       /* OpenSSL group names; default X25519, P-256, P-384 */
        size_t n_ecdh_curves;
        char *groups_list;                   /* ecdh_curves joined by ':' (set1_groups_list) */
        uint64_t session_ticket_rotation_ms; /* key period; default 1h, 0 = no tickets */
    } tls;
    char *url_map_name;
    struct cfg_url_map *url_map; /* resolved */
    struct {
        uint32_t max_concurrent_streams;            /* default 100 */
        uint32_t initial_stream_window_size;        /* default 64KiB */
        uint32_t initial_connection_window_size;    /* default 1MiB */
        uint32_t max_header_list_size;              /* default 64KiB */
        uint64_t keepalive_time_ms;                 /* default 2h */
        uint64_t keepalive_timeout_ms;              /* default 20s */
        uint64_t ping_min_interval_without_data_ms; /* default 5m */
        bool ping_permit_without_calls;             /* default false */
        uint32_t ping_max_strikes;                  /* default 2 */
        uint64_t max_connection_idle_ms;            /* default 0 = unlimited */
        uint64_t max_connection_age_ms;             /* default 0 */
        uint64_t max_connection_age_grace_ms;       /* default 0 */
    } http2;
    struct {
        uint64_t http_keepalive_ms;  /* default 600s */
        uint64_t stream_idle_ms;     /* default 300s */
        uint64_t request_headers_ms; /* default 10s */
    } timeouts;
    uint32_t max_request_headers_size;  /* HTTP/1.1 head cap → 431; default 60KiB */
    bool accept_http_10;                /* default false */
    struct cfg_limits limits;           /* max_connections: this listener's */
    struct cfg_cidr *xff_trusted_cidrs; /* default 0.0.0.0/0 and ::/0 */
    size_t n_xff_trusted_cidrs;
    struct cfg_mark mark;
};

enum cfg_log_format {
    CFG_LOG_JSON = 0,
    CFG_LOG_TEXT,
};

struct config {
    int refcount;     /* atomic; see config_ref/config_unref */
    char *path;       /* file it was loaded from */
    char version[17]; /* 16 hex digits of a hash of the file's bytes */
    struct cfg_listener *listeners;
    size_t n_listeners;
    struct {
        bool set;
        struct cfg_addr address;
    } admin;
    struct {
        bool enabled;               /* default true */
        char *path;                 /* default "-" (stdout) */
        enum cfg_log_format format; /* default json */
    } access_log;
    struct {
        bool generate;          /* add a traceparent to requests without one; default true */
        double sampled_percent; /* 0..100: generated traces flagged sampled; default 0 */
    } tracing;
    uint64_t drain_timeout_ms; /* default 30s */
    struct cfg_limits limits;  /* max_connections: all listeners together */
    struct {
        uint64_t memory;      /* RSS bytes past which new requests are refused; 0 = off */
        uint32_t connections; /* client connections past which the same; 0 = off */
    } overload;
    struct cfg_url_map *url_maps;
    size_t n_url_maps;
    struct cfg_backend_service *backend_services;
    size_t n_backend_services;
    struct {
        struct cfg_addr *resolvers; /* numeric; none = /etc/resolv.conf */
        size_t n_resolvers;
        uint64_t timeout_ms; /* default 2s */
        uint32_t attempts;   /* default 2 */
    } dns;
    struct cfg_health_check *health_checks;
    size_t n_health_checks;
    void *_mem; /* private: allocation list owned by the loader */
};

#endif
