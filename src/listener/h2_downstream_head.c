/*
 * h2_downstream_head.c — the heads of the HTTP/2 downstream codec: request
 * fields into the exchange's neutral head (with the header-size limits and
 * the RFC 9113 8.3.1 checks nghttp2 leaves to us), cookie crumbs, RFC 8441
 * extended CONNECT as the HTTP/1.1 Upgrade a WebSocket backend expects, and
 * the response head out. The connection side is in h2_downstream.c.
 */
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "exchange/exchange.h"
#include "config/config-t.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/worker.h"
#include "http/h2.h"
#include "http/headers.h"
#include "listener/h2_downstream-int.h"

/* A header block this many times over a limit ends the connection. */
#define H2D_GROSS_FACTOR 4

/*
 * RFC 9113 8.3.1 beyond nghttp2's checks: the :path becomes an HTTP/1.1
 * request line, so it must be a valid origin-form (no '#', CTL, SP or byte
 * >= 0x80, complete %-escapes: http_path_is_valid), or "*" (nghttp2 allows
 * it only for OPTIONS). :authority and Host become a Host field:
 * uri-host[:port], no userinfo (http_authority_is_valid).
 */
static bool path_is_valid(const char *p, size_t len)
{
    return (len == 1 && p[0] == '*') || http_path_is_valid(p, len);
}

/* Pseudo-header or field of a request head; copied into the exchange arena. */
static int take_request_field(struct h2_stream *st, nghttp2_rcbuf *name_rb, nghttp2_rcbuf *value_rb)
{
    struct exchange *ex = st->ex;
    struct http_request_head *r = &ex->req;
    nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_rb);
    const uint8_t *name = nv.base;
    size_t nlen = nv.len, vlen = nghttp2_rcbuf_get_buf(value_rb).len;
    const char *v = h2_rcbuf_keep(value_rb, &ex->arena);
    if (!v)
        return -1;
    if (nlen > 0 && name[0] == ':') {
        if (h2_name_is(name, nlen, SY_STRLIT(":method"))) {
            r->method = v;
            r->method_len = (uint32_t)vlen;
        } else if (h2_name_is(name, nlen, SY_STRLIT(":scheme"))) {
            r->scheme = v;
            r->scheme_len = (uint32_t)vlen;
        } else if (h2_name_is(name, nlen, SY_STRLIT(":authority"))) {
            r->authority = v;
            r->authority_len = (uint32_t)vlen;
            st->malformed |= !http_authority_is_valid(v, vlen);
        } else if (h2_name_is(name, nlen, SY_STRLIT(":path"))) {
            r->path = v;
            r->path_len = (uint32_t)vlen;
            st->malformed |= !path_is_valid(v, vlen);
        } else if (h2_name_is(name, nlen, SY_STRLIT(":protocol"))) {
            r->upgrade = v; /* RFC 8441 extended CONNECT */
        }
        return 0; /* nghttp2 rejects unknown pseudo-headers itself */
    }
    if (h2_name_is(name, nlen, SY_STRLIT("host"))) {
        st->malformed |= !http_authority_is_valid(v, vlen);
        if (!r->authority) { /* :authority wins when both are present */
            r->authority = v;
            r->authority_len = (uint32_t)vlen;
        }
        return 0;
    }
    const char *n = h2_rcbuf_keep(name_rb, &ex->arena);
    if (!n)
        return -1;
    return http_headers_add(&r->headers, &ex->arena, n, nlen, v, vlen) ? -1 : 0;
}

int h2d_request_field(struct h2_down_conn *c, struct h2_stream *st, const nghttp2_frame *f,
                      nghttp2_rcbuf *name_rb, nghttp2_rcbuf *value_rb)
{
    nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_rb), vv = nghttp2_rcbuf_get_buf(value_rb);
    const uint8_t *name = nv.base;
    size_t nlen = nv.len, vlen = vv.len;
    /* The exchange's listener config is the connection's, looked up once. */
    const struct cfg_listener *l = st->ex ? st->ex->listener : h2d_listener_cfg(c);
    uint64_t max_bytes = l->http2.max_header_list_size;
    uint64_t max_fields = l->limits.max_request_headers;
    st->header_bytes += nlen + vlen + 32;
    if (nlen == 0 || name[0] != ':')
        st->header_fields++;
    /* HPACK makes a big block from few bytes (indexed fields): past a
     * bound, decoding more of it is work for nothing. */
    if (st->header_bytes > H2D_GROSS_FACTOR * max_bytes ||
        st->header_fields > H2D_GROSS_FACTOR * max_fields)
        return h2d_fail(c, NGHTTP2_ENHANCE_YOUR_CALM, "header block too large");
    if (st->header_bytes > max_bytes || st->header_fields > max_fields) {
        st->head_too_large = true; /* answered with 431 once the head is complete */
        return 0;
    }
    if (!st->ex || st->head_too_large || st->malformed)
        return 0;
    struct exchange *ex = st->ex;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) { /* request trailers */
        if (!st->req_trailers.v && http_headers_init(&st->req_trailers, &ex->arena, 4) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        const char *n = h2_rcbuf_keep(name_rb, &ex->arena);
        const char *v = h2_rcbuf_keep(value_rb, &ex->arena);
        if (!n || !v || http_headers_add(&st->req_trailers, &ex->arena, n, nlen, v, vlen) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    return take_request_field(st, name_rb, value_rb) ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

/* RFC 9113 8.2.3: cookie crumbs become one field for HTTP/1.1 backends. */
static int join_cookies(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    unsigned n = http_headers_count(h, SY_STRLIT("cookie"));
    if (n < 2)
        return 0;
    size_t len = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (h2_name_is(h->v[i].name, h->v[i].name_len, SY_STRLIT("cookie")))
            len += h->v[i].value_len + 2;
    char *v = arena_alloc(&ex->arena, len + 1);
    if (!v)
        return -1;
    size_t off = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (!h2_name_is(f->name, f->name_len, SY_STRLIT("cookie")))
            continue;
        if (off) {
            memcpy(v + off, SY_STRLIT("; "));
            off += SY_STRLEN("; ");
        }
        memcpy(v + off, f->value, f->value_len);
        off += f->value_len;
    }
    http_headers_remove(h, SY_STRLIT("cookie"));
    return http_headers_add(h, &ex->arena, SY_STRLIT("cookie"), v, off);
}

/*
 * RFC 8441: an extended CONNECT with :protocol websocket becomes the
 * HTTP/1.1 Upgrade request a WebSocket backend expects (GET, a generated
 * Sec-WebSocket-Key); the stream's DATA frames are the tunnel, held by the
 * router until the backend's 101. 0 or -1.
 */
static int websocket_connect(struct exchange *ex)
{
    struct http_request_head *r = &ex->req;
    bool connect = h2_name_is(r->method, r->method_len, SY_STRLIT("CONNECT"));
    if (!r->upgrade)
        return 0;
    if (!connect || strcmp(r->upgrade, "websocket") != 0)
        return -1;
    r->method = "GET";
    r->method_len = SY_STRLEN("GET");
    r->has_body = false;
    r->content_length = -1;
    if (http_headers_get(&r->headers, SY_STRLIT("sec-websocket-key")))
        return 0;
    unsigned char raw[16], key[32];
    uint64_t a = worker_rand(ex->w), b = worker_rand(ex->w);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    int key_len = EVP_EncodeBlock(key, raw, 16); /* 24 characters */
    return http_headers_add_copy(&r->headers, &ex->arena, SY_STRLIT("sec-websocket-key"),
                                 (char *)key, (size_t)key_len);
}

/* Neutral fields the codec derives from the head: scheme, framing, HEAD, gRPC. */
static void fill_request(struct exchange *ex, bool end_stream)
{
    struct http_request_head *r = &ex->req;
    if (!r->scheme) {
        r->scheme = ex->tls ? "https" : "http";
        r->scheme_len = (uint32_t)strlen(r->scheme);
    }
    /* nghttp2 checked content-length already (digits, at most INT64_MAX). */
    const struct http_header *cl = http_headers_get(&r->headers, SY_STRLIT("content-length"));
    uint64_t len;
    r->content_length =
        cl && sy_parse_dec(cl->value, cl->value_len, INT64_MAX, &len) == 0 ? (int64_t)len : -1;
    http_headers_remove(&r->headers, SY_STRLIT("content-length"));
    r->has_body = !end_stream;
    ex->is_head = r->method && h2_name_is(r->method, r->method_len, SY_STRLIT("HEAD"));
    const struct http_header *ct = http_headers_get(&r->headers, SY_STRLIT("content-type"));
    ex->is_grpc = ct && ct->value_len >= SY_STRLEN("application/grpc") &&
                  strncasecmp(ct->value, SY_STRLIT("application/grpc")) == 0;
}

void h2d_request_head_done(struct h2_down_conn *c, struct h2_stream *st, bool end_stream)
{
    struct exchange *ex = st->ex;
    struct http_request_head *r = &ex->req;
    st->head_done = true;
    fill_request(ex, end_stream);
    if (st->head_too_large) {
        exchange_local_reply(ex, 431, "request header fields too large", 0);
        return;
    }
    if (st->malformed) {
        /* RFC 9113 8.1.1: never forwarded; answered 400 as the HTTP/1.1
         * side answers the same target (an HTTP response before the stream
         * ends is allowed), the stream ends with it. */
        exchange_local_reply(ex, 400, "bad request target", EXF_LR);
        return;
    }
    if (!r->method || !r->path || join_cookies(ex) != 0 || websocket_connect(ex) != 0) {
        exchange_local_reply(ex, 400, "bad request", 0);
        return;
    }
    if (end_stream)
        ex->req_done = true;
    router_start(ex);
    if (end_stream && st->ex == ex)
        exchange_on_request_end(ex, NULL);
}

/* ---- response ------------------------------------------------------------------------------ */

void h2d_response_head(struct h2_down_conn *c, struct h2_stream *st, struct exchange *ex,
                       const struct http_response_head *h, nghttp2_data_provider *dp)
{
    nghttp2_nv *nv = arena_alloc(&ex->arena, sizeof *nv * (h->headers.n + 2));
    char status[8], clen[24];
    if (!nv) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    bool tunnel = h->status == 101 && ex->req.upgrade;
    /* A refused WebSocket (any other answer): after the response the
     * stream is reset, so the client's tunnel bytes stop coming. */
    st->rst_after_end = ex->req.upgrade && !tunnel && !ex->req_done;
    /* RFC 8441: the WebSocket handshake succeeds with a 200 on the stream. */
    int code = tunnel ? 200 : h->status % 1000;
    status[0] = (char)('0' + code / 100);
    status[1] = (char)('0' + code / 10 % 10);
    status[2] = (char)('0' + code % 10);
    status[3] = '\0';
    size_t n = 0;
    nv[n++] = h2_nv_lit(SY_STRLIT(":status"), status, 3);
    for (uint32_t i = 0; i < h->headers.n; i++) {
        const struct http_header *f = &h->headers.v[i];
        if (h2_field_skipped(f) ||
            (tunnel && h2_name_is(f->name, f->name_len, SY_STRLIT("sec-websocket-accept"))))
            continue;
        nv[n++] = h2_nv(f->name, f->name_len, f->value, f->value_len);
    }
    if (h->content_length >= 0 && h->status != 204 && h->status != 304) {
        size_t l = sy_u64_to_dec(clen, (uint64_t)h->content_length);
        nv[n++] = h2_nv_lit(SY_STRLIT("content-length"), clen, l);
    }
    nghttp2_submit_response(c->ng, st->id, nv, n, dp);
}
