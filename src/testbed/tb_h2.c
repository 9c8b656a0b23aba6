/*
 * tb_h2.c — HTTP/2 for the testbed (h2 over TLS, h2c by prior knowledge or
 * by upgrade), on an nghttp2 server session driven with mem_recv/mem_send.
 *
 * Each request stream is an exchange; its body is counted as DATA arrives
 * (nghttp2 returns the flow-control window automatically, the bytes are
 * dropped). Response bodies come from a data provider that pulls from the
 * exchange: x-testbed-body-delay defers it (resumed by the exchange timer),
 * a reset point fails it (RST_STREAM INTERNAL_ERROR). Output is serialized
 * only while the socket's output holds less than TB_OUT_CAP, and input is
 * read only then, so neither side can make the testbed buffer without bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "testbed/testbed.h"

#define H2_STREAM_WINDOW (1 << 20)          /* SETTINGS_INITIAL_WINDOW_SIZE we announce */
#define H2_CONN_WINDOW   (16 << 20)         /* connection receive window */
#define H2_NV_MAX        (8 + TB_EXTRA_MAX) /* response header fields we may send */

struct tb_h2 {
    nghttp2_session *session;
    bool in_session; /* inside nghttp2_session_mem_recv/mem_send: do not pump */
};

static void h2_pump(struct tb_conn *c);

/* ---- receiving ------------------------------------------------------------------------ */

static struct tb_exchange *h2_exchange(nghttp2_session *s, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(s, stream_id);
}

static int on_h2_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    struct tb_conn *c = user_data;
    struct tb_exchange *ex;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    ex = tb_exchange_new(c, &tb_h2_exchange_ops, TB_HTTP2, frame->hd.stream_id);
    if (!ex)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream */
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, ex);
    return 0;
}

static int on_h2_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    struct tb_exchange *ex = h2_exchange(s, frame->hd.stream_id);
    struct tb_request *req;
    const char *n = (const char *)name, *v = (const char *)value;

    if (!ex || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are not echoed */
    req = &ex->req;
    if (namelen && n[0] == ':') {
        if (namelen == SY_STRLEN(":method") && memcmp(n, SY_STRLIT(":method")) == 0)
            tb_request_append(req, TB_PIECE_METHOD, true, v, valuelen);
        else if (namelen == SY_STRLEN(":path") && memcmp(n, SY_STRLIT(":path")) == 0)
            tb_request_append(req, TB_PIECE_PATH, true, v, valuelen);
        else if (namelen == SY_STRLEN(":authority") && memcmp(n, SY_STRLIT(":authority")) == 0)
            tb_request_append(req, TB_PIECE_AUTHORITY, true, v, valuelen);
        return 0;
    }
    tb_request_append(req, TB_PIECE_NAME, true, n, namelen);
    tb_request_append(req, TB_PIECE_VALUE, true, v, valuelen);
    return 0;
}

static int on_h2_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user_data)
{
    struct tb_exchange *ex = h2_exchange(s, stream_id);

    if (ex)
        ex->req.body_bytes += len;
    return 0;
}

static int on_h2_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user_data)
{
    struct tb_exchange *ex;

    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    ex = h2_exchange(s, frame->hd.stream_id);
    if (ex && ex->state == TB_EX_REQUEST)
        tb_exchange_request_done(ex); /* submits from inside the session: no pump */
    return 0;
}

static int on_h2_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    struct tb_exchange *ex = h2_exchange(s, stream_id);

    if (ex) {
        nghttp2_session_set_stream_user_data(s, stream_id, NULL);
        tb_exchange_retire(ex); /* freed by tb_conn_reap, after this callback */
    }
    return 0;
}

/* ---- sending ------------------------------------------------------------------------------ */

static nghttp2_nv h2_nv(const char *name, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, strlen(name),
                     strlen(value), NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* grpc-status and grpc-message fields into nva; returns how many. */
static size_t h2_grpc_fields(const struct tb_plan *p, nghttp2_nv *nva, char *status, size_t cap)
{
    size_t n = 0;

    snprintf(status, cap, "%d", p->grpc_status);
    nva[n++] = h2_nv("grpc-status", status);
    if (p->grpc_message)
        nva[n++] = h2_nv("grpc-message", p->grpc_message);
    return n;
}

static ssize_t on_h2_data_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                               uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct tb_exchange *ex = source->ptr;
    nghttp2_nv nva[2];
    char status[16];
    size_t n = 0, nnv;
    enum tb_pull st = tb_exchange_pull(ex, (char *)buf, length, &n);

    switch (st) {
    case TB_PULL_MORE: return (ssize_t)n;
    case TB_PULL_WAIT: return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    case TB_PULL_RESET:
        return n ? (ssize_t)n : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST INTERNAL_ERROR */
    case TB_PULL_EOF: break;
    }
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (ex->plan.grpc == TB_GRPC_TRAILERS) {
        nnv = h2_grpc_fields(&ex->plan, nva, status, sizeof(status));
        if (nghttp2_submit_trailer(s, stream_id, nva, nnv) == 0)
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* The response head; the body (if any) through on_h2_data_read. */
static void h2_op_respond(struct tb_exchange *ex)
{
    const struct tb_plan *p = &ex->plan;
    struct tb_h2 *h2 = ex->conn->h2;
    nghttp2_nv nva[H2_NV_MAX];
    char status[8], length[24], grpc[16];
    size_t n = 0;
    nghttp2_data_provider prd = {.source.ptr = ex, .read_callback = on_h2_data_read};
    bool provider = ex->limit > 0 || p->reset != TB_RESET_NONE || p->grpc == TB_GRPC_TRAILERS;

    snprintf(status, sizeof(status), "%d", p->status);
    nva[n++] = h2_nv(":status", status);
    if (p->content_type)
        nva[n++] = h2_nv("content-type", p->content_type);
    if (!p->no_body) {
        snprintf(length, sizeof(length), "%llu", (unsigned long long)p->body_len);
        nva[n++] = h2_nv("content-length", length);
    }
    if (p->grpc == TB_GRPC_TRAILERS_ONLY)
        n += h2_grpc_fields(p, nva + n, grpc, sizeof(grpc));
    for (unsigned i = 0; i < p->nextra; i++)
        nva[n++] = h2_nv(p->extra[i].name, p->extra[i].value);
    if (nghttp2_submit_response(h2->session, ex->stream_id, nva, n, provider ? &prd : NULL) != 0)
        nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, ex->stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
    if (!h2->in_session)
        h2_pump(ex->conn);
}

static void h2_op_resume_body(struct tb_exchange *ex)
{
    struct tb_h2 *h2 = ex->conn->h2;

    nghttp2_session_resume_data(h2->session, ex->stream_id);
    if (!h2->in_session)
        h2_pump(ex->conn);
}

static void h2_op_reset(struct tb_exchange *ex)
{
    struct tb_h2 *h2 = ex->conn->h2;

    nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, ex->stream_id,
                              NGHTTP2_INTERNAL_ERROR);
    if (!h2->in_session)
        h2_pump(ex->conn);
}

/* x-testbed-close on HTTP/2: the whole connection goes, without GOAWAY. */
static void h2_op_close(struct tb_exchange *ex)
{
    tb_conn_abort(ex->conn);
}

const struct tb_exchange_ops tb_h2_exchange_ops = {
    .respond = h2_op_respond,
    .resume_body = h2_op_resume_body,
    .reset = h2_op_reset,
    .close = h2_op_close,
};

/* ---- the pump ---------------------------------------------------------------------------------
 */

/* Feeds one chunk of input to the session. False when nothing was fed. */
static bool h2_recv_chunk(struct tb_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v;
    ssize_t rv;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return false;
    c->h2->in_session = true;
    rv = nghttp2_session_mem_recv(c->h2->session, v.iov_base, v.iov_len);
    c->h2->in_session = false;
    if (rv < 0) {
        tb_conn_abort(c);
        return false;
    }
    evbuffer_drain(in, (size_t)rv);
    return true;
}

/* Serializes frames while the output holds less than TB_OUT_CAP. */
static void h2_send(struct tb_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    while (!tb_conn_closing(c) && evbuffer_get_length(out) < TB_OUT_CAP) {
        const uint8_t *data;
        ssize_t n;

        c->h2->in_session = true;
        n = nghttp2_session_mem_send(c->h2->session, &data);
        c->h2->in_session = false;
        if (n < 0) {
            tb_conn_abort(c);
            return;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
}

/* Alternates input and output under the output cap; closes a finished session. */
static void h2_pump(struct tb_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    h2_send(c);
    while (!tb_conn_closing(c) && evbuffer_get_length(out) < TB_OUT_CAP && h2_recv_chunk(c))
        h2_send(c);
    if (tb_conn_closing(c))
        return;
    if (!nghttp2_session_want_read(c->h2->session) && !nghttp2_session_want_write(c->h2->session))
        tb_conn_close_after_flush(c);
}

void tb_h2_on_read(struct tb_conn *c)
{
    h2_pump(c);
}

void tb_h2_on_write(struct tb_conn *c)
{
    h2_pump(c);
}

/* ---- setup --------------------------------------------------------------------------------- */

static int h2_session_new(struct tb_conn *c, nghttp2_session **out)
{
    nghttp2_session_callbacks *cbs;
    int rv;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return SY_ENOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_h2_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_h2_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_h2_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_h2_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_h2_stream_close);
    rv = nghttp2_session_server_new(out, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    return rv == 0 ? 0 : SY_ENOMEM;
}

int tb_h2_start(struct tb_conn *c, const uint8_t *settings, size_t settings_len, bool head_request,
                struct tb_exchange *ex)
{
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, TB_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    struct tb_h2 *h2 = calloc(1, sizeof(*h2));
    int rc = SY_ENOMEM;

    if (!h2 || h2_session_new(c, &h2->session) != 0)
        goto fail;
    rc = SY_EPROTO;
    if (settings &&
        nghttp2_session_upgrade2(h2->session, settings, settings_len, head_request, ex) != 0)
        goto fail;
    if (nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) !=
            0 ||
        nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) !=
            0)
        goto fail;
    if (ex) {
        ex->ops = &tb_h2_exchange_ops;
        ex->stream_id = 1;
    }
    c->h2 = h2;
    return 0;

fail:
    if (h2)
        nghttp2_session_del(h2->session);
    free(h2);
    return rc;
}

void tb_h2_free(struct tb_h2 *h2)
{
    if (!h2)
        return;
    nghttp2_session_del(h2->session);
    free(h2);
}
