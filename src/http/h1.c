/* h1.c — see h1.h. */
#include "http/h1.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "http/headers.h"

/* The end of a head in p[0..len): "\r\n\r\n" or a bare "\n\n", whichever ends first. */
static ssize_t head_end_in(const char *p, size_t len)
{
    const char *lf = p;
    const char *end = p + len;
    while ((lf = memchr(lf, '\n', (size_t)(end - lf))) != NULL) {
        size_t i = (size_t)(lf - p);
        if (i + 1 < len && p[i + 1] == '\n')
            return (ssize_t)i + 2;
        if (i >= 1 && i + 2 < len && p[i - 1] == '\r' && p[i + 1] == '\r' && p[i + 2] == '\n')
            return (ssize_t)i + 3;
        lf++;
    }
    return -1;
}

ssize_t h1_head_length(struct evbuffer *buf, size_t max)
{
    /* Usually the whole head is in the first chain: scan it in place. */
    struct evbuffer_iovec v;
    size_t total = evbuffer_get_length(buf);
    if (evbuffer_peek(buf, -1, NULL, &v, 1) >= 1) {
        ssize_t n = head_end_in(v.iov_base, v.iov_len);
        if (n < 0 && v.iov_len < total && v.iov_len < max) {
            /* Spread over chains: gather what could be a head. */
            size_t want = total < max ? total : max;
            const char *p = (const char *)evbuffer_pullup(buf, (ev_ssize_t)want);
            n = p ? head_end_in(p, want) : -1;
        }
        if (n >= 0)
            return (size_t)n > max ? SY_ELIMIT : n;
    }
    if (total >= max)
        return SY_ELIMIT;
    return 0;
}

/* Check one field line "name: value" (without its CRLF). */
static int check_field_line(const char *p, size_t len)
{
    if (len == 0 || p[0] == ' ' || p[0] == '\t')
        return SY_EPROTO; /* obs-fold, or an empty line inside the head */
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return SY_EPROTO;
    size_t nlen = (size_t)(colon - p);
    if (!http_is_token(p, nlen))
        return SY_EPROTO; /* includes whitespace before the colon */
    if (!http_is_field_value(colon + 1, len - nlen - 1))
        return SY_EPROTO;
    return 0;
}

int h1_head_check(const char *p, size_t len)
{
    if (len < 4 || memcmp(p + len - 4, "\r\n\r\n", 4) != 0)
        return SY_EPROTO;
    size_t end = len - 2; /* stop before the final empty line */
    size_t i = 0;
    bool first = true;
    while (i < end) {
        const char *lf = memchr(p + i, '\n', end - i);
        if (!lf)
            return SY_EPROTO;
        size_t line_end = (size_t)(lf - p);
        if (line_end == i || p[line_end - 1] != '\r')
            return SY_EPROTO; /* bare LF */
        size_t line_len = line_end - 1 - i;
        if (memchr(p + i, '\0', line_len) || memchr(p + i, '\r', line_len))
            return SY_EPROTO;
        if (!first && check_field_line(p + i, line_len) != 0)
            return SY_EPROTO;
        if (first && line_len == 0)
            return SY_EPROTO;
        first = false;
        i = line_end + 1;
    }
    return 0;
}

unsigned h1_head_fields(const char *p, size_t len)
{
    unsigned lines = 0;
    for (const char *e = p + len; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        lines++;
    return lines >= 2 ? lines - 2 : 0; /* not the request line, not the empty last */
}

int h1_request_line_parse(const char *p, size_t len, struct h1_request_line *rl)
{
    const char *end = memchr(p, '\r', len);
    if (!end || (size_t)(end - p) + 1 >= len || end[1] != '\n')
        return SY_EPROTO;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp || !http_is_token(p, (size_t)(sp - p)))
        return SY_EPROTO;
    rl->method = p;
    rl->method_len = (size_t)(sp - p);
    rl->target = sp + 1;
    const char *sp2 = memchr(rl->target, ' ', (size_t)(end - rl->target));
    if (!sp2 || sp2 == rl->target)
        return SY_EPROTO; /* no target, or two SP before it */
    rl->target_len = (size_t)(sp2 - rl->target);
    const char *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return SY_EPROTO; /* also two SP after the target, or a trailing SP */
    rl->major = (unsigned)(v[5] - '0');
    rl->minor = (unsigned)(v[7] - '0');
    return 0;
}

enum h1_te h1_transfer_encoding_parse(const char *v, size_t len)
{
    /* Elements split at ',' with OWS trimmed; an empty one is malformed. */
    bool chunked_seen = false, unknown = false;
    size_t i = 0;
    for (;;) {
        while (i < len && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (!http_is_token(v + s, e - s) || chunked_seen)
            return H1_TE_MALFORMED; /* not a token (params, quotes), or chunked not last */
        if (e - s == SY_STRLEN("chunked") && strncasecmp(v + s, SY_STRLIT("chunked")) == 0)
            chunked_seen = true;
        else
            unknown = true;
        if (i == len)
            break;
        i++; /* the comma */
    }
    if (!chunked_seen)
        return H1_TE_MALFORMED; /* chunked not final: the length is unknown (6.3) */
    return unknown ? H1_TE_UNKNOWN : H1_TE_CHUNKED;
}

/* ---- chunked body validator ---------------------------------------------- */

enum {
    CK_SIZE_START,  /* first HEXDIG of a chunk size */
    CK_SIZE,        /* more HEXDIG, BWS, ';' or CR */
    CK_EXT_BWS,     /* BWS before ';' */
    CK_NAME_START,  /* BWS after ';', then an ext-name */
    CK_NAME,        /* ext-name tchar, BWS, '=', ';' or CR */
    CK_AFTER_NAME,  /* BWS after an ext-name: '=' or ';' */
    CK_VAL_START,   /* BWS after '=', then token or DQUOTE */
    CK_VAL_TOKEN,   /* ext-val token */
    CK_QUOTED,      /* inside a quoted-string */
    CK_QUOTED_PAIR, /* after a backslash */
    CK_AFTER_VAL,   /* after a value: BWS, ';' or CR */
    CK_SIZE_LF,     /* LF ending the chunk-size line */
    CK_DATA,        /* n data bytes left */
    CK_DATA_CR,     /* CRLF after chunk data */
    CK_DATA_LF,
    CK_FIELD_START, /* a trailer field name, or CR of the final CRLF */
    CK_FIELD_NAME,
    CK_FIELD_VALUE,
    CK_FIELD_LF,
    CK_END_LF, /* LF of the final CRLF */
    CK_DONE,
    CK_FAILED,
};

static bool is_tchar(unsigned char c)
{
    return http_is_token((const char *)&c, 1);
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* HTAB, SP, VCHAR, obs-text: what a field value and a quoted-pair may hold. */
static bool is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

void h1_chunked_init(struct h1_chunked *ck, uint32_t max_fields, uint32_t max_trailer)
{
    memset(ck, 0, sizeof *ck);
    ck->max_fields = max_fields;
    ck->max_trailer = max_trailer;
    ck->state = CK_SIZE_START;
}

bool h1_chunked_done(const struct h1_chunked *ck)
{
    return ck->state == CK_DONE;
}

/* After a chunk size or an ext-val: CR ends the line, [BWS] ';' starts an extension. */
static uint8_t after_value(unsigned char c)
{
    return c == '\r' ? CK_SIZE_LF : c == ';' ? CK_NAME_START : is_ws(c) ? CK_EXT_BWS : CK_FAILED;
}

/* After an ext-name and its BWS: "=" and a value, or the next extension. */
static uint8_t after_name(unsigned char c)
{
    return is_ws(c)   ? CK_AFTER_NAME
           : c == '=' ? CK_VAL_START
           : c == ';' ? CK_NAME_START
                      : CK_FAILED;
}

/* The state after the byte `c` of a chunk-size line, or CK_FAILED. */
static uint8_t size_line_step(struct h1_chunked *ck, unsigned char c)
{
    int h;
    switch (ck->state) {
    case CK_SIZE_START:
    case CK_SIZE:
        if ((h = hex_value(c)) >= 0) {
            if (ck->n >> 56)
                return CK_FAILED; /* 2^60 or more: no real body, and parsers overflow */
            ck->n = ck->n << 4 | (uint64_t)h;
            return CK_SIZE;
        }
        if (ck->state == CK_SIZE_START)
            return CK_FAILED;
        return after_value(c);
    case CK_EXT_BWS: return is_ws(c) ? CK_EXT_BWS : c == ';' ? CK_NAME_START : CK_FAILED;
    case CK_NAME_START: return is_ws(c) ? CK_NAME_START : is_tchar(c) ? CK_NAME : CK_FAILED;
    case CK_NAME:
        if (is_tchar(c))
            return CK_NAME;
        return c == '\r' ? CK_SIZE_LF : after_name(c);
    case CK_AFTER_NAME: return after_name(c);
    case CK_VAL_START:
        return is_ws(c)      ? CK_VAL_START
               : c == '"'    ? CK_QUOTED
               : is_tchar(c) ? CK_VAL_TOKEN
                             : CK_FAILED;
    case CK_VAL_TOKEN:
        if (is_tchar(c))
            return CK_VAL_TOKEN;
        return after_value(c);
    case CK_QUOTED:
        return c == '"'     ? CK_AFTER_VAL
               : c == '\\'  ? CK_QUOTED_PAIR
               : is_text(c) ? CK_QUOTED
                            : CK_FAILED;
    case CK_QUOTED_PAIR: return is_text(c) ? CK_QUOTED : CK_FAILED;
    case CK_AFTER_VAL: return after_value(c);
    case CK_SIZE_LF:
        if (c != '\n')
            return CK_FAILED;
        return ck->n ? CK_DATA : CK_FIELD_START;
    default: return CK_FAILED;
    }
}

/* The state after the byte `c` of the trailer section, or CK_FAILED. */
static uint8_t trailer_step(const struct h1_chunked *ck, unsigned char c)
{
    switch (ck->state) {
    case CK_FIELD_START: return c == '\r' ? CK_END_LF : is_tchar(c) ? CK_FIELD_NAME : CK_FAILED;
    case CK_FIELD_NAME: return is_tchar(c) ? CK_FIELD_NAME : c == ':' ? CK_FIELD_VALUE : CK_FAILED;
    case CK_FIELD_VALUE: return c == '\r' ? CK_FIELD_LF : is_text(c) ? CK_FIELD_VALUE : CK_FAILED;
    case CK_FIELD_LF: return c == '\n' ? CK_FIELD_START : CK_FAILED;
    case CK_END_LF: return c == '\n' ? CK_DONE : CK_FAILED;
    default: return CK_FAILED;
    }
}

ssize_t h1_chunked_check(struct h1_chunked *ck, const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && ck->state != CK_DONE && ck->state != CK_FAILED) {
        unsigned char c = (unsigned char)p[i];
        switch (ck->state) {
        case CK_DATA: {
            size_t take = len - i < ck->n ? len - i : (size_t)ck->n;
            ck->n -= take;
            i += take;
            if (ck->n == 0)
                ck->state = CK_DATA_CR;
            continue;
        }
        case CK_DATA_CR: ck->state = c == '\r' ? CK_DATA_LF : CK_FAILED; break;
        case CK_DATA_LF:
            ck->state = c == '\n' ? CK_SIZE_START : CK_FAILED;
            ck->n = 0;
            ck->line = 0;
            break;
        case CK_FIELD_START:
        case CK_FIELD_NAME:
        case CK_FIELD_VALUE:
        case CK_FIELD_LF:
        case CK_END_LF:
            if ((ck->state == CK_FIELD_START && c != '\r' && ++ck->fields > ck->max_fields) ||
                ++ck->trailer > ck->max_trailer) {
                ck->state = CK_FAILED;
                return SY_ELIMIT;
            }
            ck->state = trailer_step(ck, c);
            break;
        default:
            if (++ck->line > H1_CHUNK_LINE_MAX)
                ck->state = CK_FAILED;
            else
                ck->state = size_line_step(ck, c);
            break;
        }
        i++;
    }
    if (ck->state == CK_FAILED)
        return SY_EPROTO;
    return (ssize_t)i;
}

/*
 * A head is written with one reservation in the output buffer: each
 * evbuffer_add runs the buffer's callbacks (a bufferevent's output has one),
 * and a head of a dozen fields was four adds per field.
 */
struct head_out {
    struct evbuffer *out;
    struct evbuffer_iovec v;
    char *p;    /* next byte */
    char *heap; /* when the reservation failed */
};

static void head_begin(struct head_out *w, struct evbuffer *out, size_t max)
{
    w->out = out;
    w->heap = NULL;
    if (evbuffer_reserve_space(out, (ev_ssize_t)max, &w->v, 1) == 1 && w->v.iov_len >= max) {
        w->p = w->v.iov_base;
        return;
    }
    w->heap = malloc(max);
    w->v.iov_base = w->heap;
    w->p = w->heap; /* NULL: out of memory, the head is lost as an evbuffer_add would lose it */
}

static void head_end(struct head_out *w)
{
    if (!w->p)
        return;
    size_t n = (size_t)(w->p - (char *)w->v.iov_base);
    if (w->heap) {
        if (n)
            evbuffer_add(w->out, w->heap, n);
        free(w->heap);
        return;
    }
    w->v.iov_len = n;
    evbuffer_commit_space(w->out, &w->v, 1);
}

static inline void put(struct head_out *w, const void *s, size_t n)
{
    if (!w->p)
        return;
    memcpy(w->p, s, n);
    w->p += n;
}

#define PUT_LIT(w, s) put((w), s, sizeof s - 1)

/* Bytes at most for "content-length: N\r\n" or "transfer-encoding: chunked\r\n". */
#define FRAMING_MAX 40

static size_t fields_size(const struct http_headers *hs)
{
    size_t n = 0;
    for (uint32_t i = 0; i < hs->n; i++)
        n += (size_t)hs->v[i].name_len + hs->v[i].value_len + 4;
    return n;
}

static void put_fields(struct head_out *w, const struct http_headers *hs)
{
    for (uint32_t i = 0; i < hs->n; i++) {
        const struct http_header *f = &hs->v[i];
        put(w, f->name, f->name_len);
        PUT_LIT(w, ": ");
        put(w, f->value, f->value_len);
        PUT_LIT(w, "\r\n");
    }
}

static void put_content_length(struct head_out *w, int64_t len)
{
    char line[48] = "content-length: ";
    size_t n = 16 + sy_u64_to_dec(line + 16, (uint64_t)len);
    line[n++] = '\r';
    line[n++] = '\n';
    put(w, line, n);
}

void h1_write_request_head(struct evbuffer *out, const struct http_request_head *h)
{
    size_t upgrade_len = h->upgrade ? strlen(h->upgrade) : 0;
    size_t max = h->method_len + 1 + h->path_len + 11 + (h->authority ? 8 + h->authority_len : 0) +
                 fields_size(&h->headers) + (h->upgrade ? 32 + upgrade_len : 0) + FRAMING_MAX + 2;
    struct head_out w;
    head_begin(&w, out, max);
    put(&w, h->method, h->method_len);
    PUT_LIT(&w, " ");
    put(&w, h->path, h->path_len);
    PUT_LIT(&w, " HTTP/1.1\r\n");
    if (h->authority) {
        PUT_LIT(&w, "host: ");
        put(&w, h->authority, h->authority_len);
        PUT_LIT(&w, "\r\n");
    }
    put_fields(&w, &h->headers);
    if (h->upgrade) {
        PUT_LIT(&w, "connection: upgrade\r\nupgrade: ");
        put(&w, h->upgrade, upgrade_len);
        PUT_LIT(&w, "\r\n\r\n"); /* an upgrade request carries no body of its own */
        head_end(&w);
        return;
    }
    if (h->content_length >= 0 && (h->has_body || h->content_length > 0))
        put_content_length(&w, h->content_length);
    else if (h->has_body)
        PUT_LIT(&w, "transfer-encoding: chunked\r\n");
    PUT_LIT(&w, "\r\n");
    head_end(&w);
}

void h1_write_response_head(struct evbuffer *out, enum http_version v, int status,
                            const struct http_headers *hs, enum h1_framing framing,
                            int64_t content_length, bool close)
{
    const char *reason = http_reason(status);
    size_t reason_len = strlen(reason);
    size_t max = 16 + reason_len + 2 + fields_size(hs) + FRAMING_MAX + 24 + 2;
    struct head_out w;
    head_begin(&w, out, max);
    char line[16] = "HTTP/1.1 ";
    if (v == HTTP_10)
        line[7] = '0';
    size_t n =
        9 + sy_u64_to_dec(line + 9, (uint64_t)(status >= 100 && status < 1000 ? status : 500));
    line[n++] = ' ';
    put(&w, line, n);
    put(&w, reason, reason_len);
    PUT_LIT(&w, "\r\n");
    put_fields(&w, hs);
    switch (framing) {
    case H1_FRAMING_NONE:
        if (content_length >= 0 && status != 204 && !(status >= 100 && status < 200))
            put_content_length(&w, content_length);
        break;
    case H1_FRAMING_LENGTH: put_content_length(&w, content_length); break;
    case H1_FRAMING_CHUNKED: PUT_LIT(&w, "transfer-encoding: chunked\r\n"); break;
    case H1_FRAMING_CLOSE: break;
    }
    if (close)
        PUT_LIT(&w, "connection: close\r\n");
    else if (v == HTTP_10)
        PUT_LIT(&w, "connection: keep-alive\r\n");
    PUT_LIT(&w, "\r\n");
    head_end(&w);
}

void h1_write_chunk(struct evbuffer *out, struct evbuffer *data)
{
    size_t n = evbuffer_get_length(data);
    if (n == 0)
        return;
    static const char hex[] = "0123456789abcdef";
    char line[20];
    size_t k = sizeof line;
    line[--k] = '\n';
    line[--k] = '\r';
    do {
        line[--k] = hex[n & 15];
        n >>= 4;
    } while (n);
    evbuffer_add(out, line + k, sizeof line - k);
    evbuffer_add_buffer(out, data);
    evbuffer_add(out, "\r\n", 2);
}

void h1_write_last_chunk(struct evbuffer *out, const struct http_headers *trailers)
{
    struct head_out w;
    head_begin(&w, out, 5 + (trailers ? fields_size(trailers) : 0));
    PUT_LIT(&w, "0\r\n");
    if (trailers)
        put_fields(&w, trailers);
    PUT_LIT(&w, "\r\n");
    head_end(&w);
}
