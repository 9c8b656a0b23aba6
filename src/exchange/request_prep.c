/* request_prep.c — see request_prep.h. */
#include "exchange/request_prep.h"

#include "exchange/cors.h"

#include <arpa/inet.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "config/config-t.h"
#include "runtime.h"
#include "core/errors.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/worker.h"
#include "http/headers.h"

int request_prepare_match(struct exchange *ex, struct url_map_request *m)
{
    int rc = url_map_request_prepare(&ex->req, &ex->arena, m);
    if (rc == 0) { /* url_rewrite may change req: the log shows the client's */
        ex->client_path = ex->req.path;
        ex->client_path_len = ex->req.path_len;
        ex->client_authority = ex->req.authority;
        ex->client_authority_len = ex->req.authority_len;
    }
    return rc;
}

static bool peer_trusted(const struct cfg_listener *l, const struct sockaddr_storage *client)
{
    for (size_t i = 0; i < l->n_xff_trusted_cidrs; i++) {
        const struct cfg_cidr *c = &l->xff_trusted_cidrs[i];
        if (sy_cidr_contains(c->family, c->addr, c->prefix, (const struct sockaddr *)client))
            return true;
    }
    return false;
}

static bool is_xff(const struct http_header *f)
{
    return f->name_len == SY_STRLEN("x-forwarded-for") &&
           memcmp(f->name, SY_STRLIT("x-forwarded-for")) == 0 && f->value_len;
}

/*
 * The X-Forwarded-For fields of `h` joined with ", " into the arena, cut to
 * EXCHANGE_LOG_FIELD_MAX bytes by dropping the leftmost (oldest) entries
 * whole: the addresses nearest the proxy are kept. Sets *out (NULL when
 * there is none) and *len. 0 or SY_ENOMEM.
 */
static int received_forwarded_for(const struct http_headers *h, struct arena *a, const char **out,
                                  size_t *len)
{
    size_t cap = 0;
    *out = NULL;
    *len = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (is_xff(&h->v[i]))
            cap += h->v[i].value_len + 2;
    if (!cap)
        return 0;
    char *v = arena_alloc(a, cap);
    if (!v)
        return SY_ENOMEM;
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!is_xff(&h->v[i]))
            continue;
        if (n) {
            memcpy(v + n, SY_STRLIT(", "));
            n += SY_STRLEN(", ");
        }
        memcpy(v + n, h->v[i].value, h->v[i].value_len);
        n += h->v[i].value_len;
    }
    size_t from = 0;
    while (n - from > EXCHANGE_LOG_FIELD_MAX) {
        const char *c = memchr(v + from, ',', n - from);
        if (!c) { /* one entry longer than the cap: nothing whole to keep */
            from = n;
            break;
        }
        from = (size_t)(c - v) + 1;
        while (from < n && v[from] == ' ')
            from++;
    }
    if (from < n) {
        *out = v + from;
        *len = n - from;
    }
    return 0;
}

/*
 * X-Forwarded-For: the incoming value(s) (`received`: joined and capped by
 * received_forwarded_for; kept only when the peer is trusted), then the
 * client IP, then the listener's own IP (GCP's two appended values). Then
 * X-Forwarded-Proto.
 */
static int set_forwarded(struct http_headers *h, struct arena *a, const struct cfg_listener *l,
                         const struct sockaddr_storage *client_addr,
                         const struct sockaddr_storage *local_addr, bool tls, const char *received,
                         size_t received_len)
{
    char client[INET6_ADDRSTRLEN], local[INET6_ADDRSTRLEN];
    sy_sockaddr_ip(client_addr, client, sizeof client);
    sy_sockaddr_ip(local_addr, local, sizeof local);
    const char *recv = NULL;
    size_t rn = 0;
    if (received && peer_trusted(l, client_addr)) {
        recv = received;
        rn = received_len;
    }
    char *v = arena_alloc(a, rn + strlen(client) + strlen(local) + 8);
    if (!v)
        return SY_ENOMEM;
    size_t n = 0;
    if (recv) {
        memcpy(v, recv, rn);
        memcpy(v + rn, SY_STRLIT(", "));
        n = rn + SY_STRLEN(", ");
    }
    size_t cl = strlen(client), ll = strlen(local);
    memcpy(v + n, client, cl);
    memcpy(v + n + cl, SY_STRLIT(", "));
    memcpy(v + n + cl + SY_STRLEN(", "), local, ll);
    n += cl + SY_STRLEN(", ") + ll;
    http_headers_remove(h, SY_STRLIT("x-forwarded-for"));
    if (http_headers_add(h, a, SY_STRLIT("x-forwarded-for"), v, n) != 0)
        return SY_ENOMEM;
    http_headers_remove(h, SY_STRLIT("x-forwarded-proto"));
    const char *proto = tls ? "https" : "http";
    return http_headers_add(h, a, SY_STRLIT("x-forwarded-proto"), proto, strlen(proto));
}

bool request_id_valid(const char *v, size_t len)
{
    if (len == 0 || len > EXCHANGE_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=';
        if (!ok)
            return false;
    }
    return true;
}

/* ---- trace context (W3C traceparent / tracestate) ----------------------------------- */

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* n lower-case hex digits, not all zero (W3C: an all-zero id is invalid). */
static bool hex_id(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int d = hex_digit(s[i]);
        if (d < 0)
            return false;
        nonzero |= d != 0;
    }
    return nonzero;
}

bool traceparent_parse(const char *v, size_t len, char trace_id[EXCHANGE_TRACE_ID_LEN + 1],
                       unsigned char *flags)
{
    /* version "-" trace-id(32) "-" parent-id(16) "-" flags(2): 55 bytes. */
    if (len < 55 || hex_digit(v[0]) < 0 || hex_digit(v[1]) < 0 || (v[0] == 'f' && v[1] == 'f'))
        return false;
    if ((v[0] == '0' && v[1] == '0' && len != 55) || (len > 55 && v[55] != '-'))
        return false; /* version 00 is exactly 55 bytes; a later one may append "-..." */
    if (v[2] != '-' || v[35] != '-' || v[52] != '-' || !hex_id(v + 3, 32) || !hex_id(v + 36, 16) ||
        hex_digit(v[53]) < 0 || hex_digit(v[54]) < 0)
        return false;
    memcpy(trace_id, v + 3, 32);
    trace_id[32] = '\0';
    *flags = (unsigned char)(hex_digit(v[53]) << 4 | hex_digit(v[54]));
    return true;
}

/*
 * The client's traceparent when it is exactly one valid field: its trace id
 * and flags are kept. Otherwise, with tracing.generate, a new trace (sampled
 * with tracing.sampled_percent). Either way a new span id for this hop.
 */
static void trace_identify(struct exchange *ex)
{
    const struct http_headers *h = &ex->req.headers;
    const struct http_header *tp = NULL;
    unsigned n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i].name_len == SY_STRLEN("traceparent") &&
            memcmp(h->v[i].name, SY_STRLIT("traceparent")) == 0) {
            tp = &h->v[i];
            n++;
        }
    ex->trace_kept =
        n == 1 && traceparent_parse(tp->value, tp->value_len, ex->trace_id, &ex->trace_flags);
    if (!ex->trace_kept) {
        ex->trace_id[0] = '\0';
        if (!ex->rt->cfg->tracing.generate)
            return;
        sy_random_hex(ex->w, ex->trace_id, EXCHANGE_TRACE_ID_LEN);
        ex->trace_flags = worker_chance(ex->w, ex->rt->cfg->tracing.sampled_percent) ? 1 : 0;
    }
    sy_random_hex(ex->w, ex->span_id, EXCHANGE_SPAN_ID_LEN);
}

/*
 * Upstream: one traceparent "00-TRACE-SPAN-FLAGS" with this hop's span id;
 * tracestate forwarded unchanged when the client's traceparent was kept and
 * the tracestate fields together fit EXCHANGE_LOG_FIELD_MAX, else removed
 * (W3C: a restarted trace drops it; a vendor may drop what it cannot carry).
 */
static int set_trace_headers(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    http_headers_remove(h, SY_STRLIT("traceparent"));
    size_t ts = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i].name_len == SY_STRLEN("tracestate") &&
            memcmp(h->v[i].name, SY_STRLIT("tracestate")) == 0)
            ts += h->v[i].value_len + 1;
    if (!ex->trace_kept || ts > EXCHANGE_LOG_FIELD_MAX + 1)
        http_headers_remove(h, SY_STRLIT("tracestate"));
    if (!ex->trace_id[0])
        return 0;
    /* "00-" TRACE(32) "-" SPAN(16) "-" FLAGS(2): 55 bytes, built without printf. */
    static const char hex[] = "0123456789abcdef";
    char *v = arena_alloc(&ex->arena, 56);
    if (!v)
        return SY_ENOMEM;
    memcpy(v, "00-", 3);
    memcpy(v + 3, ex->trace_id, EXCHANGE_TRACE_ID_LEN);
    v[35] = '-';
    memcpy(v + 36, ex->span_id, EXCHANGE_SPAN_ID_LEN);
    v[52] = '-';
    v[53] = hex[(ex->trace_flags >> 4) & 15];
    v[54] = hex[ex->trace_flags & 15];
    v[55] = '\0';
    return http_headers_add(h, &ex->arena, SY_STRLIT("traceparent"), v, 55);
}

int request_identify(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    const struct http_header *id = http_headers_get(h, SY_STRLIT("x-request-id"));
    if (id && request_id_valid(id->value, id->value_len)) {
        memcpy(ex->request_id, id->value, id->value_len);
        ex->request_id[id->value_len] = '\0';
    } else {
        sy_uuid4(ex->w, ex->request_id);
    }
    trace_identify(ex);
    const struct http_header *ua = http_headers_get(h, SY_STRLIT("user-agent"));
    if (ua) {
        ex->user_agent = ua->value;
        ex->user_agent_len = ua->value_len;
    }
    const char *xff;
    size_t xn;
    if (received_forwarded_for(h, &ex->arena, &xff, &xn) != 0)
        return SY_ENOMEM;
    ex->xff = xff;
    ex->xff_len = (uint32_t)xn;
    return 0;
}

void exchange_note_tls(struct exchange *ex, struct bufferevent *bev)
{
    SSL *ssl = ex->tls && bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (!ssl)
        return;
    ex->tls_version = SSL_get_version(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    size_t n = sni ? strlen(sni) : 0;
    if (n > EXCHANGE_LOG_FIELD_MAX)
        n = EXCHANGE_LOG_FIELD_MAX;
    if (n && (ex->sni = arena_strndup(&ex->arena, sni, n)))
        ex->sni_len = (uint32_t)n;
}

/*
 * X-Request-Id upstream: exactly one field holding ex->request_id (set by
 * request_identify: the client's first one when request_id_valid(), else a
 * new UUID), the value the access log shows.
 */
static int set_request_id(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    if (!ex->request_id[0]) /* routed without request_identify (tools) */
        sy_uuid4(ex->w, ex->request_id);
    http_headers_remove(h, SY_STRLIT("x-request-id"));
    return http_headers_add(h, &ex->arena, SY_STRLIT("x-request-id"), ex->request_id,
                            strlen(ex->request_id));
}

int request_set_forwarded(struct http_headers *h, struct arena *a, const struct cfg_listener *l,
                          const struct sockaddr_storage *client_addr,
                          const struct sockaddr_storage *local_addr, bool tls)
{
    const char *recv;
    size_t rn;
    if (received_forwarded_for(h, a, &recv, &rn) != 0)
        return SY_ENOMEM;
    return set_forwarded(h, a, l, client_addr, local_addr, tls, recv, rn);
}

static int set_forwarding_headers(struct exchange *ex)
{
    /* request_identify joined the received X-Forwarded-For already (for the
     * access log), from the same fields: matching changed no header. */
    if (set_forwarded(&ex->req.headers, &ex->arena, ex->listener, &ex->client_addr, &ex->local_addr,
                      ex->tls, ex->xff, ex->xff_len) != 0)
        return SY_ENOMEM;
    if (set_request_id(ex) != 0)
        return SY_ENOMEM;
    return set_trace_headers(ex);
}

int request_apply_route(struct exchange *ex, const struct url_map_request *m,
                        const struct url_map_result *res)
{
    if (set_forwarding_headers(ex) != 0)
        return SY_ENOMEM;
    return url_map_apply_request(res, m, &ex->req, &ex->arena);
}

int response_apply_route(struct exchange *ex, struct http_response_head *h,
                         const struct url_map_result *res)
{
    if (url_map_apply_response(res, &h->headers, &ex->arena) != 0)
        return SY_ENOMEM;
    return cors_on_response(ex, res, h);
}
