/*
 * h2_upstream_stream.c — the streams of the HTTP/2 upstream codec: one
 * attempt is one stream. nghttp2's stream callbacks turn the response into
 * upstream_cbs calls; the attempt ops queue the request body, which leaves
 * through the NO_COPY data provider (http/h2.h). The codec as a whole, its
 * re-entrancy rules and its flow control are described in h2_upstream.c.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "upstream/h2_upstream-int.h"
#include "core/arena.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/mem_cache.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/worker.h"
#include "http/headers.h"

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
    return nghttp2_session_get_stream_user_data(session, id);
}

/* Streams come from the worker's small-object cache, as nghttp2's own state does. */
static struct mem_cache *stream_mem(const struct h2_conn *c)
{
    return &c->pools->w->h2_mem;
}

void h2_stream_free(struct h2_stream *s)
{
    if (s->conn->hdr_s == s)
        s->conn->hdr_s = NULL;
    if (s->body.buf)
        evbuffer_free(s->body.buf);
    mem_cache_free(s, stream_mem(s->conn));
}

static void stream_unlink(struct h2_stream *s)
{
    sy_list_unlink(&s->link);
    s->conn->n_streams--;
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
        h2_conn_schedule(c);
    }
    return r;
}

/* ---- nghttp2 callbacks: response ------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *s = stream_of(session, frame->hd.stream_id);
    if (frame->hd.type != NGHTTP2_HEADERS || !s || !s->r)
        return 0;
    c->hdr_s = s;
    c->hdr_id = frame->hd.stream_id;
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

/* A decimal header value; -1 when it is not one. nghttp2 checked the syntax already. */
static int64_t header_dec(const uint8_t *v, size_t len)
{
    uint64_t n;
    return sy_parse_dec(v, len, INT64_MAX, &n) == 0 ? (int64_t)n : -1;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, nghttp2_rcbuf *name_rb,
                     nghttp2_rcbuf *value_rb, uint8_t flags, void *arg)
{
    struct h2_conn *c = arg;
    nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_rb), vv = nghttp2_rcbuf_get_buf(value_rb);
    const uint8_t *name = nv.base, *value = vv.base;
    size_t namelen = nv.len, valuelen = vv.len;
    struct h2_stream *s = c->hdr_s && c->hdr_id == frame->hd.stream_id
                              ? c->hdr_s
                              : stream_of(session, frame->hd.stream_id);
    if (frame->hd.type != NGHTTP2_HEADERS || !s || !s->r)
        return 0;
    struct arena *a = s->r->arena;
    struct http_headers *list = s->head_done ? &s->trailers : &s->head.headers;
    if (!s->head_done) {
        if (namelen && name[0] == ':') {
            if (h2_name_is(name, namelen, SY_STRLIT(":status")))
                s->head.status = (int)header_dec(value, valuelen);
            return 0; /* pseudo-headers do not travel on */
        }
        if (h2_name_is(name, namelen, SY_STRLIT("content-length"))) {
            s->head.content_length = header_dec(value, valuelen);
            return 0; /* the downstream codec frames the body itself */
        }
    }
    const char *n = h2_rcbuf_keep(name_rb, a), *v = h2_rcbuf_keep(value_rb, a);
    if (!n || !v || http_headers_add(list, a, n, namelen, v, valuelen) != 0) {
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
    default: h2_conn_on_frame(arg, frame); break;
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
    h2_stream_free(s);
    return 0;
}

/* ---- nghttp2 callbacks: request body -------------------------------------------------------- */

static ssize_t on_body_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *arg)
{
    struct h2_stream *s = source->ptr;
    if (!s->r)
        s->body.n_trailers = 0; /* cancelled: the trailers' arena is gone */
    ssize_t n = h2_body_read(session, id, &s->body, length, flags);
    if (*flags & NGHTTP2_DATA_FLAG_EOF)
        s->req_done = true;
    return n;
}

/* NO_COPY: the body bytes move (not copied) to the socket; then the drain check. */
static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *s = source->ptr;
    int rc = h2_body_send(&s->body, frame, framehd, length, bufferevent_get_output(c->bev));
    if (rc == 0 && s->above_high && evbuffer_get_length(s->body.buf) < SY_FLOW_LOW) {
        s->above_high = false;
        s->drained = true;
        c->any_drained = true;
    }
    return rc;
}

const struct h2_session_def h2_upstream_session = {
    .server = false,
    .on_begin_headers = on_begin_headers,
    .on_header2 = on_header,
    .on_data_chunk_recv = on_data_chunk,
    .on_frame_recv = on_frame_recv,
    .on_stream_close = on_stream_close,
    .send_data = on_send_data,
    .manual_window = true, /* response DATA is consumed once the client side took it */
};

void h2_conn_notify_drained(struct h2_conn *c)
{
    if (!c->any_drained)
        return;
    c->any_drained = false;
    for (struct sy_link *l = c->streams.next; l != &c->streams; l = l->next) {
        struct h2_stream *s = SY_CONTAINER_OF(l, struct h2_stream, link);
        if (!s->drained)
            continue;
        s->drained = false;
        if (s->r)
            s->r->cbs->on_drained(s->r->ctx);
    }
}

/* ---- attempt ops ---------------------------------------------------------------------------- */

static void stream_resume(struct h2_stream *s)
{
    struct h2_conn *c = s->conn;
    if (c->state != H2U_CLOSED)
        h2_body_resume(c->session, s->id, &s->body);
    h2_conn_schedule(c);
}

static void op_send_body(void *att, struct evbuffer *buf)
{
    struct h2_stream *s = att;
    if (s->body.eof || s->conn->state == H2U_CLOSED) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    if (!s->body.buf && !(s->body.buf = evbuffer_new())) {
        evbuffer_drain(buf, evbuffer_get_length(buf)); /* no memory: the body is cut */
        return;
    }
    evbuffer_add_buffer(s->body.buf, buf);
    if (evbuffer_get_length(s->body.buf) >= SY_FLOW_HIGH)
        s->above_high = true;
    stream_resume(s);
}

/* Request trailers as name/value pairs pointing into the request's arena. */
static void set_trailers(struct h2_stream *s, const struct http_headers *t)
{
    nghttp2_nv *nv = arena_alloc(s->r->arena, t->n * sizeof *nv);
    if (!nv)
        return; /* the trailers are lost; the body still ends */
    s->body.trailers = nv;
    s->body.n_trailers = h2_nv_from_headers(nv, t);
}

static void op_send_end(void *att, const struct http_headers *trailers)
{
    struct h2_stream *s = att;
    if (s->body.eof)
        return;
    s->body.eof = true;
    if (trailers && trailers->n && s->r)
        set_trailers(s, trailers);
    stream_resume(s);
}

static size_t op_pending(void *att)
{
    struct h2_stream *s = att;
    return s->body.buf ? evbuffer_get_length(s->body.buf) : 0;
}

static void op_read_response(void *att, bool enable)
{
    struct h2_stream *s = att;
    s->paused = !enable;
    if (enable && s->unconsumed && s->conn->state != H2U_CLOSED) {
        stream_consume_all(s); /* queues WINDOW_UPDATEs */
        h2_conn_schedule(s->conn);
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
    h2_conn_schedule(c);
}

static const struct upstream_ops h2_upstream_ops = {
    .send_body = op_send_body,
    .send_end = op_send_end,
    .pending = op_pending,
    .read_response = op_read_response,
    .cancel = op_cancel,
};

/* ---- attempt start -------------------------------------------------------------------------- */

/*
 * Request fields that stay behind besides h2_field_skipped(): Host (it is
 * :authority), HTTP2-Settings, and TE unless it is "trailers" (RFC 9113 8.2.2).
 */
static bool request_field_skipped(const struct http_header *f)
{
    if (h2_field_skipped(f) || h2_name_is(f->name, f->name_len, SY_STRLIT("host")) ||
        h2_name_is(f->name, f->name_len, SY_STRLIT("http2-settings")))
        return true;
    if (h2_name_is(f->name, f->name_len, SY_STRLIT("te")))
        return !(f->value_len == SY_STRLEN("trailers") &&
                 strncasecmp(f->value, SY_STRLIT("trailers")) == 0);
    return false;
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
    const char *ep_name =
        ep->origin ? ep->origin : ep->address.text; /* a DNS name, if discovered */
    const char *auth = r->authority ? r->authority : ep_name;
    size_t auth_len = r->authority ? r->authority_len : strlen(ep_name);
    nv[n++] = h2_nv_lit(SY_STRLIT(":method"), r->method, r->method_len);
    nv[n++] = h2_nv_lit(SY_STRLIT(":scheme"), scheme, strlen(scheme));
    nv[n++] = h2_nv_lit(SY_STRLIT(":authority"), auth, auth_len);
    nv[n++] = h2_nv_lit(SY_STRLIT(":path"), r->path, r->path_len);
    for (uint32_t i = 0; i < r->headers.n; i++) {
        const struct http_header *f = &r->headers.v[i];
        if (!request_field_skipped(f))
            nv[n++] = h2_nv(f->name, f->name_len, f->value, f->value_len);
    }
    if (r->has_body && r->content_length >= 0) {
        size_t len = sy_u64_to_dec(cl, (uint64_t)r->content_length);
        nv[n++] = h2_nv_lit(SY_STRLIT("content-length"), cl, len);
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = on_body_read};
    return nghttp2_submit_request(c->session, NULL, nv, n, r->has_body ? &prd : NULL, s);
}

int h2_stream_start(struct h2_conn *c, const struct upstream_request *r,
                    struct upstream_attempt *out)
{
    struct h2_stream *s = mem_cache_calloc(1, sizeof *s, stream_mem(c));
    if (!s)
        return SY_ENOMEM;
    s->conn = c;
    /* The body buffer only for a request with a body (a GET needs none). */
    if (r->head->has_body && !(s->body.buf = evbuffer_new()))
        goto fail;
    s->r = r;
    s->req_done = !r->head->has_body;
    s->head.content_length = -1;
    s->id = submit_request(c, s, r->ep);
    if (s->id < 0)
        goto fail;
    s->reused = c->n_started++ > 0;
    sy_list_insert_head(&c->streams, &s->link);
    c->n_streams++;
    if (c->state != H2U_CONNECTING)
        sy_event_del(&c->timer_ev); /* no longer idle */
    out->ops = &h2_upstream_ops;
    out->att = s;
    h2_conn_schedule(c);
    return 0;
fail:
    h2_stream_free(s);
    return SY_ENOMEM;
}
