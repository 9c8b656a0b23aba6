/*
 * access_log.c — see access_log.h.
 *
 * Every field comes from outside (the client's method, authority and path,
 * names from the config, the tries list) and is escaped for the format, so
 * no value can end its field, add a field or start a new line:
 *   JSON  RFC 8259 string escapes: `"` and `\` backslashed, every other byte
 *         below 0x20 and every byte from 0x7f up as \u00XX. The string read
 *         back as Latin-1 gives the original bytes, whatever their encoding.
 *   text  `"`, `\`, space, bytes below 0x20 and from 0x7f up as \xHH (as
 *         nginx escapes its log variables); an empty field is `-`.
 * Each field is cut to EXCHANGE_LOG_FIELD_MAX original bytes before
 * escaping (one cap for all; some fields are shorter by nature: the
 * endpoint, the tries list, X-Request-Id), the same in both formats, and the
 * line buffer holds the longest escaped entry: a line is never cut.
 * Timestamps come from the worker's time cache (core/time_cache.h).
 */
#include "exchange/access_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "config/config-t.h"
#include "core/parse.h"
#include "core/time_cache.h"
#include "core/worker.h"
#include "urlmap/urlmap.h"

/* Original bytes logged per field; a longer value is cut (docs/operations.md). */
#define LOG_FIELD_MAX EXCHANGE_LOG_FIELD_MAX
#define LOG_ESC_MAX   6 /* the longest escape of one byte: \u00XX */
/* Fields that may be LOG_FIELD_MAX long: method, authority, path, user_agent,
 * xff, sni, route, listener, backend_service. */
#define LOG_LONG_FIELDS 9

/* Everything but the escaped fields: keys, numbers, the time, flags, ids. */
#define LOG_FIXED_MAX 1024
#define LOG_LINE_MAX                                                                               \
    (LOG_FIXED_MAX + LOG_ESC_MAX * (LOG_LONG_FIELDS * LOG_FIELD_MAX + EXCHANGE_REQUEST_ID_MAX +    \
                                    sizeof(((struct exchange *)0)->endpoint) +                     \
                                    sizeof(((struct exchange *)0)->tries_log)))

static const char *const flag_names[] = {"UT", "UF", "UR", "URX", "FI", "NR",  "UH",  "DC",
                                         "UP", "LR", "SI", "UO",  "DT", "URO", "DRT", "MCA"};

void access_log_flags(unsigned flags, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++) {
        if (!(flags & (1u << i)))
            continue;
        int m = snprintf(out + n, cap - n, "%s%s", n ? "," : "", flag_names[i]);
        if (m < 0 || (size_t)m >= cap - n)
            break;
        n += (size_t)m;
    }
    if (n == 0)
        snprintf(out, cap, "-");
}

static const char hex[] = "0123456789abcdef";

size_t access_log_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            if (n + 2 > cap)
                break;
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (n + 6 > cap)
                break;
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[c >> 4];
            out[n + 5] = hex[c & 15];
            n += 6;
        } else {
            if (n + 1 > cap)
                break;
            out[n++] = (char)c;
        }
    }
    return n;
}

size_t access_log_text_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            if (n + 4 > cap)
                break;
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            if (n + 1 > cap)
                break;
            out[n++] = (char)c;
        }
    }
    return n;
}

/* One log line being built; `cap` is LOG_LINE_MAX, which every entry fits. */
struct line {
    char *p;
    size_t n, cap;
    bool text; /* the text format (else JSON) */
};

static void put(struct line *l, const char *s, size_t len)
{
    if (len > l->cap - l->n)
        len = l->cap - l->n;
    memcpy(l->p + l->n, s, len);
    l->n += len;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* A field from outside: at most `max` of its bytes, escaped for the format. */
static void put_field(struct line *l, const char *s, size_t len, size_t max)
{
    if (!s)
        len = 0;
    if (len > max)
        len = max;
    if (l->text && len == 0) {
        put(l, "-", 1);
        return;
    }
    if (l->text)
        l->n += access_log_text_escape(l->p + l->n, l->cap - l->n, s, len);
    else
        l->n += access_log_json_escape(l->p + l->n, l->cap - l->n, s, len);
}

/* A NUL-terminated field from outside. */
static void put_cstr(struct line *l, const char *s, size_t max)
{
    put_field(l, s, s ? strlen(s) : 0, max);
}

/* JSON: `,"key":"` + the escaped field + `"` (no comma before the first key). */
static void put_json_field(struct line *l, const char *key, const char *s, size_t len, size_t max)
{
    put_str(l, l->n > 1 ? ",\"" : "\"");
    put_str(l, key);
    put_str(l, "\":\"");
    put_field(l, s, len, max);
    put(l, "\"", 1);
}

/* JSON: `,"key":` + a number or literal already formatted. */
static void put_json_raw(struct line *l, const char *key, const char *v)
{
    put_str(l, ",\"");
    put_str(l, key);
    put_str(l, "\":");
    put_str(l, v);
}

static const char *protocol_str(enum http_version v)
{
    return v == HTTP_2 ? "HTTP/2" : v == HTTP_10 ? "HTTP/1.0" : "HTTP/1.1";
}

/* The values every format shows, formatted once. */
struct entry {
    char when[64], client[64], status[16], bytes_in[24], bytes_out[24], ms[32], upstream_ms[32],
        attempts[16], flags[64];
    const char *svc, *route;
};

static void entry_fill(const struct exchange *ex, struct entry *e)
{
    struct sy_time_cache own, *tc = exchange_worker_time(ex->w);
    if (!tc) {
        sy_time_cache_init(&own);
        tc = &own;
    }
    snprintf(e->when, sizeof e->when, "%s", sy_time_iso(tc));
    sy_sockaddr_ip(&ex->client_addr, e->client, sizeof e->client);
    snprintf(e->status, sizeof e->status, "%d", ex->status);
    snprintf(e->bytes_in, sizeof e->bytes_in, "%llu", (unsigned long long)ex->bytes_in);
    snprintf(e->bytes_out, sizeof e->bytes_out, "%llu", (unsigned long long)ex->bytes_out);
    snprintf(e->ms, sizeof e->ms, "%.3f", (double)(sy_now_us() - ex->start_us) / 1000.0);
    if (ex->upstream_us)
        snprintf(e->upstream_ms, sizeof e->upstream_ms, "%.3f", (double)ex->upstream_us / 1000.0);
    else
        e->upstream_ms[0] = '\0';
    snprintf(e->attempts, sizeof e->attempts, "%u", ex->attempts);
    access_log_flags(ex->flags, e->flags, sizeof e->flags);
    e->svc = ex->service ? ex->service->name : "";
    const struct runtime_route *rr = ex->route ? runtime_route(ex->rt, ex->route->action) : NULL;
    e->route = rr ? rr->name : "";
}

/* Text: ` key=` + the escaped field (`-` when empty). */
static void put_text_kv(struct line *l, const char *key, const char *s, size_t len, size_t max)
{
    put(l, " ", 1);
    put_str(l, key);
    put(l, "=", 1);
    put_field(l, s, len, max);
}

/* The path and authority the client sent (normalized), before any url_rewrite. */
static void client_target(const struct exchange *ex, const char **p, size_t *pn, const char **a,
                          size_t *an)
{
    const struct http_request_head *r = &ex->req;
    *p = ex->client_path ? ex->client_path : r->path;
    *pn = ex->client_path ? ex->client_path_len : r->path_len;
    *a = ex->client_path ? ex->client_authority : r->authority;
    *an = ex->client_path ? ex->client_authority_len : r->authority_len;
}

/* `time client "method path protocol" status in out Nms service endpoint id attempts=N flags=F`
 * then ` key=value` for route, upstream_ms, tls, sni, xff, user_agent, trace_id, span_id. */
static void write_text(struct line *l, const struct exchange *ex, const struct entry *e)
{
    const struct http_request_head *r = &ex->req;
    put_str(l, e->when);
    put(l, " ", 1);
    put_cstr(l, e->client, sizeof e->client);
    put(l, " \"", 2);
    put_field(l, r->method, r->method_len, LOG_FIELD_MAX);
    put(l, " ", 1);
    const char *path, *auth;
    size_t pn, an;
    client_target(ex, &path, &pn, &auth, &an);
    put_field(l, path, pn, LOG_FIELD_MAX);
    put(l, " ", 1);
    put_str(l, protocol_str(r->version));
    put(l, "\" ", 2);
    put_str(l, e->status);
    put(l, " ", 1);
    put_str(l, e->bytes_in);
    put(l, " ", 1);
    put_str(l, e->bytes_out);
    put(l, " ", 1);
    put_str(l, e->ms);
    put(l, "ms ", 3);
    put_cstr(l, e->svc, LOG_FIELD_MAX);
    put(l, " ", 1);
    put_cstr(l, ex->endpoint, sizeof ex->endpoint);
    put(l, " ", 1);
    put_cstr(l, ex->request_id, EXCHANGE_REQUEST_ID_MAX);
    put_str(l, " attempts=");
    put_str(l, e->attempts);
    put_str(l, " flags=");
    put_str(l, e->flags);
    put_text_kv(l, "route", e->route, strlen(e->route), LOG_FIELD_MAX);
    put_text_kv(l, "upstream_ms", e->upstream_ms, strlen(e->upstream_ms), sizeof e->upstream_ms);
    put_text_kv(l, "tls", ex->tls_version, ex->tls_version ? strlen(ex->tls_version) : 0, 16);
    put_text_kv(l, "sni", ex->sni, ex->sni_len, LOG_FIELD_MAX);
    put_text_kv(l, "xff", ex->xff, ex->xff_len, LOG_FIELD_MAX);
    put_text_kv(l, "user_agent", ex->user_agent, ex->user_agent_len, LOG_FIELD_MAX);
    put_text_kv(l, "trace_id", ex->trace_id, strlen(ex->trace_id), EXCHANGE_TRACE_ID_LEN);
    put_text_kv(l, "span_id", ex->trace_id[0] ? ex->span_id : "",
                ex->trace_id[0] ? strlen(ex->span_id) : 0, EXCHANGE_SPAN_ID_LEN);
}

static void write_json(struct line *l, const struct exchange *ex, const struct entry *e)
{
    const struct http_request_head *r = &ex->req;
    put(l, "{", 1);
    put_json_field(l, "time", e->when, strlen(e->when), sizeof e->when);
    put_json_field(l, "client", e->client, strlen(e->client), sizeof e->client);
    put_json_field(l, "listener", ex->listener->name, strlen(ex->listener->name), LOG_FIELD_MAX);
    put_json_field(l, "method", r->method, r->method_len, LOG_FIELD_MAX);
    const char *path, *auth;
    size_t pn, an;
    client_target(ex, &path, &pn, &auth, &an);
    put_json_field(l, "authority", auth, an, LOG_FIELD_MAX);
    put_json_field(l, "path", path, pn, LOG_FIELD_MAX);
    put_json_field(l, "protocol", protocol_str(r->version), strlen(protocol_str(r->version)), 16);
    put_json_raw(l, "status", e->status);
    put_json_raw(l, "bytes_in", e->bytes_in);
    put_json_raw(l, "bytes_out", e->bytes_out);
    put_json_raw(l, "duration_ms", e->ms);
    put_json_raw(l, "upstream_ms", e->upstream_ms[0] ? e->upstream_ms : "null");
    put_json_field(l, "backend_service", e->svc, strlen(e->svc), LOG_FIELD_MAX);
    put_json_field(l, "route", e->route, strlen(e->route), LOG_FIELD_MAX);
    put_json_field(l, "endpoint", ex->endpoint, strlen(ex->endpoint), sizeof ex->endpoint);
    put_json_field(l, "request_id", ex->request_id, strlen(ex->request_id),
                   EXCHANGE_REQUEST_ID_MAX);
    put_json_raw(l, "attempts", e->attempts);
    put_json_field(l, "tries", ex->tries_log, strlen(ex->tries_log), sizeof ex->tries_log);
    put_json_field(l, "response_flags", e->flags, strlen(e->flags), sizeof e->flags);
    put_json_field(l, "trace_id", ex->trace_id, strlen(ex->trace_id), EXCHANGE_TRACE_ID_LEN);
    put_json_field(l, "span_id", ex->span_id, ex->trace_id[0] ? strlen(ex->span_id) : 0,
                   EXCHANGE_SPAN_ID_LEN);
    put_json_field(l, "user_agent", ex->user_agent, ex->user_agent_len, LOG_FIELD_MAX);
    put_json_field(l, "xff", ex->xff, ex->xff_len, LOG_FIELD_MAX);
    put_json_field(l, "tls_version", ex->tls_version, ex->tls_version ? strlen(ex->tls_version) : 0,
                   16);
    put_json_field(l, "sni", ex->sni, ex->sni_len, LOG_FIELD_MAX);
    put(l, "}", 1);
}

void access_log_write(const struct exchange *ex)
{
    int fd = ex->w->access_log_fd;
    if (fd < 0 || !ex->rt->cfg->access_log.enabled)
        return;
    struct entry e;
    entry_fill(ex, &e);
    char buf[LOG_LINE_MAX + 1];
    struct line l = {
        .p = buf, .cap = LOG_LINE_MAX, .text = ex->rt->cfg->access_log.format == CFG_LOG_TEXT};
    if (l.text)
        write_text(&l, ex, &e);
    else
        write_json(&l, ex, &e);
    buf[l.n++] = '\n'; /* the byte past cap is for it */
    ssize_t wr = write(fd, buf, l.n);
    (void)wr;
}
