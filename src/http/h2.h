/*
 * h2.h — the HTTP/2 glue of the three nghttp2 users: the downstream codec
 * (server sessions, src/listener/h2_downstream.c), the upstream codec
 * (client sessions, src/upstream/h2_upstream*.c) and the HTTP2/H2C/GRPC
 * health checks (client sessions, src/healthcheck/hc_h2.c). Each keeps its
 * own state machine and callbacks; what they have in common is written here
 * once:
 *
 *   setup    A codec describes its callbacks and options in a static const
 *            struct h2_session_def. h2_setup_init() turns it into nghttp2's
 *            callbacks and option objects once (per worker, or once on the
 *            main thread); they are immutable afterwards, and
 *            h2_session_new() makes every session from them, allocating
 *            from the worker's small-object cache (core/mem_cache.h).
 *   I/O      h2_session_recv() feeds an input evbuffer to nghttp2 without a
 *            copy; h2_session_send() drains nghttp2_session_mem_send() into
 *            an output evbuffer, up to a cap (one batch per loop turn).
 *   bodies   struct h2_body: a body leaves as DATA frames without a copy.
 *            The data provider answers NGHTTP2_DATA_FLAG_NO_COPY
 *            (h2_body_read) and the send_data callback moves the evbuffer
 *            chains into the output (h2_body_send); an empty body parks
 *            the provider (NGHTTP2_ERR_DEFERRED) until h2_body_resume().
 *   heads    name/value pairs (h2_nv, h2_nv_lit), name comparison against a
 *            literal (h2_name_is with SY_STRLIT), the fields that never cross
 *            into HTTP/2 HEADERS, header lists as nghttp2_nv.
 *
 * Nothing here allocates per request except h2_nv_copy (from the cache).
 * Sessions are single-threaded; a struct h2_setup may be shared by threads
 * (nghttp2 copies callbacks and options into each session).
 */
#ifndef SY_H2_H
#define SY_H2_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "http/http-t.h"

struct evbuffer;
struct mem_cache;

/* ---- setup ---------------------------------------------------------------------------------- */

/* One kind of session: callbacks (NULL = not set) and options. */
struct h2_session_def {
    bool server; /* nghttp2 server session (downstream); else a client session */
    nghttp2_on_begin_frame_callback on_begin_frame; /* every frame header, CONTINUATION too */
    nghttp2_on_begin_headers_callback on_begin_headers;
    nghttp2_on_header_callback on_header;
    /* Instead of on_header: the name and value as nghttp2's buffers, which
     * tell a static-table string (nghttp2_rcbuf_is_static: lives forever,
     * no copy needed) from a decoded one. */
    nghttp2_on_header_callback2 on_header2;
    nghttp2_on_frame_recv_callback on_frame_recv;
    nghttp2_on_frame_send_callback on_frame_send;
    nghttp2_on_data_chunk_recv_callback on_data_chunk_recv;
    nghttp2_on_stream_close_callback on_stream_close;
    nghttp2_send_data_callback send_data; /* for NO_COPY bodies: calls h2_body_send */
    /* No automatic WINDOW_UPDATE: the codec returns received DATA to the
     * peer's window with nghttp2_session_consume once it was forwarded. */
    bool manual_window;
    /* nghttp2_option_set_stream_reset_rate_limit: a bucket of `burst`
     * resets refilled at `rate` per second; 0 = nghttp2's default. */
    uint64_t reset_burst, reset_rate;
    size_t max_settings; /* SETTINGS entries accepted per frame; 0 = nghttp2's default */
    /* CONTINUATION frames after one HEADERS before the session fails with
     * NGHTTP2_ERR_TOO_MANY_CONTINUATIONS; 0 = nghttp2's default (8). */
    size_t max_continuations;
    /* SETTINGS and PING ACKs queued unsent before the session fails with
     * NGHTTP2_ERR_FLOODED (a peer that floods and does not read); 0 =
     * nghttp2's default (1000). */
    size_t max_outbound_ack;
};

/* nghttp2's objects built from a def: read-only once built. */
struct h2_setup {
    const struct h2_session_def *def;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
};

/*
 * Build `s` from `def` (kept by pointer: a static const). 0 or SY_ENOMEM;
 * on failure `s` holds nothing and h2_setup_fini() is still safe.
 */
int h2_setup_init(struct h2_setup *s, const struct h2_session_def *def);

/* Free what h2_setup_init built (a zeroed `s` too). Sessions made from it live on. */
void h2_setup_fini(struct h2_setup *s);

/*
 * A new session of s's kind whose callbacks get `user`, allocating from
 * `mc` (the calling worker's cache; NULL = malloc). 0 or SY_ENOMEM.
 */
int h2_session_new(const struct h2_setup *s, void *user, struct mem_cache *mc,
                   nghttp2_session **out);

/*
 * The page blocks (core/mem_cache.h) of one session: nghttp2's stream map
 * (4 KiB, calloc'd) and its frame buffer (16 KiB), which an idle HTTP/2
 * connection need not keep resident. A session made by h2_session_new_paged
 * allocates through it; `mc` is the worker's cache.
 */
#define H2_MEM_BLOCKS 4
struct h2_mem {
    struct mem_cache *mc;
    void *blk[H2_MEM_BLOCKS];  /* NULL = free slot; blocks past these are not tracked */
    size_t len[H2_MEM_BLOCKS]; /* the size nghttp2 asked for */
};

/* h2_session_new, allocating from m->mc through `m` (which must outlive the session). */
int h2_session_new_paged(const struct h2_setup *s, void *user, struct h2_mem *m,
                         nghttp2_session **out);

/*
 * For an idle connection (no stream open, its output written): give back
 * the pages of its session's page blocks that hold nothing: the all-zero
 * pages of any (the stream map with no stream in it), and the whole frame
 * buffer once nghttp2 has nothing left to send (the frame it last built
 * went out with the last nghttp2_session_mem_send, and the next one is
 * built from the buffer's start). Pages come back, zeroed, when written.
 * Returns the bytes given back.
 */
size_t h2_session_compact(struct h2_mem *m, nghttp2_session *ng);

/*
 * Submit our SETTINGS (iv[0..n)) and, when `conn_window` is above the
 * protocol's 65,535, open the connection's receive window to it (there is
 * no SETTINGS entry for that). 0, SY_EINVAL (a value out of range) or
 * SY_ENOMEM.
 */
int h2_submit_settings(nghttp2_session *ng, const nghttp2_settings_entry *iv, size_t n,
                       int32_t conn_window);

/* ---- I/O ------------------------------------------------------------------------------------ */

/*
 * Feed `in` to nghttp2 one contiguous chunk at a time (no copy), draining
 * what it took, until `in` is empty, `out` holds `out_cap` bytes or more
 * (out NULL: no such limit) or `*stop` is set (stop may be NULL; a callback
 * sets it to end the loop). The session's callbacks run inside. 0, or
 * nghttp2's negative error code (nghttp2_strerror names it).
 */
int h2_session_recv(nghttp2_session *ng, struct evbuffer *in, const struct evbuffer *out,
                    size_t out_cap, const bool *stop);

/*
 * Serialize pending frames into `out` until nghttp2 has nothing left, `out`
 * holds `cap` bytes or more, or `*stop` is set (stop may be NULL). NO_COPY
 * DATA reaches `out` through the session's send_data callback. 0, or a
 * negative nghttp2 error code (NGHTTP2_ERR_NOMEM: `out` could not grow).
 */
int h2_session_send(nghttp2_session *ng, struct evbuffer *out, size_t cap, const bool *stop);

/*
 * Append a GOAWAY frame (last stream `last_id`, `code`, debug text `debug`,
 * may be NULL) to `out` by hand: for a session nghttp2 gave up on (a fatal
 * error from nghttp2_session_mem_recv: flood, too many CONTINUATIONs, a
 * callback failure), which must not be used to send anything more. 0 or
 * SY_ENOMEM.
 */
int h2_goaway_write(struct evbuffer *out, int32_t last_id, uint32_t code, const char *debug);

/* ---- bodies: NO_COPY DATA ------------------------------------------------------------------- */

/*
 * A body on its way out. The owner moves bytes into `buf`
 * (evbuffer_add_buffer), sets `eof` (and `trailers`) once nothing more will
 * come, and calls h2_body_resume() after either.
 */
struct h2_body {
    struct evbuffer *buf; /* bytes not yet framed; the owner's */
    nghttp2_nv *trailers; /* sent after the last DATA frame, NULL = none; the owner's,
                             read when the body ends (nghttp2 copies them then) */
    size_t n_trailers;
    bool eof;      /* nothing more will be added to `buf` */
    bool deferred; /* the data provider is parked until h2_body_resume() */
};

/*
 * The data provider's read callback, for stream `id` of `ng`: the length of
 * the next DATA frame (at most `length`), NO_COPY set in `*flags`; EOF with
 * the last bytes once `eof` is set, and then trailers submitted (END_STREAM
 * moves to them; if they cannot be submitted the DATA frame ends the
 * stream). NGHTTP2_ERR_DEFERRED while `buf` is empty and `eof` unset.
 */
ssize_t h2_body_read(nghttp2_session *ng, int32_t id, struct h2_body *b, size_t length,
                     uint32_t *flags);

/*
 * The send_data callback's work: the 9-byte frame header, the pad length
 * and padding when the frame is padded, and `length` bytes moved (not
 * copied) from b->buf into `out`. 0 or NGHTTP2_ERR_CALLBACK_FAILURE.
 */
int h2_body_send(struct h2_body *b, const nghttp2_frame *f, const uint8_t *framehd, size_t length,
                 struct evbuffer *out);

/* Bytes or eof arrived: wake a parked data provider. Frames go at the next send. */
static inline void h2_body_resume(nghttp2_session *ng, int32_t id, struct h2_body *b)
{
    if (b->deferred) {
        b->deferred = false;
        nghttp2_session_resume_data(ng, id);
    }
}

/* ---- heads ---------------------------------------------------------------------------------- */

/*
 * Fields whose value is new on every request (request and trace ids) are
 * sent unindexed: on a connection that carries many requests each one
 * would be copied into the HPACK dynamic table and evict a field that does
 * repeat, for nothing.
 */
static inline uint8_t h2_nv_index_flag(const char *name, size_t name_len)
{
    if (name_len == 12 && memcmp(name, "x-request-id", 12) == 0)
        return NGHTTP2_NV_FLAG_NO_INDEX;
    if (name_len == 11 && memcmp(name, "traceparent", 11) == 0)
        return NGHTTP2_NV_FLAG_NO_INDEX;
    return NGHTTP2_NV_FLAG_NONE;
}

/* A name/value pair; nghttp2 copies both when the frame is submitted. */
static inline nghttp2_nv h2_nv(const char *name, size_t name_len, const char *value,
                               size_t value_len)
{
    return (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, name_len,
                        value_len, h2_nv_index_flag(name, name_len)};
}

/* Same for a literal name, given with SY_STRLIT: nghttp2 does not copy it. */
static inline nghttp2_nv h2_nv_lit(const char *name, size_t name_len, const char *value,
                                   size_t value_len)
{
    return (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, name_len,
                        value_len, NGHTTP2_NV_FLAG_NO_COPY_NAME};
}

/*
 * A header string from nghttp2 that outlives the callback: its static-table
 * string as is (NUL-terminated, forever), else a copy in the arena. NULL: no
 * memory.
 */
static inline const char *h2_rcbuf_keep(nghttp2_rcbuf *rb, struct arena *a)
{
    nghttp2_vec v = nghttp2_rcbuf_get_buf(rb);
    if (nghttp2_rcbuf_is_static(rb))
        return (const char *)v.base;
    return arena_strndup(a, (const char *)v.base, v.len);
}

/* Is `name` exactly the literal? h2_name_is(name, len, SY_STRLIT(":status")) */
static inline bool h2_name_is(const void *name, size_t len, const char *lit, size_t lit_len)
{
    return len == lit_len && memcmp(name, lit, len) == 0;
}

/*
 * A field never copied from a neutral head into HTTP/2 HEADERS: the
 * connection-specific ones (RFC 9113 8.2.2: connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade) and content-length, which
 * each codec writes itself from the head's content_length. (te and the
 * request-only fields are the request codec's call.)
 */
bool h2_field_skipped(const struct http_header *f);

/*
 * The fields of `h` as name/value pairs pointing into h's bytes, into `nv`
 * (room for h->n); pseudo-header and empty names are left out. The count.
 */
size_t h2_nv_from_headers(nghttp2_nv *nv, const struct http_headers *h);

/*
 * The fields of `h` copied, with their bytes, into one block from `mc`
 * (NULL = malloc): for trailers that outlive the list's arena. NULL when
 * out of memory; `*n` is set to the count otherwise. Free with h2_nv_free.
 */
nghttp2_nv *h2_nv_copy(const struct http_headers *h, struct mem_cache *mc, size_t *n);
void h2_nv_free(nghttp2_nv *nv, struct mem_cache *mc);

#endif
