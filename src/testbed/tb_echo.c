/*
 * tb_echo.c — the testbed's default answer body: a JSON object echoing the
 * request it saw (instance, protocol, method, path, headers, body_bytes).
 *
 * Header names are lower-case; a repeated header is one member whose values
 * are joined with ", " in arrival order; members keep the order of first
 * arrival. For HTTP/2, :authority is echoed as "host" when no host header
 * came. Bytes >= 0x80 are escaped as \u00XX (read as ISO-8859-1), so the
 * result is always valid JSON and valid UTF-8.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/strlit.h"
#include "testbed/testbed.h"

/* A bounded output buffer; `overflow` is sticky. */
struct json_out {
    char *p;
    size_t len, cap;
    bool overflow;
};

long tb_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc = 0;

        if (o + 6 > cap) /* the longest escape, \u00XX */
            return -1;
        switch (ch) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        default: break;
        }
        if (esc) {
            out[o++] = '\\';
            out[o++] = esc;
        } else if (ch < 0x20 || ch >= 0x7f) {
            memcpy(out + o, SY_STRLIT("\\u00"));
            o += SY_STRLEN("\\u00");
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    return (long)o;
}

static void out_raw(struct json_out *w, const char *s, size_t n)
{
    if (w->overflow || w->len + n > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void out_lit(struct json_out *w, const char *s)
{
    out_raw(w, s, strlen(s));
}

/* Escaped string bytes, no quotes. */
static void out_escaped(struct json_out *w, const char *s, size_t n)
{
    long used;

    if (w->overflow)
        return;
    used = tb_json_escape(w->p + w->len, w->cap - w->len, s, n);
    if (used < 0) {
        w->overflow = true;
        return;
    }
    w->len += (size_t)used;
}

static void out_string(struct json_out *w, const char *s, size_t n)
{
    out_raw(w, SY_STRLIT("\""));
    out_escaped(w, s, n);
    out_raw(w, SY_STRLIT("\""));
}

static void out_span(struct json_out *w, const struct tb_request *req, struct tb_span s)
{
    out_string(w, req->buf + s.off, s.len);
}

/* Did a field before index i carry the same name? */
static bool name_seen_before(const struct tb_request *req, uint32_t i)
{
    const struct tb_field *f = &req->fields[i];

    for (uint32_t j = 0; j < i; j++) {
        const struct tb_field *g = &req->fields[j];
        if (g->name.len == f->name.len &&
            memcmp(req->buf + g->name.off, req->buf + f->name.off, f->name.len) == 0)
            return true;
    }
    return false;
}

/* Field i's name, then its value joined with later repeats. */
static void out_member(struct json_out *w, const struct tb_request *req, uint32_t i)
{
    const struct tb_field *f = &req->fields[i];

    out_span(w, req, f->name);
    out_lit(w, ": \"");
    out_escaped(w, req->buf + f->value.off, f->value.len);
    for (uint32_t j = i + 1; j < req->nfields; j++) {
        const struct tb_field *g = &req->fields[j];
        if (g->name.len == f->name.len &&
            memcmp(req->buf + g->name.off, req->buf + f->name.off, f->name.len) == 0) {
            out_lit(w, ", ");
            out_escaped(w, req->buf + g->value.off, g->value.len);
        }
    }
    out_lit(w, "\"");
}

static void out_headers(struct json_out *w, const struct tb_request *req)
{
    struct tb_span host;
    bool first = true;

    out_lit(w, "{");
    if (req->protocol == TB_HTTP2 && req->authority.len && !tb_request_header(req, "host", &host)) {
        out_lit(w, "\"host\": ");
        out_span(w, req, req->authority);
        first = false;
    }
    for (uint32_t i = 0; i < req->nfields; i++) {
        if (name_seen_before(req, i))
            continue;
        if (!first)
            out_lit(w, ", ");
        out_member(w, req, i);
        first = false;
    }
    out_lit(w, "}");
}

char *tb_echo_json(const struct testbed *tb, const struct tb_request *req, size_t *len)
{
    struct json_out w = {0};
    char num[32];
    size_t name_len = strlen(tb->name);

    /* Worst case: every byte escaped to 6, plus punctuation per field. */
    w.cap = 6 * ((size_t)req->len + name_len) + 12 * (size_t)req->nfields + 256;
    w.p = malloc(w.cap);
    if (!w.p)
        return NULL;
    out_lit(&w, "{\"instance\": ");
    out_string(&w, tb->name, name_len);
    out_lit(&w, req->protocol == TB_HTTP2 ? ", \"protocol\": \"HTTP/2\", \"method\": "
                                          : ", \"protocol\": \"HTTP/1.1\", \"method\": ");
    out_span(&w, req, req->method);
    out_lit(&w, ", \"path\": ");
    out_span(&w, req, req->path);
    out_lit(&w, ", \"headers\": ");
    out_headers(&w, req);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)req->body_bytes);
    out_lit(&w, ", \"body_bytes\": ");
    out_lit(&w, num);
    out_lit(&w, "}\n");
    if (w.overflow) {
        free(w.p);
        return NULL;
    }
    *len = w.len;
    return w.p;
}
