/*
 * h2_downstream-int.h — private to src/listener/h2_downstream*.c: the
 * connection and stream of the HTTP/2 downstream codec, shared by the
 * connection code (h2_downstream.c: I/O, streams, limits, floods) and the
 * head translation (h2_downstream_head.c: request fields in, response
 * fields out).
 */
#ifndef SY_H2_DOWNSTREAM_INT_H
#define SY_H2_DOWNSTREAM_INT_H

#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/defer.h"
#include "core/list.h"
#include "core/timer.h"
#include "http/h2.h"
#include "http/http-t.h"
#include "listener/listener-int.h"

struct exchange;
struct cfg_listener;
struct http_response_head;

/*
 * Connection states:
 *   OPEN      serving streams
 *   DRAINING  GOAWAY sent (shutdown notice, then the final one); no new
 *             streams; closes when the last stream ends
 *   FAILING   a connection error: one GOAWAY with its code is queued, the
 *             client's bytes are read and dropped; once the GOAWAY is
 *             written the write side is shut, then the socket closes (at
 *             the client's EOF or H2_LINGER_MS later)
 *   CLOSED    freed on a later loop turn
 */
enum h2d_state { H2D_OPEN, H2D_DRAINING, H2D_FAILING, H2D_CLOSED };

/* Empty response-body buffers kept for the worker's next streams: an
 * evbuffer_new and evbuffer_free per stream cost ~600 instructions. */
#define H2D_SPARE_BUFS 64

/* No stream open for this long: the session's idle pages go back (update_idle). */
#define H2D_COMPACT_MS 250

/* The worker's HTTP/2 downstream (listener_worker.h2). */
struct h2_down {
    struct sy_link conns;     /* struct h2_down_conn.link */
    struct h2_setup setup;    /* nghttp2 callbacks and options of every session */
    struct evbuffer *scratch; /* request DATA of one callback, for the exchange */
    struct evbuffer *spare_bufs[H2D_SPARE_BUFS];
    unsigned n_spare_bufs;
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
    bool head_too_large;    /* over max_header_list_size or limits.max_request_headers: 431 */
    bool malformed;         /* a :path, :authority or host RFC 9113 8.3.1 calls malformed: 400 */
    bool rst_after_end;     /* refused tunnel: RST_STREAM NO_ERROR once the response ended, */
    bool late_data;         /* ... if the client sent DATA after the refusal */
    bool resp_ended;        /* END_STREAM went out */
    bool full;              /* `out` holds SY_FLOW_HIGH or more (counted in c->n_full) */
    size_t unconsumed;      /* request DATA not yet returned to the client's window */
    uint64_t progress_ms;   /* while `full`: when it became full or last sent DATA */
    uint64_t header_bytes;  /* name + value + 32 per field (max_header_list_size) */
    uint32_t header_fields; /* regular fields (limits.max_request_headers) */
    struct http_headers req_trailers;
    struct sy_link link; /* struct h2_down_conn.streams, newest first */
};

/* Frames of one kind counted per second (flood limits, h2_downstream.c). */
enum h2d_flood {
    FLOOD_SETTINGS,
    FLOOD_PING,
    FLOOD_EMPTY_DATA,
    FLOOD_WINDOW_UPDATE,
    FLOOD_PRIORITY,
    FLOOD_KINDS
};

#define H2D_RESET_RING 16 /* streams we reset lately, whose HEADERS are ignored */

struct h2_down_conn {
    struct listener_worker *lw;
    struct conn_info ci; /* listener slot, TLS, addresses */
    struct bufferevent *bev;
    nghttp2_session *ng;
    enum h2d_state state;
    struct sy_link streams; /* struct h2_stream.link */
    unsigned n_streams;
    /* The stream whose header block is being received (one at a time in
     * HTTP/2): on_header finds it without a lookup per field. */
    struct h2_stream *hdr_st;
    int32_t hdr_id;
    bool ping_outstanding;        /* our keepalive PING awaits its ACK */
    bool goaway_out;              /* FAILING: the GOAWAY left nghttp2 */
    uint64_t last_read_ms;        /* last bytes from the client (keepalive) */
    uint64_t last_client_ping_ms; /* ping_policy: previous PING from the client */
    uint64_t last_data_ms;        /* last HEADERS/DATA sent (ping_policy resets strikes) */
    unsigned ping_strikes;
    /* A connection error found inside an nghttp2 callback: its code and
     * reason, for the GOAWAY sent once nghttp2_session_mem_recv returned. */
    uint32_t fail_code;
    const char *fail_why;
    int32_t max_client_id;              /* highest stream id the client opened (HEADERS) */
    int32_t reset_ring[H2D_RESET_RING]; /* stream ids of RST_STREAMs we sent lately */
    unsigned reset_pos;
    uint64_t flood_window_ms;    /* start of the current one-second window */
    uint32_t flood[FLOOD_KINDS]; /* frames of each kind in that window */
    uint32_t data_sent;          /* DATA frames sent in that window */
    uint64_t reset_budget;       /* RST_STREAMs the client may still send, in 1/1000s */
    uint64_t reset_refill_ms;    /* when reset_budget was last refilled */
    uint64_t buffered;           /* response bytes queued in every stream's `out` */
    unsigned n_full;             /* streams with SY_FLOW_HIGH or more queued */
    struct sy_defer flush_d;     /* frames out once per loop turn (worker's defer queue) */
    struct sy_defer reap_d;      /* the free, once no callback of ours is on the stack */
    struct event goaway_ev;
    struct sy_deadline idle_timer; /* no stream open: update_idle */
    struct h2_mem mem;             /* the session's page blocks (h2_session_compact) */
    bool compacted;                /* given back since the last stream ended */
    struct event keepalive_ev;     /* keepalive.time, then keepalive.timeout */
    struct event age_ev;           /* max_connection_age, then its grace */
    struct event stall_ev;         /* the next full stream to count as stalled (police_stalls) */
    bool age_reached;
    unsigned cut_flag;   /* EXF_DRT/EXF_MCA: the proxy is closing it, 0 = the client */
    struct sy_link link; /* struct h2_down.conns */
};

/* The listener's settings (from the worker's current runtime). */
const struct cfg_listener *h2d_listener_cfg(const struct h2_down_conn *c);

/*
 * Inside an nghttp2 callback: end the connection with GOAWAY `code`
 * (reason `why`, a literal) once nghttp2_session_mem_recv returns. Returns
 * NGHTTP2_ERR_CALLBACK_FAILURE, for the callback to return: nghttp2 stops
 * at once, so no more bytes of a flood are looked at.
 */
int h2d_fail(struct h2_down_conn *c, uint32_t code, const char *why);

/* ---- h2_downstream_guard.c --------------------------------------------------------------- */

#define RESET_BURST 1000 /* Rapid Reset: client RST_STREAMs at once ... */
#define RESET_RATE  33   /* ... and per second after that */

/*
 * nghttp2's on_begin_frame_callback (user data: the connection): stream id
 * order and the flood limits. 0, or h2d_fail's code.
 */
int h2d_on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg);

/* ---- h2_downstream_head.c ---------------------------------------------------------------- */

/*
 * One field of a request head or trailers (on_header_callback), counted
 * against max_header_list_size and limits.max_request_headers: past
 * either the stream gets 431 once its head is complete; past
 * H2D_GROSS_FACTOR times either, the connection ends (h2d_fail,
 * ENHANCE_YOUR_CALM). A malformed :path or :authority marks the stream.
 * 0, NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE (out of memory: the stream is
 * reset) or h2d_fail's code.
 */
int h2d_request_field(struct h2_down_conn *c, struct h2_stream *st, const nghttp2_frame *f,
                      nghttp2_rcbuf *name, nghttp2_rcbuf *value);

/*
 * The request head of `st` is complete: check it, fill the neutral fields
 * and start the exchange (router_start), or answer 400 (malformed) or 431
 * (over the limits) without forwarding anything.
 */
void h2d_request_head_done(struct h2_down_conn *c, struct h2_stream *st, bool end_stream);

/*
 * Submit the response head `h` on `st` (with the data provider `dp`, NULL
 * when the response has no body). A 101 to an extended CONNECT becomes
 * 200 (RFC 8441); any other answer to one marks the stream (rst_after_end)
 * to be reset NO_ERROR once the response ended, if the client goes on
 * sending DATA meanwhile or after.
 */
void h2d_response_head(struct h2_down_conn *c, struct h2_stream *st, struct exchange *ex,
                       const struct http_response_head *h, nghttp2_data_provider *dp);

#endif
