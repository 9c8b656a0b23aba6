/*
 * exchange.h — one request/response pair crossing the proxy, protocol-neutral,
 * and the only header a downstream codec needs.
 *
 * A downstream codec (listener/h1_downstream, listener/h2_downstream)
 * creates the exchange (exchange_new) when a request head is complete,
 * fills the public fields and hands it to the router (router_start). The
 * router picks a route and an endpoint and runs attempts on an upstream
 * codec (upstream/upstream.h), which reports back through callbacks. Body
 * bytes flow through the exchange in both directions with back-pressure:
 *
 *   producer ──data──▶ consumer.send_body()        (moves the bytes)
 *   consumer.pending() >= SY_FLOW_HIGH  →  producer paused
 *   consumer drained below SY_FLOW_LOW  →  exchange_on_*_drained → resumed
 *
 * Lifetime: the exchange ends in exactly one place, exchange_finish(), which
 * runs the cleanups registered on its arena (timers, the attempt in flight,
 * circuit-breaker slots, a capacity wait: each registered when acquired,
 * arena.h), writes the access log entry, calls down->detach() and frees the
 * arena on a later loop iteration (never while a callback of it is on the
 * stack); the body buffers and the runtime reference go with the arena.
 *
 * Per worker (router.c): every exchange is on the worker's in-flight list
 * until it finishes (a reload walks it to arm connection_draining
 * deadlines), and an exchange waiting for endpoint capacity
 * (max_concurrent_requests_per_endpoint) is on the worker's FIFO queue until
 * a release of capacity wakes it (backend.h, WORKER_CMD_WAKE).
 */
#ifndef SY_EXCHANGE_H
#define SY_EXCHANGE_H

#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/arena.h"
#include "core/defer.h"
#include "core/list.h"
#include "core/timer.h"
#include "http/http-t.h"
#include "upstream/upstream.h"

struct evbuffer;
struct exchange;
struct worker;
struct runtime;
struct rt_hold;
struct cfg_listener;
struct cfg_backend_service;
struct url_map_result;
struct service_rt;
struct mirror;

/* Client side, implemented by each downstream codec. */
struct downstream_ops {
    /* Response head; `end` when there is no body. */
    void (*send_head)(struct exchange *ex, const struct http_response_head *h, bool end);
    /* Body bytes, moved out of `buf`. */
    void (*send_body)(struct exchange *ex, struct evbuffer *buf);
    /* End of the response, with trailers (may be NULL). */
    void (*send_end)(struct exchange *ex, const struct http_headers *trailers);
    /* Abort after the head went out: reset the stream / close the connection. */
    void (*reset)(struct exchange *ex);
    /* Bytes queued toward the client, not yet written. */
    size_t (*pending)(struct exchange *ex);
    /* Pause (false) or resume (true) reading the request body. */
    void (*read_body)(struct exchange *ex, bool enable);
    /* The exchange is over; the codec drops its pointer. Called once. */
    void (*detach)(struct exchange *ex);
};

/* Response flags for the access log (Envoy's spirit). */
enum exchange_flag {
    EXF_UT = 1u << 0,  /* upstream timeout */
    EXF_UF = 1u << 1,  /* upstream connect failure */
    EXF_UR = 1u << 2,  /* upstream reset */
    EXF_URX = 1u << 3, /* retry limit exceeded */
    EXF_FI = 1u << 4,  /* fault injected */
    EXF_NR = 1u << 5,  /* no route */
    EXF_UH = 1u << 6,  /* no healthy endpoint */
    EXF_DC = 1u << 7,  /* downstream closed */
    EXF_UP = 1u << 8,  /* upstream protocol error */
    EXF_LR = 1u << 9,  /* local reply (redirect, 4xx) */
    EXF_SI = 1u << 10, /* stream idle timeout */
    EXF_UO = 1u << 11, /* upstream overflow: a circuit breaker was open */
    EXF_DT = 1u << 12, /* the whole-exchange (route) timeout fired: DEADLINE */
    /* upstream retry overflow: a retry was due but circuit_breakers.max_retries
     * was full, so the attempt's failure went to the client (not UO) */
    EXF_URO = 1u << 13,
    /* the proxy closed the client's connection under the exchange (not DC):
     * the drain ended (drain_timeout, or a second SIGTERM/SIGINT) ... */
    EXF_DRT = 1u << 14,
    /* ... or listener http2.max_connection_age_grace passed */
    EXF_MCA = 1u << 15,
};

/*
 * Longest X-Request-Id kept from a client (bytes); a longer one, or one
 * with a byte outside [A-Za-z0-9._:+/=-], is replaced by a generated UUID,
 * both in the request sent upstream and in the access log (request_prep.h).
 */
#define EXCHANGE_REQUEST_ID_MAX 200

/*
 * The one length cap of the access log: no field shows more than this many
 * bytes of its value (before escaping). Values the proxy itself writes
 * upstream from what the client sent are held to it too, so the log shows
 * what the backend got: X-Forwarded-For's received part (oldest entries
 * dropped), tracestate (dropped when longer). docs/operations.md.
 */
#define EXCHANGE_LOG_FIELD_MAX 2048

/* W3C trace context of an exchange (request_prep.c): lower-case hex, NUL-terminated. */
#define EXCHANGE_TRACE_ID_LEN 32
#define EXCHANGE_SPAN_ID_LEN  16

struct exchange {
    /* ---- set by exchange_new ---------------------------------------------------- */
    struct worker *w;
    struct arena arena;
    struct runtime *rt;      /* the snapshot this exchange started with */
    struct rt_hold *rt_hold; /* the worker's claim that keeps `rt` alive for us */
    const struct cfg_listener *listener;

    /* ---- filled by the downstream codec before router_start ---------------------- */
    const struct downstream_ops *down;
    void *down_ctx;
    struct sockaddr_storage client_addr;
    struct sockaddr_storage local_addr;
    bool tls; /* client connection is TLS */
    struct http_request_head req;
    bool is_grpc;  /* content-type application/grpc* */
    bool is_head;  /* HEAD request: no response body */
    bool req_done; /* the whole request body was received */

    /* ---- read-only for the codecs ------------------------------------------------ */
    bool resp_head_sent;
    bool resp_done;
    bool finished;

    /* ---- router only (src/exchange/): codecs never touch what follows ------------- */
    const struct cfg_backend_service *service;
    struct service_rt *srt;             /* run-time state of `service` */
    const struct url_map_result *route; /* the match (arena), NULL before routing */
    /* The request's path (normalized, "?query" kept) and authority before
     * url_rewrite changed `req`: what the access log shows (so a log can be
     * replayed, as `switchyard diff` does). NULL before routing. */
    const char *client_path;
    const char *client_authority;
    uint32_t client_path_len, client_authority_len;
    const char *cors_origin;        /* cors_policy: the Access-Control-Allow-Origin to send */
    size_t cors_origin_len;         /* (cors.h); NULL = not a CORS-allowed request */
    struct mirror *mirror;          /* request_mirror_policy's copy (mirror.h); NULL = none */
    struct upstream_request up_req; /* the attempt in flight's description */
    struct upstream_attempt up;     /* up.att: current attempt, NULL when none */
    int endpoint_idx;               /* endpoint of the current attempt, -1 = none */
    struct evbuffer *req_pending;   /* request body not yet handed to an attempt */
    struct evbuffer *replay;        /* request body kept for a retry; NULL = not replayable */
    uint64_t tried[1];              /* endpoints tried (bits), see backend.h pick_ctx */
    bool has_hash;
    uint64_t hash;                      /* session-affinity key */
    struct arena_cleanup *_retry_slot;  /* the max_retries slot; NULL = not held */
    struct arena_cleanup *_wait;        /* waiting for endpoint capacity (queue place and
                                         * max_pending_requests slot); NULL = not waiting */
    struct arena_cleanup *_replay_free; /* frees `replay` (early, when it stops fitting) */
    struct sy_link _link;               /* on the worker's in-flight list */
    struct sy_link _wait_link;          /* on the worker's capacity queue while waiting */
    uint64_t deadline_ms;               /* sy_now_ms() clock; 0 = none */
    uint64_t last_activity_ms;
    unsigned attempts;
    unsigned retries;
    unsigned transparent_retries;
    unsigned stale_resends;     /* attempts re-sent after a stale keep-alive connection (0..1) */
    bool _fresh_conn;           /* the next attempt must not take an idle pooled connection */
    int _try_state;             /* router.c: what try_timer is timing */
    char tries_log[256];        /* "ep:reason;ep:reason" for the access log */
    uint64_t _attempt_start_us; /* sy_now_us() when the current attempt's endpoint was picked */
    bool _attempt_observed;     /* its upstream time was recorded (observe_attempt) */

    /* accounting, for the access log */
    uint64_t start_us;
    uint64_t upstream_us;         /* upstream time of the last observed attempt (us), 0 = none */
    uint64_t bytes_in, bytes_out; /* body bytes */
    int status;                   /* status sent to the client, 0 = none */
    unsigned flags;               /* enum exchange_flag */
    char request_id[EXCHANGE_REQUEST_ID_MAX + 1]; /* request_prep.c: safe characters only */
    char trace_id[EXCHANGE_TRACE_ID_LEN + 1];     /* W3C trace id; "" = none */
    char span_id[EXCHANGE_SPAN_ID_LEN + 1]; /* the proxy's span: traceparent's parent-id upstream */
    unsigned char trace_flags;              /* traceparent flags (bit 0: sampled) */
    bool trace_kept;                        /* the client's traceparent was valid (kept) */
    const char *tls_version; /* downstream TLS ("TLSv1.3"; static), NULL = plaintext */
    const char *sni;         /* the client's TLS server name (arena), NULL = none */
    uint32_t sni_len;
    /* As the client sent them (request_identify): the first User-Agent, and
     * the X-Forwarded-For fields joined with ", " and cut to
     * EXCHANGE_LOG_FIELD_MAX by dropping the oldest entries. NULL = none. */
    const char *user_agent, *xff;
    uint32_t user_agent_len, xff_len;
    char endpoint[64];
    /* Last, so that a recycled exchange block keeps them assigned (router.c:
     * exchange_new_held clears only what comes before). */
    struct event drain_ev;  /* connection_draining: the drain deadline of the attempt's endpoint */
    struct sy_defer reap_d; /* the free, on the worker's defer queue */
    /* The timers. Deadlines (timer.h): they stay pending on a recycled
     * block (cancelled), so the next exchange on it arms them without an
     * event_add, and never run before they are due. Last, and kept
     * unpoisoned on the spare list (router.c). */
    struct sy_deadline route_timer; /* route timeout: the whole exchange */
    struct sy_deadline idle_timer;  /* stream_idle */
    struct sy_deadline try_timer;   /* per-try timeout, backoff, fault delay */
};

/* ---- for the downstream codecs ------------------------------------------------------ */

/*
 * Create an exchange on worker `w` for a request arriving on `listener`.
 * The runtime reference is taken from the worker. NULL on allocation failure.
 */
struct exchange *exchange_new(struct worker *w, const struct cfg_listener *listener);
/*
 * The same on the runtime of `hold` (a struct rt_hold, runtime.h) instead of
 * the worker's current one: `listener` belongs to its config (a listener a
 * reload removed serves its last connections on the config they came from).
 */
struct exchange *exchange_new_held(struct worker *w, struct rt_hold *hold,
                                   const struct cfg_listener *listener);

/*
 * The request head is complete (ex->req filled by the codec). The router
 * takes it from here; it may answer locally at once (send_head/send_end
 * called before this returns).
 */
void router_start(struct exchange *ex);

/*
 * The codec answered the request itself (malformed, 4xx): log it with
 * `status` and free the exchange. Never attached to an attempt.
 */
void exchange_reject(struct exchange *ex, int status);

void exchange_on_request_body(struct exchange *ex, struct evbuffer *buf);
void exchange_on_request_end(struct exchange *ex, const struct http_headers *trailers);
void exchange_on_downstream_drained(struct exchange *ex);
/* The client went away or reset the stream: cancel and finish. */
void exchange_on_downstream_abort(struct exchange *ex);
/*
 * The proxy closed the client's connection itself (`flag`: EXF_DRT or
 * EXF_MCA): cancel and finish, logged with `flag` instead of DC, and with
 * the status sent, or 503 when none was (not 499: the client did not leave).
 */
void exchange_on_downstream_cut(struct exchange *ex, unsigned flag);

/*
 * Answer locally with `status` and a short text body (or, for a gRPC
 * request, a trailers-only gRPC status). Only before response headers went out.
 */
void exchange_local_reply(struct exchange *ex, int status, const char *body, unsigned flags);

/*
 * A TLS client connection: note its protocol version and server name for the
 * access log (`bev`: the connection's OpenSSL bufferevent; anything else is
 * ignored). Codecs call it when they make the exchange.
 */
struct bufferevent;
void exchange_note_tls(struct exchange *ex, struct bufferevent *bev);

/* ---- for main.c: the exchange module's per-worker state ------------------------------ */

/* Make w->exchanges (in-flight list, capacity queue, wake event). 0 or SY_ENOMEM. */
int exchange_worker_init(struct worker *w);

/* Free it, once every exchange of w has finished. NULL w->exchanges: no-op. */
void exchange_worker_free(struct worker *w);

/*
 * On w's thread, when a reload reached it (WORKER_CMD_SWAP; the new config
 * was published to the endpoint registry before): every attempt in flight
 * gets its connection_draining timer armed at its endpoint's drain deadline,
 * or disarmed when the endpoint is back in the config.
 */
void exchange_worker_on_reload(struct worker *w);

/*
 * On w's thread (WORKER_CMD_WAKE, or its own wake event): endpoint capacity
 * was freed; the exchanges waiting for it try again, oldest first.
 */
void exchange_worker_wake(struct worker *w);

/*
 * The worker's formatted wall-clock time (core/time_cache.h) for access log
 * lines and Date headers; NULL when w has no exchange state.
 */
struct sy_time_cache;
struct sy_time_cache *exchange_worker_time(struct worker *w);

#endif
