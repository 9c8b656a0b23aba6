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
 * serialized once per loop turn (flush_d, on the worker's defer queue),
 * not once per submit.
 *
 * Abuse bounds (RFC 9113 10.5, and the floods Envoy's edge guide names):
 * each connection error ends in exactly one GOAWAY, then the connection
 * closes (state FAILING, h2_downstream-int.h). Stream id order, frame
 * floods (SETTINGS, PING, empty DATA, WINDOW_UPDATE, PRIORITY per second)
 * and Rapid Reset are checked on every frame header
 * (h2_downstream_guard.c); CONTINUATION and unread ACKs are limited by
 * nghttp2 (h2_down_session); a header block far over the limits ends the
 * connection (h2_downstream_head.c). Response bytes held for a client that
 * does not read are bounded by limits.max_stalled_streams and
 * limits.max_buffered_bytes (police_stalls). The heads are translated in
 * h2_downstream_head.c.
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "exchange/exchange.h"
#include "runtime.h"
#include "config/config-t.h"
#include "core/bev_flush.h"
#include "core/defer.h"
#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/worker.h"
#include "http/h2.h"
#include "http/headers.h"
#include "listener/h2_downstream-int.h"
#include "listener/listener-int.h"

#define H2_OUTPUT_CAP      (256 * 1024) /* serialized bytes queued on the socket */
#define H2_INPUT_CAP       (256 * 1024) /* stop reading the socket above this */
#define H2_GOAWAY_GRACE_MS 1000         /* between the shutdown notice and the final GOAWAY */
#define H2_LINGER_MS       1000         /* FAILING: reading and dropping after our GOAWAY */

static const char *h2d_state_str(enum h2d_state s)
{
    static const char *const names[] = {"open", "draining", "failing", "closed"};
    return names[s];
}

static const struct downstream_ops h2_downstream_ops;
static void conn_close(struct h2_down_conn *c);
static void flush(struct h2_down_conn *c);
static void conn_drain(struct h2_down_conn *c);

const struct cfg_listener *h2d_listener_cfg(const struct h2_down_conn *c)
{
    return listener_slot_cfg(c->lw, c->ci.listener_idx);
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
    if (c->state != H2D_CLOSED)
        sy_defer(&c->lw->w->defer, &c->flush_d);
}

/* The idle timeout: the shorter of timeouts.http_keepalive and
 * http2.max_connection_idle (0: none). */
static uint64_t idle_timeout_ms(const struct h2_down_conn *c)
{
    const struct cfg_listener *l = h2d_listener_cfg(c);
    uint64_t ms = l->timeouts.http_keepalive_ms;
    uint64_t mci = l->http2.max_connection_idle_ms;
    if (mci && (!ms || mci < ms))
        ms = mci;
    return ms;
}

/* The idle timer compacts first (on_idle): the idle timeout is longer than
 * H2D_COMPACT_MS, or there is none. */
static bool compacts_first(uint64_t idle_ms)
{
    return !idle_ms || idle_ms > H2D_COMPACT_MS;
}

/*
 * With no stream open, the idle timer runs; any stream stops it. It first
 * runs out after H2D_COMPACT_MS (when the idle timeout is longer), to give
 * back the pages nghttp2 holds for nothing while the connection is idle
 * (h2_session_compact), then at the idle timeout.
 */
static void update_idle(struct h2_down_conn *c)
{
    c->compacted = false;
    if (c->n_streams) {
        sy_deadline_cancel(&c->idle_timer); /* (a deadline: per stream, this is cheap) */
        return;
    }
    uint64_t ms = idle_timeout_ms(c);
    sy_deadline_arm(&c->idle_timer, compacts_first(ms) ? H2D_COMPACT_MS : ms);
}

/* ---- streams ------------------------------------------------------------------- */

static struct h2_stream *stream_new(struct h2_down_conn *c, int32_t id)
{
    struct h2_stream *st = mem_cache_calloc(1, sizeof *st, conn_mem(c));
    if (!st)
        return NULL;
    struct h2_down *d = c->lw->h2;
    st->out.buf = d->n_spare_bufs ? d->spare_bufs[--d->n_spare_bufs] : evbuffer_new();
    if (!st->out.buf) {
        mem_cache_free(st, conn_mem(c));
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
    if (c->hdr_st == st)
        c->hdr_st = NULL;
    sy_list_unlink(&st->link);
    c->n_streams--;
    c->buffered -= evbuffer_get_length(st->out.buf);
    if (st->full)
        c->n_full--;
    struct h2_down *d = c->lw->h2;
    if (d->n_spare_bufs < H2D_SPARE_BUFS && evbuffer_get_length(st->out.buf) == 0)
        d->spare_bufs[d->n_spare_bufs++] = st->out.buf; /* empty: as new */
    else
        evbuffer_free(st->out.buf);
    h2_nv_free(st->out.trailers, conn_mem(c));
    mem_cache_free(st, conn_mem(c));
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
 * The client is gone or reset the stream (or the proxy is closing the
 * connection: c->cut_flag): the exchange ends. Request bytes held back by
 * back-pressure go back to the connection's window first.
 */
static void stream_abort_exchange(struct h2_stream *st)
{
    struct exchange *ex = st->ex;
    size_t n = st->unconsumed;
    st->unconsumed = 0;
    st->req_paused = false;
    stream_consume(st, n);
    st->ex = NULL;
    if (ex && st->c->cut_flag)
        exchange_on_downstream_cut(ex, st->c->cut_flag);
    else if (ex)
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
    struct exchange *ex = st ? listener_exchange_new(c->lw, c->ci.listener_idx) : NULL;
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
    exchange_note_tls(ex, c->bev); /* access log: TLS version and SNI */
    memcpy(&ex->client_addr, &c->ci.peer, sizeof c->ci.peer);
    memcpy(&ex->local_addr, &c->ci.local, sizeof c->ci.local);
    ex->req.version = HTTP_2;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    c->hdr_st = st;
    c->hdr_id = f->hd.stream_id;
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *arg)
{
    struct h2_down_conn *c = arg;
    struct h2_stream *st = c->hdr_st && c->hdr_id == f->hd.stream_id
                               ? c->hdr_st
                               : nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    return h2d_request_field(c, st, f, name, value);
}

/*
 * ping_policy, as gRPC servers enforce it: a client PING is a strike when it
 * comes sooner than min_interval_without_data after the previous one while
 * no data is flowing, or at all when no stream is open and
 * permit_without_calls is false. Sending HEADERS or DATA clears the strikes.
 * More than max_strikes: GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
 */
static int police_ping(struct h2_down_conn *c)
{
    const struct cfg_listener *l = h2d_listener_cfg(c);
    uint64_t now = sy_now_ms();
    uint64_t min = l->http2.ping_min_interval_without_data_ms;
    bool strike = false;
    if (c->n_streams == 0 && !l->http2.ping_permit_without_calls)
        strike = true;
    else if (c->last_client_ping_ms && c->last_data_ms <= c->last_client_ping_ms &&
             now - c->last_client_ping_ms < min)
        strike = true;
    c->last_client_ping_ms = now;
    if (!strike || ++c->ping_strikes <= l->http2.ping_max_strikes)
        return 0;
    return h2d_fail(c, NGHTTP2_ENHANCE_YOUR_CALM, "too_many_pings");
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct h2_down_conn *c = arg;
    if (f->hd.type == NGHTTP2_PING) {
        if (f->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_outstanding = false;
            return 0;
        }
        return police_ping(c);
    }
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || !st->ex)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        h2d_request_head_done(c, st, end);
        return 0;
    }
    if (end && st->head_done)
        exchange_on_request_end(st->ex, st->req_trailers.n ? &st->req_trailers : NULL);
    return 0;
}

/*
 * RFC 9113 8.1: after a complete response, RST_STREAM NO_ERROR asks the
 * client to stop sending. Done for a refused tunnel whose client goes on
 * sending (its bytes are dropped), once the response is out.
 */
static void refused_tunnel_reset(struct h2_stream *st)
{
    if (!st->rst_after_end || !st->late_data || !st->resp_ended)
        return;
    st->rst_after_end = false;
    nghttp2_submit_rst_stream(st->c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    schedule_flush(st->c);
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *arg)
{
    struct h2_down_conn *c = arg;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (st && st->rst_after_end) {
        st->late_data = true;
        refused_tunnel_reset(st);
    }
    if (!st || !st->ex || !st->head_done) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it */
        return 0;
    }
    struct evbuffer *scratch = c->lw->h2->scratch;
    evbuffer_add(scratch, data, len);
    exchange_on_request_body(st->ex, scratch);
    evbuffer_drain(scratch, evbuffer_get_length(scratch));
    if (st->req_paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume(ng, id, len);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct h2_down_conn *c = arg;
    switch (f->hd.type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS: {
        c->data_sent += f->hd.type == NGHTTP2_DATA;
        c->last_data_ms = sy_now_ms();
        c->ping_strikes = 0;
        struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (st && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st->resp_ended = true;
            refused_tunnel_reset(st);
        }
        break;
    }
    case NGHTTP2_RST_STREAM:
        c->reset_ring[c->reset_pos++ % H2D_RESET_RING] = f->hd.stream_id;
        break;
    case NGHTTP2_GOAWAY: c->goaway_out = true; break;
    default: break;
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
    int rc = h2_body_send(&st->out, f, framehd, length, bufferevent_get_output(c->bev));
    if (rc == 0)
        c->buffered -= length;
    st->progress_ms = sy_now_ms();
    if (st->full && evbuffer_get_length(st->out.buf) < SY_FLOW_HIGH) {
        st->full = false;
        c->n_full--;
    }
    return rc;
}

static void op_send_head(struct exchange *ex, const struct http_response_head *h, bool end)
{
    struct h2_stream *st = ex->down_ctx;
    struct h2_down_conn *c = st->c;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = on_data_read};
    bool no_body = end || ex->is_head;
    h2d_response_head(c, st, ex, h, no_body ? NULL : &dp);
    if (no_body)
        st->out.eof = true;
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
    st->c->buffered += evbuffer_get_length(buf);
    evbuffer_add_buffer(st->out.buf, buf);
    if (!st->full && evbuffer_get_length(st->out.buf) >= SY_FLOW_HIGH) {
        st->full = true; /* police_stalls looks at it after the next send */
        st->progress_ms = sy_now_ms();
        st->c->n_full++;
    }
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

/* ---- limits on what a client that does not read may cost ------------------------------------ */

/* Reset a stalled stream: its queued response goes, its exchange (and backend attempt) ends. */
static void stream_calm_reset(struct h2_stream *st)
{
    struct h2_down_conn *c = st->c;
    size_t n = evbuffer_get_length(st->out.buf);
    c->buffered -= n;
    evbuffer_drain(st->out.buf, n);
    if (st->full) {
        st->full = false;
        c->n_full--;
    }
    stream_abort_exchange(st);
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_ENHANCE_YOUR_CALM);
    schedule_flush(c);
}

#define H2_STALL_MS 1000 /* a full stream without progress this long is stalled */

/*
 * Is `st` stalled? SY_FLOW_HIGH or more of its response queued, the
 * client's flow-control window (the stream's or the connection's) closed,
 * and no DATA of it sent for H2_STALL_MS. Otherwise, in `*wait` (ms), when
 * a full stream would become stalled at the earliest.
 */
static bool stream_stalled(const struct h2_down_conn *c, const struct h2_stream *st, uint64_t now,
                           uint64_t *wait)
{
    if (!st->full || !st->ex)
        return false;
    if (nghttp2_session_get_remote_window_size(c->ng) > 0 &&
        nghttp2_session_get_stream_remote_window_size(c->ng, st->id) > 0)
        return false; /* output-bound: the socket, not the client's windows, holds it */
    uint64_t since = now - st->progress_ms;
    if (since >= H2_STALL_MS)
        return true;
    if (H2_STALL_MS - since < *wait)
        *wait = H2_STALL_MS - since;
    return false;
}

/*
 * limits.max_stalled_streams and limits.max_buffered_bytes, after a send
 * (and at stall_ev): each stalled stream (stream_stalled: a client that
 * does not read it) holds its backend attempt and up to about two
 * SY_FLOW_HIGH of memory. While more streams are stalled than allowed, or
 * the connection holds more response bytes than allowed, the newest
 * stalled streams are reset (ENHANCE_YOUR_CALM) through their exchange,
 * which releases the backend. A client that reads, however slowly, keeps
 * its streams moving and is not affected.
 */
static void police_stalls(struct h2_down_conn *c)
{
    if (c->n_full == 0) {
        sy_event_del(&c->stall_ev);
        return;
    }
    const struct cfg_limits *lim = &h2d_listener_cfg(c)->limits;
    uint64_t now = sy_now_ms(), wait = UINT64_MAX;
    unsigned stalled = 0;
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next)
        stalled += stream_stalled(c, SY_CONTAINER_OF(l, struct h2_stream, link), now, &wait);
    /* Newest first (streams are inserted at the head): the oldest keep going. */
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next) {
        if (stalled <= lim->max_stalled_streams && c->buffered <= lim->max_buffered_bytes)
            break;
        struct h2_stream *st = SY_CONTAINER_OF(l, struct h2_stream, link);
        uint64_t ignored = UINT64_MAX;
        if (!stream_stalled(c, st, now, &ignored))
            continue;
        log_info("h2 downstream: stream %d stalled (%u stalled, %llu bytes held): reset", st->id,
                 stalled, (unsigned long long)c->buffered);
        stream_calm_reset(st);
        stalled--;
    }
    if (wait != UINT64_MAX)
        sy_timer_arm_ms(&c->stall_ev, wait);
    else
        sy_event_del(&c->stall_ev);
}

static void on_stall(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    if (c->state == H2D_OPEN || c->state == H2D_DRAINING)
        flush(c); /* police_stalls runs after its send */
}

/* ---- connection errors: one GOAWAY, then a lingering close --------------------------------- */

/*
 * FAILING, once the output is written: shut the write side (the client
 * reads our GOAWAY, then EOF) and keep reading and dropping until its EOF
 * or the linger timer, so our close does not turn into a reset that could
 * destroy the GOAWAY in flight.
 */
static void fail_progress(struct h2_down_conn *c)
{
    if (sy_bev_flush(c->bev, c->ci.tls) != 0) {
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
        return;
    }
    if (c->ci.tls)
        listener_tls_close_notify(c->bev);
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
}

/*
 * nghttp2_session_mem_recv failed with `rc`: the session is done for. A
 * peer that is not speaking HTTP/2 (bad preface) is closed at once;
 * otherwise one GOAWAY goes out, written by hand (nghttp2 must not be
 * called again): the code a callback chose (h2d_fail), or one for nghttp2's
 * own verdict (a flood, too many CONTINUATIONs: ENHANCE_YOUR_CALM).
 */
static void conn_fail(struct h2_down_conn *c, int rc)
{
    if (rc == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
        log_debug("h2 downstream %p: not an HTTP/2 preface; closing", (void *)c);
        conn_close(c);
        return;
    }
    uint32_t code = NGHTTP2_INTERNAL_ERROR;
    const char *why = c->fail_why;
    if (why)
        code = c->fail_code;
    else if (rc == NGHTTP2_ERR_FLOODED || rc == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
        code = NGHTTP2_ENHANCE_YOUR_CALM;
    if (!why)
        why = nghttp2_strerror(rc);
    log_info("h2 downstream: %s: GOAWAY %s", why, nghttp2_http2_strerror(code));
    set_state(c, H2D_FAILING);
    /* The exchanges end now: their backend attempts are of no use anymore. */
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next) {
        struct h2_stream *st = SY_CONTAINER_OF(l, struct h2_stream, link);
        struct exchange *ex = st->ex;
        st->ex = NULL;
        st->unconsumed = 0;
        if (ex)
            exchange_on_downstream_abort(ex);
    }
    sy_deadline_cancel(&c->idle_timer);
    sy_event_del(&c->keepalive_ev);
    sy_event_del(&c->age_ev);
    sy_event_del(&c->stall_ev);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (h2_goaway_write(bufferevent_get_output(c->bev),
                        nghttp2_session_get_last_proc_stream_id(c->ng), code, why) != 0) {
        conn_close(c);
        return;
    }
    sy_timer_arm_ms(&c->goaway_ev, H2_LINGER_MS); /* on_goaway closes a FAILING connection */
    fail_progress(c);
}

/* Serialize pending frames into the socket's output buffer, up to its cap. */
static void flush(struct h2_down_conn *c)
{
    sy_defer_cancel(&c->flush_d);
    if (c->state == H2D_CLOSED)
        return;
    if (c->state == H2D_FAILING) {
        fail_progress(c);
        return;
    }
    int rc = h2_session_send(c->ng, bufferevent_get_output(c->bev), H2_OUTPUT_CAP, NULL);
    if (rc != 0) {
        log_debug("h2 downstream %p: %s", (void *)c, nghttp2_strerror(rc));
        conn_close(c);
        return;
    }
    sy_bev_flush(c->bev, c->ci.tls);
    police_stalls(c);
    notify_drained(c);
    if (c->state != H2D_CLOSED)
        maybe_close(c);
}

static void on_flush(struct sy_defer *d)
{
    flush(SY_CONTAINER_OF(d, struct h2_down_conn, flush_d));
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct h2_down_conn *c = arg;
    c->last_read_ms = sy_now_ms();
    if (c->state == H2D_CLOSED)
        return;
    if (c->state == H2D_FAILING) { /* lingering: read and drop */
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    /* nghttp2's callbacks never close the connection: the loop runs to the end. */
    int rc = h2_session_recv(c->ng, bufferevent_get_input(bev), NULL, 0, NULL);
    if (rc != 0) {
        conn_fail(c, rc);
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

static void reap(struct h2_down_conn *c)
{
    struct listener_worker *lw = c->lw;
    int listener_idx = c->ci.listener_idx;
    sy_list_unlink(&c->link);
    free(c);
    listener_conn_closed(lw, listener_idx);
}

static void on_reap(struct sy_defer *d)
{
    reap(SY_CONTAINER_OF(d, struct h2_down_conn, reap_d));
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
    sy_defer_cancel(&c->flush_d);
    sy_deadline_del(&c->idle_timer);
    sy_event_del(&c->goaway_ev);
    sy_event_del(&c->keepalive_ev);
    sy_event_del(&c->age_ev);
    sy_event_del(&c->stall_ev);
    if (c->ci.tls)
        listener_tls_close_notify(c->bev);
    bufferevent_free(c->bev);
    c->bev = NULL;
    sy_defer(&c->lw->w->defer, &c->reap_d);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    if (c->n_streams)
        return;
    uint64_t ms = idle_timeout_ms(c);
    if (!c->compacted && compacts_first(ms)) {
        c->compacted = true;
        if (c->state == H2D_OPEN && c->ng)
            h2_session_compact(&c->mem, c->ng);
        if (ms)
            sy_deadline_arm(&c->idle_timer, ms - H2D_COMPACT_MS);
        return;
    }
    nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
    set_state(c, H2D_DRAINING);
    flush(c);
}

/* The final GOAWAY, one grace period after the shutdown notice. */
static void on_goaway(evutil_socket_t fd, short what, void *arg)
{
    struct h2_down_conn *c = arg;
    if (c->state == H2D_FAILING) { /* the linger after a connection error is over */
        conn_close(c);
        return;
    }
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
    const struct cfg_listener *l = h2d_listener_cfg(c);
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
    const struct cfg_listener *l = h2d_listener_cfg(c);
    if (c->age_reached) {
        c->cut_flag = EXF_MCA; /* max_connection_age_grace: streams still open are cut */
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
    .on_begin_frame = h2d_on_begin_frame,
    .on_begin_headers = on_begin_headers,
    .on_header2 = on_header,
    .on_frame_recv = on_frame_recv,
    .on_frame_send = on_frame_send,
    .on_data_chunk_recv = on_data_chunk_recv,
    .on_stream_close = on_stream_close,
    .send_data = on_send_data,
    .manual_window = true,      /* request DATA is consumed once forwarded */
    .reset_burst = RESET_BURST, /* a backstop: reset_count() trips first */
    .reset_rate = RESET_RATE,
    .max_settings = 32,
    .max_continuations = 8, /* a 64KiB head needs 4 with 16KiB frames */
    .max_outbound_ack = 1000,
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
    if (!(d->scratch = evbuffer_new())) {
        free(d);
        return NULL;
    }
    if (h2_setup_init(&d->setup, &h2_down_session) != 0) {
        evbuffer_free(d->scratch);
        free(d);
        return NULL;
    }
    lw->h2 = d;
    return d;
}

static int send_settings(struct h2_down_conn *c)
{
    const struct cfg_listener *l = h2d_listener_cfg(c);
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
    const struct cfg_listener *l = h2d_listener_cfg(c);
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
    if (!c) {
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
    sy_defer_init(&c->flush_d, on_flush);
    sy_deadline_assign(&c->idle_timer, w->base, on_idle, c);
    evtimer_assign(&c->goaway_ev, w->base, on_goaway, c);
    sy_defer_init(&c->reap_d, on_reap);
    evtimer_assign(&c->keepalive_ev, w->base, on_keepalive, c);
    evtimer_assign(&c->age_ev, w->base, on_age, c);
    evtimer_assign(&c->stall_ev, w->base, on_stall, c);
    c->last_read_ms = sy_now_ms();
    sy_list_insert_head(&d->conns, &c->link);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    sy_bev_set_read_cap(bev, c->ci.tls, H2_INPUT_CAP);
    bufferevent_setwatermark(bev, EV_WRITE, H2_OUTPUT_CAP / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (!c->ci.tls) /* plain sockets flush themselves (bev_flush.h) */
        bufferevent_disable(bev, EV_WRITE);
    c->mem.mc = &w->h2_mem;
    if (h2_session_new_paged(&d->setup, c, &c->mem, &c->ng) != 0 || send_settings(c) != 0) {
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
    /* A drain, or a listener a reload removed while this connection was in
     * its TLS handshake or an HTTP/1.1 Upgrade. */
    if (w->draining || listener_slot_removed(lw, ci->listener_idx))
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

void h2_downstream_drain_listener(struct listener_worker *lw, int slot)
{
    struct h2_down *d = lw->h2;
    for (struct sy_link *l = d ? d->conns.next : NULL; d && l != &d->conns; l = l->next) {
        struct h2_down_conn *c = SY_CONTAINER_OF(l, struct h2_down_conn, link);
        if (c->ci.listener_idx == slot)
            conn_drain(c);
    }
}

/* Close every connection now, and free the worker's HTTP/2 state. */
void h2_downstream_close_all(struct listener_worker *lw)
{
    struct h2_down *d = lw->h2;
    if (!d)
        return;
    for (struct sy_link *l; (l = sy_list_first(&d->conns));) {
        struct h2_down_conn *c = SY_CONTAINER_OF(l, struct h2_down_conn, link);
        c->cut_flag = EXF_DRT; /* the drain is over (or never began: no streams) */
        conn_close(c);
        sy_defer_cancel(&c->reap_d);
        reap(c);
    }
    h2_setup_fini(&d->setup);
    evbuffer_free(d->scratch);
    while (d->n_spare_bufs)
        evbuffer_free(d->spare_bufs[--d->n_spare_bufs]);
    free(d);
    lw->h2 = NULL;
}
