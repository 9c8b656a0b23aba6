/*
 * config_listener.c — the root mapping of the config file and its global
 * sections: listeners, admin, access_log, drain_timeout. url_maps and
 * backend_services/health_checks are delegated to their own files.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

#include "config/config_loader.h"

/* HTTP/2 window sizes: RFC 9113 maximum; the connection window can only grow. */
#define H2_MAX_WINDOW     2147483647u
#define H2_DEFAULT_WINDOW 65535u

static const char *const listener_protocols[] = {"HTTP", "HTTPS", "H2C", NULL};
static const char *const tls_versions[] = {"TLS1.2", "TLS1.3", NULL};
static const char *const log_formats[] = {"json", "text", NULL};

/*
 * TLS defaults (docs/configuration.md). TLS 1.2: forward-secret (ECDHE) AEAD
 * suites only, Mozilla's "intermediate" order without DHE; TLS 1.3: OpenSSL's
 * default suites in its order. "TLS_*" names are TLS 1.3 suites.
 */
static const char *const default_cipher_suites[] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_256_GCM_SHA384",        "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_GCM_SHA256",        NULL};
static const char *const default_ecdh_curves[] = {"X25519", "P-256", "P-384", NULL};

#define TICKET_ROTATION_DEFAULT_MS (3600u * 1000)      /* 1h */
#define TICKET_ROTATION_MIN_MS     1000u               /* 1s */
#define TICKET_ROTATION_MAX_MS     (24u * 3600 * 1000) /* 24h */

static void listener_defaults(struct cfg_listener *l)
{
    l->protocol = CFG_LISTENER_HTTP;
    l->tls.min_version = CFG_TLS1_2;
    l->tls.session_ticket_rotation_ms = TICKET_ROTATION_DEFAULT_MS;
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

static bool is_tls13_suite(const char *name)
{
    return strncmp(name, "TLS_", 4) == 0;
}

/* Does `ctx` offer a suite named exactly `name` (not just one a keyword selects)? */
static bool ctx_has_cipher(const SSL_CTX *ctx, const char *name)
{
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);

    for (int i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++)
        if (strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i)), name) == 0)
            return true;
    return false;
}

/*
 * One cipher_suites item, tried alone on the scratch context: it must be
 * one suite's OpenSSL name (keywords such as HIGH and strings such as
 * "A:B" are refused, and OpenSSL would skip an unknown name in a longer
 * list silently). Reports and returns false otherwise.
 */
static bool check_cipher_suite(struct cfg_loader *ld, const struct ypath *at,
                               const yaml_node_t *item, SSL_CTX *scratch, const char *name)
{
    bool tls13 = is_tls13_suite(name);
    int set =
        tls13 ? SSL_CTX_set_ciphersuites(scratch, name) : SSL_CTX_set_cipher_list(scratch, name);
    const char *ossl;

    ERR_clear_error();
    if (set == 1 && ctx_has_cipher(scratch, name))
        return true;
    ossl = OPENSSL_cipher_name(name); /* a standard (IANA) name's OpenSSL name */
    if (tls13 && strcmp(ossl, "(NONE)") != 0 && strcmp(ossl, name) != 0)
        cfg_error(ld, ymark(item), at, "'%s' is a TLS 1.2 suite: write its OpenSSL name '%s'", name,
                  ossl);
    else
        cfg_error(ld, ymark(item), at,
                  "unknown cipher suite '%s' (expected an OpenSSL suite name, e.g. "
                  "ECDHE-RSA-AES128-GCM-SHA256 or TLS_AES_128_GCM_SHA256)",
                  name);
    return false;
}

static bool check_curve(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *item,
                        SSL_CTX *scratch, const char *name)
{
    int set = SSL_CTX_set1_groups_list(scratch, name);

    ERR_clear_error();
    if (set == 1 && !strchr(name, ':'))
        return true;
    cfg_error(ld, ymark(item), at,
              "unknown curve '%s' (expected an OpenSSL group name, e.g. X25519, P-256, P-384)",
              name);
    return false;
}

static bool same_cipher_suite(SSL_CTX *scratch, const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* Two valid names of one group (x25519 and X25519, P-384 and secp384r1)? OpenSSL refuses
 * a list that repeats a group. */
static bool same_curve(SSL_CTX *scratch, const char *a, const char *b)
{
    char pair[256];
    int n = snprintf(pair, sizeof pair, "%s:%s", a, b);
    bool same = strcmp(a, b) == 0 ||
                (n > 0 && (size_t)n < sizeof pair && SSL_CTX_set1_groups_list(scratch, pair) != 1);

    ERR_clear_error();
    return same;
}

/* How one kind of TLS name list is checked. */
struct tls_names_ops {
    const char *what; /* in messages: "cipher suite", "curve" */
    /* Is `name` valid alone? Reports at `item` when not. */
    bool (*check)(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *item,
                  SSL_CTX *scratch, const char *name);
    /* Do two valid names mean the same thing? */
    bool (*same)(SSL_CTX *scratch, const char *a, const char *b);
};

static const struct tls_names_ops cipher_suite_ops = {"cipher suite", check_cipher_suite,
                                                      same_cipher_suite};
static const struct tls_names_ops curve_ops = {"curve", check_curve, same_curve};

/*
 * The sequence sub->key of `tls`: each item a non-empty string that
 * ops->check accepts, none the same as an earlier one. Returns the names
 * (snapshot memory) and their count in *n; NULL with *n == 0 when the key is
 * absent or null, or after reporting an empty list or any bad item.
 */
static char **get_tls_names(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *tls,
                            const struct tls_names_ops *ops, SSL_CTX *scratch, size_t *n)
{
    yaml_node_t *seq = ychild_seq(ld, sub, tls);
    size_t len = yseq_len(seq);
    char **names;
    bool ok = true;

    *n = 0;
    if (!seq)
        return NULL;
    if (len == 0) {
        cfg_error(ld, ymark(seq), sub, "must name at least one %s", ops->what);
        return NULL;
    }
    names = cfg_calloc_array(ld, len, sizeof(*names));
    if (!names)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {sub, NULL, i};
        yaml_node_t *node = yseq_item(ld, seq, i);
        if (ynode_name(ld, &item, node, &names[i]) != 0 ||
            !ops->check(ld, &item, node, scratch, names[i])) {
            names[i] = NULL;
            ok = false;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (names[j] && ops->same(scratch, names[j], names[i])) {
                struct cfg_mark first = ymark(yseq_item(ld, seq, j));
                cfg_error(ld, ymark(node), &item, "duplicate %s '%s' (same as '%s' at %d:%d)",
                          ops->what, names[i], names[j], first.line, first.col);
                ok = false;
                break;
            }
        }
    }
    if (!ok)
        return NULL;
    *n = len;
    return names;
}

/* Which names join_names() keeps. */
enum name_filter {
    NAMES_ALL,
    NAMES_TLS12, /* cipher suites not named "TLS_*" */
    NAMES_TLS13, /* cipher suites named "TLS_*" */
};

/* NULL names (left by an allocation failure, already reported) are skipped. */
static bool name_kept(const char *name, enum name_filter f)
{
    return name && (f == NAMES_ALL || is_tls13_suite(name) == (f == NAMES_TLS13));
}

/* The kept ones of `names` (n of them) joined by ':' into snapshot memory; "" for none. */
static char *join_names(struct cfg_loader *ld, char *const *names, size_t n, enum name_filter f)
{
    size_t len = 1, at = 0;
    char *out;

    for (size_t i = 0; i < n; i++)
        if (name_kept(names[i], f))
            len += strlen(names[i]) + 1;
    out = cfg_alloc(ld, len);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t k;
        if (!name_kept(names[i], f))
            continue;
        k = strlen(names[i]);
        if (at)
            out[at++] = ':';
        memcpy(out + at, names[i], k);
        at += k;
    }
    out[at] = '\0';
    return out;
}

/*
 * The effective cipher_suites: `listed` (n of them, may be none) plus the
 * default suites of a TLS version that `listed` names none of.
 */
static void set_cipher_suites(struct cfg_loader *ld, struct cfg_listener *l, char **listed,
                              size_t n)
{
    bool has12 = false, has13 = false;
    size_t total = n, k = 0;
    char **all;

    for (size_t i = 0; i < n; i++) {
        has13 |= is_tls13_suite(listed[i]);
        has12 |= !is_tls13_suite(listed[i]);
    }
    for (size_t i = 0; default_cipher_suites[i]; i++)
        if (is_tls13_suite(default_cipher_suites[i]) ? !has13 : !has12)
            total++;
    all = cfg_calloc_array(ld, total, sizeof(*all));
    if (!all)
        return;
    for (size_t i = 0; i < n; i++)
        all[k++] = listed[i];
    for (size_t i = 0; default_cipher_suites[i]; i++)
        if (is_tls13_suite(default_cipher_suites[i]) ? !has13 : !has12)
            all[k++] = cfg_strdup(ld, default_cipher_suites[i]);
    l->tls.cipher_suites = all;
    l->tls.n_cipher_suites = total;
    l->tls.tls12_cipher_list = join_names(ld, all, total, NAMES_TLS12);
    l->tls.tls13_ciphersuites = join_names(ld, all, total, NAMES_TLS13);
}

static void set_ecdh_curves(struct cfg_loader *ld, struct cfg_listener *l, char **listed, size_t n)
{
    if (!listed) {
        n = sizeof(default_ecdh_curves) / sizeof(*default_ecdh_curves) - 1;
        listed = cfg_calloc_array(ld, n, sizeof(*listed));
        for (size_t i = 0; listed && i < n; i++)
            listed[i] = cfg_strdup(ld, default_ecdh_curves[i]);
        if (!listed)
            return;
    }
    l->tls.ecdh_curves = listed;
    l->tls.n_ecdh_curves = n;
    l->tls.groups_list = join_names(ld, listed, n, NAMES_ALL);
}

/*
 * The effective setting, as tls_server.c applies it, must be accepted whole
 * (each name alone was; this guards the combination).
 */
static void check_tls_params(struct cfg_loader *ld, const struct ypath *suites_at,
                             const struct ypath *curves_at, const yaml_node_t *tls,
                             SSL_CTX *scratch, const struct cfg_listener *l)
{
    yaml_node_t *suites = yfind(ld, tls, "cipher_suites");
    yaml_node_t *curves = yfind(ld, tls, "ecdh_curves");

    if (!l->tls.tls12_cipher_list || !l->tls.tls13_ciphersuites || !l->tls.groups_list)
        return; /* out of memory, reported */
    if (SSL_CTX_set_cipher_list(scratch, l->tls.tls12_cipher_list) != 1 ||
        SSL_CTX_set_ciphersuites(scratch, l->tls.tls13_ciphersuites) != 1 ||
        sk_SSL_CIPHER_num(SSL_CTX_get_ciphers(scratch)) <= 0)
        cfg_error(ld, ymark(suites ? suites : tls), suites_at, "leaves no usable cipher suite");
    if (SSL_CTX_set1_groups_list(scratch, l->tls.groups_list) != 1)
        cfg_error(ld, ymark(curves ? curves : tls), curves_at, "leaves no usable curve");
    ERR_clear_error();
}

static void parse_ticket_rotation(struct cfg_loader *ld, const struct ypath *at,
                                  const yaml_node_t *tls, struct cfg_listener *l)
{
    struct ypath sub = {at, "session_ticket_rotation", 0};
    yaml_node_t *v = yfind(ld, tls, "session_ticket_rotation");
    const char *text;
    uint64_t ms;

    if (yget_duration(ld, at, tls, "session_ticket_rotation", &ms) != 1)
        return;
    if (ms != 0 && (ms < TICKET_ROTATION_MIN_MS || ms > TICKET_ROTATION_MAX_MS)) {
        if (ynode_scalar(ld, &sub, v, "a duration", &text) == 0)
            cfg_error(ld, ymark(v), &sub, "%s out of range: 0s (no session tickets) or 1s..24h",
                      text);
        return;
    }
    l->tls.session_ticket_rotation_ms = ms;
}

/*
 * cipher_suites, ecdh_curves and session_ticket_rotation of `tls` (NULL:
 * absent), with their defaults. Names are tried on a scratch SSL_CTX, so
 * `switchyard -t` and a reload refuse what the listener could not apply.
 */
static void parse_tls_params(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *tls,
                             struct cfg_listener *l)
{
    struct ypath suites_at = {sub, "cipher_suites", 0}, curves_at = {sub, "ecdh_curves", 0};
    SSL_CTX *scratch = NULL;
    char **suites = NULL, **curves = NULL;
    size_t n_suites = 0, n_curves = 0;

    if (tls && (yfind(ld, tls, "cipher_suites") || yfind(ld, tls, "ecdh_curves"))) {
        scratch = SSL_CTX_new(TLS_server_method());
        ERR_clear_error();
        if (!scratch)
            cfg_error(ld, ymark(tls), sub, "cannot create a TLS context to check the names");
    }
    if (scratch) {
        suites = get_tls_names(ld, &suites_at, tls, &cipher_suite_ops, scratch, &n_suites);
        curves = get_tls_names(ld, &curves_at, tls, &curve_ops, scratch, &n_curves);
    }
    set_cipher_suites(ld, l, suites, n_suites);
    set_ecdh_curves(ld, l, curves, n_curves);
    if (scratch)
        check_tls_params(ld, &suites_at, &curves_at, tls, scratch, l);
    if (tls)
        parse_ticket_rotation(ld, sub, tls, l);
    SSL_CTX_free(scratch);
}

/* tls: and its agreement with `protocol` (HTTPS needs certificates). */
static void parse_listener_tls(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                               struct cfg_listener *l)
{
    static const char *const keys[] = {"certificates",
                                       "min_version",
                                       "cipher_suites",
                                       "ecdh_curves",
                                       "session_ticket_rotation",
                                       NULL};
    struct ypath sub = {at, "tls", 0};
    yaml_node_t *tls = ychild_map(ld, &sub, n, keys);
    int v;

    if (tls) {
        parse_certificates(ld, &sub, tls, l);
        if (yget_enum(ld, &sub, tls, "min_version", tls_versions, &v) == 1)
            l->tls.min_version = v == 0 ? CFG_TLS1_2 : CFG_TLS1_3;
    }
    parse_tls_params(ld, &sub, tls, l);
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

/* tracing: W3C trace context (docs/configuration.md#tracing). */
static void parse_tracing(struct cfg_loader *ld, const yaml_node_t *root)
{
    static const char *const keys[] = {"generate", "sampled_percent", NULL};
    struct ypath sub = {NULL, "tracing", 0};
    yaml_node_t *t = ychild_map(ld, &sub, root, keys);

    ld->cfg->tracing.generate = true;
    ld->cfg->tracing.sampled_percent = 0;
    if (t) {
        yget_bool(ld, &sub, t, "generate", &ld->cfg->tracing.generate);
        yget_double(ld, &sub, t, "sampled_percent", 0, 100, &ld->cfg->tracing.sampled_percent);
    }
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
    static const char *const keys[] = {
        "listeners",     "admin",  "access_log", "drain_timeout", "url_maps", "backend_services",
        "health_checks", "limits", "dns",        "tracing",       NULL};

    ld->cfg->drain_timeout_ms = 30 * 1000;
    cfg_limits_defaults(&ld->cfg->limits);
    if (!root || ynull(root)) {
        cfg_error(ld, ymark(root), NULL, "missing required key 'listeners'");
        parse_access_log(ld, NULL);
        parse_tracing(ld, NULL);
        cfg_parse_dns(ld, NULL);
        return;
    }
    if (!ymap_check(ld, NULL, root, keys)) {
        parse_access_log(ld, NULL);
        parse_tracing(ld, NULL);
        cfg_parse_dns(ld, NULL);
        return;
    }
    parse_access_log(ld, root);
    parse_tracing(ld, root);
    parse_admin(ld, root);
    yget_duration(ld, NULL, root, "drain_timeout", &ld->cfg->drain_timeout_ms);
    cfg_parse_dns(ld, root);
    parse_section(ld, root, "health_checks", cfg_parse_health_checks);
    parse_section(ld, root, "backend_services", cfg_parse_backend_services);
    parse_section(ld, root, "url_maps", cfg_parse_url_maps);
    cfg_parse_limits(ld, NULL, root, true, &ld->cfg->limits);
    parse_listeners(ld, root);
}
