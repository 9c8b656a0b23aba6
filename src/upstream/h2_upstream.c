/*
 * h2_upstream.c — HTTP/2 to backends (h2 over TLS with ALPN "h2", and h2c
 * by prior knowledge): per-worker pools of multiplexed connections, and the
 * codec that carries each attempt as one stream. Three files
 * (h2_upstream-int.h): this one, the connections; h2_upstream_stream.c, the
 * streams and the attempt ops; h2_upstream_pool.c, the pools. The nghttp2
 * plumbing shared with the downstream codec is in http/h2.h.
 *
 * Pools (h2_upstream_pool.c). An attempt takes the first connection of its
 * pool (endpoint address and transport setup) that accepts new streams and
 * has a free slot below the backend's SETTINGS_MAX_CONCURRENT_STREAMS
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
 *     h2_conn_fail() inside the pump only marks it, the pump closes it on the
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/h2_upstream-int.h"
#include "upstream/tls_client.h"
#include "core/bev_flush.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/timer.h"
#include "core/worker.h"

static const char *h2u_state_str(enum h2u_state s)
{
    static const char *const names[] = {"connecting", "ready", "draining", "closed"};
    return names[s];
}

static void set_state(struct h2_conn *c, enum h2u_state s)
{
    log_debug("h2 upstream %p %s: %s -> %s", (void *)c, c->name, h2u_state_str(c->state),
              h2u_state_str(s));
    c->state = s;
}

void h2_conn_schedule(struct h2_conn *c)
{
    if (c->state != H2U_CONNECTING && c->state != H2U_CLOSED)
        event_active(&c->flush_ev, EV_WRITE, 1);
}

void h2_conn_retire(struct h2_conn *c)
{
    c->retiring = true;
    if (c->state == H2U_READY)
        set_state(c, H2U_DRAINING);
}

/* ---- connection-level frames ----------------------------------------------------------- */

void h2_conn_on_frame(struct h2_conn *c, const nghttp2_frame *frame)
{
    switch (frame->hd.type) {
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
        h2_conn_retire(c);
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
                    c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        }
        break;
    default: break;
    }
}

/* ---- the pump --------------------------------------------------------------------------- */

/*
 * Input fed to nghttp2 while the output has room, then frames serialized
 * until the output is full or nothing is left; both stop once the
 * connection is marked for closing. 0 or SY_EPROTO.
 */
static int pump_io(struct h2_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int rc = h2_session_recv(c->session, in, out, H2U_OUT_CAP, &c->close_pending);
    if (rc == 0)
        rc = h2_session_send(c->session, out, H2U_OUT_CAP, &c->close_pending);
    if (rc == 0)
        return 0;
    log_info("h2 upstream %s: %s", c->name, nghttp2_strerror(rc));
    return SY_EPROTO;
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
        h2_conn_fail(c, UPSTREAM_RESET);
        return;
    }
    if (c->n_streams == 0 && !evtimer_pending(&c->timer_ev, NULL))
        sy_timer_arm_ms(&c->timer_ev, H2U_IDLE_MS);
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
    int rc = pump_io(c);
    c->in_pump = false;
    if (rc != 0 && !c->close_pending) {
        c->close_pending = true;
        c->close_err = UPSTREAM_PROTOCOL;
    }
    if (c->close_pending) {
        h2_conn_fail(c, c->close_err);
        return;
    }
    h2_conn_notify_drained(c);
    conn_check_idle(c);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_pump(arg);
}

/* ---- connection lifecycle ------------------------------------------------------------------ */

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    sy_list_unlink(&c->all_link);
    for (struct sy_link *l; (l = sy_list_first(&c->streams));) {
        sy_list_unlink(l);
        c->n_streams--;
        h2_stream_free(SY_CONTAINER_OF(l, struct h2_stream, link));
    }
    nghttp2_session_del(c->session);
    evbuffer_free(c->scratch);
    if (c->conn_token)
        c->conn_leave(c->conn_token);
    free(c);
}

void h2_conn_reap_now(struct h2_conn *c)
{
    sy_event_del(&c->reap_ev);
    on_reap(-1, 0, c);
}

void h2_conn_fail(struct h2_conn *c, enum upstream_error err)
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
    h2_pool_unlink(c);
    sy_event_del(&c->timer_ev);
    sy_event_del(&c->ka_ev);
    sy_event_del(&c->flush_ev);
    bufferevent_free(c->bev);
    c->bev = NULL;
    event_active(&c->reap_ev, EV_TIMEOUT, 1);
    /* The stream list cannot change now: nghttp2 is never called again on a
     * closed connection, and new attempts cannot find it. */
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next) {
        struct h2_stream *s = SY_CONTAINER_OF(l, struct h2_stream, link);
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
        h2_conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (c->n_streams == 0)
        h2_conn_fail(c, UPSTREAM_RESET); /* idle: no owner to tell */
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
        h2_conn_fail(c, UPSTREAM_RESET);
        return;
    }
    uint64_t idle = sy_now_ms() - c->last_read_ms;
    if (idle < c->ka_time_ms) {
        sy_timer_arm_ms(&c->ka_ev, c->ka_time_ms - idle);
        return;
    }
    if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) != 0) {
        h2_conn_fail(c, UPSTREAM_RESET);
        return;
    }
    c->ping_out = true;
    sy_timer_arm_ms(&c->ka_ev, c->ka_timeout_ms ? c->ka_timeout_ms : c->ka_time_ms);
    h2_conn_schedule(c);
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
    sy_event_del(&c->timer_ev);
    int one = 1;
    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->tls && !tls_client_alpn_is_h2(bufferevent_openssl_get_ssl(c->bev))) {
        log_warn("h2 upstream %s: the backend did not select ALPN h2", c->name);
        h2_conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    set_state(c, c->retiring ? H2U_DRAINING : H2U_READY);
    c->last_read_ms = sy_now_ms();
    if (c->ka_time_ms)
        sy_timer_arm_ms(&c->ka_ev, c->ka_time_ms);
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
        h2_conn_fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (what & BEV_EVENT_EOF)
        log_debug("h2 upstream %s: closed by the backend", c->name);
    h2_conn_fail(c, UPSTREAM_RESET);
}

static int session_new(struct h2_conn *c)
{
    struct h2_pools *ps = c->pools;
    static const nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2U_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2U_MAX_HEADER_LIST},
    };
    if (h2_session_new(&ps->setup, c, &ps->w->h2_mem, &c->session) != 0)
        return SY_ENOMEM;
    return h2_submit_settings(c->session, iv, sizeof iv / sizeof iv[0], H2U_CONN_WINDOW);
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

struct h2_conn *h2_conn_new(struct h2_pools *ps, struct pool *p, const struct upstream_request *r)
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
    sy_list_init(&c->streams);
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
    sy_bev_set_read_cap(c->bev, c->tls, H2U_IN_CAP);
    bufferevent_setwatermark(c->bev, EV_WRITE, H2U_OUT_LOW, 0);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->ss, (int)p->len) != 0)
        goto fail;
    if (!c->tls)
        sy_bev_direct_read(c->bev);
    uint64_t ms = svc->connect_timeout_ms ? svc->connect_timeout_ms : H2U_CONNECT_TIMEOUT_MS;
    sy_timer_arm_ms(&c->timer_ev, ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->pool = p;
    sy_list_insert_head(&p->conns, &c->pool_link);
    sy_list_insert_head(&ps->all, &c->all_link);
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
