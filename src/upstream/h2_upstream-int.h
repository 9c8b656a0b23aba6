/*
 * h2_upstream-int.h — private to the HTTP/2 upstream codec, which is three
 * files (the codec as a whole is described in h2_upstream.c):
 *
 *   h2_upstream.c         connections: states, the pump, timers, socket and
 *                         connection-level frames (GOAWAY, PING, SETTINGS)
 *   h2_upstream_stream.c  streams: nghttp2's stream callbacks, the request
 *                         body's NO_COPY provider, the attempt ops
 *   h2_upstream_pool.c    per-worker pools: picking or opening a connection
 *                         for an attempt (h2_attempt_start)
 *
 * Everything runs on one worker's thread.
 */
#ifndef SY_H2_UPSTREAM_INT_H
#define SY_H2_UPSTREAM_INT_H

#include <event2/event_struct.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "upstream/upstream-int.h"
#include "core/list.h"
#include "http/h2.h"

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

/* Connection states (h2_upstream.c). */
enum h2u_state { H2U_CONNECTING, H2U_READY, H2U_DRAINING, H2U_CLOSED };

struct pool;
struct tls_client_cache;

/* One attempt: one stream. Allocated per attempt, freed on stream close. */
struct h2_stream {
    struct h2_conn *conn;
    const struct upstream_request
        *r; /* the attempt; NULL once released (response end, error) or cancelled */
    int32_t id;
    struct h2_body body; /* request body (pending()); trailers in the request's arena */
    bool req_done;       /* the request's END_STREAM is in the session */
    bool above_high;     /* pending() reached SY_FLOW_HIGH: report the drain */
    bool drained;        /* ... due at the end of this pump */
    bool reused;         /* the connection carried streams before this one */
    bool got_bytes;      /* any response frame arrived */
    bool head_done;      /* the final response head went to the owner */
    bool bad_response;   /* we reset it: a response we cannot take */
    bool paused;         /* read_response(false): do not consume */
    size_t unconsumed;   /* DATA bytes delivered but not consumed (window closed) */
    struct http_response_head head;
    struct http_headers trailers; /* response trailers (the request's arena) */
    struct sy_link link;          /* h2_conn.streams */
};

struct h2_conn {
    void *conn_token;                /* from upstream_request.conn_enter, or NULL */
    void (*conn_leave)(void *token); /* gives conn_token back when the connection closes */
    struct h2_pools *pools;
    struct pool *pool; /* NULL once CLOSED */
    struct bufferevent *bev;
    nghttp2_session *session;
    /* The stream whose header block is being received: on_header finds it
     * without a lookup per field. */
    struct h2_stream *hdr_s;
    int32_t hdr_id;
    enum h2u_state state;
    bool tls;
    bool retiring;      /* take no new streams (becomes DRAINING once connected) */
    bool in_pump;       /* inside conn_pump: closing is deferred to its end */
    bool close_pending; /* h2_conn_fail() was called inside the pump */
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
    struct sy_link streams;   /* h2_stream.link */
    struct event timer_ev;    /* connect timeout, then idle timeout */
    struct event ka_ev;       /* keepalive PING interval, then ACK timeout */
    struct event flush_ev;    /* deferred pump */
    struct event reap_ev;
    struct sy_link pool_link; /* pool.conns */
    struct sy_link all_link;  /* h2_pools.all */
};

/* Connections to one address with one transport setup. */
struct pool {
    struct sockaddr_storage ss;
    socklen_t len;
    enum cfg_backend_protocol protocol;
    bool verify;
    char *ca_file;             /* copy; NULL = unset (TLS only) */
    char *name;                /* TLS: the name sent and verified (tls_client_name) */
    uint32_t peer_max_streams; /* the backend's last SETTINGS_MAX_CONCURRENT_STREAMS,
                                  used for new connections until their own SETTINGS
                                  arrive; 0 = none seen yet (nghttp2 assumes 100) */
    struct sy_link conns;      /* h2_conn.pool_link */
    struct sy_link link;       /* h2_pools.pools */
};

/* A worker's HTTP/2 upstream state. */
struct h2_pools {
    struct worker *w;
    struct sy_link pools; /* pool.link */
    struct sy_link all;   /* h2_conn.all_link: every connection of this worker */
    struct tls_client_cache *tls;
    struct h2_setup setup; /* nghttp2 callbacks and options of every session */
    bool closing;          /* h2_pools_free is running: no new attempts */
};

/* ---- h2_upstream.c: connections ------------------------------------------------------------ */

/*
 * A connection to pool `p` for attempt `r` (its service's transport, TLS
 * through ps->tls), connecting, linked into `p` and ps->all. NULL when out
 * of memory or the connect could not start. No callback.
 */
struct h2_conn *h2_conn_new(struct h2_pools *ps, struct pool *p, const struct upstream_request *r);

/*
 * Close `c` and fail every attached attempt with `err` (on_error). Inside
 * the pump this only marks the connection; the pump finishes the job. The
 * memory goes on a later loop turn (or at h2_conn_reap_now).
 */
void h2_conn_fail(struct h2_conn *c, enum upstream_error err);

/* Free a CLOSED connection at once instead of on a later turn (h2_pools_free). */
void h2_conn_reap_now(struct h2_conn *c);

/* Run the pump on a later loop turn (coalesced: at most once per turn). */
void h2_conn_schedule(struct h2_conn *c);

/* No new streams on `c`: DRAINING once connected. */
void h2_conn_retire(struct h2_conn *c);

/* A connection-level frame arrived (GOAWAY, PING, SETTINGS, ...). */
void h2_conn_on_frame(struct h2_conn *c, const nghttp2_frame *frame);

/* ---- h2_upstream_stream.c: streams --------------------------------------------------------- */

/* The callbacks and options of every upstream session. */
extern const struct h2_session_def h2_upstream_session;

/*
 * Submit attempt `r` as a new stream of `c` (queued while connecting) and
 * fill `out`. 0 or SY_ENOMEM (nothing submitted). No callback.
 */
int h2_stream_start(struct h2_conn *c, const struct upstream_request *r,
                    struct upstream_attempt *out);

/* Free a stream already off its connection's list (or never on it). */
void h2_stream_free(struct h2_stream *s);

/* Tell owners whose request body drained below SY_FLOW_LOW (end of the pump). */
void h2_conn_notify_drained(struct h2_conn *c);

/* ---- h2_upstream_pool.c: pools ------------------------------------------------------------- */

/* Take `c` out of its pool; a pool left empty is freed. */
void h2_pool_unlink(struct h2_conn *c);

#endif
