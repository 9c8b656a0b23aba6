/*
 * h1_downstream.c — HTTP/1.1 from clients, on libhttp-parser.
 *
 * One exchange at a time per connection: pipelined requests wait in the
 * input buffer (bounded by the read watermark) and are parsed only after the
 * previous exchange finished, so responses go out in request order.
 *
 * Connection states:
 *   IDLE     between requests; keep-alive timer (timeouts.http_keepalive)
 *            until the first byte of the next request
 *   HEAD     a new connection, or part of a request head arrived; timer
 *            timeouts.request_headers, from the accept or that first byte,
 *            not re-armed by later bytes (the slowloris bound)
 *   ACTIVE   an exchange is in progress (c->ex may already be detached while
 *            the rest of the request body is discarded)
 *   CLOSING  flushing the last response, then a lingering close
 *   LINGER   write side shut; reading and discarding until EOF or a timer
 *   CLOSED   freed on a later loop turn
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <http_parser.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exchange/exchange.h"
#include "runtime.h"
#include "config/config-t.h"
#include "core/parse.h"
#include "core/bev_flush.h"
#include "core/defer.h"
#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/strlit.h"
#include "core/time_cache.h"
#include "core/timer.h"
#include "core/worker.h"
#include "http/h1.h"
#include "http/headers.h"
#include "listener/listener-int.h"

#define LINGER_MS 2000
/* An unread request body up to this size is read and dropped after an early
 * response, so the connection stays usable; a larger one closes it. */
#define DISCARD_MAX (64 * 1024)

enum h1d_state {
    H1D_IDLE,
    H1D_HEAD,
    H1D_ACTIVE,
    H1D_TUNNEL, /* after 101 Switching Protocols: bytes pass through both ways */
    H1D_CLOSING,
    H1D_LINGER,
    H1D_CLOSED
};

static const char *h1d_state_str(enum h1d_state s)
{
    static const char *const names[] = {"idle",    "head",   "active", "tunnel",
                                        "closing", "linger", "closed"};
    return names[s];
}

struct h1_down {
    struct listener_worker *lw;
    struct conn_info ci; /* listener slot, TLS, addresses */
    unsigned n_requests; /* requests started on this connection */
    struct bufferevent *bev;
    enum h1d_state state;
    http_parser parser;
    struct exchange *ex; /* the current exchange, NULL once detached */
    bool req_complete;   /* the parser saw the end of the current request */
    bool body_paused;    /* back-pressure from the upstream side */
    bool keep_alive;     /* the client allows another request */
    bool close_after;    /* close once the current response is written */
    bool drain;          /* its listener was removed or moved: close after this response */
    bool resp_started;   /* a response head was written for this request */
    bool resp_complete;  /* ... and its end */
    bool expect_continue;
    bool abort_after_flush; /* CLOSING ends with a TCP reset, not a lingering close */
    bool handed_over;       /* the connection went to an HTTP/2 session with its count */
    bool chunked_body;      /* the request body is chunked: `chunked` checks it */
    unsigned cut_flag;      /* EXF_DRT: the proxy is closing it, 0 = the client or an error */
    enum http_version version;
    enum h1_framing framing;
    struct evbuffer *body; /* decoded request body of one parse pass; made with the first body */
    /* Head parse results (the head bytes live in the exchange arena). */
    const char *url; /* the request-target as the request line has it */
    size_t url_len;
    unsigned head_fields;      /* field lines of the head */
    struct h1_chunked chunked; /* strict framing of a chunked body, ahead of the parser */
    struct sy_deadline timer;  /* the state's timeout (set_state) */
    /* On the worker's defer queue (defer.h): */
    struct sy_defer process_d; /* process() what is buffered */
    struct sy_defer flush_d;   /* one optimistic write per loop turn (bev_flush.h) */
    struct sy_defer reap_d;    /* the free, once no callback of ours is on the stack */
    struct sy_link link;       /* on lw->conns */
};

static const struct downstream_ops h1_downstream_ops;
static void process(struct h1_down *c);
static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static const struct cfg_listener *listener_cfg(const struct h1_down *c)
{
    return listener_slot_cfg(c->lw, c->ci.listener_idx);
}

/* A drain, of the process or of this connection's listener (a reload removed or moved it). */
static bool conn_draining(const struct h1_down *c)
{
    return c->lw->w->draining || c->drain;
}

/*
 * The head size cap in effect, bytes: max_request_headers_size, lowered to
 * what libhttp-parser accepts (H1_PARSER_HEAD_MAX), so that every head over
 * the cap gets the same 431 and every head under it is parsed.
 */
static size_t head_cap(const struct cfg_listener *l)
{
    return l->max_request_headers_size < H1_PARSER_HEAD_MAX ? l->max_request_headers_size
                                                            : H1_PARSER_HEAD_MAX;
}

static void arm(struct h1_down *c, uint64_t ms)
{
    if (!ms) {
        sy_deadline_cancel(&c->timer);
        return;
    }
    sy_deadline_arm(&c->timer, ms);
}

static void set_state(struct h1_down *c, enum h1d_state s)
{
    log_debug("h1 downstream %p: %s -> %s", (void *)c, h1d_state_str(c->state), h1d_state_str(s));
    c->state = s;
    const struct cfg_listener *l = listener_cfg(c);
    switch (s) {
    case H1D_IDLE: arm(c, l->timeouts.http_keepalive_ms); break;
    case H1D_HEAD:
        /* request_headers 0s (no head bound) still leaves the idle bound */
        arm(c, l->timeouts.request_headers_ms ? l->timeouts.request_headers_ms
                                              : l->timeouts.http_keepalive_ms);
        break;
    case H1D_LINGER: arm(c, LINGER_MS); break;
    case H1D_CLOSING:
        arm(c, l->timeouts.http_keepalive_ms);
        break; /* a client that stops reading */
    case H1D_ACTIVE:
    case H1D_TUNNEL: sy_deadline_cancel(&c->timer); break;
    case H1D_CLOSED: sy_deadline_del(&c->timer); break; /* freed by on_reap */
    }
}

/* ---- lifetime ------------------------------------------------------------------ */

static struct sy_defer_queue *defer_q(const struct h1_down *c)
{
    return &c->lw->w->defer;
}

static void reap(struct h1_down *c)
{
    struct listener_worker *lw = c->lw;
    int listener_idx = c->ci.listener_idx;
    bool handed_over = c->handed_over;
    sy_list_unlink(&c->link);
    if (c->body)
        evbuffer_free(c->body);
    free(c);
    if (handed_over)
        listener_worker_release(lw);
    else
        listener_conn_closed(lw, listener_idx);
}

static void on_reap(struct sy_defer *d)
{
    reap(SY_CONTAINER_OF(d, struct h1_down, reap_d));
}

static void conn_close(struct h1_down *c)
{
    if (c->state == H1D_CLOSED)
        return;
    struct exchange *ex = c->ex;
    set_state(c, H1D_CLOSED);
    sy_defer_cancel(&c->process_d);
    sy_defer_cancel(&c->flush_d);
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    c->ex = NULL;
    if (ex && c->cut_flag)
        exchange_on_downstream_cut(ex, c->cut_flag); /* the proxy closes it */
    else if (ex)
        exchange_on_downstream_abort(ex); /* detach() finds c->ex already NULL */
    sy_defer(defer_q(c), &c->reap_d);
}

/* Abortive close for a reset after response headers: RST, not FIN. */
static void conn_abort(struct h1_down *c)
{
    if (c->state == H1D_CLOSED)
        return;
    struct linger lg = {1, 0};
    setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_close(c);
}

/* Flush what is queued, then shut the write side and linger (see LINGER). */
static void output_progress(struct h1_down *c, size_t left);

/* Queue-side: have the output written at the end of this loop turn. */
static void schedule_flush(struct h1_down *c)
{
    if (c->state != H1D_CLOSED)
        sy_defer(defer_q(c), &c->flush_d);
}

static void on_flush(struct sy_defer *d)
{
    struct h1_down *c = SY_CONTAINER_OF(d, struct h1_down, flush_d);
    if (c->state != H1D_CLOSED)
        output_progress(c, sy_bev_flush(c->bev, c->ci.tls));
}

static void conn_close_after_flush(struct h1_down *c)
{
    if (c->state >= H1D_CLOSING)
        return;
    set_state(c, H1D_CLOSING);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    output_progress(c, sy_bev_flush(c->bev, c->ci.tls));
}

/*
 * A minimal local answer for errors found before an exchange is routed
 * (a head that does not parse, too many fields, a timeout): Date and
 * Server as on every answer of the proxy's own.
 */
static void reply_and_close(struct h1_down *c, int status)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *reason = http_reason(status);
    struct sy_time_cache *tc = exchange_worker_time(c->lw->w);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n"
                        "date: %s\r\nserver: switchyard\r\nconnection: close\r\n\r\n%s\n",
                        status, reason, strlen(reason) + 1, tc ? sy_time_http_date(tc) : "",
                        reason);
    bufferevent_disable(c->bev, EV_READ);
    conn_close_after_flush(c);
}

/* ---- request parsing ---------------------------------------------------------------- */

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct h1_down *c = hp->data;
    if (!c->ex || c->ex->req.method) /* trailers after a chunked body: dropped */
        return 0;
    http_lower((char *)at, len);
    return http_headers_add(&c->ex->req.headers, &c->ex->arena, at, len, SY_STRLIT("")) ? -1 : 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct h1_down *c = hp->data;
    if (!c->ex || c->ex->req.method || c->ex->req.headers.n == 0)
        return 0;
    struct http_header *f = &c->ex->req.headers.v[c->ex->req.headers.n - 1];
    /* The head is contiguous, so a value arrives in one piece; trim OWS. */
    while (len && (at[len - 1] == ' ' || at[len - 1] == '\t'))
        len--;
    f->value = at;
    f->value_len = (uint32_t)len;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct h1_down *c = hp->data;
    c->keep_alive = http_should_keep_alive(hp);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct h1_down *c = hp->data;
    if (!c->body && !(c->body = evbuffer_new()))
        return -1;
    return evbuffer_add(c->body, at, len) ? -1 : 0;
}

static int on_message_complete(http_parser *hp)
{
    struct h1_down *c = hp->data;
    c->req_complete = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/*
 * Map the request target onto path and authority; 0 or an HTTP status.
 * Any byte RFC 3986 does not allow in the target (CTL, SP, '#', >= 0x80,
 * a broken percent-encoding, userinfo in absolute-form) is a 400.
 */
static int set_target(struct h1_down *c, struct exchange *ex)
{
    struct http_request_head *r = &ex->req;
    const char *u = c->url;
    size_t n = c->url_len;
    if (n > 0 && u[0] == '/') {
        if (!http_path_is_valid(u, n))
            return 400;
        r->path = u;
        r->path_len = (uint32_t)n;
        return 0;
    }
    if (c->parser.method == HTTP_OPTIONS && n == 1 && u[0] == '*') {
        r->path = u;
        r->path_len = 1;
        return 0;
    }
    /* absolute-form: the target's authority replaces Host (RFC 9112 3.2.2). */
    struct http_absolute_target t;
    if (http_absolute_target_parse(u, n, &t) != 0)
        return 400;
    r->authority = t.authority;
    r->authority_len = (uint32_t)t.authority_len;
    if (t.rest_len > 0 && t.rest[0] == '/') {
        r->path = t.rest;
        r->path_len = (uint32_t)t.rest_len;
        return 0;
    }
    /* "http://h" or "http://h?q": the origin-form is "/" or "/?q". */
    char *path = arena_alloc(&ex->arena, t.rest_len + 1);
    if (!path)
        return ex->arena.limit_hit ? 431 : 500;
    path[0] = '/';
    memcpy(path + 1, t.rest, t.rest_len);
    r->path = path;
    r->path_len = (uint32_t)t.rest_len + 1;
    return 0;
}

/*
 * Transfer-Encoding (RFC 9112 6.1): one field whose one coding is
 * "chunked", in HTTP/1.1. 0, 400 (duplicated, malformed, chunked not
 * last, HTTP/1.0) or 501 (a coding we do not implement).
 */
static int check_transfer_encoding(struct h1_down *c, const struct http_headers *h)
{
    unsigned n = http_headers_count(h, SY_STRLIT("transfer-encoding"));
    if (n == 0)
        return 0;
    if (n > 1 || c->parser.http_minor == 0)
        return 400;
    const struct http_header *te = http_headers_get(h, SY_STRLIT("transfer-encoding"));
    switch (h1_transfer_encoding_parse(te->value, te->value_len)) {
    case H1_TE_CHUNKED: return 0;
    case H1_TE_UNKNOWN: return 501;
    case H1_TE_MALFORMED:
    default: return 400;
    }
}

/* Host, Expect, framing and version rules; 0 or an HTTP status to answer. */
static int check_request(struct h1_down *c, struct exchange *ex)
{
    struct http_request_head *r = &ex->req;
    const struct cfg_listener *l = ex->listener;
    if (c->parser.http_major != 1)
        return 505;
    if (c->parser.http_minor == 0 && !l->accept_http_10)
        return 426;
    if (c->parser.method == HTTP_CONNECT)
        return 405;
    unsigned hosts = http_headers_count(&r->headers, SY_STRLIT("host"));
    const struct http_header *host = http_headers_get(&r->headers, SY_STRLIT("host"));
    if (hosts > 1 || (hosts == 0 && c->parser.http_minor == 1))
        return 400; /* RFC 9112 3.2: exactly one Host in HTTP/1.1 */
    if (host && !http_authority_is_valid(host->value, host->value_len))
        return 400; /* not uri-host[:port], or empty */
    int st = set_target(c, ex);
    if (!st)
        st = check_transfer_encoding(c, &r->headers);
    if (st)
        return st;
    if (!r->authority && host) {
        r->authority = host->value;
        r->authority_len = host->value_len;
    }
    http_headers_remove(&r->headers, SY_STRLIT("host"));
    const struct http_header *expect = http_headers_get(&r->headers, SY_STRLIT("expect"));
    if (expect) {
        if (expect->value_len != SY_STRLEN("100-continue") ||
            strncasecmp(expect->value, SY_STRLIT("100-continue")) != 0)
            return 417;
        c->expect_continue = true; /* acted on only when the request has a body */
        http_headers_remove(&r->headers, SY_STRLIT("expect"));
    }
    return 0;
}

static void fill_request(struct h1_down *c, struct exchange *ex)
{
    struct http_request_head *r = &ex->req;
    const char *m = http_method_str((enum http_method)c->parser.method);
    r->method = m;
    r->method_len = (uint32_t)strlen(m);
    r->scheme = ex->tls ? "https" : "http";
    r->scheme_len = (uint32_t)strlen(r->scheme);
    r->version = c->parser.http_minor == 0 ? HTTP_10 : HTTP_11;
    bool chunked = c->parser.flags & F_CHUNKED;
    bool has_len = c->parser.content_length != ULLONG_MAX && !chunked;
    r->content_length = has_len ? (int64_t)c->parser.content_length : -1;
    r->has_body = chunked || (has_len && c->parser.content_length > 0);
    if (has_len && c->parser.content_length == 0)
        r->content_length = 0;
    http_headers_remove(&r->headers, SY_STRLIT("content-length"));
    ex->is_head = c->parser.method == HTTP_HEAD;
    const struct http_header *up = http_headers_get(&r->headers, SY_STRLIT("upgrade"));
    const struct http_header *conn = http_headers_get(&r->headers, SY_STRLIT("connection"));
    if (up && conn && c->parser.method == HTTP_GET && !r->has_body &&
        http_list_has_token(up->value, up->value_len, "websocket") &&
        http_list_has_token(conn->value, conn->value_len, "upgrade"))
        r->upgrade = "websocket";
    const struct http_header *ct = http_headers_get(&r->headers, SY_STRLIT("content-type"));
    ex->is_grpc = ct && ct->value_len >= SY_STRLEN("application/grpc") &&
                  strncasecmp(ct->value, SY_STRLIT("application/grpc")) == 0;
}

/* Decode base64url (RFC 4648 section 5, padding optional); -1 on bad input. */
static ssize_t base64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '-' || ch == '+')
            v = 62;
        else if (ch == '_' || ch == '/')
            v = 63;
        else if (ch == '=')
            break;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)n;
}

/* Move the connection to an HTTP/2 session; this h1_down is reaped. */
static void hand_off_h2(struct h1_down *c, const uint8_t *settings, size_t len, struct exchange *ex)
{
    struct bufferevent *bev = c->bev;
    struct conn_info ci = c->ci;
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    c->bev = NULL;
    c->ex = NULL;
    c->handed_over =
        true; /* the HTTP/2 session inherits the count; we hold the worker until reaped */
    listener_worker_hold(c->lw);
    conn_close(c);
    h2_downstream_start(c->lw, bev, &ci, settings, len, ex);
}

/*
 * HTTP/1.1 Upgrade: h2c (RFC 7540 3.2) for a request without a body on a
 * cleartext connection: answer 101 and continue as HTTP/2 with this request
 * as stream 1. Returns true when the connection was handed over.
 */
static bool try_upgrade_h2c(struct h1_down *c, struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    const struct http_header *up = http_headers_get(h, SY_STRLIT("upgrade"));
    const struct http_header *conn = http_headers_get(h, SY_STRLIT("connection"));
    const struct http_header *set = http_headers_get(h, SY_STRLIT("http2-settings"));
    if (c->ci.tls || ex->req.has_body || !up || !conn || !set ||
        http_headers_count(h, SY_STRLIT("http2-settings")) != 1 ||
        !http_list_has_token(up->value, up->value_len, "h2c") ||
        !http_list_has_token(conn->value, conn->value_len, "upgrade") ||
        !http_list_has_token(conn->value, conn->value_len, "http2-settings"))
        return false;
    uint8_t settings[256];
    ssize_t n = base64url_decode(set->value, set->value_len, settings, sizeof settings);
    if (n < 0 || n % 6 != 0)
        return false; /* not a valid upgrade: served as HTTP/1.1 */
    http_headers_strip_hop_by_hop(h, false);
    evbuffer_add(
        bufferevent_get_output(c->bev),
        SY_STRLIT(
            "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"));
    ex->req.version = HTTP_2;
    set_state(c, H1D_ACTIVE);
    hand_off_h2(c, settings, (size_t)n, ex);
    return true;
}

/* The HTTP/2 connection preface, sent first by prior-knowledge h2c clients. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/*
 * 1: the input starts like the preface (its request line "PRI * HTTP/2.0"):
 * HTTP/2 takes it and checks the rest (a wrong preface is closed there, not
 * answered as HTTP/1.1); 0: it does not; -1: too early to tell.
 */
static int sniff_preface(struct h1_down *c)
{
    enum { LINE = sizeof "PRI * HTTP/2.0\r\n" - 1 };
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t have = evbuffer_get_length(in);
    size_t n = have < LINE ? have : LINE;
    char buf[LINE];
    evbuffer_copyout(in, buf, n);
    if (memcmp(buf, h2_preface, n) != 0)
        return 0;
    return n == LINE ? 1 : -1;
}

/*
 * Check and parse a complete head: the field count first (431 over
 * limits.max_request_headers, before anything is parsed), then the request
 * line and the field syntax (ours), then libhttp-parser. 0 or a status.
 */
static int parse_head(struct h1_down *c, struct exchange *ex, char *head, size_t len,
                      struct h1_request_line *rl)
{
    c->head_fields = h1_head_fields(head, len);
    bool line_ok = h1_request_line_parse(head, len, rl) == 0;
    if (line_ok) {
        c->url = rl->target;
        c->url_len = rl->target_len;
    }
    if (c->head_fields > ex->listener->limits.max_request_headers)
        return 431;
    if (!line_ok || h1_head_check(head, len) != 0)
        return 400;
    size_t done = http_parser_execute(&c->parser, &parser_settings, head, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if ((e != HPE_OK && e != HPE_PAUSED) || done != len)
        return 400;
    return 0;
}

/* For the access log of a rejected request: what its request line said. */
static void fill_rejected(struct h1_down *c, struct exchange *ex, const struct h1_request_line *rl)
{
    fill_request(c, ex);
    if (!c->url)
        return; /* no request line to speak of */
    struct http_request_head *r = &ex->req;
    r->method = rl->method;
    r->method_len = (uint32_t)rl->method_len;
    r->version = rl->minor == 0 ? HTTP_10 : HTTP_11;
    if (!r->path) {
        r->path = rl->target;
        r->path_len = (uint32_t)rl->target_len;
    }
}

/* Parse a complete head of `len` bytes into a new exchange; false if answered. */
static bool start_request(struct h1_down *c, size_t len)
{
    struct exchange *ex = listener_exchange_new(c->lw, c->ci.listener_idx);
    char *head = ex ? arena_alloc(&ex->arena, len + 1) : NULL;
    if (ex) {
        ex->down = &h1_downstream_ops;
        ex->down_ctx = c;
    }
    if (!head || http_headers_init(&ex->req.headers, &ex->arena, 16) != 0) {
        if (ex)
            exchange_reject(ex, 500);
        reply_and_close(c, 500);
        return false;
    }
    evbuffer_remove(bufferevent_get_input(c->bev), head, len);
    head[len] = '\0';
    c->ex = ex;
    c->n_requests++;
    ex->tls = c->ci.tls;
    exchange_note_tls(ex, c->bev); /* access log: TLS version and SNI */
    memcpy(&ex->client_addr, &c->ci.peer, sizeof c->ci.peer);
    memcpy(&ex->local_addr, &c->ci.local, sizeof c->ci.local);
    c->req_complete = c->resp_started = c->resp_complete = c->expect_continue = false;
    c->body_paused = false;
    c->url = NULL;
    c->url_len = 0;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    struct h1_request_line rl = {0};
    int status = parse_head(c, ex, head, len, &rl);
    if (!status)
        status = check_request(c, ex);
    if (!status)
        fill_request(c, ex);
    if (!status && listener_refuse_request(c->lw, c->ci.listener_idx))
        status = 503; /* overloaded (limits.overload); reply_and_close says Connection: close */
    if (!status && try_upgrade_h2c(c, ex))
        return false;
    if (!status)
        http_headers_strip_hop_by_hop(&ex->req.headers, false);
    if (status) {
        c->ex = NULL;
        if (!ex->req.method)
            fill_rejected(c, ex, &rl);
        exchange_reject(ex, status);
        reply_and_close(c, status);
        return false;
    }
    /* Trailer fields count against the same cap as the head's. */
    const struct cfg_listener *l = ex->listener;
    c->chunked_body = c->parser.flags & F_CHUNKED;
    if (c->chunked_body)
        h1_chunked_init(&c->chunked, l->limits.max_request_headers - c->head_fields,
                        (uint32_t)head_cap(l));
    set_state(c, H1D_ACTIVE);
    return true;
}

/* Hand the decoded body of this pass (and the end) to the exchange. */
static void deliver_body(struct h1_down *c)
{
    if (!c->ex) {
        if (c->body)
            evbuffer_drain(c->body, evbuffer_get_length(c->body));
        return;
    }
    struct exchange *ex = c->ex;
    if (c->body && evbuffer_get_length(c->body))
        exchange_on_request_body(ex, c->body);
    if (c->req_complete && c->ex == ex)
        exchange_on_request_end(ex, NULL);
}

/*
 * Parse one piece of request body; 0 or the status that ends the request.
 * A chunked body goes through the strict validator first, and only the
 * bytes it found to be the body reach libhttp-parser; both must see the
 * body end at the same byte.
 */
static int parse_body(struct h1_down *c, const char *p, size_t len, size_t *used)
{
    *used = 0;
    if (c->chunked_body) {
        ssize_t n = h1_chunked_check(&c->chunked, p, len);
        if (n < 0)
            return n == SY_ELIMIT ? 431 : 400;
        len = (size_t)n;
    }
    *used = http_parser_execute(&c->parser, &parser_settings, p, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED)
        return 400;
    if (c->chunked_body && h1_chunked_done(&c->chunked) != c->req_complete)
        return 400; /* the two parsers disagree on where the body ends */
    return 0;
}

static void read_body(struct h1_down *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->req_complete && !c->body_paused && c->state == H1D_ACTIVE &&
           evbuffer_get_length(in)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t done;
        int status = parse_body(c, v.iov_base, v.iov_len, &done);
        evbuffer_drain(in, done);
        if (status) {
            /* Bad chunk framing: the body cannot be delimited. */
            if (c->ex && !c->ex->resp_head_sent) {
                struct exchange *ex = c->ex;
                exchange_local_reply(
                    ex, status,
                    status == 431 ? "too many trailer fields" : "bad request body framing", 0);
            }
            conn_close_after_flush(c);
            return;
        }
        deliver_body(c);
    }
}

static void start_next(struct h1_down *c)
{
    if (c->close_after || !c->keep_alive || conn_draining(c)) {
        conn_close_after_flush(c);
        return;
    }
    set_state(c, H1D_IDLE);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)))
        sy_defer(defer_q(c), &c->process_d);
}

static void process(struct h1_down *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (c->state == H1D_TUNNEL) {
        if (c->ex && !c->body_paused && evbuffer_get_length(in))
            exchange_on_request_body(c->ex, in);
        return;
    }
    if (c->state == H1D_IDLE || c->state == H1D_HEAD) {
        const struct cfg_listener *l = listener_cfg(c);
        if (evbuffer_get_length(in) == 0)
            return;
        if (c->n_requests == 0 && !c->ci.tls) {
            int p = sniff_preface(c);
            if (p < 0)
                return;
            if (p > 0) {
                hand_off_h2(c, NULL, 0, NULL);
                return;
            }
        }
        ssize_t n = h1_head_length(in, head_cap(l));
        if (n < 0) {
            reply_and_close(c, 431);
            return;
        }
        if (n == 0) {
            if (c->state == H1D_IDLE)
                set_state(c, H1D_HEAD);
            return;
        }
        if (!start_request(c, (size_t)n))
            return;
        struct exchange *ex = c->ex;
        router_start(ex);
        if (c->ex == ex && c->expect_continue && ex->req.has_body && !ex->resp_head_sent) {
            evbuffer_add(bufferevent_get_output(c->bev),
                         SY_STRLIT("HTTP/1.1 100 Continue\r\n\r\n"));
            schedule_flush(c);
        }
        if (c->state != H1D_ACTIVE)
            return;
        if (c->req_complete)
            deliver_body(c);
    }
    if (c->state == H1D_ACTIVE && !c->req_complete)
        read_body(c);
    if (c->state == H1D_ACTIVE && c->req_complete && !c->ex)
        start_next(c);
}

static void on_process(struct sy_defer *d)
{
    process(SY_CONTAINER_OF(d, struct h1_down, process_d));
}

/* ---- events ---------------------------------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct h1_down *c = arg;
    if (c->state == H1D_LINGER || c->state == H1D_CLOSING) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    process(c);
}

/*
 * Output was written (by a flush or by the bufferevent) and `left` bytes
 * remain: finish a close once everything went out, and let a paused
 * backend side resume once the client side drained.
 */
static void output_progress(struct h1_down *c, size_t left)
{
    struct bufferevent *bev = c->bev;
    if (c->state == H1D_CLOSING) {
        if (left)
            return;
        if (c->abort_after_flush) {
            conn_abort(c);
            return;
        }
        if (c->ci.tls)
            listener_tls_close_notify(bev);
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        set_state(c, H1D_LINGER);
        bufferevent_enable(bev, EV_READ);
        return;
    }
    if (c->ex && left <= SY_FLOW_LOW)
        exchange_on_downstream_drained(c->ex);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct h1_down *c = arg;
    sy_bev_written(bev, c->ci.tls);
    output_progress(c, evbuffer_get_length(bufferevent_get_output(bev)));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct h1_down *c = arg;
    /* A client that half-closes after a complete request still gets its answer. */
    if ((what & BEV_EVENT_EOF) && c->state == H1D_ACTIVE && c->req_complete && c->ex &&
        !(what & BEV_EVENT_ERROR)) {
        c->close_after = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    conn_close(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct h1_down *c = arg;
    switch (c->state) {
    case H1D_HEAD:
        /* A connection that never sent a byte is closed without an answer. */
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
            conn_close(c);
        else
            reply_and_close(c, 408);
        break;
    case H1D_IDLE:
    case H1D_LINGER:
    default: conn_close(c); break;
    }
}

/* ---- downstream ops (called by the router) ------------------------------------------- */

static struct h1_down *conn_of(struct exchange *ex)
{
    return ex->down_ctx;
}

static enum h1_framing pick_framing(struct h1_down *c, struct exchange *ex,
                                    const struct http_response_head *h, bool end)
{
    if (h->status == 101)
        return H1_FRAMING_NONE;
    if (ex->is_head || h->status == 204 || h->status == 304 || h->status < 200)
        return H1_FRAMING_NONE;
    if (end || h->content_length >= 0)
        return H1_FRAMING_LENGTH;
    if (c->version == HTTP_10)
        return H1_FRAMING_CLOSE;
    return H1_FRAMING_CHUNKED;
}

static void op_send_head(struct exchange *ex, const struct http_response_head *h, bool end)
{
    struct h1_down *c = conn_of(ex);
    c->version = ex->req.version;
    c->framing = pick_framing(c, ex, h, end);
    if (c->framing == H1_FRAMING_CLOSE || !c->keep_alive || conn_draining(c))
        c->close_after = true;
    /* A refused Upgrade: bytes the client sent after it were meant for the
     * tunnel, never a request; the connection closes after this answer. */
    if (ex->req.upgrade && h->status != 101)
        c->close_after = true;
    /* Answered before the request body was read: a small rest is discarded
     * later; for a large or chunked one, say now that the connection closes. */
    if (!c->req_complete && !ex->req.upgrade &&
        ((c->parser.flags & F_CHUNKED) || c->parser.content_length > DISCARD_MAX))
        c->close_after = true;
    int64_t cl = h->content_length;
    if (end && c->framing == H1_FRAMING_LENGTH)
        cl = 0;
    h1_write_response_head(bufferevent_get_output(c->bev), c->version, h->status, &h->headers,
                           c->framing, cl, c->close_after);
    c->resp_started = true;
    c->resp_complete = end;
    schedule_flush(c);
    if (h->status == 101 && ex->req.upgrade) {
        /* The tunnel ends when either side closes; nothing follows on this connection. */
        c->framing = H1_FRAMING_CLOSE;
        c->close_after = true;
        set_state(c, H1D_TUNNEL);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)))
            sy_defer(defer_q(c), &c->process_d);
    }
}

static void op_send_body(struct exchange *ex, struct evbuffer *buf)
{
    struct h1_down *c = conn_of(ex);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->framing == H1_FRAMING_CHUNKED)
        h1_write_chunk(out, buf);
    else if (c->framing == H1_FRAMING_NONE)
        evbuffer_drain(buf, evbuffer_get_length(buf));
    else
        evbuffer_add_buffer(out, buf);
    schedule_flush(c);
}

static void op_send_end(struct exchange *ex, const struct http_headers *trailers)
{
    struct h1_down *c = conn_of(ex);
    if (c->framing == H1_FRAMING_CHUNKED)
        h1_write_last_chunk(bufferevent_get_output(c->bev), NULL);
    c->resp_complete = true;
    schedule_flush(c);
}

/*
 * After response bytes went out the exchange failed: what is queued still
 * reaches the client, then the connection is reset so the client cannot
 * take the truncated response for a complete one.
 */
static void op_reset(struct exchange *ex)
{
    struct h1_down *c = conn_of(ex);
    c->ex = NULL;
    if (c->state >= H1D_CLOSING) {
        conn_abort(c);
        return;
    }
    c->abort_after_flush = true;
    bufferevent_disable(c->bev, EV_READ);
    conn_close_after_flush(c);
}

static size_t op_pending(struct exchange *ex)
{
    struct h1_down *c = conn_of(ex);
    return c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

static void op_read_body(struct exchange *ex, bool enable)
{
    struct h1_down *c = conn_of(ex);
    if ((c->state != H1D_ACTIVE && c->state != H1D_TUNNEL) || c->body_paused == !enable)
        return;
    c->body_paused = !enable;
    if (enable) {
        bufferevent_enable(c->bev, EV_READ);
        sy_defer(defer_q(c), &c->process_d);
    } else {
        bufferevent_disable(c->bev, EV_READ);
    }
}

static void op_detach(struct exchange *ex)
{
    struct h1_down *c = conn_of(ex);
    if (c->ex != ex)
        return; /* already dropped (close or reset) */
    c->ex = NULL;
    if (c->state == H1D_TUNNEL) {
        conn_close_after_flush(c);
        return;
    }
    if (!c->resp_complete) {
        conn_abort(c);
        return;
    }
    if (!c->req_complete && c->close_after) {
        bufferevent_disable(c->bev, EV_READ);
        conn_close_after_flush(c);
        return;
    }
    if (!c->req_complete) /* discard the rest of a small body, within a bound */
        arm(c, listener_cfg(c)->timeouts.request_headers_ms);
    if (c->body_paused) {
        c->body_paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
    sy_defer(defer_q(c), &c->process_d);
}

static const struct downstream_ops h1_downstream_ops = {
    .send_head = op_send_head,
    .send_body = op_send_body,
    .send_end = op_send_end,
    .reset = op_reset,
    .pending = op_pending,
    .read_body = op_read_body,
    .detach = op_detach,
};

/* ---- accept / drain -------------------------------------------------------------------- */

void h1_downstream_start(struct listener_worker *lw, struct bufferevent *bev,
                         const struct conn_info *ci)
{
    struct worker *w = lw->w;
    struct h1_down *c = calloc(1, sizeof *c);
    if (!c) {
        bufferevent_free(bev);
        listener_conn_closed(lw, ci->listener_idx);
        return;
    }
    c->bev = bev;
    c->lw = lw;
    c->ci = *ci;
    c->keep_alive = true;
    c->drain = listener_slot_removed(lw, ci->listener_idx); /* removed during its handshake */
    sy_deadline_assign(&c->timer, w->base, on_timer, c);
    sy_defer_init(&c->process_d, on_process);
    sy_defer_init(&c->reap_d, on_reap);
    sy_defer_init(&c->flush_d, on_flush);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    size_t head_max = head_cap(listener_cfg(c)) + 1;
    sy_bev_set_read_cap(c->bev, c->ci.tls,
                        head_max > 2 * SY_FLOW_HIGH ? head_max : 2 * SY_FLOW_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, SY_FLOW_LOW, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (!c->ci.tls) /* a new bufferevent has EV_WRITE on; plain sockets flush themselves */
        bufferevent_disable(c->bev, EV_WRITE);
    sy_list_insert_head(&lw->conns, &c->link);
    set_state(c, H1D_HEAD); /* request_headers runs from the accept */
    /* A TLS handshake may have brought the first bytes along. */
    if (evbuffer_get_length(bufferevent_get_input(bev)))
        sy_defer(defer_q(c), &c->process_d);
}

void h1_downstream_close_idle(struct listener_worker *lw)
{
    /* conn_close leaves c on the list until its reap. */
    for (struct sy_link *l = lw->conns.next; l != &lw->conns; l = l->next) {
        struct h1_down *c = SY_CONTAINER_OF(l, struct h1_down, link);
        if (c->state == H1D_IDLE ||
            (c->state == H1D_HEAD && !evbuffer_get_length(bufferevent_get_input(c->bev))))
            conn_close(c); /* idle, or accepted and silent so far */
    }
}

void h1_downstream_drain_listener(struct listener_worker *lw, int slot)
{
    for (struct sy_link *l = lw->conns.next; l != &lw->conns; l = l->next) {
        struct h1_down *c = SY_CONTAINER_OF(l, struct h1_down, link);
        if (c->ci.listener_idx != slot)
            continue;
        c->drain = true;
        if (c->state == H1D_IDLE ||
            (c->state == H1D_HEAD && !evbuffer_get_length(bufferevent_get_input(c->bev))))
            conn_close(c);
    }
}

void h1_downstream_close_all(struct listener_worker *lw)
{
    for (struct sy_link *l; (l = sy_list_first(&lw->conns));) {
        struct h1_down *c = SY_CONTAINER_OF(l, struct h1_down, link);
        c->cut_flag = EXF_DRT; /* the drain is over (or never began: no exchanges) */
        conn_close(c);
        sy_defer_cancel(&c->reap_d);
        reap(c);
    }
}
