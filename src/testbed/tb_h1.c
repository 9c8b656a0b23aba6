/*
 * tb_h1.c — HTTP/1.1 for the testbed, on libhttp-parser.
 *
 * One request at a time, in order: when a request is complete the parser is
 * paused, so pipelined requests wait in the (capped) input buffer until the
 * answer before them is fully queued. Request bodies (Content-Length or
 * chunked) are counted and dropped as they arrive. Response bodies are
 * pulled from the exchange only while the output holds less than
 * TB_OUT_CAP, so a slow reader back-pressures a body of any size.
 * `Upgrade: h2c` with HTTP2-Settings switches the connection to HTTP/2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <http_parser.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "testbed/testbed.h"

#define H1_PULL_MAX     (64 * 1024) /* bytes pulled from the exchange per step */
#define H2_SETTINGS_MAX 1024        /* decoded HTTP2-Settings bytes accepted */

struct tb_h1 {
    http_parser parser;
    struct tb_exchange *ex; /* the request being read or answered; NULL between requests */
    bool in_name;           /* the last parser callback was on_header_field */
    bool url_seen;          /* on_url was called for this request */
    bool request_done;      /* set by on_message_complete, consumed by h1_process */
    bool keep_alive;        /* of the current request */
    bool http10;            /* the current request is HTTP/1.0 */
    bool in_process;        /* h1_process is on the stack */
};

static void h1_process(struct tb_conn *c);
static const struct tb_exchange_ops h1_exchange_ops;

/* ---- parser callbacks (parser->data is the connection) ----------------------------- */

static int on_h1_message_begin(http_parser *p)
{
    struct tb_conn *c = p->data;
    struct tb_h1 *h1 = c->h1;

    h1->ex = tb_exchange_new(c, &h1_exchange_ops, TB_HTTP1, 0);
    h1->in_name = false;
    h1->url_seen = false;
    return h1->ex ? 0 : -1;
}

static int on_h1_url(http_parser *p, const char *at, size_t len)
{
    struct tb_h1 *h1 = ((struct tb_conn *)p->data)->h1;

    tb_request_append(&h1->ex->req, TB_PIECE_PATH, !h1->url_seen, at, len);
    h1->url_seen = true;
    return 0;
}

static int on_h1_header_field(http_parser *p, const char *at, size_t len)
{
    struct tb_h1 *h1 = ((struct tb_conn *)p->data)->h1;

    tb_request_append(&h1->ex->req, TB_PIECE_NAME, !h1->in_name, at, len);
    h1->in_name = true;
    return 0;
}

static int on_h1_header_value(http_parser *p, const char *at, size_t len)
{
    struct tb_h1 *h1 = ((struct tb_conn *)p->data)->h1;

    tb_request_append(&h1->ex->req, TB_PIECE_VALUE, h1->in_name, at, len);
    h1->in_name = false;
    return 0;
}

/* Is the first `expect` header 100-continue? */
static bool h1_expects_continue(const struct tb_request *req)
{
    struct tb_span s;

    return tb_request_header(req, "expect", &s) && s.len == SY_STRLEN("100-continue") &&
           strncasecmp(req->buf + s.off, SY_STRLIT("100-continue")) == 0;
}

static int on_h1_headers_complete(http_parser *p)
{
    struct tb_conn *c = p->data;
    struct tb_h1 *h1 = c->h1;
    const char *m = http_method_str((enum http_method)p->method);

    tb_request_append(&h1->ex->req, TB_PIECE_METHOD, true, m, strlen(m));
    if (p->http_major == 1 && p->http_minor >= 1 && h1_expects_continue(&h1->ex->req))
        evbuffer_add(bufferevent_get_output(c->bev), SY_STRLIT("HTTP/1.1 100 Continue\r\n\r\n"));
    return 0;
}

static int on_h1_body(http_parser *p, const char *at, size_t len)
{
    struct tb_h1 *h1 = ((struct tb_conn *)p->data)->h1;

    h1->ex->req.body_bytes += len;
    return 0;
}

static int on_h1_message_complete(http_parser *p)
{
    struct tb_h1 *h1 = ((struct tb_conn *)p->data)->h1;

    h1->keep_alive = http_should_keep_alive(p) != 0;
    h1->http10 = p->http_major == 1 && p->http_minor == 0;
    h1->request_done = true;
    http_parser_pause(p, 1); /* the next pipelined request waits for this answer */
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = on_h1_message_begin,
    .on_url = on_h1_url,
    .on_header_field = on_h1_header_field,
    .on_header_value = on_h1_header_value,
    .on_headers_complete = on_h1_headers_complete,
    .on_body = on_h1_body,
    .on_message_complete = on_h1_message_complete,
};

/* ---- answering ------------------------------------------------------------------------ */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* An error answer outside any exchange (unparseable request), then close. */
static void h1_fail_connection(struct tb_conn *c, int status)
{
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", status,
                        reason_phrase(status));
    tb_conn_close_after_flush(c);
}

/* The current exchange is answered: retire it, then close or go on. */
static void h1_exchange_done(struct tb_conn *c)
{
    struct tb_h1 *h1 = c->h1;

    tb_exchange_retire(h1->ex);
    h1->ex = NULL;
    if (!h1->keep_alive) {
        tb_conn_close_after_flush(c);
        return;
    }
    http_parser_init(&h1->parser, HTTP_REQUEST); /* also clears the pause */
    h1->parser.data = c;
}

/* Pulls body bytes into the output while it holds less than TB_OUT_CAP. */
static void h1_fill(struct tb_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct tb_h1 *h1 = c->h1;

    while (h1->ex && !tb_conn_closing(c) && evbuffer_get_length(out) < TB_OUT_CAP) {
        struct evbuffer_iovec v;
        enum tb_pull st;
        size_t n = 0;

        if (evbuffer_reserve_space(out, H1_PULL_MAX, &v, 1) < 1) {
            tb_conn_abort(c);
            return;
        }
        st = tb_exchange_pull(h1->ex, v.iov_base, v.iov_len < H1_PULL_MAX ? v.iov_len : H1_PULL_MAX,
                              &n);
        v.iov_len = n;
        evbuffer_commit_space(out, &v, n ? 1 : 0);
        if (st == TB_PULL_WAIT)
            return;
        if (st == TB_PULL_EOF)
            h1_exchange_done(c);
        else if (st == TB_PULL_RESET)
            tb_conn_reset_after_flush(c);
    }
}

/* After an asynchronous step: once the answer is queued, parse what follows. */
static void h1_continue(struct tb_conn *c)
{
    h1_fill(c);
    if (!c->h1->ex && !c->h1->in_process && !tb_conn_closing(c))
        h1_process(c);
}

static void h1_write_head(struct tb_conn *c, const struct tb_plan *p)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", p->status, reason_phrase(p->status));
    if (p->content_type)
        evbuffer_add_printf(out, "content-type: %s\r\n", p->content_type);
    if (p->status != 204 && p->status != 304)
        evbuffer_add_printf(out, "content-length: %llu\r\n", (unsigned long long)p->body_len);
    if (p->grpc != TB_GRPC_NONE)
        evbuffer_add_printf(out, "grpc-status: %d\r\n", p->grpc_status);
    if (p->grpc != TB_GRPC_NONE && p->grpc_message)
        evbuffer_add_printf(out, "grpc-message: %s\r\n", p->grpc_message);
    for (unsigned i = 0; i < p->nextra; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", p->extra[i].name, p->extra[i].value);
    if (!c->h1->keep_alive)
        evbuffer_add(out, SY_STRLIT("connection: close\r\n"));
    else if (c->h1->http10)
        evbuffer_add(out, SY_STRLIT("connection: keep-alive\r\n"));
    evbuffer_add(out, SY_STRLIT("\r\n"));
}

static void h1_op_respond(struct tb_exchange *ex)
{
    h1_write_head(ex->conn, &ex->plan);
    h1_continue(ex->conn);
}

static void h1_op_resume_body(struct tb_exchange *ex)
{
    h1_continue(ex->conn);
}

static void h1_op_reset(struct tb_exchange *ex)
{
    tb_conn_reset(ex->conn);
}

static void h1_op_close(struct tb_exchange *ex)
{
    tb_conn_close_after_flush(ex->conn);
}

static const struct tb_exchange_ops h1_exchange_ops = {
    .respond = h1_op_respond,
    .resume_body = h1_op_resume_body,
    .reset = h1_op_reset,
    .close = h1_op_close,
};

/* ---- h2c upgrade ------------------------------------------------------------------------- */

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-' || ch == '+')
        return 62;
    if (ch == '_' || ch == '/')
        return 63;
    return -1;
}

/* base64url (or base64), padding optional. Returns bytes, or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    while (n > 0 && s[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

/* Does the request ask for h2c (Upgrade: h2c and an HTTP2-Settings header)? */
static bool h1_wants_h2c(const struct tb_request *req, struct tb_span *settings)
{
    const size_t n = SY_STRLEN("h2c");
    struct tb_span up;

    if (!tb_request_header(req, "upgrade", &up) ||
        !tb_request_header(req, "http2-settings", settings))
        return false;
    for (uint32_t i = 0; i + n <= up.len; i++) {
        const char *t = req->buf + up.off + i;
        if (strncasecmp(t, SY_STRLIT("h2c")) == 0 &&
            (i + n == up.len || t[n] == ',' || t[n] == ' '))
            return true;
    }
    return false;
}

/*
 * 101 Switching Protocols, then the connection is HTTP/2 and this request is
 * answered on stream 1. Returns false (nothing written) when the upgrade
 * cannot be done: the request is then answered over HTTP/1.1.
 */
static bool h1_upgrade(struct tb_conn *c, struct tb_exchange *ex)
{
    static const char resp[] =
        "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n";
    struct tb_span s;
    uint8_t settings[H2_SETTINGS_MAX];
    long n;

    if (!h1_wants_h2c(&ex->req, &s))
        return false;
    n = b64_decode(ex->req.buf + s.off, s.len, settings, sizeof(settings));
    if (n < 0)
        return false;
    evbuffer_add(bufferevent_get_output(c->bev), resp, sizeof(resp) - 1);
    c->h1->ex = NULL;
    if (tb_conn_upgrade_h2(c, settings, (size_t)n, tb_span_eq(&ex->req, ex->req.method, "HEAD"),
                           ex) != 0) {
        tb_conn_abort(c);
        return true;
    }
    tb_exchange_request_done(ex);
    tb_h2_on_read(c); /* the client preface may be in the input already */
    return true;
}

/* ---- input ----------------------------------------------------------------------------- */

/* A request was parsed completely: upgrade, or plan and answer it. */
static void h1_request_complete(struct tb_conn *c)
{
    struct tb_exchange *ex = c->h1->ex;

    if (c->h1->parser.upgrade && h1_upgrade(c, ex))
        return;
    tb_exchange_request_done(ex);
}

/* One parser step on the first input chunk. False when nothing more can be done now. */
static bool h1_parse_step(struct tb_conn *c)
{
    struct tb_h1 *h1 = c->h1;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v;
    enum http_errno err;
    size_t parsed;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return false;
    parsed = http_parser_execute(&h1->parser, &h1_settings, v.iov_base, v.iov_len);
    evbuffer_drain(in, parsed);
    err = HTTP_PARSER_ERRNO(&h1->parser);
    if (h1->request_done) {
        h1->request_done = false;
        h1_request_complete(c);
        return true;
    }
    if (err != HPE_OK) {
        h1_fail_connection(c, err == HPE_HEADER_OVERFLOW ? 431 : 400);
        return false;
    }
    return parsed > 0;
}

/* Parses and answers requests while no answer is pending. */
static void h1_process(struct tb_conn *c)
{
    struct tb_h1 *h1 = c->h1;

    h1->in_process = true;
    for (;;) {
        if (c->state != TB_CONN_H1)
            break; /* closing, or upgraded to HTTP/2 */
        if (h1->ex && h1->ex->state != TB_EX_REQUEST)
            break; /* an answer is pending: leave the next request in the input */
        if (!h1_parse_step(c))
            break;
    }
    h1->in_process = false;
    if (c->state == TB_CONN_H1 && c->peer_eof && (!h1->ex || h1->ex->state == TB_EX_REQUEST))
        tb_conn_close_after_flush(c);
}

void tb_h1_on_read(struct tb_conn *c)
{
    h1_process(c);
}

void tb_h1_on_write(struct tb_conn *c)
{
    if (c->h1->ex && c->h1->ex->state == TB_EX_RESPONDING)
        h1_continue(c);
}

void tb_h1_on_eof(struct tb_conn *c)
{
    h1_process(c); /* complete requests already read are still answered */
}

int tb_h1_start(struct tb_conn *c)
{
    struct tb_h1 *h1 = calloc(1, sizeof(*h1));

    if (!h1)
        return SY_ENOMEM;
    http_parser_init(&h1->parser, HTTP_REQUEST);
    h1->parser.data = c;
    c->h1 = h1;
    return 0;
}

void tb_h1_free(struct tb_h1 *h1)
{
    free(h1);
}
