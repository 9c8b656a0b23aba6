/* h2.c — see h2.h. */
#include "http/h2.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/errors.h"
#include "core/mem_cache.h"
#include "core/strlit.h"

/* ---- setup ---------------------------------------------------------------------------------- */

static void set_callbacks(nghttp2_session_callbacks *cb, const struct h2_session_def *d)
{
    if (d->on_begin_frame)
        nghttp2_session_callbacks_set_on_begin_frame_callback(cb, d->on_begin_frame);
    if (d->on_begin_headers)
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, d->on_begin_headers);
    if (d->on_header)
        nghttp2_session_callbacks_set_on_header_callback(cb, d->on_header);
    if (d->on_header2)
        nghttp2_session_callbacks_set_on_header_callback2(cb, d->on_header2);
    if (d->on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, d->on_frame_recv);
    if (d->on_frame_send)
        nghttp2_session_callbacks_set_on_frame_send_callback(cb, d->on_frame_send);
    if (d->on_data_chunk_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, d->on_data_chunk_recv);
    if (d->on_stream_close)
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, d->on_stream_close);
    if (d->send_data)
        nghttp2_session_callbacks_set_send_data_callback(cb, d->send_data);
}

static void set_options(nghttp2_option *opt, const struct h2_session_def *d)
{
    if (d->manual_window)
        nghttp2_option_set_no_auto_window_update(opt, 1);
    if (d->reset_burst)
        nghttp2_option_set_stream_reset_rate_limit(opt, d->reset_burst, d->reset_rate);
    if (d->max_settings)
        nghttp2_option_set_max_settings(opt, d->max_settings);
    if (d->max_continuations)
        nghttp2_option_set_max_continuations(opt, d->max_continuations);
    if (d->max_outbound_ack)
        nghttp2_option_set_max_outbound_ack(opt, d->max_outbound_ack);
    /* Closed streams are kept only for the priority tree, which RFC 9113
     * deprecates and the proxy does not use. */
    nghttp2_option_set_no_closed_streams(opt, 1);
}

int h2_setup_init(struct h2_setup *s, const struct h2_session_def *def)
{
    s->def = def;
    s->cbs = NULL;
    s->opt = NULL;
    if (nghttp2_session_callbacks_new(&s->cbs) != 0 || nghttp2_option_new(&s->opt) != 0) {
        h2_setup_fini(s);
        return SY_ENOMEM;
    }
    set_callbacks(s->cbs, def);
    set_options(s->opt, def);
    return 0;
}

void h2_setup_fini(struct h2_setup *s)
{
    if (s->cbs)
        nghttp2_session_callbacks_del(s->cbs);
    if (s->opt)
        nghttp2_option_del(s->opt);
    s->cbs = NULL;
    s->opt = NULL;
}

int h2_session_new(const struct h2_setup *s, void *user, struct mem_cache *mc,
                   nghttp2_session **out)
{
    /* nghttp2 keeps a copy of `mem`, so a local one will do. */
    nghttp2_mem mem = {mc, mem_cache_malloc, mem_cache_free, mem_cache_calloc, mem_cache_realloc};
    nghttp2_mem *m = mc ? &mem : NULL;
    int rc = s->def->server ? nghttp2_session_server_new3(out, s->cbs, user, s->opt, m)
                            : nghttp2_session_client_new3(out, s->cbs, user, s->opt, m);
    if (rc != 0) {
        *out = NULL;
        return SY_ENOMEM;
    }
    return 0;
}

/* ---- paged sessions ---------------------------------------------------------------- */

/* nghttp2 1.52's frame buffer: one frame header, the padding length byte and
 * the largest payload (NGHTTP2_FRAMEBUF_CHUNKLEN in its nghttp2_session.h).
 * A block of another size is never taken for it: with another nghttp2 the
 * frame buffer is then only given back where it is all zeros. */
#define H2_FRAMEBUF_LEN (9 + 1 + 16384)

static void mem_note(struct h2_mem *m, void *old, void *p, size_t len)
{
    for (size_t i = 0; old && i < H2_MEM_BLOCKS; i++)
        if (m->blk[i] == old) {
            m->blk[i] = NULL;
            break;
        }
    if (!p || !mem_cache_page_block(m->mc, p))
        return;
    for (size_t i = 0; i < H2_MEM_BLOCKS; i++)
        if (!m->blk[i]) {
            m->blk[i] = p;
            m->len[i] = len;
            return;
        }
}

static void *paged_malloc(size_t size, void *user)
{
    struct h2_mem *m = user;
    void *p = mem_cache_malloc(size, m->mc);
    if (size >= MEM_PAGE)
        mem_note(m, NULL, p, size);
    return p;
}

static void paged_free(void *ptr, void *user)
{
    struct h2_mem *m = user;
    if (ptr && ((uintptr_t)ptr & (MEM_PAGE - 1)) == 0)
        mem_note(m, ptr, NULL, 0);
    mem_cache_free(ptr, m->mc);
}

static void *paged_calloc(size_t nmemb, size_t size, void *user)
{
    struct h2_mem *m = user;
    void *p = mem_cache_calloc(nmemb, size, m->mc);
    if (p && nmemb * size >= MEM_PAGE)
        mem_note(m, NULL, p, nmemb * size);
    return p;
}

static void *paged_realloc(void *ptr, size_t size, void *user)
{
    struct h2_mem *m = user;
    void *p = mem_cache_realloc(ptr, size, m->mc);
    if (p && p != ptr)
        mem_note(m, ptr, p, size);
    return p;
}

int h2_session_new_paged(const struct h2_setup *s, void *user, struct h2_mem *m,
                         nghttp2_session **out)
{
    memset(m->blk, 0, sizeof m->blk);
    nghttp2_mem mem = {m, paged_malloc, paged_free, paged_calloc, paged_realloc};
    int rc = s->def->server ? nghttp2_session_server_new3(out, s->cbs, user, s->opt, &mem)
                            : nghttp2_session_client_new3(out, s->cbs, user, s->opt, &mem);
    if (rc != 0) {
        *out = NULL;
        return SY_ENOMEM;
    }
    return 0;
}

size_t h2_session_compact(struct h2_mem *m, nghttp2_session *ng)
{
    bool nothing_to_send = !nghttp2_session_want_write(ng);
    size_t n = 0;
    for (size_t i = 0; i < H2_MEM_BLOCKS; i++)
        if (m->blk[i])
            n += mem_cache_release(m->mc, m->blk[i],
                                   nothing_to_send && m->len[i] == H2_FRAMEBUF_LEN);
    return n;
}

int h2_submit_settings(nghttp2_session *ng, const nghttp2_settings_entry *iv, size_t n,
                       int32_t conn_window)
{
    int rc = nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, iv, n);
    if (rc == 0 && conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        rc = nghttp2_session_set_local_window_size(ng, NGHTTP2_FLAG_NONE, 0, conn_window);
    if (rc == NGHTTP2_ERR_INVALID_ARGUMENT || rc == NGHTTP2_ERR_FLOW_CONTROL)
        return SY_EINVAL;
    return rc ? SY_ENOMEM : 0;
}

/* ---- I/O ------------------------------------------------------------------------------------ */

int h2_session_recv(nghttp2_session *ng, struct evbuffer *in, const struct evbuffer *out,
                    size_t out_cap, const bool *stop)
{
    while (evbuffer_get_length(in) && (!out || evbuffer_get_length(out) < out_cap) &&
           !(stop && *stop)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        ssize_t n = nghttp2_session_mem_recv(ng, v.iov_base, v.iov_len);
        if (n < 0)
            return (int)n;
        evbuffer_drain(in, (size_t)n);
    }
    return 0;
}

int h2_session_send(nghttp2_session *ng, struct evbuffer *out, size_t cap, const bool *stop)
{
    while (evbuffer_get_length(out) < cap && !(stop && *stop)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(ng, &data);
        if (n <= 0)
            return (int)n;
        if (evbuffer_add(out, data, (size_t)n) != 0)
            return NGHTTP2_ERR_NOMEM;
    }
    return 0;
}

int h2_goaway_write(struct evbuffer *out, int32_t last_id, uint32_t code, const char *debug)
{
    size_t dlen = debug ? strlen(debug) : 0;
    size_t len = 8 + dlen;
    uint8_t f[9 + 8] = {
        (uint8_t)(len >> 16),
        (uint8_t)(len >> 8),
        (uint8_t)len,
        NGHTTP2_GOAWAY,
        0,
        0,
        0,
        0,
        0,
        (uint8_t)((uint32_t)last_id >> 24 & 0x7f),
        (uint8_t)((uint32_t)last_id >> 16),
        (uint8_t)((uint32_t)last_id >> 8),
        (uint8_t)last_id,
        (uint8_t)(code >> 24),
        (uint8_t)(code >> 16),
        (uint8_t)(code >> 8),
        (uint8_t)code,
    };
    if (evbuffer_add(out, f, sizeof f) != 0 || (dlen && evbuffer_add(out, debug, dlen) != 0))
        return SY_ENOMEM;
    return 0;
}

/* ---- bodies --------------------------------------------------------------------------------- */

ssize_t h2_body_read(nghttp2_session *ng, int32_t id, struct h2_body *b, size_t length,
                     uint32_t *flags)
{
    size_t have = evbuffer_get_length(b->buf);
    size_t n = have < length ? have : length;
    if (n == 0 && !b->eof) {
        b->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (b->eof && n == have) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (b->n_trailers && nghttp2_submit_trailer(ng, id, b->trailers, b->n_trailers) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

int h2_body_send(struct h2_body *b, const nghttp2_frame *f, const uint8_t *framehd, size_t length,
                 struct evbuffer *out)
{
    static const uint8_t zeros[256];
    size_t padlen = f->data.padlen; /* includes the pad length byte */
    evbuffer_add(out, framehd, 9);
    if (padlen > 0) {
        uint8_t pl = (uint8_t)(padlen - 1);
        evbuffer_add(out, &pl, 1);
    }
    if (evbuffer_remove_buffer(b->buf, out, length) != (int)length)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (padlen > 1)
        evbuffer_add(out, zeros, padlen - 1);
    return 0;
}

/* ---- heads ---------------------------------------------------------------------------------- */

bool h2_field_skipped(const struct http_header *f)
{
    const char *n = f->name;
    switch (f->name_len) { /* by length first: one memcmp at most */
    case SY_STRLEN("upgrade"): return h2_name_is(n, f->name_len, SY_STRLIT("upgrade"));
    case SY_STRLEN("connection"): /* and keep-alive: both 10 */
        return h2_name_is(n, f->name_len, SY_STRLIT("connection")) ||
               h2_name_is(n, f->name_len, SY_STRLIT("keep-alive"));
    case SY_STRLEN("content-length"):
        return h2_name_is(n, f->name_len, SY_STRLIT("content-length"));
    case SY_STRLEN("proxy-connection"):
        return h2_name_is(n, f->name_len, SY_STRLIT("proxy-connection"));
    case SY_STRLEN("transfer-encoding"):
        return h2_name_is(n, f->name_len, SY_STRLIT("transfer-encoding"));
    default: return false;
    }
}

size_t h2_nv_from_headers(nghttp2_nv *nv, const struct http_headers *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (f->name_len == 0 || f->name[0] == ':')
            continue;
        nv[n++] = h2_nv(f->name, f->name_len, f->value, f->value_len);
    }
    return n;
}

nghttp2_nv *h2_nv_copy(const struct http_headers *h, struct mem_cache *mc, size_t *n)
{
    size_t bytes = sizeof(nghttp2_nv) * h->n;
    for (uint32_t i = 0; i < h->n; i++)
        bytes += h->v[i].name_len + h->v[i].value_len;
    if (!bytes)
        bytes = 1;
    nghttp2_nv *nv = mc ? mem_cache_malloc(bytes, mc) : malloc(bytes);
    if (!nv)
        return NULL;
    uint8_t *p = (uint8_t *)(nv + h->n);
    for (uint32_t i = 0; i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        nv[i] = (nghttp2_nv){p, p + f->name_len, f->name_len, f->value_len, NGHTTP2_NV_FLAG_NONE};
        memcpy(p, f->name, f->name_len);
        memcpy(p + f->name_len, f->value, f->value_len);
        p += f->name_len + f->value_len;
    }
    *n = h->n;
    return nv;
}

void h2_nv_free(nghttp2_nv *nv, struct mem_cache *mc)
{
    if (mc)
        mem_cache_free(nv, mc);
    else
        free(nv);
}
