/*
 * h2_upstream.c — HTTP/2 to backends (h2 over TLS with ALPN "h2", and h2c
 * by prior knowledge): per-worker pools of multiplexed connections, and the
 * codec that carries each attempt as one stream.
 *
 * Pools. A pool is one endpoint address with one transport setup (protocol,
 * and for TLS: ca_file, verify, sni); it lists its connections. An attempt
 * takes the first connection that accepts new streams (no GOAWAY received)
 * and has a free slot below the backend's SETTINGS_MAX_CONCURRENT_STREAMS
 * (nghttp2 assumes 100 until the backend's SETTINGS arrive), else it opens
 * one more. A stream is submitted at once, even while the connection is
 * still connecting: nghttp2 queues it.
 *
 * Connection states:
 *   CONNECTING  TCP connect (and TLS handshake) in progress
 *   READY       open; takes new streams while it has free slots; with no
 *               stream it is idle and closes after H2U_IDLE_MS
 *   DRAINING    GOAWAY received, or the worker drains: no new streams;
 *               closes when its last stream is gone
 *   CLOSED      socket closed, every attached owner told; freed on a
 *               later loop turn (reap_ev)
 *
 * Re-entrancy rules (see upstream.h):
 *   - The upstream_ops (send_body, send_end, pending, read_response,
 *     cancel) never call back into the owner and never run nghttp2's
 *     send/recv: they queue work and activate the connection's flush event.
 *     That also batches output: frames submitted by many streams in one loop
 *     turn are serialized together, into one write.
 *   - upstream_cbs callbacks are made only from the pump (socket events,
 *     the flush event) and from timers. The owner may cancel any stream from
 *     inside them; a cancelled stream is only detached (RST_STREAM queued) and
 *     its struct is freed on nghttp2's stream close, or with the connection.
 *   - A connection is never freed while a callback of it is on the stack:
 *     conn_fail() inside the pump only marks it, the pump closes it on the
 *     way out, and the memory goes in reap_ev.
 *
 * Flow control (DESIGN.md "Hot path notes"):
 *   - Response: automatic WINDOW_UPDATE is off. DATA is handed to the
 *     owner (moved out of a per-connection scratch buffer) and consumed
 *     (nghttp2_session_consume, which reopens the windows) right away unless
 *     the owner paused us (read_response(false): the client is behind);
 *     then the bytes are counted as `unconsumed` and consumed on
 *     read_response(true). A stalled client closes the backend's stream
 *     window: a stream holds at most H2U_STREAM_WINDOW bytes beyond the
 *     downstream's SY_FLOW_HIGH.
 *   - Request: body bytes wait in the stream's `body` buffer (pending()); the
 *     data provider frames them without a copy (NO_COPY + send_data moving
 *     evbuffer chains to the socket) and defers while the buffer is empty.
 *     When it drops below SY_FLOW_LOW after reaching SY_FLOW_HIGH the
 *     owner hears on_drained.
 *   - Socket: frames are serialized only while the output holds less than
 *     H2U_OUT_CAP and input is fed to nghttp2 only then; the input's read
 *     high-water mark (H2U_IN_CAP) stops reading the socket meanwhile.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/tls_client.h"
#include "upstream/upstream-int.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/worker.h"
#include "http/headers.h"

#define H2U_IDLE_MS            60000              /* an idle connection closes after this */
#define H2U_CONNECT_TIMEOUT_MS 5000               /* when the service sets none */
#define H2U_STREAM_WINDOW      (256 * 1024)       /* SETTINGS_INITIAL_WINDOW_SIZE we announce */
#define H2U_CONN_WINDOW        (16 * 1024 * 1024) /* connection receive window */
#define H2U_MAX_STREAMS        1000               /* per connection, whatever the backend allows */
#define H2U_MAX_HEADER_LIST    (64 * 1024)        /* SETTINGS_MAX_HEADER_LIST_SIZE we announce */
#define H2U_OUT_CAP            (256 * 1024)       /* serialize frames only below this */
#define H2U_OUT_LOW            (64 * 1024)        /* write callback (pump again) below this */
#define H2U_IN_CAP             (256 * 1024)       /* stop reading the socket above this */
#define H2U_HEADERS_CAP        16                 /* initial header list room */

enum h2u_state { H2U_CONNECTING, H2U_READY, H2U_DRAINING, H2U_CLOSED };

static const char *h2u_state_str(enum h2u_state s)
{
    static const char *const names[] = {"connecting", "ready", "draining", "closed"};
    return names[s];
}

struct pool;
struct h2_conn;

/* One attempt: one stream. Allocated per attempt, freed on stream close. */
struct h2_stream {
    struct h2_conn *conn;
    const struct upstream_request *r; /* the attempt; NULL once released (response end, error) or cancelled */
    int32_t id;
    struct evbuffer *body;  /* request body not yet framed (pending()) */
    nghttp2_nv *trailer_nv; /* request trailers (the request's arena), sent after the body */
    size_t n_trailer_nv;
    bool body_end;     /* send_end called: EOF once `body` is empty */
    bool req_done;     /* the request's END_STREAM is in the session */
    bool deferred;     /* the data provider deferred: resume when bytes arrive */
    bool above_high;   /* pending() reached SY_FLOW_HIGH: report the drain */
    bool drained;      /* ... due at the end of this pump */
    bool reused;       /* the connection carried streams before this one */
    bool got_bytes;    /* any response frame arrived */
    bool head_done;    /* the final response head went to the owner */
    bool bad_response; /* we reset it: a response we cannot take */
    bool paused;       /* read_response(false): do not consume */
    size_t unconsumed; /* DATA bytes delivered but not consumed (window closed) */
    struct http_response_head head;
    struct http_headers trailers;  /* response trailers (the request's arena) */
    struct h2_stream *next, *prev; /* the connection's streams */
};

struct h2_conn {
    void *conn_token;                /* from upstream_request.conn_enter, or NULL */
    void (*conn_leave)(void *token); /* gives conn_token back when the connection closes */
    struct h2_pools *pools;
    struct pool *pool; /* NULL once CLOSED */
    struct bufferevent *bev;
    nghttp2_session *session;
    enum h2u_state state;
    bool tls;
    bool retiring;      /* take no new streams (becomes DRAINING once connected) */
    bool in_pump;       /* inside conn_pump: closing is deferred to its end */
    bool close_pending; /* conn_fail() was called inside the pump */
    enum upstream_error close_err;
    bool any_drained;                   /* some stream has `drained` set */
    bool ping_out;                      /* a keepalive PING awaits its ACK */
    bool got_settings;                  /* the backend's first SETTINGS arrived */
    unsigned n_streams;                 /* live stream structs (each holds a slot) */
    uint64_t n_started;                 /* streams ever started here */
    uint64_t ka_time_ms, ka_timeout_ms; /* http2_keepalive; 0 = off */
    uint64_t last_read_ms;
    char name[64];            /* endpoint, for logs */
    struct evbuffer *scratch; /* DATA on its way to an owner */
    struct h2_stream *streams;
    struct event timer_ev; /* connect timeout, then idle timeout */
    struct event ka_ev;    /* keepalive PING interval, then ACK timeout */
    struct event flush_ev; /* deferred pump */
    struct event reap_ev;
    struct h2_conn *next, *prev;         /* the pool's connections */
    struct h2_conn *all_next, *all_prev; /* every connection of this worker */
};

/* Connections to one address with one transport setup. */
struct pool {
    struct sockaddr_storage ss;
    socklen_t len;
    enum cfg_backend_protocol protocol;
    bool verify;
    char *ca_file, *sni;       /* copies; NULL = unset (TLS only) */
    uint32_t peer_max_streams; /* the backend's last SETTINGS_MAX_CONCURRENT_STREAMS,
                                  used for new connections until their own SETTINGS
                                  arrive; 0 = none seen yet (nghttp2 assumes 100) */
    struct h2_conn *conns;
    struct pool *next;
};

struct h2_pools {
    struct worker *w;
    struct pool *pools;
    struct h2_conn *all;
    struct tls_client_cache *tls;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    bool closing; /* h2_pools_free is running: no new attempts */
};

static void conn_pump(struct h2_conn *c);
static void conn_fail(struct h2_conn *c, enum upstream_error err);

static void set_state(struct h2_conn *c, enum h2u_state s)
{
    log_debug("h2 upstream %p %s: %s -> %s", (void *)c, c->name, h2u_state_str(c->state),
              h2u_state_str(s));
    c->state = s;
}

static void arm_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Run the pump on a later loop turn (coalesced: at most once per turn). */
static void conn_schedule(struct h2_conn *c)
{
    if (c->state != H2U_CONNECTING && c->state != H2U_CLOSED)
        event_active(&c->flush_ev, EV_WRITE, 1);
}

/* ---- streams ------------------------------------------------------------------------ */

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
    return nghttp2_session_get_stream_user_data(session, id);
}

static void stream_free(struct h2_stream *s)
{
    if (s->body)
        evbuffer_free(s->body);
    free(s);
}

static void stream_unlink(struct h2_stream *s)
{
    struct h2_conn *c = s->conn;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    c->n_streams--;
}

/* Give the window back for bytes the owner will never consume now. */
static void stream_consume_all(struct h2_stream *s)
{
    if (s->unconsumed && s->conn->state != H2U_CLOSED)
        nghttp2_session_consume(s->conn->session, s->id, s->unconsumed);
    s->unconsumed = 0;
}

/*
 * Detach the attempt's owner: the window is returned, and a request still being
 * sent is abandoned (RST_STREAM CANCEL). Returns the request, whose owner the
 * caller tells (or not, for cancel). No callback here.
 */
static const struct upstream_request *stream_release(struct h2_stream *s)
{
    const struct upstream_request *r = s->r;
    struct h2_conn *c = s->conn;
    s->r = NULL;
    stream_consume_all(s);
    if (!s->req_done && c->state != H2U_CLOSED) {
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        s->req_done = true;
        conn_schedule(c);
    }
    return r;
}

/* ---- nghttp2 callbacks: response ------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *arg)
{
    struct h2_stream *s = stream_of(session, frame->hd.stream_id);
    if (frame->hd.type != NGHTTP2_HEADERS || !s || !s->r)
        return 0;
    s->got_bytes = true;
    struct arena *a = s->r->arena;
    if (s->head_done) {
        if (http_headers_init(&s->trailers, a, H2U_HEADERS_CAP) != 0)
            goto fail;
        return 0;
    }
    /* A response head (again after a 1xx). */
    s->head.status = 0;
    s->head.content_length = -1;
    if (http_headers_init(&s->head.headers, a, H2U_HEADERS_CAP) != 0)
        goto fail;
    return 0;
fail:
    s->bad_response = true;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

/* nghttp2 has checked syntax already (HTTP messaging is on). */
static int64_t parse_digits(const uint8_t *v, size_t len)
{
    int64_t n = 0;
    if (len == 0 || len > 18)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg)
{
    struct h2_stream *s = stream_of(session, frame->hd.stream_id);
    if (frame->hd.type != NGHTTP2_HEADERS || !s || !s->r)
        return 0;
    struct arena *a = s->r->arena;
    struct http_headers *list = s->head_done ? &s->trailers : &s->head.headers;
    if (!s->head_done) {
        if (namelen && name[0] == ':') {
            if (name_is(name, namelen, ":status"))
                s->head.status = (int)parse_digits(value, valuelen);
            return 0; /* pseudo-headers do not travel on */
        }
        if (name_is(name, namelen, "content-length")) {
            s->head.content_length = parse_digits(value, valuelen);
            return 0; /* the downstream codec frames the body itself */
        }
    }
    if (http_headers_add_copy(list, a, (const char *)name, namelen, (const char *)value,
                              valuelen) != 0) {
        s->bad_response = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *s = stream_of(session, id);
    if (!s || !s->r) {
        /* Nobody wants these bytes any more: return the window at once. */
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    s->got_bytes = true;
    if (evbuffer_add(c->scratch, data, len) != 0) {
        nghttp2_session_consume(session, id, len);
        s->bad_response = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s->unconsumed += len;
    s->r->cbs->on_body(s->r->ctx, c->scratch);
    evbuffer_drain(c->scratch, evbuffer_get_length(c->scratch));
    /* Not paused: the client side took the bytes below its high-water mark,
     * so the backend may send more. (If the owner cancelled us meanwhile,
     * stream_release consumed them already.) */
    if (s->r && !s->paused)
        stream_consume_all(s);
    return 0;
}

/* A response HEADERS frame is complete: the head, a 1xx, or trailers. */
static void on_response_headers(struct h2_stream *s, const nghttp2_frame *frame)
{
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (s->head_done) {
        /* Trailers (nghttp2 insists they carry END_STREAM). */
        const struct upstream_request *r = stream_release(s);
        r->cbs->on_end(r->ctx, &s->trailers);
        return;
    }
    if (s->head.status >= 100 && s->head.status < 200 && !end)
        return; /* interim response: the real one follows */
    s->head_done = true;
    s->r->cbs->on_head(s->r->ctx, &s->head, end);
    if (end && s->r) {
        const struct upstream_request *r = stream_release(s);
        r->cbs->on_end(r->ctx, NULL);
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = stream_of(session, frame->hd.stream_id);
        if (s && s->r)
            on_response_headers(s, frame);
        break;
    case NGHTTP2_DATA:
        s = stream_of(session, frame->hd.stream_id);
        if (s && s->r && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            const struct upstream_request *r = stream_release(s);
            r->cbs->on_end(r->ctx, NULL);
        }
        break;
    case NGHTTP2_GOAWAY:
        /* nghttp2 closes the streams above last_stream_id with REFUSED_STREAM
         * (on_stream_close) and refuses new ones; we stop offering it. */
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
            log_info("h2 upstream %s: GOAWAY %s (last stream %d)", c->name,
                     nghttp2_http2_strerror(frame->goaway.error_code),
                     frame->goaway.last_stream_id);
        else
            log_debug("h2 upstream %s: GOAWAY (last stream %d)", c->name,
                      frame->goaway.last_stream_id);
        c->retiring = true;
        if (c->state == H2U_READY)
            set_state(c, H2U_DRAINING);
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_out = false;
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            c->got_settings = true;
            if (c->pool)
                c->pool->peer_max_streams = nghttp2_session_get_remote_settings(
                    session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        }
        break;
    default: break;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *s = stream_of(session, id);
    if (!s || c->state == H2U_CLOSED)
        return 0; /* a closed connection frees its streams in reap */
    nghttp2_session_set_stream_user_data(session, id, NULL);
    stream_unlink(s);
    if (s->r) {
        /* Closed before the response ended. */
        const struct upstream_request *r = s->r;
        enum upstream_error err = UPSTREAM_RESET;
        s->r = NULL;
        /* The connection window still counts the bytes we held back. */
        if (s->unconsumed)
            nghttp2_session_consume_connection(session, s->unconsumed);
        s->unconsumed = 0;
        if (error_code == NGHTTP2_REFUSED_STREAM)
            err = UPSTREAM_REFUSED_STREAM; /* not processed: the router sends it again */
        else if (s->bad_response || error_code == NGHTTP2_PROTOCOL_ERROR)
            err = UPSTREAM_PROTOCOL;
        log_debug("h2 upstream %s: stream %d closed (error %u) before the response ended", c->name,
                  id, error_code);
        r->cbs->on_error(r->ctx, err, false);
    }
    stream_free(s);
    return 0;
}

/* ---- nghttp2 callbacks: request body -------------------------------------------------------- */

static ssize_t on_body_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *arg)
{
    struct h2_stream *s = source->ptr;
    size_t have = evbuffer_get_length(s->body);
    size_t n = have < length ? have : length;
    if (n == 0 && !s->body_end) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (s->body_end && n == have) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        s->req_done = true;
        if (s->r && s->n_trailer_nv &&
            nghttp2_submit_trailer(session, id, s->trailer_nv, s->n_trailer_nv) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* NO_COPY: the frame header, then the body bytes moved (not copied) to the socket. */
static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *arg)
{
    static const uint8_t zeros[256];
    struct h2_conn *c = arg;
    struct h2_stream *s = source->ptr;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t padlen = frame->data.padlen;
    evbuffer_add(out, framehd, 9);
    if (padlen > 0) {
        uint8_t b = (uint8_t)(padlen - 1);
        evbuffer_add(out, &b, 1);
    }
    if (evbuffer_remove_buffer(s->body, out, length) != (int)length)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (padlen > 1)
        evbuffer_add(out, zeros, padlen - 1);
    if (s->above_high && evbuffer_get_length(s->body) < SY_FLOW_LOW) {
        s->above_high = false;
        s->drained = true;
        c->any_drained = true;
    }
    return 0;
}

/* ---- the pump --------------------------------------------------------------------------- */

/* Feed buffered input to nghttp2 while the output has room. */
static int pump_input(struct h2_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (evbuffer_get_length(in) && evbuffer_get_length(out) < H2U_OUT_CAP && !c->close_pending) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        ssize_t rv = nghttp2_session_mem_recv(c->session, v.iov_base, v.iov_len);
        if (rv < 0) {
            log_info("h2 upstream %s: %s", c->name, nghttp2_strerror((int)rv));
            return SY_EPROTO;
        }
        evbuffer_drain(in, (size_t)rv);
    }
    return 0;
}

/* Serialize pending frames into the output until it is full or nothing is left. */
static int pump_output(struct h2_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (evbuffer_get_length(out) < H2U_OUT_CAP && !c->close_pending) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            log_info("h2 upstream %s: %s", c->name, nghttp2_strerror((int)n));
            return SY_EPROTO;
        }
        if (n == 0)
            break;
        if (evbuffer_add(out, data, (size_t)n) != 0)
            return SY_ENOMEM;
    }
    return 0;
}

/* Tell owners whose request buffer drained below SY_FLOW_LOW. */
static void notify_drained(struct h2_conn *c)
{
    if (!c->any_drained)
        return;
    c->any_drained = false;
    for (struct h2_stream *s = c->streams; s; s = s->next) {
        if (!s->drained)
            continue;
        s->drained = false;
        if (s->r)
            s->r->cbs->on_drained(s->r->ctx);
    }
}

/* The connection has nothing left to do: close it, or start its idle timer. */
static void conn_check_idle(struct h2_conn *c)
{
    if (c->state == H2U_CLOSED || c->state == H2U_CONNECTING)
        return;
    bool done = !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session);
    if (c->n_streams == 0 && (c->state == H2U_DRAINING || c->pools->w->draining))
        done = true;
    if (done) {
        conn_fail(c, UPSTREAM_RESET);
        return;
    }
    if (c->n_streams == 0 && !evtimer_pending(&c->timer_ev, NULL))
        arm_ms(&c->timer_ev, H2U_IDLE_MS);
}

/*
 * Input, then output, once per event. Exchange callbacks run inside (from
 * nghttp2's callbacks, and for drained streams at the end).
 */
static void conn_pump(struct h2_conn *c)
{
    if (c->state == H2U_CONNECTING || c->state == H2U_CLOSED || c->in_pump)
        return;
    c->in_pump = true;
    int rc = pump_input(c);
    if (rc == 0)
        rc = pump_output(c);
    c->in_pump = false;
    if (rc != 0 && !c->close_pending) {
        c->close_pending = true;
        c->close_err = UPSTREAM_PROTOCOL;
    }
    if (c->close_pending) {
        conn_fail(c, c->close_err);
        return;
    }
    notify_drained(c);
    conn_check_idle(c);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_pump(arg);
}

/* ---- connection lifecycle ------------------------------------------------------------------ */

static void pool_unlink(struct h2_conn *c);

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_pools *ps = c->pools;
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        ps->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    while (c->streams) {
        struct h2_stream *s = c->streams;
        stream_unlink(s);
        stream_free(s);
    }
    nghttp2_session_del(c->session);
    evbuffer_free(c->scratch);
    if (c->conn_token)
        c->conn_leave(c->conn_token);
    free(c);
}

/*
 * Close the connection and fail every attached attempt with `err`. Inside
 * the pump this only marks the connection; the pump finishes the job.
 */
static void conn_fail(struct h2_conn *c, enum upstream_error err)
{
    if (c->state == H2U_CLOSED)
        return;
    if (c->in_pump) {
        if (!c->close_pending) {
            c->close_pending = true;
            c->close_err = err;
        }
        return;
    }
    set_state(c, H2U_CLOSED);
    pool_unlink(c);
    event_del(&c->timer_ev);
    event_del(&c->ka_ev);
    event_del(&c->flush_ev);
    bufferevent_free(c->bev);
    c->bev = NULL;
    event_active(&c->reap_ev, EV_TIMEOUT, 1);
    /* The stream list cannot change now: nghttp2 is never called again on a
     * closed connection, and new attempts cannot find it. */
    for (struct h2_stream *s = c->streams; s; s = s->next) {
        if (!s->r)
            continue;
        const struct upstream_request *r = s->r;
        bool stale = err == UPSTREAM_RESET && s->reused && !s->got_bytes;
        s->r = NULL;
        r->cbs->on_error(r->ctx, err, stale);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (c->state == H2U_CONNECTING) {
        log_info("h2 upstream %s: connect timeout", c->name);
        conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (c->n_streams == 0)
        conn_fail(c, UPSTREAM_RESET); /* idle: no owner to tell */
}

/* Keepalive: PING after ka_time_ms without input; no ACK within ka_timeout_ms closes. */
static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (c->state == H2U_CLOSED)
        return;
    if (c->ping_out) {
        log_info("h2 upstream %s: no PING ACK within %llu ms, closing", c->name,
                 (unsigned long long)c->ka_timeout_ms);
        conn_fail(c, UPSTREAM_RESET);
        return;
    }
    uint64_t idle = sy_now_ms() - c->last_read_ms;
    if (idle < c->ka_time_ms) {
        arm_ms(&c->ka_ev, c->ka_time_ms - idle);
        return;
    }
    if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) != 0) {
        conn_fail(c, UPSTREAM_RESET);
        return;
    }
    c->ping_out = true;
    arm_ms(&c->ka_ev, c->ka_timeout_ms ? c->ka_timeout_ms : c->ka_time_ms);
    conn_schedule(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct h2_conn *c = arg;
    c->last_read_ms = sy_now_ms();
    c->ping_out = false; /* the peer is alive */
    conn_pump(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    conn_pump(arg);
}

static void on_connected(struct h2_conn *c)
{
    event_del(&c->timer_ev);
    int one = 1;
    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->tls && !tls_client_alpn_is_h2(bufferevent_openssl_get_ssl(c->bev))) {
        log_warn("h2 upstream %s: the backend did not select ALPN h2", c->name);
        conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    set_state(c, c->retiring ? H2U_DRAINING : H2U_READY);
    c->last_read_ms = sy_now_ms();
    if (c->ka_time_ms)
        arm_ms(&c->ka_ev, c->ka_time_ms);
    conn_pump(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        on_connected(c);
        return;
    }
    if (c->state == H2U_CONNECTING) {
        if (c->tls) {
            char buf[256];
            unsigned long e = bufferevent_get_openssl_error(bev);
            log_warn("h2 upstream %s: TLS: %s", c->name,
                     tls_client_error_str(bufferevent_openssl_get_ssl(bev), e, buf, sizeof buf));
            ERR_clear_error();
        } else {
            log_debug("h2 upstream %s: connect failed: %s", c->name,
                      evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
        conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (what & BEV_EVENT_EOF)
        log_debug("h2 upstream %s: closed by the backend", c->name);
    conn_fail(c, UPSTREAM_RESET);
}

static int session_new(struct h2_conn *c)
{
    struct h2_pools *ps = c->pools;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2U_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_HEADER_LIST},
    };
    nghttp2_mem mem = {&ps->w->h2_mem, mem_cache_malloc, mem_cache_free, mem_cache_calloc,
                       mem_cache_realloc};
    if (nghttp2_session_client_new3(&c->session, ps->cbs, c, ps->opt, &mem) != 0) {
        c->session = NULL;
        return SY_ENOMEM;
    }
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, H2U_CONN_WINDOW))
        return SY_ENOMEM;
    return 0;
}

static struct bufferevent *bev_new(struct h2_conn *c, const struct upstream_request *r)
{
    struct event_base *base = c->pools->w->base;
    if (!c->tls)
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    /* On failure sy_bev_openssl_new has freed the SSL (tls_bev.h). */
    return sy_bev_openssl_new(base, -1,
                              tls_client_ssl_new(c->pools->tls, r->svc, r->ep, r->cfg_version),
                              BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
}

static struct h2_conn *conn_new(struct h2_pools *ps, struct pool *p,
                                const struct upstream_request *r)
{
    const struct cfg_backend_service *svc = r->svc;
    const struct cfg_endpoint *ep = r->ep;
    struct event_base *base = ps->w->base;
    struct h2_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pools = ps;
    c->state = H2U_CONNECTING;
    c->tls = svc->protocol == CFG_BACKEND_HTTP2;
    c->ka_time_ms = svc->http2_keepalive.time_ms;
    c->ka_timeout_ms = svc->http2_keepalive.timeout_ms;
    snprintf(c->name, sizeof c->name, "%s", ep->address.text ? ep->address.text : "?");
    c->scratch = evbuffer_new();
    if (!c->scratch || session_new(c) != 0)
        goto fail;
    c->bev = bev_new(c, r);
    if (!c->bev)
        goto fail;
    evtimer_assign(&c->timer_ev, base, on_timer, c);
    evtimer_assign(&c->ka_ev, base, on_keepalive, c);
    event_assign(&c->flush_ev, base, -1, 0, on_flush, c);
    evtimer_assign(&c->reap_ev, base, on_reap, c);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, H2U_IN_CAP);
    bufferevent_setwatermark(c->bev, EV_WRITE, H2U_OUT_LOW, 0);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->ss, (int)p->len) != 0)
        goto fail;
    uint64_t ms = svc->connect_timeout_ms ? svc->connect_timeout_ms : H2U_CONNECT_TIMEOUT_MS;
    arm_ms(&c->timer_ev, ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->pool = p;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    c->all_next = ps->all;
    if (ps->all)
        ps->all->all_prev = c;
    ps->all = c;
    log_debug("h2 upstream %p %s: new connection (%s)", (void *)c, c->name, c->tls ? "h2" : "h2c");
    return c;
fail:
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->session)
        nghttp2_session_del(c->session);
    if (c->scratch)
        evbuffer_free(c->scratch);
    free(c);
    return NULL;
}

/* ---- pools ------------------------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool pool_matches(const struct pool *p, const struct cfg_backend_service *svc,
                         const struct cfg_addr *a)
{
    if (p->len != a->len || memcmp(&p->ss, &a->ss, a->len) != 0 || p->protocol != svc->protocol)
        return false;
    if (svc->protocol != CFG_BACKEND_HTTP2)
        return true;
    return p->verify == svc->tls.verify && str_eq(p->ca_file, svc->tls.ca_file) &&
           str_eq(p->sni, svc->tls.sni);
}

static void pool_free(struct pool *p)
{
    free(p->ca_file);
    free(p->sni);
    free(p);
}

static struct pool *pool_get(struct h2_pools *ps, const struct cfg_backend_service *svc,
                             const struct cfg_addr *a)
{
    for (struct pool *p = ps->pools; p; p = p->next)
        if (pool_matches(p, svc, a))
            return p;
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(&p->ss, &a->ss, a->len);
    p->len = a->len;
    p->protocol = svc->protocol;
    if (svc->protocol == CFG_BACKEND_HTTP2) {
        p->verify = svc->tls.verify;
        p->ca_file = svc->tls.ca_file ? strdup(svc->tls.ca_file) : NULL;
        p->sni = svc->tls.sni ? strdup(svc->tls.sni) : NULL;
        if ((svc->tls.ca_file && !p->ca_file) || (svc->tls.sni && !p->sni)) {
            pool_free(p);
            return NULL;
        }
    }
    p->next = ps->pools;
    ps->pools = p;
    return p;
}

/* Take `c` out of its pool; a pool left empty is freed. */
static void pool_unlink(struct h2_conn *c)
{
    struct pool *p = c->pool;
    if (!p)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->pool = NULL;
    if (p->conns)
        return;
    struct h2_pools *ps = c->pools;
    for (struct pool **pp = &ps->pools; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pool_free(p);
}

/*
 * Streams a connection may carry at once. Before its SETTINGS arrive, what
 * the backend announced on an earlier connection: a burst of new attempts
 * then spreads over new connections instead of piling onto one (where the
 * backend would refuse the excess, or nghttp2 would queue it).
 */
static unsigned conn_stream_limit(struct h2_conn *c)
{
    uint32_t max =
        nghttp2_session_get_remote_settings(c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (!c->got_settings && c->pool && c->pool->peer_max_streams)
        max = c->pool->peer_max_streams;
    return max < H2U_MAX_STREAMS ? max : H2U_MAX_STREAMS;
}

static struct h2_conn *pool_pick(struct pool *p)
{
    for (struct h2_conn *c = p->conns; c; c = c->next) {
        if ((c->state != H2U_READY && c->state != H2U_CONNECTING) || c->retiring)
            continue;
        if (nghttp2_session_check_request_allowed(c->session) &&
            c->n_streams < conn_stream_limit(c))
            return c;
    }
    return NULL;
}

struct h2_pools *h2_pools_new(struct worker *w)
{
    struct h2_pools *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->w = w;
    ps->tls = tls_client_cache_new();
    if (!ps->tls || nghttp2_session_callbacks_new(&ps->cbs) != 0 ||
        nghttp2_option_new(&ps->opt) != 0) {
        h2_pools_free(ps);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(ps->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(ps->cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ps->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(ps->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(ps->cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(ps->cbs, on_send_data);
    nghttp2_option_set_no_auto_window_update(ps->opt, 1);
    return ps;
}

void h2_pools_close_idle(struct h2_pools *ps)
{
    for (struct h2_conn *c = ps->all, *next; c; c = next) {
        next = c->all_next;
        if (c->state == H2U_CLOSED)
            continue;
        if (c->n_streams == 0) {
            conn_fail(c, UPSTREAM_RESET); /* nobody to tell */
            continue;
        }
        c->retiring = true;
        if (c->state == H2U_READY)
            set_state(c, H2U_DRAINING);
    }
}

void h2_pools_free(struct h2_pools *ps)
{
    if (!ps)
        return;
    ps->closing = true;
    while (ps->all) {
        struct h2_conn *c = ps->all;
        conn_fail(c, UPSTREAM_RESET);
        event_del(&c->reap_ev);
        on_reap(-1, 0, c);
    }
    while (ps->pools) {
        struct pool *p = ps->pools;
        ps->pools = p->next;
        pool_free(p);
    }
    tls_client_cache_free(ps->tls);
    if (ps->cbs)
        nghttp2_session_callbacks_del(ps->cbs);
    if (ps->opt)
        nghttp2_option_del(ps->opt);
    free(ps);
}

/* ---- attempt ops ------------------------------------------------------------------------------
 */

static void stream_resume(struct h2_stream *s)
{
    struct h2_conn *c = s->conn;
    if (s->deferred && c->state != H2U_CLOSED) {
        s->deferred = false;
        nghttp2_session_resume_data(c->session, s->id);
    }
    conn_schedule(c);
}

static void op_send_body(void *att, struct evbuffer *buf)
{
    struct h2_stream *s = att;
    if (s->body_end || s->conn->state == H2U_CLOSED) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    evbuffer_add_buffer(s->body, buf);
    if (evbuffer_get_length(s->body) >= SY_FLOW_HIGH)
        s->above_high = true;
    stream_resume(s);
}

/* Request trailers as nghttp2 name/value pairs pointing into the request's arena. */
static void set_trailers(struct h2_stream *s, const struct http_headers *t)
{
    nghttp2_nv *nv = arena_alloc(s->r->arena, t->n * sizeof *nv);
    size_t n = 0;
    if (!nv)
        return; /* the trailers are lost; the body still ends */
    for (uint32_t i = 0; i < t->n; i++) {
        const struct http_header *f = &t->v[i];
        if (f->name_len == 0 || f->name[0] == ':')
            continue;
        nv[n++] = (nghttp2_nv){(uint8_t *)(uintptr_t)f->name, (uint8_t *)(uintptr_t)f->value,
                               f->name_len, f->value_len, NGHTTP2_NV_FLAG_NONE};
    }
    s->trailer_nv = nv;
    s->n_trailer_nv = n;
}

static void op_send_end(void *att, const struct http_headers *trailers)
{
    struct h2_stream *s = att;
    if (s->body_end)
        return;
    s->body_end = true;
    if (trailers && trailers->n && s->r)
        set_trailers(s, trailers);
    stream_resume(s);
}

static size_t op_pending(void *att)
{
    struct h2_stream *s = att;
    return evbuffer_get_length(s->body);
}

static void op_read_response(void *att, bool enable)
{
    struct h2_stream *s = att;
    s->paused = !enable;
    if (enable && s->unconsumed && s->conn->state != H2U_CLOSED) {
        stream_consume_all(s); /* queues WINDOW_UPDATEs */
        conn_schedule(s->conn);
    }
}

static void op_cancel(void *att)
{
    struct h2_stream *s = att;
    struct h2_conn *c = s->conn;
    if (!s->r)
        return;
    stream_consume_all(s);
    s->r = NULL;
    if (c->state == H2U_CLOSED)
        return; /* freed in reap */
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    s->req_done = true;
    conn_schedule(c);
}

static const struct upstream_ops h2_upstream_ops = {
    .send_body = op_send_body,
    .send_end = op_send_end,
    .pending = op_pending,
    .read_response = op_read_response,
    .cancel = op_cancel,
};

/* ---- attempt start
 * --------------------------------------------------------------------------------- */

static bool is_connection_specific(const struct http_header *f)
{
    static const char *const names[] = {"connection",        "keep-alive",     "proxy-connection",
                                        "transfer-encoding", "upgrade",        "host",
                                        "http2-settings",    "content-length", NULL};
    for (const char *const *n = names; *n; n++)
        if (f->name_len == strlen(*n) && memcmp(f->name, *n, f->name_len) == 0)
            return true;
    if (f->name_len == 2 && memcmp(f->name, "te", 2) == 0)
        return !(f->value_len == 8 && strncasecmp(f->value, "trailers", 8) == 0);
    return false;
}

static nghttp2_nv make_nv(const char *name, size_t nlen, const char *value, size_t vlen)
{
    return (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, nlen, vlen,
                        NGHTTP2_NV_FLAG_NONE};
}

/* Submit the request HEADERS (and the body's data provider). Stream id or < 0. */
static int32_t submit_request(struct h2_conn *c, struct h2_stream *s, const struct cfg_endpoint *ep)
{
    const struct http_request_head *r = s->r->head;
    nghttp2_nv *nv = arena_alloc(s->r->arena, (r->headers.n + 5) * sizeof *nv);
    char cl[24];
    size_t n = 0;
    if (!nv)
        return -1;
    const char *scheme = c->tls ? "https" : "http";
    const char *auth = r->authority ? r->authority : ep->address.text;
    size_t auth_len = r->authority ? r->authority_len : strlen(ep->address.text);
    nv[n++] = make_nv(":method", 7, r->method, r->method_len);
    nv[n++] = make_nv(":scheme", 7, scheme, strlen(scheme));
    nv[n++] = make_nv(":authority", 10, auth, auth_len);
    nv[n++] = make_nv(":path", 5, r->path, r->path_len);
    for (uint32_t i = 0; i < r->headers.n; i++) {
        const struct http_header *f = &r->headers.v[i];
        if (!is_connection_specific(f))
            nv[n++] = make_nv(f->name, f->name_len, f->value, f->value_len);
    }
    if (r->has_body && r->content_length >= 0) {
        int len = (int)sy_u64_to_dec(cl, (uint64_t)r->content_length);
        nv[n++] = make_nv("content-length", 14, cl, (size_t)len);
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_body_read};
    return nghttp2_submit_request(c->session, NULL, nv, n, r->has_body ? &prd : NULL, s);
}

int h2_attempt_start(struct h2_pools *ps, const struct upstream_request *r,
                     struct upstream_attempt *out)
{
    const struct cfg_backend_service *svc = r->svc;
    const struct cfg_endpoint *ep = r->ep;
    if (ps->closing)
        return SY_EIO;
    struct pool *p = pool_get(ps, svc, &ep->address);
    if (!p)
        return SY_ENOMEM;
    struct h2_conn *c = pool_pick(p);
    bool fresh = false;
    if (!c) {
        /* circuit_breakers.max_connections */
        void *token = r->conn_enter(r->conn_arg);
        if (!token)
            return SY_ELIMIT;
        c = conn_new(ps, p, r);
        if (!c) {
            r->conn_leave(token);
            return SY_EIO;
        }
        c->conn_token = token;
        c->conn_leave = r->conn_leave;
        fresh = true;
    }
    struct h2_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->body = evbuffer_new()))
        goto fail;
    s->conn = c;
    s->r = r;
    s->req_done = !r->head->has_body;
    s->head.content_length = -1;
    s->id = submit_request(c, s, ep);
    if (s->id < 0)
        goto fail;
    s->reused = c->n_started++ > 0;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    c->n_streams++;
    if (c->state != H2U_CONNECTING)
        event_del(&c->timer_ev); /* no longer idle */
    out->ops = &h2_upstream_ops;
    out->att = s;
    conn_schedule(c);
    return 0;
fail:
    if (s)
        stream_free(s);
    if (fresh)
        conn_fail(c, UPSTREAM_CONNECT_FAILED); /* no stream: nobody is told */
    return SY_ENOMEM;
}
