/*
 * h2_downstream.c — HTTP/2 from clients, on nghttp2's server API: over TLS
 * (ALPN h2), h2c with prior knowledge, and h2c by HTTP/1.1 Upgrade.
 *
 * Each request stream is one exchange. Flow control is tied to forwarding:
 * nghttp2's automatic WINDOW_UPDATE is off, and request DATA is given back
 * to the client's window (nghttp2_session_consume) only once the exchange
 * accepted it and is not back-pressured, so a slow backend stalls the
 * client instead of filling memory. Response bodies queue per stream (at
 * most SY_FLOW_HIGH before the router pauses the backend) and go out as
 * DATA frames without a copy (NO_COPY + send_data_callback). Frames are
 * serialized once per loop turn (flush_ev), not once per submit.
 *
 * Connection states:
 *   OPEN      serving streams
 *   DRAINING  GOAWAY sent (shutdown notice, then the final one); no new
 *             streams; closes when the last stream ends
 *   CLOSED    freed on a later loop turn
 *
 * Per worker (struct h2_down, at listener_worker.h2, made with the
 * worker's first HTTP/2 connection): the list of connections and the
 * nghttp2 callbacks and options every session of the worker is made from.
 * The session plumbing shared with the upstream codec is in http/h2.h.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "exchange/exchange.h"
#include "runtime.h"
#include "config/config-t.h"
#include "core/bev_flush.h"
#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/worker.h"
#include "http/h2.h"
#include "http/headers.h"
#include "listener/listener-int.h"

#define H2_OUTPUT_CAP      (256 * 1024) /* serialized bytes queued on the socket */
#define H2_INPUT_CAP       (256 * 1024) /* stop reading the socket above this */
#define H2_GOAWAY_GRACE_MS 1000         /* between the shutdown notice and the final GOAWAY */

enum h2d_state { H2D_OPEN, H2D_DRAINING, H2D_CLOSED };

static const char *h2d_state_str(enum h2d_state s)
{
    static const char *const names[] = {"open", "draining", "closed"};
    return names[s];
}

/* The worker's HTTP/2 downstream (listener_worker.h2). */
struct h2_down {
    struct sy_link conns;  /* struct h2_down_conn.link */
    struct h2_setup setup; /* nghttp2 callbacks and options of every session */
};

struct h2_down_conn;

struct h2_stream {
    struct h2_down_conn *c;
    int32_t id;
    struct exchange *ex; /* NULL once the exchange finished */
    struct h2_body out;  /* response body; trailers from the worker's cache (h2_nv_copy) */
    bool head_done;      /* the request head reached the router */
    bool req_paused;     /* the router asked to stop taking request DATA */
    bool notify_drained;
    size_t unconsumed;     /* request DATA not yet returned to the client's window */
    uint32_t header_bytes; /* for max_header_list_size */
    struct http_headers req_trailers;
    struct sy_link link; /* struct h2_down_conn.streams */
};

struct h2_down_conn {
    struct listener_worker *lw;
    struct conn_info ci;
    struct bufferevent *bev;
    nghttp2_session *ng;
    enum h2d_state state;
    struct sy_link streams; /* struct h2_stream.link */
    unsigned n_streams;
    bool want_flush;
    bool ping_outstanding;        /* our keepalive PING awaits its ACK */
    uint64_t last_read_ms;        /* last bytes from the client (keepalive) */
    uint64_t last_client_ping_ms; /* ping_policy: previous PING from the client */
    uint64_t last_data_ms;        /* last HEADERS/DATA sent (ping_policy resets strikes) */
    unsigned ping_strikes;
    struct evbuffer *scratch; /* request DATA of one callback */
    struct event flush_ev, idle_ev, goaway_ev, reap_ev;
    struct event keepalive_ev; /* keepalive.time, then keepalive.timeout */
    struct event age_ev;       /* max_connection_age, then its grace */
    bool age_reached;
    struct sy_link link; /* struct h2_down.conns */
};

static const struct downstream_ops h2_downstream_ops;
static void conn_close(struct h2_down_conn *c);
static void conn_drain(struct h2_down_conn *c);

static const struct cfg_listener *listener_cfg(const struct h2_down_conn *c)
{
    const struct runtime *rt = c->lw->w->runtime;
    return &rt->cfg->listeners[c->ci.listener_idx];
}

static struct mem_cache *conn_mem(const struct h2_down_conn *c)
{
    return &c->lw->w->h2_mem;
}

static void set_state(struct h2_down_conn *c, enum h2d_state s)
{
    log_debug("h2 downstream %p: %s -> %s", (void *)c, h2d_state_str(c->state), h2d_state_str(s));
    c->state = s;
}

static void schedule_flush(struct h2_down_conn *c)
{
    if (c->state != H2D_CLOSED && !c->want_flush) {
        c->want_flush = true;
        event_active(&c->flush_ev, EV_TIMEOUT, 1);
    }
}

/*
 * With no stream open, the idle timer runs (the shorter of
 * timeouts.http_keepalive and http2.max_connection_idle); any stream stops it.
 */
static void update_idle(struct h2_down_conn *c)
{
    const struct cfg_listener *l = listener_cfg(c);
    uint64_t ms = l->timeouts.http_keepalive_ms;
    uint64_t mci = l->http2.max_connection_idle_ms;
    if (mci && (!ms || mci < ms))
        ms = mci;
    if (c->n_streams == 0 && ms)
        sy_timer_arm_ms(&c->idle_ev, ms);
    else
        evtimer_del(&c->idle_ev);
}

/* ---- streams ------------------------------------------------------------------- */

static struct h2_stream *stream_new(struct h2_down_conn *c, int32_t id)
{
    struct h2_stream *st = calloc(1, sizeof *st);
    if (!st || !(st->out.buf = evbuffer_new())) {
        free(st);
        return NULL;
    }
    st->c = c;
    st->id = id;
    sy_list_insert_head(&c->streams, &st->link);
    c->n_streams++;
    update_idle(c);
    return st;
}

static void stream_free(struct h2_stream *st)
{
    struct h2_down_conn *c = st->c;
    sy_list_unlink(&st->link);
    c->n_streams--;
    evbuffer_free(st->out.buf);
    h2_nv_free(st->out.trailers, conn_mem(c));
    free(st);
    if (c->state != H2D_CLOSED)
        update_idle(c);
}

/* Give request bytes back to the client's window. */
static void stream_consume(struct h2_stream *st, size_t n)
{
    /* A closed stream has no window left to update, but the connection's
     * share of those bytes must come back or the connection starves. */
    if (n && st->c->ng && nghttp2_session_consume(st->c->ng, st->id, n) != 0)
        nghttp2_session_consume_connection(st->c->ng, n);
    schedule_flush(st->c);
}

/*
 * The client is gone or reset the stream: the exchange ends. Request bytes
 * held back by back-pressure go back to the connection's window first.
 */
static void stream_abort_exchange(struct h2_stream *st)
{
    struct exchange *ex = st->ex;
    size_t n = st->unconsumed;
    st->unconsumed = 0;
    st->req_paused = false;
    stream_consume(st, n);
    st->ex = NULL;
    if (ex)
        exchange_on_downstream_abort(ex);
}

/* ---- request side ------------------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct h2_down_conn *c = arg;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (listener_refuse_request(c->lw, c->ci.listener_idx)) {
        /* Overloaded (limits.overload): no stream data, so its frames are ignored. */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct h2_stream *st = stream_new(c, f->hd.stream_id);
    struct exchange *ex = st ? exchange_new(c->lw->w, listener_cfg(c)) : NULL;
    if (!ex || http_headers_init(&ex->req.headers, &ex->arena, 16) != 0) {
        if (ex)
            exchange_reject(ex, 500);
        if (st)
            stream_free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    }
    st->ex = ex;
    ex->down = &h2_downstream_ops;
    ex->down_ctx = st;
    ex->tls = c->ci.tls;
    memcpy(&ex->client_addr, &c->ci.peer, sizeof ex->client_addr);
    memcpy(&ex->local_addr, &c->ci.local, sizeof ex->local_addr);
    ex->req.version = HTTP_2;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    return 0;
}

/* Pseudo-header or field of a request head; copied into the exchange arena. */
static int take_request_field(struct exchange *ex, const uint8_t *name, size_t nlen,
                              const uint8_t *value, size_t vlen)
{
    struct http_request_head *r = &ex->req;
    char *v = arena_strndup(&ex->arena, (const char *)value, vlen);
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
        } else if (h2_name_is(name, nlen, SY_STRLIT(":path"))) {
            r->path = v;
            r->path_len = (uint32_t)vlen;
        } else if (h2_name_is(name, nlen, SY_STRLIT(":protocol"))) {
            r->upgrade = v; /* RFC 8441 extended CONNECT */
        }
        return 0; /* nghttp2 rejects unknown pseudo-headers itself */
    }
    if (h2_name_is(name, nlen, SY_STRLIT("host"))) {
        if (!r->authority) { /* :authority wins when both are present */
            r->authority = v;
            r->authority_len = (uint32_t)vlen;
        }
        return 0;
    }
    char *n = arena_strndup(&ex->arena, (const char *)name, nlen);
    if (!n)
        return -1;
    return http_headers_add(&r->headers, &ex->arena, n, nlen, v, vlen) ? -1 : 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct h2_down_conn *c = arg;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || !st->ex || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct exchange *ex = st->ex;
    st->header_bytes += (uint32_t)(nlen + vlen + 32);
    if (st->header_bytes > listener_cfg(c)->http2.max_header_list_size)
        return 0;                                 /* answered with 431 once the head is complete */
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) { /* request trailers */
        if (!st->req_trailers.v && http_headers_init(&st->req_trailers, &ex->arena, 4) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (http_headers_add_copy(&st->req_trailers, &ex->arena, (const char *)name, nlen,
                                  (const char *)value, vlen) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    return take_request_field(ex, name, nlen, value, vlen) ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
                                                           : 0;
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
 * Sec-WebSocket-Key); the stream's DATA frames are the tunnel. 0 or -1.
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

/* The request head is complete: fill the neutral fields and route it. */
static void request_head_done(struct h2_down_conn *c, struct h2_stream *st, bool end_stream)
{
    struct exchange *ex = st->ex;
    struct http_request_head *r = &ex->req;
    st->head_done = true;
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
    ex->is_head = h2_name_is(r->method, r->method_len, SY_STRLIT("HEAD"));
    const struct http_header *ct = http_headers_get(&r->headers, SY_STRLIT("content-type"));
    ex->is_grpc = ct && ct->value_len >= SY_STRLEN("application/grpc") &&
                  strncasecmp(ct->value, SY_STRLIT("application/grpc")) == 0;
    if (st->header_bytes > listener_cfg(c)->http2.max_header_list_size) {
        exchange_local_reply(ex, 431, "request header fields too large", 0);
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

/*
 * ping_policy, as gRPC servers enforce it: a client PING is a strike when it
 * comes sooner than min_interval_without_data after the previous one while
 * no data is flowing, or at all when no stream is open and
 * permit_without_calls is false. Sending HEADERS or DATA clears the strikes.
 * More than max_strikes: GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
 */
static void police_ping(struct h2_down_conn *c)
{
    const struct cfg_listener *l = listener_cfg(c);
    uint64_t now = sy_now_ms();
    uint64_t min = l->http2.ping_min_interval_without_data_ms;
    bool strike = false;
    if (c->n_streams == 0 && !l->http2.ping_permit_without_calls)
        strike = true;
    else if (c->last_client_ping_ms && c->last_data_ms <= c->last_client_ping_ms &&
             now - c->last_client_ping_ms < min)
        strike = true;
    c->last_client_ping_ms = now;
    if (!strike)
        return;
    if (++c->ping_strikes <= l->http2.ping_max_strikes)
        return;
    static const char msg[] = "too_many_pings";
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)msg, sizeof msg - 1);
    set_state(c, H2D_DRAINING);
    schedule_flush(c);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct h2_down_conn *c = arg;
    if (f->hd.type == NGHTTP2_PING) {
        if (f->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_outstanding = false;
        else
            police_ping(c);
        return 0;
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || !st->ex)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        request_head_done(c, st, end);
        return 0;
    }
    if (end && st->head_done)
        exchange_on_request_end(st->ex, st->req_trailers.n ? &st->req_trailers : NULL);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *arg)
{
    struct h2_down_conn *c = arg;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || !st->ex || !st->head_done) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it */
        return 0;
    }
    evbuffer_add(c->scratch, data, len);
    exchange_on_request_body(st->ex, c->scratch);
    evbuffer_drain(c->scratch, evbuffer_get_length(c->scratch));
    if (st->req_paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume(ng, id, len);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct h2_down_conn *c = arg;
    if (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) {
        c->last_data_ms = sy_now_ms();
        c->ping_strikes = 0;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *arg)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    stream_abort_exchange(st); /* no-op when the exchange already finished */
    stream_free(st);
    return 0;
}

/* ---- response side ---------------------------------------------------------------------- */

/* NO_COPY data provider of a response body (h2_body_read); marks the drain to report. */
static ssize_t on_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct h2_stream *st = src->ptr;
    size_t have = evbuffer_get_length(st->out.buf);
    ssize_t n = h2_body_read(ng, id, &st->out, length, flags);
    /* Told after the flush, outside nghttp2's callbacks (notify_drained). */
    if (n >= 0 && st->ex && have >= SY_FLOW_LOW && have - (size_t)n < SY_FLOW_LOW)
        st->notify_drained = true;
    return n;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *arg)
{
    struct h2_down_conn *c = arg;
    struct h2_stream *st = src->ptr;
    return h2_body_send(&st->out, f, framehd, length, bufferevent_get_output(c->bev));
}

static void op_send_head(struct exchange *ex, const struct http_response_head *h, bool end)
{
    struct h2_stream *st = ex->down_ctx;
    struct h2_down_conn *c = st->c;
    nghttp2_nv *nv = arena_alloc(&ex->arena, sizeof *nv * (h->headers.n + 2));
    char status[8], clen[24];
    if (!nv) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        schedule_flush(c);
        return;
    }
    bool tunnel = h->status == 101 && ex->req.upgrade;
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
    if (end || ex->is_head) {
        nghttp2_submit_response(c->ng, st->id, nv, n, NULL);
        st->out.eof = true;
    } else {
        nghttp2_data_provider dp = {.source.ptr = st, .read_callback = on_data_read};
        nghttp2_submit_response(c->ng, st->id, nv, n, &dp);
    }
    schedule_flush(c);
}

static void resume(struct h2_stream *st)
{
    h2_body_resume(st->c->ng, st->id, &st->out);
    schedule_flush(st->c);
}

static void op_send_body(struct exchange *ex, struct evbuffer *buf)
{
    struct h2_stream *st = ex->down_ctx;
    if (ex->is_head) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    evbuffer_add_buffer(st->out.buf, buf);
    resume(st);
}

static void op_send_end(struct exchange *ex, const struct http_headers *trailers)
{
    struct h2_stream *st = ex->down_ctx;
    if (st->out.eof)
        return;
    if (trailers && trailers->n) /* they outlive the exchange's arena */
        st->out.trailers = h2_nv_copy(trailers, conn_mem(st->c), &st->out.n_trailers);
    st->out.eof = true;
    resume(st);
}

static void op_reset(struct exchange *ex)
{
    struct h2_stream *st = ex->down_ctx;
    st->ex = NULL;
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    schedule_flush(st->c);
}

static size_t op_pending(struct exchange *ex)
{
    struct h2_stream *st = ex->down_ctx;
    return evbuffer_get_length(st->out.buf);
}

static void op_read_body(struct exchange *ex, bool enable)
{
    struct h2_stream *st = ex->down_ctx;
    if (st->req_paused == !enable)
        return;
    st->req_paused = !enable;
    if (enable) {
        size_t n = st->unconsumed;
        st->unconsumed = 0;
        stream_consume(st, n);
    }
}

static void op_detach(struct exchange *ex)
{
    struct h2_stream *st = ex->down_ctx;
    if (st->ex != ex)
        return;
    st->ex = NULL;
    /* Whatever the client still sends on this stream is consumed and dropped. */
    size_t n = st->unconsumed;
    st->unconsumed = 0;
    st->req_paused = false;
    stream_consume(st, n);
    if (!st->out.eof) { /* finished without a complete response */
        nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        schedule_flush(st->c);
    }
}

static const struct downstream_ops h2_downstream_ops = {
    .send_head = op_send_head,
    .send_body = op_send_body,
    .send_end = op_send_end,
    .reset = op_reset,
    .pending = op_pending,
    .read_body = op_read_body,
    .detach = op_detach,
};

/* ---- connection I/O -------------------------------------------------------------------------- */

/* Tell exchanges whose response buffer drained (outside nghttp2 callbacks). */
static void notify_drained(struct h2_down_conn *c)
{
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next) {
        struct h2_stream *st = SY_CONTAINER_OF(l, struct h2_stream, link);
        if (!st->notify_drained)
            continue;
        st->notify_drained = false;
        if (st->ex)
            exchange_on_downstream_drained(st->ex);
    }
}

/*
 * Close once nothing is left to do: nghttp2 wants neither to read nor to
 * write (GOAWAY exchanged), or a drain finished its last stream. The output
 * must be flushed first; a zero low watermark makes on_write say when.
 */
static void maybe_close(struct h2_down_conn *c)
{
    bool done = !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng);
    if (c->state == H2D_DRAINING && c->n_streams == 0 && !evtimer_pending(&c->goaway_ev, NULL))
        done = true;
    if (!done)
        return;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_close(c);
    else
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

/* Serialize pending frames into the socket's output buffer, up to its cap. */
static void flush(struct h2_down_conn *c)
{
    c->want_flush = false;
    if (c->state == H2D_CLOSED)
        return;
    int rc = h2_session_send(c->ng, bufferevent_get_output(c->bev), H2_OUTPUT_CAP, NULL);
    if (rc != 0) {
        log_debug("h2 downstream %p: %s", (void *)c, nghttp2_strerror(rc));
        conn_close(c);
        return;
    }
    sy_bev_flush(c->bev, c->ci.tls);
    notify_drained(c);
    if (c->state != H2D_CLOSED)
        maybe_close(c);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    flush(arg);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct h2_down_conn *c = arg;
    c->last_read_ms = sy_now_ms();
    if (c->state == H2D_CLOSED)
        return;
    /* nghttp2's callbacks never close the connection: the loop runs to the end. */
    int rc = h2_session_recv(c->ng, bufferevent_get_input(bev), NULL, 0, NULL);
    if (rc != 0) {
        log_debug("h2 downstream %p: %s", (void *)c, nghttp2_strerror(rc));
        conn_close(c);
        return;
    }
    flush(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct h2_down_conn *c = arg;
    sy_bev_written(bev, c->ci.tls);
    flush(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_close(arg);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    struct listener_worker *lw = c->lw;
    int listener_idx = c->ci.listener_idx;
    sy_list_unlink(&c->link);
    evbuffer_free(c->scratch);
    free(c);
    listener_conn_closed(lw, listener_idx);
}

static void conn_close(struct h2_down_conn *c)
{
    if (c->state == H2D_CLOSED)
        return;
    set_state(c, H2D_CLOSED);
    /* Every stream still open ends its exchange; nghttp2 is freed after. */
    for (struct sy_link *l; (l = sy_list_first(&c->streams));) {
        struct h2_stream *st = SY_CONTAINER_OF(l, struct h2_stream, link);
        nghttp2_session_set_stream_user_data(c->ng, st->id, NULL);
        stream_abort_exchange(st);
        stream_free(st);
    }
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    event_del(&c->flush_ev);
    event_del(&c->idle_ev);
    event_del(&c->goaway_ev);
    event_del(&c->keepalive_ev);
    event_del(&c->age_ev);
    if (c->ci.tls)
        listener_tls_close_notify(c->bev);
    bufferevent_free(c->bev);
    c->bev = NULL;
    event_active(&c->reap_ev, EV_TIMEOUT, 1);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    if (c->n_streams)
        return;
    nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
    set_state(c, H2D_DRAINING);
    flush(c);
}

/* The final GOAWAY, one grace period after the shutdown notice. */
static void on_goaway(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    flush(c);
}

/*
 * keepalive: after `time` without bytes from the client, PING it; no ACK
 * within `timeout` closes the connection.
 */
static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    const struct cfg_listener *l = listener_cfg(c);
    uint64_t now = sy_now_ms(), t = l->http2.keepalive_time_ms;
    if (c->ping_outstanding) {
        if (now - c->last_read_ms >= l->http2.keepalive_timeout_ms) {
            log_info("h2 downstream: keepalive PING not answered; closing");
            conn_close(c);
            return;
        }
        sy_timer_arm_ms(&c->keepalive_ev, l->http2.keepalive_timeout_ms - (now - c->last_read_ms));
        return;
    }
    if (now - c->last_read_ms < t) {
        sy_timer_arm_ms(&c->keepalive_ev, t - (now - c->last_read_ms));
        return;
    }
    nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
    c->ping_outstanding = true;
    c->last_read_ms = now; /* the timeout counts from the PING */
    sy_timer_arm_ms(&c->keepalive_ev, l->http2.keepalive_timeout_ms);
    schedule_flush(c);
}

/* max_connection_age: GOAWAY (drain), then after the grace period close. */
static void on_age(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    const struct cfg_listener *l = listener_cfg(c);
    if (c->age_reached) {
        conn_close(c);
        return;
    }
    c->age_reached = true;
    conn_drain(c);
    if (c->state != H2D_CLOSED && l->http2.max_connection_age_grace_ms)
        sy_timer_arm_ms(&c->age_ev, l->http2.max_connection_age_grace_ms);
}

static void conn_drain(struct h2_down_conn *c)
{
    if (c->state != H2D_OPEN)
        return;
    set_state(c, H2D_DRAINING);
    nghttp2_submit_shutdown_notice(c->ng);
    sy_timer_arm_ms(&c->goaway_ev, H2_GOAWAY_GRACE_MS);
    flush(c);
}

/* ---- session setup --------------------------------------------------------------------------- */

/* Every client session of a worker is made from this, built once per worker. */
static const struct h2_session_def h2_down_session = {
    .server = true,
    .on_begin_headers = on_begin_headers,
    .on_header = on_header,
    .on_frame_recv = on_frame_recv,
    .on_frame_send = on_frame_send,
    .on_data_chunk_recv = on_data_chunk_recv,
    .on_stream_close = on_stream_close,
    .send_data = on_send_data,
    .manual_window = true, /* request DATA is consumed once forwarded */
    .reset_burst = 1000,   /* Rapid Reset: at most 1000 resets, then 33 per second */
    .reset_rate = 33,
    .max_settings = 32,
};

/* The worker's HTTP/2 downstream, made with its first connection. NULL: out of memory. */
static struct h2_down *worker_down(struct listener_worker *lw)
{
    struct h2_down *d = lw->h2;
    if (d)
        return d;
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    sy_list_init(&d->conns);
    if (h2_setup_init(&d->setup, &h2_down_session) != 0) {
        free(d);
        return NULL;
    }
    lw->h2 = d;
    return d;
}

static int send_settings(struct h2_down_conn *c)
{
    const struct cfg_listener *l = listener_cfg(c);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->http2.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l->http2.initial_stream_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->http2.max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441 WebSocket */
    };
    return h2_submit_settings(c->ng, iv, sizeof iv / sizeof iv[0],
                              (int32_t)l->http2.initial_connection_window_size);
}

/* HTTP/1.1 Upgrade: h2c — the upgraded request becomes stream 1. */
static int take_upgrade(struct h2_down_conn *c, const uint8_t *settings, size_t len,
                        struct exchange *ex)
{
    struct h2_stream *st = stream_new(c, 1);
    if (!st)
        return -1;
    if (nghttp2_session_upgrade2(c->ng, settings, len, ex->is_head, st) != 0) {
        stream_free(st);
        return -1;
    }
    st->ex = ex;
    st->head_done = true;
    ex->down = &h2_downstream_ops;
    ex->down_ctx = st;
    ex->req.version = HTTP_2;
    ex->req_done = true;
    router_start(ex);
    if (st->ex == ex)
        exchange_on_request_end(ex, NULL);
    return 0;
}

/* Timers and the listener's settings of a new connection whose session is up. */
static void conn_arm(struct h2_down_conn *c)
{
    const struct cfg_listener *l = listener_cfg(c);
    update_idle(c);
    if (l->http2.keepalive_time_ms)
        sy_timer_arm_ms(&c->keepalive_ev, l->http2.keepalive_time_ms);
    if (l->http2.max_connection_age_ms)
        sy_timer_arm_ms(&c->age_ev, l->http2.max_connection_age_ms);
}

void h2_downstream_start(struct listener_worker *lw, struct bufferevent *bev,
                         const struct conn_info *ci, const uint8_t *upgrade_settings,
                         size_t upgrade_settings_len, struct exchange *upgrade_ex)
{
    struct worker *w = lw->w;
    struct h2_down *d = worker_down(lw);
    struct h2_down_conn *c = d ? calloc(1, sizeof *c) : NULL;
    if (!c || !(c->scratch = evbuffer_new())) {
        free(c);
        bufferevent_free(bev);
        if (upgrade_ex)
            exchange_reject(upgrade_ex, 500);
        listener_conn_closed(lw, ci->listener_idx);
        return;
    }
    c->lw = lw;
    c->ci = *ci;
    c->bev = bev;
    sy_list_init(&c->streams);
    evtimer_assign(&c->flush_ev, w->base, on_flush, c);
    evtimer_assign(&c->idle_ev, w->base, on_idle, c);
    evtimer_assign(&c->goaway_ev, w->base, on_goaway, c);
    evtimer_assign(&c->reap_ev, w->base, on_reap, c);
    evtimer_assign(&c->keepalive_ev, w->base, on_keepalive, c);
    evtimer_assign(&c->age_ev, w->base, on_age, c);
    c->last_read_ms = sy_now_ms();
    sy_list_insert_head(&d->conns, &c->link);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_READ, 0, H2_INPUT_CAP);
    bufferevent_setwatermark(bev, EV_WRITE, H2_OUTPUT_CAP / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (!c->ci.tls) /* plain sockets flush themselves (bev_flush.h) */
        bufferevent_disable(bev, EV_WRITE);
    if (h2_session_new(&d->setup, c, &w->h2_mem, &c->ng) != 0 || send_settings(c) != 0) {
        if (upgrade_ex)
            exchange_reject(upgrade_ex, 500);
        conn_close(c);
        return;
    }
    conn_arm(c);
    if (upgrade_ex && take_upgrade(c, upgrade_settings, upgrade_settings_len, upgrade_ex) != 0) {
        exchange_reject(upgrade_ex, 400);
        conn_close(c);
        return;
    }
    if (w->draining)
        conn_drain(c);
    on_read(bev, c); /* bytes that came before the hand-over */
}

void h2_downstream_drain(struct listener_worker *lw)
{
    struct h2_down *d = lw->h2;
    if (!d)
        return;
    for (struct sy_link *l = d->conns.next; l != &d->conns; l = l->next)
        conn_drain(SY_CONTAINER_OF(l, struct h2_down_conn, link));
}

/* Close every connection now, and free the worker's HTTP/2 state. */
void h2_downstream_close_all(struct listener_worker *lw)
{
    struct h2_down *d = lw->h2;
    if (!d)
        return;
    for (struct sy_link *l; (l = sy_list_first(&d->conns));) {
        struct h2_down_conn *c = SY_CONTAINER_OF(l, struct h2_down_conn, link);
        conn_close(c);
        event_del(&c->reap_ev);
        on_reap(-1, 0, c);
    }
    h2_setup_fini(&d->setup);
    free(d);
    lw->h2 = NULL;
}
