/* h1.c — see h1.h. */
#include "http/h1.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "core/parse.h"
#include "http/headers.h"

ssize_t h1_head_length(struct evbuffer *buf, size_t max)
{
    struct evbuffer_ptr p = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
    /* A head ended by bare LFs is found too, so that h1_head_check rejects
     * it at once instead of waiting for a CRLFCRLF that never comes. */
    struct evbuffer_ptr q = evbuffer_search(buf, "\n\n", 2, NULL);
    if (q.pos >= 0 && (p.pos < 0 || q.pos + 2 < p.pos + 4)) {
        if ((size_t)q.pos + 2 > max)
            return SY_ELIMIT;
        return (ssize_t)q.pos + 2;
    }
    if (p.pos >= 0) {
        if ((size_t)p.pos + 4 > max)
            return SY_ELIMIT;
        return (ssize_t)p.pos + 4;
    }
    if (evbuffer_get_length(buf) >= max)
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

static void add_content_length(struct evbuffer *out, int64_t len)
{
    char line[48] = "content-length: ";
    size_t n = 16 + sy_u64_to_dec(line + 16, (uint64_t)len);
    line[n++] = '\r';
    line[n++] = '\n';
    evbuffer_add(out, line, n);
}

static void write_fields(struct evbuffer *out, const struct http_headers *hs)
{
    for (uint32_t i = 0; i < hs->n; i++) {
        const struct http_header *f = &hs->v[i];
        struct evbuffer_iovec iov[4] = {{(void *)f->name, f->name_len},
                                        {(void *)": ", 2},
                                        {(void *)f->value, f->value_len},
                                        {(void *)"\r\n", 2}};
        for (int k = 0; k < 4; k++)
            evbuffer_add(out, iov[k].iov_base, iov[k].iov_len);
    }
}

void h1_write_request_head(struct evbuffer *out, const struct http_request_head *h)
{
    evbuffer_add(out, h->method, h->method_len);
    evbuffer_add(out, " ", 1);
    evbuffer_add(out, h->path, h->path_len);
    evbuffer_add(out, " HTTP/1.1\r\n", 11);
    if (h->authority) {
        evbuffer_add(out, "host: ", 6);
        evbuffer_add(out, h->authority, h->authority_len);
        evbuffer_add(out, "\r\n", 2);
    }
    write_fields(out, &h->headers);
    if (h->upgrade) {
        evbuffer_add_printf(out, "connection: upgrade\r\nupgrade: %s\r\n", h->upgrade);
        evbuffer_add(out, "\r\n", 2); /* an upgrade request carries no body of its own */
        return;
    }
    if (h->content_length >= 0 && (h->has_body || h->content_length > 0))
        add_content_length(out, h->content_length);
    else if (h->has_body)
        evbuffer_add(out, "transfer-encoding: chunked\r\n", 28);
    evbuffer_add(out, "\r\n", 2);
}

void h1_write_response_head(struct evbuffer *out, enum http_version v, int status,
                            const struct http_headers *hs, enum h1_framing framing,
                            int64_t content_length, bool close)
{
    char line[64] = "HTTP/1.1 ";
    if (v == HTTP_10)
        line[7] = '0';
    size_t n =
        9 + sy_u64_to_dec(line + 9, (uint64_t)(status >= 100 && status < 1000 ? status : 500));
    line[n++] = ' ';
    evbuffer_add(out, line, n);
    const char *reason = http_reason(status);
    evbuffer_add(out, reason, strlen(reason));
    evbuffer_add(out, "\r\n", 2);
    write_fields(out, hs);
    switch (framing) {
    case H1_FRAMING_NONE:
        if (content_length >= 0 && status != 204 && !(status >= 100 && status < 200))
            add_content_length(out, content_length);
        break;
    case H1_FRAMING_LENGTH: add_content_length(out, content_length); break;
    case H1_FRAMING_CHUNKED: evbuffer_add(out, "transfer-encoding: chunked\r\n", 28); break;
    case H1_FRAMING_CLOSE: break;
    }
    if (close)
        evbuffer_add(out, "connection: close\r\n", 19);
    else if (v == HTTP_10)
        evbuffer_add(out, "connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
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
    evbuffer_add(out, "0\r\n", 3);
    if (trailers)
        write_fields(out, trailers);
    evbuffer_add(out, "\r\n", 2);
}
