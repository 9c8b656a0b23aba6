/*
 * upstream.h — the backend side: per-worker connection pools and one
 * attempt (one request sent to one endpoint) at a time per call.
 *
 * upstream/ knows nothing of the exchange. The caller describes the attempt
 * in a struct upstream_request — what to send, where response heads are
 * allocated, how to admit a new connection — and hands over callbacks
 * (struct upstream_cbs, as h2o's httpclient does with on_connect/on_head/
 * on_body) through which the attempt reports back. The caller drives the
 * attempt through the returned ops table (struct upstream_attempt).
 *
 * Callback contract: callbacks run from the codec's own socket events,
 * never from inside upstream_attempt_start or an ops call. After on_end or
 * on_error, or after ops->cancel, no callback follows and the attempt
 * handle is dead.
 */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config-t.h"
#include "http/http-t.h"

struct arena;
struct evbuffer;
struct worker;
struct upstream_pools;

/* Why an attempt failed (before or after response headers). */
enum upstream_error {
    UPSTREAM_CONNECT_FAILED = 1, /* refused, unreachable, connect timeout */
    UPSTREAM_RESET,              /* closed or reset before the response completed */
    UPSTREAM_PROTOCOL,           /* malformed response */
    UPSTREAM_REFUSED_STREAM,     /* h2: REFUSED_STREAM or beyond GOAWAY's last id */
};
const char *upstream_error_str(enum upstream_error e);

/* How an attempt reports to its owner; `ctx` is upstream_request.ctx. */
struct upstream_cbs {
    /* The response head (allocated in the request's arena); `end`: no body follows. */
    void (*on_head)(void *ctx, struct http_response_head *h, bool end);
    /* Response body bytes, to be moved out of `buf`. */
    void (*on_body)(void *ctx, struct evbuffer *buf);
    /* The response is complete, with trailers (may be NULL). The attempt is over. */
    void (*on_end)(void *ctx, const struct http_headers *trailers);
    /* The request bytes queued toward the backend fell below SY_FLOW_LOW. */
    void (*on_drained)(void *ctx);
    /*
     * The attempt failed and is over. `stale`: a reused keep-alive connection
     * failed before any response byte because the backend had closed it
     * (HTTP/1.1: end of stream, or EPIPE after the backend's FIN; a reset of
     * a connection the backend had not closed is not stale; HTTP/2: the
     * connection was lost before the stream got a byte) — the request may
     * be sent again if its method is idempotent (RFC 9112 9.3.1).
     */
    void (*on_error)(void *ctx, enum upstream_error err, bool stale);
};

/*
 * One attempt. Everything pointed to must stay valid until the attempt is
 * over (on_end, on_error or cancel).
 */
struct upstream_request {
    const struct cfg_backend_service *svc;
    const struct cfg_endpoint *ep;
    const char *cfg_version;              /* the config version: keys backend TLS contexts */
    const struct http_request_head *head; /* sent at once (queued until connected) */
    struct arena *arena;                  /* response heads and trailers live here */
    bool is_head;                         /* a HEAD request: the response has no body */
    bool fresh_connection;                /* HTTP/1.1: open a new connection, never take an
                                           * idle pooled one (a resend after a stale one) */
    /*
     * Admission of a new connection (circuit_breakers.max_connections),
     * asked only when no pooled connection can carry the attempt, and only
     * from inside upstream_attempt_start: a token for the new connection, or
     * NULL when the limit is reached. conn_leave(token) runs when that
     * connection closes, possibly long after the attempt, on any thread.
     */
    void *(*conn_enter)(void *conn_arg);
    void (*conn_leave)(void *token);
    void *conn_arg;
    const struct upstream_cbs *cbs;
    void *ctx;
};

/* The caller's side of a running attempt, implemented by each upstream codec. */
struct upstream_ops {
    void (*send_body)(void *att, struct evbuffer *buf);
    void (*send_end)(void *att, const struct http_headers *trailers);
    size_t (*pending)(void *att);
    /* Pause (false) or resume (true) reading the response. */
    void (*read_response)(void *att, bool enable);
    /* The owner gives up on this attempt; no callback follows. */
    void (*cancel)(void *att);
    /*
     * The client went away: as cancel (no callback follows), but the codec
     * may let a response already on its way finish, unseen, to keep the
     * connection (HTTP/1.1: drained, bounded in bytes and time). NULL: cancel.
     */
    void (*abandon)(void *att);
};

struct upstream_attempt {
    const struct upstream_ops *ops;
    void *att;
};

/* Per-worker pools; freed (every connection closed) by upstream_pools_free. */
struct upstream_pools *upstream_pools_new(struct worker *w);
void upstream_pools_free(struct upstream_pools *p);

/* Close idle connections (drain); active ones close when their attempt ends. */
void upstream_pools_close_idle(struct upstream_pools *p);

/*
 * `switchyard -t`: load the tls.ca_file of every HTTPS and HTTP2 backend
 * service of `cfg` that verifies, as its first connection would. Writes one
 * line naming each file that cannot be loaded to `errs`; returns how many.
 */
int upstream_check_tls(const struct config *cfg, FILE *errs);

/*
 * Start attempt `r` on worker `w`'s pools. On success fills *out and returns
 * 0; the outcome comes later through r->cbs. Returns SY_ENOMEM, SY_EIO when
 * no socket could be made, or SY_ELIMIT when a new connection was needed and
 * r->conn_enter refused it; then no callback will follow.
 */
int upstream_attempt_start(struct upstream_pools *p, const struct upstream_request *r,
                           struct upstream_attempt *out);

#endif
