/*
 * router.c — runs one exchange from routed request to finished response:
 * route match, fault injection, circuit breakers, endpoint choice, attempts,
 * retries with backoff, timeouts, body flow between the two sides, and the
 * single exit exchange_finish(). See exchange.h.
 *
 * Failure mapping before response headers went out (docs/operations.md):
 *   no healthy endpoint              503  (UH)
 *   a circuit breaker is open        503  (UO)
 *   connect refused / timed out      503  (UF)
 *   reset or closed before headers   502  (UR)
 *   malformed response               502  (UP)
 *   timeout (route or per try)       504  (UT)
 *   request head filled the arena    431  (LR)
 * unless retried: by the route's policy (can_retry; when the max_retries
 * breaker is full the failure goes to the client flagged URO), or,
 * after a reused keep-alive connection the backend had closed, once on a
 * new connection when the method is idempotent (resend_stale, retry.h).
 * After headers: the client stream is reset (HTTP/1.1: connection closed).
 * For gRPC requests each becomes HTTP 200 with a grpc-status (UNAVAILABLE,
 * also for an open circuit breaker; DEADLINE_EXCEEDED for timeouts),
 * trailers-only.
 *
 * Resources: everything an exchange acquires that must be given back when
 * it ends registers a cleanup on its arena at once (arena.h); exchange_finish
 * runs them (newest first), the deferred free runs the arena_on_free ones.
 *
 * Timers: route_timer bounds the whole exchange (route timeout, or the
 * backend service timeout, or a shorter grpc-timeout); idle_timer is
 * stream_idle; try_timer times one
 * thing at a time, named by ex->_try_state; drain_ev is the
 * connection_draining deadline of the attempt's endpoint, armed only once
 * that endpoint left the config. Waiting for endpoint capacity takes no
 * timer of its own (STYLE 22): the exchange sits on its worker's FIFO queue
 * until a release wakes it, bounded by route_timer.
 */
#include "exchange/exchange.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange/access_log.h"
#include "exchange/cors.h"
#include "exchange/mirror.h"
#include "backend/backend.h"
#include "exchange/request_prep.h"
#include "exchange/retry.h"
#include "runtime.h"
#include "upstream/upstream.h"
#include "config/config-t.h"
#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/time_cache.h"
#include "core/stats.h"
#include "core/worker.h"
#include "http/grpc.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define EXCHANGE_ARENA_LIMIT  (1024 * 1024)
#define EXCHANGE_INLINE_ARENA 3072 /* bytes of arena allocated with the exchange itself */
/* Freed exchange blocks a worker keeps for its next requests: a 5 KiB block
 * is past malloc's per-thread cache and costs its slow path both ways. */
#define EXCHANGE_SPARE_MAX 256 /* a few hundred requests in flight; 1.3 MiB at most */
#define EXCHANGE_HEAD      ((sizeof(struct exchange) + 15) & ~(size_t)15) /* then the arena */
#define EXCHANGE_BLOCK     (EXCHANGE_HEAD + EXCHANGE_INLINE_ARENA)
#if defined(__SANITIZE_ADDRESS__)
/* A kept block is poisoned past its link, but for its deadlines, which
 * libevent may still expire (cancelled: they only find that out). */
#define SPARE_KEEP_FROM offsetof(struct exchange, route_timer)
#define SPARE_KEEP_TO   (offsetof(struct exchange, try_timer) + sizeof(struct sy_deadline))
#define SPARE_POISON(b)                                                                            \
    do {                                                                                           \
        ASAN_POISON_MEMORY_REGION((char *)(b) + sizeof(void *), SPARE_KEEP_FROM - sizeof(void *)); \
        ASAN_POISON_MEMORY_REGION((char *)(b) + SPARE_KEEP_TO, EXCHANGE_BLOCK - SPARE_KEEP_TO);    \
    } while (0)
#define SPARE_UNPOISON(b) ASAN_UNPOISON_MEMORY_REGION((b), EXCHANGE_BLOCK)
#else
#define SPARE_POISON(b)   ((void)0)
#define SPARE_UNPOISON(b) ((void)0)
#endif
#define MAX_TRANSPARENT_RETRIES 3    /* refused streams: the backend never saw them */
#define REPLY_FIELDS            8    /* header fields of a reply the router makes itself */
#define WAKE_FULL_MAX           8    /* services found full, remembered during one wake pass */
#define REPLY_ARENA_GRANT       4096 /* arena bytes a local reply may use past a full arena */

enum try_state {
    TRY_IDLE = 0,
    TRY_FAULT_DELAY, /* fault_injection_policy.delay before the first attempt */
    TRY_BACKOFF,     /* between a failed attempt and its retry */
    TRY_PER_TRY,     /* per_try_timeout of the attempt in flight */
};

/* The exchange module's state of one worker (worker->exchanges). */
struct exchange_worker {
    struct sy_link inflight;   /* every exchange from exchange_new to exchange_finish */
    struct sy_link waiting;    /* exchanges waiting for endpoint capacity, oldest first */
    struct event wake_ev;      /* a release on this worker freed capacity: walk `waiting` */
    struct sy_time_cache time; /* log timestamps and Date headers, formatted once */
    void *spare;               /* freed exchange blocks, linked through their first bytes */
    unsigned n_spare;          /* at most EXCHANGE_SPARE_MAX */
};

static void start_attempt(struct exchange *ex);
static void start_first_attempt(struct exchange *ex);
static void attempt_on(struct exchange *ex, int idx);
static void keep_for_replay(struct exchange *ex, struct evbuffer *buf);
static void log_try(struct exchange *ex, const char *what);
static void on_timeout(evutil_socket_t fd, short what, void *arg);
static void on_try(evutil_socket_t fd, short what, void *arg);
static void on_idle(evutil_socket_t fd, short what, void *arg);
static void on_drain_check(evutil_socket_t fd, short what, void *arg);
static void on_reap(struct sy_defer *d);
static void on_up_head(void *ctx, struct http_response_head *h, bool end);
static void on_up_body(void *ctx, struct evbuffer *buf);
static void on_up_end(void *ctx, const struct http_headers *trailers);
static void on_up_drained(void *ctx);
static void on_up_error(void *ctx, enum upstream_error err, bool stale);

/* How an attempt reports back (upstream.h); ctx is the exchange. */
static const struct upstream_cbs upstream_cbs = {
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_end = on_up_end,
    .on_drained = on_up_drained,
    .on_error = on_up_error,
};

/* circuit_breakers.max_connections, asked by the pool for a new connection. */
static void *conn_enter(void *arg)
{
    struct exchange *ex = arg;
    return backend_cb_connection_enter(ex->srt, ex->endpoint_idx);
}

static void conn_leave(void *token)
{
    backend_cb_connection_leave(token);
}

/* ---- per-worker state ------------------------------------------------------------- */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    exchange_worker_wake(arg);
}

int exchange_worker_init(struct worker *w)
{
    struct exchange_worker *xw = calloc(1, sizeof *xw);
    if (!xw)
        return SY_ENOMEM;
    sy_list_init(&xw->inflight);
    sy_list_init(&xw->waiting);
    evtimer_assign(&xw->wake_ev, w->base, on_wake, w);
    sy_time_cache_init(&xw->time);
    w->exchanges = xw;
    return 0;
}

struct sy_time_cache *exchange_worker_time(struct worker *w)
{
    struct exchange_worker *xw = w->exchanges;
    return xw ? &xw->time : NULL;
}

/* Free an exchange block for good: its deadlines may be pending. */
static void block_release(void *b)
{
    struct exchange *ex = b;
    sy_deadline_del(&ex->route_timer);
    sy_deadline_del(&ex->idle_timer);
    sy_deadline_del(&ex->try_timer);
    free(ex);
}

void exchange_worker_free(struct worker *w)
{
    struct exchange_worker *xw = w->exchanges;
    if (!xw)
        return;
    sy_event_del(&xw->wake_ev);
    while (xw->spare) {
        void *b = xw->spare;
        xw->spare = *(void **)b;
        SPARE_UNPOISON(b);
        block_release(b);
    }
    free(xw);
    w->exchanges = NULL;
}

/*
 * Capacity was freed in a service where `mask` (backend_capacity_waiters)
 * names the workers with waiters: wake them. This worker's own queue is
 * walked on a later loop turn (its wake event), never from inside the
 * release, which runs deep in some other exchange's callbacks.
 */
static void wake_waiters(struct worker *w, uint64_t mask)
{
    if (!mask)
        return;
    struct exchange_worker *xw = w->exchanges;
    if (!w->peers) {
        if (mask >> ((unsigned)w->id % 64) & 1)
            event_active(&xw->wake_ev, EV_TIMEOUT, 1);
        return;
    }
    for (int i = 0; i < w->n_peers; i++) {
        if (!(mask >> ((unsigned)i % 64) & 1))
            continue;
        if (&w->peers[i] == w)
            event_active(&xw->wake_ev, EV_TIMEOUT, 1);
        else
            worker_post(&w->peers[i], WORKER_CMD_WAKE);
    }
}

void exchange_capacity_released(struct worker *w, struct service_rt *srt)
{
    wake_waiters(w, backend_capacity_waiters(srt));
}

/* ---- cleanups (registered on the arena when the resource is taken) ----------------- */

/* arena_on_free at exchange_new: the runtime reference and the gauge. */
static void on_free_runtime(void *arg)
{
    struct exchange *ex = arg;
    stats_dec(&ex->rt->stats->workers[ex->w->id].active_exchanges, 1);
    rt_hold_put(ex->rt_hold);
}

/* arena_on_cleanup at exchange_new: the timers and the in-flight list. */
static void on_cleanup_exchange(void *arg)
{
    struct exchange *ex = arg;
    sy_deadline_cancel(&ex->route_timer);
    sy_deadline_cancel(&ex->idle_timer);
    sy_event_del(&ex->drain_ev);
    sy_deadline_cancel(&ex->try_timer);
    ex->_try_state = TRY_IDLE;
    sy_list_unlink(&ex->_link);
}

static void on_free_pending(void *arg)
{
    struct exchange *ex = arg;
    evbuffer_free(ex->req_pending);
    ex->req_pending = NULL;
}

static void on_free_replay(void *arg)
{
    struct exchange *ex = arg;
    evbuffer_free(ex->replay);
    ex->replay = NULL;
    ex->_replay_free = NULL;
}

static void on_cleanup_request_slot(void *arg)
{
    struct exchange *ex = arg;
    backend_cb_request_leave(ex->srt);
}

static void on_cleanup_retry_slot(void *arg)
{
    struct exchange *ex = arg;
    backend_cb_retry_leave(ex->srt);
    ex->_retry_slot = NULL;
}

/* Leave the capacity queue: run early once capacity is found, else at the end. */
static void on_cleanup_wait(void *arg)
{
    struct exchange *ex = arg;
    sy_list_unlink(&ex->_wait_link);
    backend_capacity_wait_leave(ex->srt, ex->w->id);
    backend_cb_pending_leave(ex->srt);
    ex->_wait = NULL;
}

static void cancel_attempt(struct exchange *ex, enum attempt_outcome o);

/* Registered once attempts may start: whatever attempt is in flight at the end. */
static void on_cleanup_attempt(void *arg)
{
    cancel_attempt(arg, ATTEMPT_CANCELLED);
}

/* ---- lifetime -------------------------------------------------------------------- */

/* Give an exchange's block back: kept for the worker's next exchange, or freed. */
static void exchange_block_free(struct exchange *ex)
{
    struct exchange_worker *xw = ex->w->exchanges;
    if (xw && xw->n_spare < EXCHANGE_SPARE_MAX) {
        *(void **)ex = xw->spare;
        xw->spare = ex;
        xw->n_spare++;
        SPARE_POISON(ex);
        return;
    }
    block_release(ex);
}

static void on_reap(struct sy_defer *d)
{
    struct exchange *ex = SY_CONTAINER_OF(d, struct exchange, reap_d);
    arena_free(&ex->arena); /* runs the arena_on_free cleanups: buffers, runtime */
    exchange_block_free(ex);
}

struct exchange *exchange_new(struct worker *w, const struct cfg_listener *listener)
{
    return exchange_new_held(w, w->rt_hold, listener);
}

struct exchange *exchange_new_held(struct worker *w, struct rt_hold *hold,
                                   const struct cfg_listener *listener)
{
    struct exchange_worker *xw = w->exchanges;
    /* One allocation: the exchange, then the first block of its arena. */
    struct exchange *ex = xw->spare;
    if (ex) {
        /* A block of this worker's: its timers are assigned to it already
         * (the deadlines may be pending, cancelled; the others are not). */
        xw->spare = *(void **)ex;
        xw->n_spare--;
        SPARE_UNPOISON(ex);
        memset(ex, 0, offsetof(struct exchange, drain_ev));
    } else {
        if (!(ex = malloc(EXCHANGE_BLOCK)))
            return NULL;
        memset(ex, 0, sizeof *ex);
        sy_deadline_assign(&ex->route_timer, w->base, on_timeout, ex);
        sy_deadline_assign(&ex->try_timer, w->base, on_try, ex);
        sy_deadline_assign(&ex->idle_timer, w->base, on_idle, ex);
        evtimer_assign(&ex->drain_ev, w->base, on_drain_check, ex);
        sy_defer_init(&ex->reap_d, on_reap);
    }
    ex->w = w;
    ex->listener = listener;
    ex->endpoint_idx = -1;
    arena_init_buf(&ex->arena, EXCHANGE_ARENA_LIMIT, (char *)ex + EXCHANGE_HEAD,
                   EXCHANGE_INLINE_ARENA);
    /* Registered before what they release is taken (taking cannot fail);
     * their records fit the inline block. */
    if (!arena_on_free(&ex->arena, on_free_runtime, ex))
        goto fail;
    ex->rt_hold = hold;
    ex->rt = rt_hold_get(ex->rt_hold);
    stats_inc(&ex->rt->stats->workers[w->id].active_exchanges, 1);
    if (!arena_on_cleanup(&ex->arena, on_cleanup_exchange, ex))
        goto fail;
    sy_list_insert_tail(&xw->inflight, &ex->_link);
    ex->start_us = sy_now_us();
    ex->last_activity_ms = sy_now_ms();
    ex->req.content_length = -1;
    return ex;
fail:
    arena_free(&ex->arena);
    exchange_block_free(ex);
    return NULL;
}

/* The request body buffer before an attempt takes it; made on first use. */
static struct evbuffer *pending_buf(struct exchange *ex)
{
    if (ex->req_pending)
        return ex->req_pending;
    struct evbuffer *b = evbuffer_new();
    if (b && !arena_on_free(&ex->arena, on_free_pending, ex)) {
        evbuffer_free(b);
        b = NULL;
    }
    ex->req_pending = b;
    return b;
}

static size_t pending_len(const struct exchange *ex)
{
    return ex->req_pending ? evbuffer_get_length(ex->req_pending) : 0;
}

/*
 * An Upgrade (or extended CONNECT) whose backend has not accepted it yet:
 * nothing the client sends may reach the backend before its 101 (2xx for a
 * CONNECT), or a backend that refuses would parse those bytes as requests.
 * True until the accepting head went through on_up_head; stays true after
 * a refusal (what the client sends then is discarded).
 */
static bool tunnel_held(const struct exchange *ex)
{
    if (!ex->req.upgrade)
        return false;
    if (!ex->resp_head_sent)
        return true;
    bool connect = ex->req.method_len == SY_STRLEN("CONNECT") &&
                   memcmp(ex->req.method, SY_STRLIT("CONNECT")) == 0;
    return !(ex->status == 101 || (connect && ex->status >= 200 && ex->status < 300));
}

/* Append a real copy of `src` to `dst` (src unchanged). 0 or SY_ENOMEM. */
static int copy_buffer(struct evbuffer *dst, struct evbuffer *src)
{
    int k = evbuffer_peek(src, -1, NULL, NULL, 0);
    struct evbuffer_iovec small[8], *v = small;
    if (k > 8 && !(v = malloc(sizeof *v * (size_t)k)))
        return SY_ENOMEM;
    evbuffer_peek(src, -1, NULL, v, k);
    int rc = 0;
    for (int i = 0; i < k && rc == 0; i++)
        rc = evbuffer_add(dst, v[i].iov_base, v[i].iov_len) ? SY_ENOMEM : 0;
    if (v != small)
        free(v);
    return rc;
}

/* This worker's counters of the exchange's backend service. */
static struct stats_service_shard *svc_stats(const struct exchange *ex)
{
    return &runtime_service_stats(ex->rt, ex->service)->shards[ex->w->id];
}

static void arm_try(struct exchange *ex, enum try_state st, uint64_t ms)
{
    ex->_try_state = st;
    sy_deadline_arm(&ex->try_timer, ms);
}

static void disarm_try(struct exchange *ex)
{
    ex->_try_state = TRY_IDLE;
    sy_deadline_cancel(&ex->try_timer);
}

static void touch(struct exchange *ex)
{
    ex->last_activity_ms = sy_now_ms();
}

/*
 * The attempt in flight got its response head with `status`, or failed
 * without one (status 0): its upstream time goes to the endpoint's and the
 * service's counters and histograms, and the class of the answer to
 * switchyard_upstream_responses_total (per attempt: a retried 503 counts).
 * Once per attempt; not for attempts the client or the proxy cancelled.
 */
static void observe_attempt(struct exchange *ex, int status)
{
    if (ex->_attempt_observed || ex->endpoint_idx < 0)
        return;
    ex->_attempt_observed = true;
    uint64_t now = sy_now_us();
    uint64_t us = now > ex->_attempt_start_us ? now - ex->_attempt_start_us : 0;
    ex->upstream_us = us;
    backend_endpoint_observe(backend_endpoint(ex->srt, (size_t)ex->endpoint_idx), ex->w, status,
                             us);
    struct stats_service_shard *ss = svc_stats(ex);
    if (status >= 100 && status < 600)
        stats_inc(&ss->by_class[status / 100], 1);
    stats_inc(&ss->attempt_bucket[stats_bucket_of(us)], 1);
    stats_inc(&ss->attempt_us_sum, us);
}

/* The attempt in flight is over for the endpoint: release it with `o`. */
static void end_attempt(struct exchange *ex, enum attempt_outcome o)
{
    if (ex->_try_state == TRY_PER_TRY)
        disarm_try(ex);
    sy_event_del(&ex->drain_ev);
    if (ex->endpoint_idx >= 0) {
        backend_release(ex->srt, ex->endpoint_idx, o);
        ex->endpoint_idx = -1;
        wake_waiters(ex->w, backend_capacity_waiters(ex->srt));
    }
}

/*
 * Cancel the attempt in flight (no callback follows) and release it. Once
 * the client has gone (DC) the codec may abandon it instead: a response
 * already on its way is read to its end, unseen, and the connection kept.
 */
static void cancel_attempt(struct exchange *ex, enum attempt_outcome o)
{
    if (ex->up.att) {
        void *att = ex->up.att;
        ex->up.att = NULL;
        if ((ex->flags & EXF_DC) && ex->up.ops->abandon)
            ex->up.ops->abandon(att);
        else
            ex->up.ops->cancel(att);
    }
    end_attempt(ex, o);
}

/* The single exit: release, log, let go of both sides, free on a later loop turn. */
static void exchange_finish(struct exchange *ex)
{
    if (ex->finished)
        return;
    ex->finished = true;
    /* The attempt, a capacity wait, breaker slots, timers, the in-flight list. */
    arena_run_cleanups(&ex->arena);
    access_log_write(ex);
    uint64_t dur = sy_now_us() - ex->start_us;
    size_t li = (size_t)runtime_listener_slot(ex->rt, ex->listener); /* stable across reloads */
    if (li < ex->rt->stats->n_listeners)
        stats_request(&ex->rt->stats->listeners[li].shards[ex->w->id], ex->status, dur);
    if (ex->service) { /* switchyard_backend_request_duration_seconds */
        struct stats_service_shard *ss = svc_stats(ex);
        stats_inc(&ss->duration_bucket[stats_bucket_of(dur)], 1);
        stats_inc(&ss->duration_us_sum, dur);
    }
    ex->down->detach(ex);
    sy_defer(&ex->w->defer, &ex->reap_d);
}

/* ---- local replies ------------------------------------------------------------------ */

/*
 * The header list of a reply the router makes itself starts in `v` (the
 * caller's stack), not in the arena: a reply must go out even when the
 * request filled the arena. Fields past `cap` still grow into the arena.
 */
static void reply_headers(struct http_headers *h, struct http_header *v, uint32_t cap)
{
    h->v = v;
    h->n = 0;
    h->cap = cap;
}

/*
 * What every reply the proxy makes itself carries, as other proxies' do:
 * the exchange's X-Request-Id (the one the access log shows), Date (the
 * worker's cached time) and Server.
 */
static void reply_identity(struct exchange *ex, struct http_response_head *h)
{
    if (!ex->request_id[0])
        sy_uuid4(ex->w, ex->request_id);
    http_headers_add(&h->headers, &ex->arena, SY_STRLIT("x-request-id"), ex->request_id,
                     strlen(ex->request_id));
    struct sy_time_cache *tc = exchange_worker_time(ex->w);
    if (tc) {
        const char *d = sy_time_http_date(tc);
        http_headers_add_copy(&h->headers, &ex->arena, SY_STRLIT("date"), d, strlen(d));
    }
    http_headers_add(&h->headers, &ex->arena, SY_STRLIT("server"), SY_STRLIT("switchyard"));
}

/* HTTP status → gRPC status for replies the proxy makes itself. */
static int grpc_status_for(int http)
{
    switch (http) {
    case 504: return GRPC_DEADLINE_EXCEEDED;
    case 429: return GRPC_RESOURCE_EXHAUSTED;
    case 400:
    case 431:
    case 500: return GRPC_INTERNAL;
    case 404: return GRPC_UNIMPLEMENTED;
    default: return GRPC_UNAVAILABLE;
    }
}

/*
 * A gRPC status as a trailers-only response (HTTP 200, no body): three
 * fields added to h; `num` (caller's, >= 20 bytes) holds the status digits
 * until the head went out.
 */
static void grpc_head(struct exchange *ex, struct http_response_head *h, int code, const char *msg,
                      char *num)
{
    size_t n = sy_u64_to_dec(num, (uint64_t)code);
    h->status = 200;
    h->content_length = -1;
    http_headers_add(&h->headers, &ex->arena, SY_STRLIT("content-type"),
                     SY_STRLIT("application/grpc"));
    http_headers_add(&h->headers, &ex->arena, SY_STRLIT("grpc-status"), num, n);
    http_headers_add(&h->headers, &ex->arena, SY_STRLIT("grpc-message"), msg, strlen(msg));
}

/*
 * The exchange fails after its response head went out. A gRPC call over
 * HTTP/2 ends with trailers carrying `grpc_code` (so the client sees
 * DEADLINE_EXCEEDED or UNAVAILABLE, not a bare stream reset); anything else
 * is reset (RST_STREAM, or an HTTP/1.1 connection closed).
 */
static void fail_after_head(struct exchange *ex, int grpc_code, const char *msg)
{
    if (ex->is_grpc && ex->req.version == HTTP_2 && !ex->resp_done) {
        struct http_header hv[REPLY_FIELDS], tv[2];
        struct http_response_head h = {.content_length = -1};
        struct http_headers t;
        char num[24];
        reply_headers(&h.headers, hv, REPLY_FIELDS);
        reply_headers(&t, tv, 2);
        grpc_head(ex, &h, grpc_code, msg, num); /* reuse its two trailer fields */
        for (uint32_t i = 1; i < h.headers.n; i++)
            http_headers_add(&t, &ex->arena, h.headers.v[i].name, h.headers.v[i].name_len,
                             h.headers.v[i].value, h.headers.v[i].value_len);
        ex->down->send_end(ex, &t);
        ex->resp_done = true;
    } else {
        ex->down->reset(ex);
    }
    exchange_finish(ex);
}

void exchange_local_reply(struct exchange *ex, int status, const char *body, unsigned flags)
{
    if (ex->finished || ex->resp_head_sent)
        return;
    disarm_try(ex);
    cancel_attempt(ex, ATTEMPT_CANCELLED);
    ex->flags |= flags;
    if (ex->arena.limit_hit) /* the request filled it: room for the codec to answer */
        arena_grant(&ex->arena, REPLY_ARENA_GRANT);
    struct http_header hv[REPLY_FIELDS];
    struct http_response_head h = {.status = status, .content_length = -1};
    struct evbuffer *b = NULL;
    char num[24];
    reply_headers(&h.headers, hv, REPLY_FIELDS);
    reply_identity(ex, &h);
    if (ex->is_grpc) {
        grpc_head(ex, &h, grpc_status_for(status), body, num);
    } else {
        b = evbuffer_new();
        if (b)
            evbuffer_add_printf(b, "%s\n", body);
        h.content_length = b ? (int64_t)evbuffer_get_length(b) : 0;
        http_headers_add(&h.headers, &ex->arena, SY_STRLIT("content-type"),
                         SY_STRLIT("text/plain"));
    }
    ex->status = h.status;
    ex->resp_head_sent = true;
    bool end = !b || ex->is_head;
    ex->down->send_head(ex, &h, end);
    if (!end) {
        ex->bytes_out += evbuffer_get_length(b);
        ex->down->send_body(ex, b);
        ex->down->send_end(ex, NULL);
    }
    if (b)
        evbuffer_free(b);
    ex->resp_done = true;
    exchange_finish(ex);
}

void exchange_reject(struct exchange *ex, int status)
{
    ex->status = status;
    ex->flags |= EXF_LR;
    exchange_finish(ex);
}

/*
 * Preparing the request failed with `rc`: 400 for a bad path, 431 when the
 * request head left no room in the exchange's arena, else 500.
 */
static void reply_prep_failure(struct exchange *ex, int rc)
{
    if (rc == SY_EINVAL)
        exchange_local_reply(ex, 400, "bad request path", EXF_LR);
    else if (ex->arena.limit_hit)
        exchange_local_reply(ex, 431, "request headers too large", EXF_LR);
    else
        exchange_local_reply(ex, 500, "out of memory", EXF_LR);
}

/* ---- routing ------------------------------------------------------------------- */

/* A local answer without a body (a redirect, a CORS preflight): its head ends the exchange. */
static void send_local_head(struct exchange *ex, struct http_response_head *h)
{
    ex->status = h->status;
    ex->flags |= EXF_LR;
    ex->resp_head_sent = true;
    ex->down->send_head(ex, h, true);
    ex->resp_done = true;
    exchange_finish(ex);
}

static void send_redirect(struct exchange *ex, const struct url_map_request *m,
                          const struct url_map_result *res)
{
    const struct cfg_url_redirect *r = res->action->url_redirect;
    char loc[4096];
    int n = url_map_redirect_location2(r, m, res->matched_prefix_len, loc, sizeof loc);
    if (n < 0) {
        exchange_local_reply(ex, 500, "redirect target too long", EXF_LR);
        return;
    }
    struct http_header hv[REPLY_FIELDS];
    struct http_response_head h = {.status = r->redirect_response_code, .content_length = 0};
    reply_headers(&h.headers, hv, REPLY_FIELDS);
    reply_identity(ex, &h);
    http_headers_add(&h.headers, &ex->arena, SY_STRLIT("location"), loc, (size_t)n);
    response_apply_route(ex, &h, res);
    send_local_head(ex, &h);
}

/* An allowed CORS preflight is answered here: 200, the Access-Control-* headers, no body. */
static void send_preflight(struct exchange *ex, const struct url_map_result *res)
{
    struct http_header hv[REPLY_FIELDS];
    struct http_response_head h = {.status = 200, .content_length = 0};
    reply_headers(&h.headers, hv, REPLY_FIELDS);
    reply_identity(ex, &h);
    if (cors_preflight_headers(ex, res, &h) != 0) {
        exchange_local_reply(ex, 500, "out of memory", EXF_LR);
        return;
    }
    send_local_head(ex, &h);
}

/* fault_injection_policy.abort; true when the exchange was answered. */
static bool inject_abort(struct exchange *ex, const struct cfg_route_action *a)
{
    const struct cfg_fault_policy *f = &a->fault_injection_policy;
    if (!a->fault_set || !f->abort_set || !worker_chance(ex->w, f->abort_percentage))
        return false;
    ex->flags |= EXF_FI;
    if (f->grpc_status >= 0 && f->http_status == 0) {
        struct http_header hv[REPLY_FIELDS];
        struct http_response_head h = {.content_length = -1};
        char num[24];
        reply_headers(&h.headers, hv, REPLY_FIELDS);
        reply_identity(ex, &h);
        grpc_head(ex, &h, f->grpc_status, "fault injected", num);
        ex->status = 200;
        ex->resp_head_sent = ex->resp_done = true;
        ex->down->send_head(ex, &h, true);
        exchange_finish(ex);
        return true;
    }
    exchange_local_reply(ex, f->http_status, "fault filter abort", EXF_FI);
    return true;
}

/* The whole-exchange deadline: route timeout, else the service's, or a shorter grpc-timeout. */
static uint64_t exchange_timeout_ms(const struct exchange *ex)
{
    return route_timeout_ms(ex->route->action, ex->service, &ex->req.headers);
}

/* The body kept for retries, while it fits retry_buffer_size (none when it cannot be made). */
static void start_replay(struct exchange *ex)
{
    if (!ex->req.has_body || ex->service->retry_buffer_size == 0)
        return;
    ex->replay = evbuffer_new();
    if (!ex->replay)
        return;
    ex->_replay_free = arena_on_free(&ex->arena, on_free_replay, ex);
    if (!ex->_replay_free) {
        evbuffer_free(ex->replay);
        ex->replay = NULL;
        return;
    }
    if (ex->req_pending)
        keep_for_replay(ex, ex->req_pending);
}

/* Circuit breaker, deadline, affinity and the body kept for retries. */
static bool prepare_attempts(struct exchange *ex)
{
    if (!backend_cb_request_enter(ex->srt)) {
        exchange_local_reply(ex, 503, "upstream overflow: max_requests", EXF_UO);
        return false;
    }
    if (!arena_on_cleanup(&ex->arena, on_cleanup_request_slot, ex)) {
        backend_cb_request_leave(ex->srt);
        exchange_local_reply(ex, 500, "out of memory", 0);
        return false;
    }
    if (!arena_on_cleanup(&ex->arena, on_cleanup_attempt, ex)) {
        exchange_local_reply(ex, 500, "out of memory", 0);
        return false;
    }
    uint64_t t = exchange_timeout_ms(ex);
    if (t) {
        ex->deadline_ms = sy_now_ms() + t;
        sy_deadline_arm(&ex->route_timer, t);
    }
    uint64_t idle = ex->listener->timeouts.stream_idle_ms;
    if (idle)
        sy_deadline_arm(&ex->idle_timer, idle);
    ex->has_hash = backend_request_hash(ex->srt, &ex->req, &ex->client_addr, &ex->hash);
    start_replay(ex);
    return true;
}

void router_start(struct exchange *ex)
{
    struct url_map_request m;
    int rc = request_identify(ex);
    if (rc == 0)
        rc = request_prepare_match(ex, &m);
    if (rc != 0) {
        reply_prep_failure(ex, rc);
        return;
    }
    struct url_map_result *res = arena_alloc(&ex->arena, sizeof *res);
    if (!res) {
        reply_prep_failure(ex, SY_ENOMEM);
        return;
    }
    const struct cfg_url_map *um = ex->listener->url_map;
    url_map_match(runtime_url_map(ex->rt, um), &m, (uint32_t)worker_rand(ex->w), res);
    ex->route = res;
    if (cors_on_request(ex, res)) {
        send_preflight(ex, res);
        return;
    }
    if (res->action->url_redirect) {
        send_redirect(ex, &m, res);
        return;
    }
    ex->service = res->service;
    if (!ex->service) {
        exchange_local_reply(ex, 404, "no route", EXF_NR);
        return;
    }
    ex->srt = runtime_service(ex->rt, ex->service);
    rc = request_apply_route(ex, &m, res);
    if (rc != 0) {
        reply_prep_failure(ex, rc);
        return;
    }
    if (inject_abort(ex, res->action))
        return;
    if (!prepare_attempts(ex))
        return;
    const struct cfg_fault_policy *f = &res->action->fault_injection_policy;
    if (res->action->fault_set && f->delay_set && worker_chance(ex->w, f->delay_percentage)) {
        ex->flags |= EXF_FI;
        arm_try(ex, TRY_FAULT_DELAY, f->fixed_delay_ms);
        return;
    }
    start_first_attempt(ex);
}

/* ---- attempts ---------------------------------------------------------------------- */

static void log_try(struct exchange *ex, const char *what)
{
    size_t n = strlen(ex->tries_log);
    if (n + 2 >= sizeof ex->tries_log)
        return;
    snprintf(ex->tries_log + n, sizeof ex->tries_log - n, "%s%s:%s", n ? ";" : "", ex->endpoint,
             what);
}

/* An endpoint for the next attempt (backend_pick): index, SY_ELIMIT or SY_ENOTFOUND. */
static int pick_endpoint(struct exchange *ex)
{
    struct pick_ctx ctx = {.w = ex->w, .has_hash = ex->has_hash, .hash = ex->hash};
    memcpy(ctx.tried, ex->tried, sizeof ctx.tried);
    return backend_pick(ex->srt, &ctx);
}

/*
 * Every usable endpoint is at max_concurrent_requests_per_endpoint: queue on
 * this worker (bounded by max_pending_requests and the exchange's deadline)
 * until a release wakes us (exchange_worker_wake).
 */
static void wait_capacity(struct exchange *ex)
{
    struct exchange_worker *xw = ex->w->exchanges;
    if (!ex->_wait) {
        if (!backend_cb_pending_enter(ex->srt)) {
            exchange_local_reply(ex, 503, "upstream overflow: max_pending_requests", EXF_UO);
            return;
        }
        ex->_wait = arena_on_cleanup(&ex->arena, on_cleanup_wait, ex);
        if (!ex->_wait) {
            backend_cb_pending_leave(ex->srt);
            exchange_local_reply(ex, 500, "out of memory", 0);
            return;
        }
        sy_list_insert_tail(&xw->waiting, &ex->_wait_link);
        backend_capacity_wait_enter(ex->srt, ex->w->id);
    }
    /* A slot freed between our pick and our being counted woke nobody:
     * look once more now that a release would see us (backend.h). */
    int idx = pick_endpoint(ex);
    if (idx == SY_ELIMIT)
        return;
    arena_cleanup_run(ex->_wait);
    attempt_on(ex, idx);
}

void exchange_worker_wake(struct worker *w)
{
    struct exchange_worker *xw = w->exchanges;
    if (!xw)
        return;
    struct sy_link todo, kept;
    const struct service_rt *full[WAKE_FULL_MAX];
    size_t n_full = 0;
    sy_list_init(&todo);
    sy_list_init(&kept);
    sy_list_splice_tail(&todo, &xw->waiting);
    /* Oldest first. An exchange that finishes meanwhile unlinks itself from
     * whichever list holds it; new waiters queue on xw->waiting, behind the
     * ones kept. */
    for (struct sy_link *l; (l = sy_list_first(&todo));) {
        struct exchange *ex = SY_CONTAINER_OF(l, struct exchange, _wait_link);
        sy_list_unlink(l);
        sy_list_insert_tail(&kept, l);
        bool known_full = false;
        for (size_t i = 0; i < n_full && !known_full; i++)
            known_full = full[i] == ex->srt;
        if (known_full)
            continue; /* keep the queue order: nobody overtakes an older waiter */
        int idx = pick_endpoint(ex);
        if (idx == SY_ELIMIT) {
            if (n_full < WAKE_FULL_MAX)
                full[n_full++] = ex->srt;
            continue;
        }
        arena_cleanup_run(ex->_wait); /* off the queue, pending slot back */
        attempt_on(ex, idx);
    }
    sy_list_splice_head(&xw->waiting, &kept);
}

/* The first attempt; request_mirror_policy's copy (mirror.h) leaves just before it. */
static void start_first_attempt(struct exchange *ex)
{
    const struct cfg_mirror_policy *mp = ex->route->action->request_mirror_policy;
    if (mp && worker_chance(ex->w, mp->mirror_percent))
        mirror_start(ex);
    start_attempt(ex);
}

static void start_attempt(struct exchange *ex)
{
    int idx = pick_endpoint(ex);
    if (idx == SY_ELIMIT) {
        wait_capacity(ex);
        return;
    }
    attempt_on(ex, idx);
}

/*
 * Hand the body received so far (and the end) to a new attempt. 0, or
 * SY_ENOMEM when the body kept for a retry could not be copied (then
 * nothing was sent).
 */
static int send_request_body(struct exchange *ex)
{
    if (ex->attempts > 1 && ex->replay) {
        struct evbuffer *copy = evbuffer_new();
        int rc = copy ? copy_buffer(copy, ex->replay) : SY_ENOMEM;
        if (rc == 0)
            ex->up.ops->send_body(ex->up.att, copy);
        if (copy)
            evbuffer_free(copy);
        if (rc != 0)
            return rc;
        if (ex->req_pending)
            evbuffer_drain(ex->req_pending, pending_len(ex));
    } else if (pending_len(ex) && !tunnel_held(ex)) {
        ex->up.ops->send_body(ex->up.att, ex->req_pending);
    }
    if (ex->up.att && ex->req_done && ex->req.has_body)
        ex->up.ops->send_end(ex->up.att, NULL);
    return 0;
}

/*
 * connection_draining: time the attempt in flight out at its endpoint's
 * drain deadline once that endpoint left the config, else no timer.
 */
static void arm_drain(struct exchange *ex)
{
    uint64_t deadline =
        ex->endpoint_idx >= 0 ? backend_endpoint_drain_deadline_ms(ex->srt, ex->endpoint_idx) : 0;
    if (!deadline) {
        sy_event_del(&ex->drain_ev);
        return;
    }
    uint64_t now = sy_now_ms();
    sy_timer_arm_ms(&ex->drain_ev, deadline > now ? deadline - now : 0);
}

void exchange_worker_on_reload(struct worker *w)
{
    struct exchange_worker *xw = w->exchanges;
    if (!xw)
        return;
    for (struct sy_link *l = xw->inflight.next; l != &xw->inflight; l = l->next) {
        struct exchange *ex = SY_CONTAINER_OF(l, struct exchange, _link);
        if (ex->up.att)
            arm_drain(ex);
    }
}

static void record_endpoint(struct exchange *ex, int idx)
{
    const struct cfg_endpoint *ep = backend_endpoint_cfg(ex->srt, (size_t)idx);
    ex->endpoint_idx = idx;
    if (idx < BACKEND_MAX_TRIED)
        ex->tried[idx / 64] |= 1ull << (idx % 64);
    size_t elen = strlen(ep->address.text);
    if (elen >= sizeof ex->endpoint)
        elen = sizeof ex->endpoint - 1;
    memcpy(ex->endpoint, ep->address.text, elen);
    ex->endpoint[elen] = '\0';
}

/* Start an attempt on endpoint `idx` from pick_endpoint (< 0: none can serve: 503). */
static void attempt_on(struct exchange *ex, int idx)
{
    if (idx < 0) {
        exchange_local_reply(ex, 503, "no healthy upstream", EXF_UH);
        return;
    }
    record_endpoint(ex, idx);
    ex->attempts++;
    ex->_attempt_start_us = sy_now_us();
    ex->_attempt_observed = false;
    bool fresh = ex->_fresh_conn; /* a stale resend: counted as such, not as a retry */
    ex->_fresh_conn = false;
    struct stats_service_shard *ss = svc_stats(ex);
    stats_inc(&ss->upstream_requests, 1);
    if (ex->attempts > 1 && !fresh)
        stats_inc(&ss->upstream_retries, 1);
    ex->up_req = (struct upstream_request){
        .svc = ex->service,
        .ep = backend_endpoint_cfg(ex->srt, (size_t)idx),
        .cfg_version = ex->rt->cfg->version,
        .head = &ex->req,
        .arena = &ex->arena,
        .is_head = ex->is_head,
        .fresh_connection = fresh,
        .conn_enter = conn_enter,
        .conn_leave = conn_leave,
        .conn_arg = ex,
        .cbs = &upstream_cbs,
        .ctx = ex,
    };
    int rc = upstream_attempt_start(ex->w->pools, &ex->up_req, &ex->up);
    if (rc == SY_ELIMIT) {
        end_attempt(ex, ATTEMPT_CANCELLED);
        exchange_local_reply(ex, 503, "upstream overflow: max_connections", EXF_UO);
        return;
    }
    if (rc != 0) {
        on_up_error(ex, UPSTREAM_CONNECT_FAILED, false);
        return;
    }
    struct retry_policy p;
    retry_policy_from_route(ex->route->action, &p);
    if (p.per_try_timeout_ms)
        arm_try(ex, TRY_PER_TRY, p.per_try_timeout_ms);
    arm_drain(ex); /* the endpoint may be draining already (an older runtime's) */
    if (send_request_body(ex) != 0) {
        log_try(ex, "replay-failed");
        exchange_local_reply(ex, 500, "out of memory: request body replay", 0);
    }
}

/* May the exchange be sent again? Nothing went downstream, the body can be replayed. */
static bool replayable(const struct exchange *ex)
{
    return !ex->resp_head_sent && (!ex->req.has_body || ex->replay);
}

/*
 * May the exchange be retried for an outcome meeting `met`? Checks the
 * route's policy, the retry count, the deadline and the retry circuit
 * breaker (whose slot it takes, once per exchange).
 */
static bool can_retry(struct exchange *ex, uint32_t met)
{
    struct retry_policy p;
    retry_policy_from_route(ex->route->action, &p);
    if (!(met & p.conditions) || !replayable(ex) || (ex->req.has_body && !p.allow_body))
        return false;
    if (ex->retries >= p.num_retries) {
        if (ex->retries > 0)
            ex->flags |= EXF_URX;
        return false;
    }
    if (ex->deadline_ms && sy_now_ms() >= ex->deadline_ms)
        return false;
    if (!ex->_retry_slot) {
        if (!backend_cb_retry_enter(ex->srt)) {
            /* Not retried: the client gets this attempt's failure, flagged
             * URO (retry overflow), not UO: no request was refused. */
            ex->flags |= EXF_URO;
            stats_inc(&svc_stats(ex)->upstream_retry_overflow, 1);
            return false;
        }
        ex->_retry_slot = arena_on_cleanup(&ex->arena, on_cleanup_retry_slot, ex);
        if (!ex->_retry_slot) {
            backend_cb_retry_leave(ex->srt);
            return false;
        }
    }
    return true;
}

/* Retry after a backoff if can_retry(); false when not retried. */
static bool try_retry(struct exchange *ex, uint32_t met, const char *why)
{
    if (!can_retry(ex, met))
        return false;
    ex->retries++;
    log_try(ex, why);
    const struct cfg_backend_service *s = ex->service;
    uint64_t delay = retry_backoff_ms(ex->retries, s->retry_backoff.base_interval_ms,
                                      s->retry_backoff.max_interval_ms, worker_rand(ex->w));
    log_debug("exchange %s: retry %u in %llums after %s", ex->request_id, ex->retries,
              (unsigned long long)delay, why);
    arm_try(ex, TRY_BACKOFF, delay ? delay : 1);
    return true;
}

/* An attempt failed before its response head went downstream. */
static void attempt_failed(struct exchange *ex, const struct attempt_report *r, bool transparent)
{
    uint32_t met = retry_conditions_met(r);
    const char *why = r->result == RESULT_RESPONSE          ? retry_condition_name(met)
                      : r->result == RESULT_PER_TRY_TIMEOUT ? "per-try-timeout"
                                                            : retry_condition_name(met);
    if (transparent && replayable(ex) && ex->transparent_retries < MAX_TRANSPARENT_RETRIES) {
        ex->transparent_retries++;
        log_try(ex, "refused-stream");
        start_attempt(ex);
        return;
    }
    if (try_retry(ex, met, why))
        return;
    log_try(ex, why);
    static const unsigned flag_of[] = {
        [RESULT_RESPONSE] = 0,
        [RESULT_CONNECT_FAILURE] = EXF_UF,
        [RESULT_RESET] = EXF_UR,
        [RESULT_PROTOCOL_ERROR] = EXF_UP,
        [RESULT_REFUSED_STREAM] = EXF_UR,
        [RESULT_PER_TRY_TIMEOUT] = EXF_UT,
    };
    static const char *const msg_of[] = {
        [RESULT_RESPONSE] = "",
        [RESULT_CONNECT_FAILURE] = "upstream connect error",
        [RESULT_RESET] = "upstream reset before response headers",
        [RESULT_PROTOCOL_ERROR] = "upstream protocol error",
        [RESULT_REFUSED_STREAM] = "upstream refused the stream",
        [RESULT_PER_TRY_TIMEOUT] = "upstream request timeout",
    };
    exchange_local_reply(ex, retry_local_status(r->result), msg_of[r->result], flag_of[r->result]);
}

static void on_try(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    enum try_state st = ex->_try_state;
    ex->_try_state = TRY_IDLE;
    if (ex->finished)
        return;
    switch (st) {
    case TRY_FAULT_DELAY: start_first_attempt(ex); break;
    case TRY_BACKOFF: start_attempt(ex); break;
    case TRY_PER_TRY:
        stats_inc(&svc_stats(ex)->upstream_timeouts, 1);
        observe_attempt(ex, 0);
        if (ex->resp_head_sent) {
            ex->flags |= EXF_UT;
            cancel_attempt(ex, ATTEMPT_GATEWAY_FAILURE);
            fail_after_head(ex, GRPC_DEADLINE_EXCEEDED, "upstream per-try timeout");
            return;
        }
        cancel_attempt(ex, ATTEMPT_GATEWAY_FAILURE);
        attempt_failed(ex, &(struct attempt_report){.result = RESULT_PER_TRY_TIMEOUT}, false);
        break;
    case TRY_IDLE: break;
    }
}

/* ---- request body ------------------------------------------------------------ */

/* Keep a copy for retries while it fits retry_buffer_size; past that, give up replaying. */
static void keep_for_replay(struct exchange *ex, struct evbuffer *buf)
{
    if (!ex->replay)
        return;
    size_t n = evbuffer_get_length(buf);
    if (evbuffer_get_length(ex->replay) + n > ex->service->retry_buffer_size ||
        copy_buffer(ex->replay, buf) != 0)
        arena_cleanup_run(ex->_replay_free); /* frees it now: no longer replayable */
}

/*
 * Queue request body bytes that no attempt takes yet (moved out of `buf`);
 * the client is paused at SY_FLOW_HIGH. Out of memory: a local 500.
 */
static void queue_pending(struct exchange *ex, struct evbuffer *buf)
{
    struct evbuffer *pending = pending_buf(ex);
    if (!pending) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        exchange_local_reply(ex, 500, "out of memory", 0);
        return;
    }
    evbuffer_add_buffer(pending, buf);
    if (evbuffer_get_length(pending) >= SY_FLOW_HIGH)
        ex->down->read_body(ex, false);
}

/*
 * Client bytes of a tunnel the backend has not accepted: kept in
 * req_pending, the client paused at SY_FLOW_HIGH, until on_up_head either
 * forwards them (accepted) or drops them (refused: from then on they are
 * discarded as they come).
 */
static void hold_tunnel_bytes(struct exchange *ex, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    if (ex->resp_head_sent) {
        evbuffer_drain(buf, n);
        return;
    }
    queue_pending(ex, buf);
}

void exchange_on_request_body(struct exchange *ex, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    ex->bytes_in += n;
    touch(ex);
    if (ex->mirror)
        mirror_on_request_body(ex->mirror, buf); /* a copy; buf is unchanged */
    if (ex->finished || ex->resp_done) {
        evbuffer_drain(buf, n);
        return;
    }
    if (ex->req.upgrade && tunnel_held(ex)) {
        hold_tunnel_bytes(ex, buf);
        return;
    }
    if (ex->service)
        keep_for_replay(ex, buf);
    if (ex->up.att) {
        ex->up.ops->send_body(ex->up.att, buf);
        if (ex->up.ops->pending(ex->up.att) >= SY_FLOW_HIGH)
            ex->down->read_body(ex, false);
        return;
    }
    if (ex->replay && ex->attempts > 0) {
        evbuffer_drain(buf, n); /* kept in replay for the next attempt */
        return;
    }
    queue_pending(ex, buf);
}

void exchange_on_request_end(struct exchange *ex, const struct http_headers *trailers)
{
    ex->req_done = true;
    touch(ex);
    if (ex->mirror)
        mirror_on_request_end(ex->mirror, trailers);
    if (ex->up.att && !ex->finished && ex->req.has_body)
        ex->up.ops->send_end(ex->up.att, trailers);
}

static void on_up_drained(void *ctx)
{
    struct exchange *ex = ctx;
    if (ex->req_done || ex->finished)
        return;
    if (tunnel_held(ex) && !ex->resp_head_sent && pending_len(ex) >= SY_FLOW_HIGH)
        return; /* still holding a full tunnel buffer for the backend's answer */
    ex->down->read_body(ex, true);
}

/*
 * The backend answered an Upgrade / extended CONNECT (the head already went
 * downstream): accepted, the bytes held meanwhile go to it now; refused,
 * they are dropped, and so is whatever the client sends after.
 */
static void tunnel_answered(struct exchange *ex)
{
    if (!tunnel_held(ex)) {
        if (pending_len(ex) && ex->up.att)
            ex->up.ops->send_body(ex->up.att, ex->req_pending);
    } else if (ex->req_pending) {
        evbuffer_drain(ex->req_pending, pending_len(ex));
    }
    if (!ex->finished && !ex->req_done)
        ex->down->read_body(ex, true);
}

void exchange_on_downstream_abort(struct exchange *ex)
{
    ex->flags |= EXF_DC;
    if (!ex->status)
        ex->status = 499; /* client closed before a response, as nginx logs it */
    exchange_finish(ex);
}

void exchange_on_downstream_cut(struct exchange *ex, unsigned flag)
{
    ex->flags |= flag;
    if (!ex->status)
        ex->status = 503; /* a 5xx: the proxy failed it, the client did nothing wrong */
    exchange_finish(ex);
}

/* ---- response ------------------------------------------------------------------ */

static int head_grpc_status(const struct http_response_head *h)
{
    const struct http_header *g = http_headers_get(&h->headers, SY_STRLIT("grpc-status"));
    uint64_t v;
    if (!g || sy_parse_dec(g->value, g->value_len, 999, &v) != 0)
        return -1;
    return (int)v;
}

/* GENERATED_COOKIE / HTTP_COOKIE affinity: tell the client its endpoint. */
static void add_affinity_cookie(struct exchange *ex, struct http_response_head *h, int idx)
{
    char cookie[512];
    int n = backend_affinity_cookie(ex->srt, &ex->req, idx, cookie, sizeof cookie);
    if (n > 0)
        http_headers_add_copy(&h->headers, &ex->arena, SY_STRLIT("set-cookie"), cookie, (size_t)n);
}

static void on_up_head(void *ctx, struct http_response_head *h, bool end)
{
    struct exchange *ex = ctx;
    touch(ex);
    observe_attempt(ex, h->status);
    struct attempt_report r = {RESULT_RESPONSE, h->status, end ? head_grpc_status(h) : -1};
    uint32_t met = retry_conditions_met(&r);
    if (met && can_retry(ex, met)) {
        /* The answer is dropped: the backend sees the attempt cancelled. */
        cancel_attempt(ex, backend_outcome_of_status(h->status));
        try_retry(ex, met, retry_condition_name(met));
        return;
    }
    if (ex->mirror)
        mirror_on_primary_head(ex->mirror, h); /* as the backend sent it, for a compare */
    if (ex->endpoint_idx >= 0)
        add_affinity_cookie(ex, h, ex->endpoint_idx);
    if (ex->attempts > 1)
        log_try(ex, "done");
    response_apply_route(ex, h, ex->route);
    ex->status = h->status;
    ex->resp_head_sent = true;
    ex->down->send_head(ex, h, end);
    /* With `end` the codec still calls on_end to release
     * the attempt; the downstream side is complete already. */
    if (end)
        ex->resp_done = true;
    if (ex->req.upgrade && !ex->finished)
        tunnel_answered(ex);
}

static void on_up_body(void *ctx, struct evbuffer *buf)
{
    struct exchange *ex = ctx;
    touch(ex);
    ex->bytes_out += evbuffer_get_length(buf);
    if (ex->mirror)
        mirror_on_primary_body(ex->mirror, buf);
    ex->down->send_body(ex, buf);
    if (ex->up.att && !ex->finished && ex->down->pending(ex) >= SY_FLOW_HIGH)
        ex->up.ops->read_response(ex->up.att, false);
}

static void on_up_end(void *ctx, const struct http_headers *trailers)
{
    struct exchange *ex = ctx;
    ex->up.att = NULL; /* released by the codec */
    if (ex->finished)
        return;
    end_attempt(ex, backend_outcome_of_status(ex->status));
    if (ex->mirror)
        mirror_on_primary_end(ex->mirror, trailers);
    if (!ex->resp_done)
        ex->down->send_end(ex, trailers);
    ex->resp_done = true;
    exchange_finish(ex);
}

void exchange_on_downstream_drained(struct exchange *ex)
{
    if (ex->up.att && !ex->finished)
        ex->up.ops->read_response(ex->up.att, true);
}

static enum attempt_result result_of(enum upstream_error err)
{
    switch (err) {
    case UPSTREAM_CONNECT_FAILED: return RESULT_CONNECT_FAILURE;
    case UPSTREAM_RESET: return RESULT_RESET;
    case UPSTREAM_PROTOCOL: return RESULT_PROTOCOL_ERROR;
    case UPSTREAM_REFUSED_STREAM: return RESULT_REFUSED_STREAM;
    }
    return RESULT_RESET;
}

/*
 * The attempt failed on a reused keep-alive connection the backend had
 * closed, before any response byte (`stale`, upstream.h): the connection
 * died idle, the endpoint did nothing wrong. An idempotent request whose
 * body can be replayed is sent again at once on a new connection (RFC 9112
 * 9.3.1; as nginx, HAProxy and browsers do), once per exchange, outside
 * num_retries and max_retries, and without counting against the endpoint
 * (outlier detection). True when resent.
 */
static bool resend_stale(struct exchange *ex, bool stale)
{
    if (!retry_stale_resend(stale, ex->req.method, ex->req.method_len,
                            replayable(ex) && !ex->req.upgrade, ex->stale_resends))
        return false;
    end_attempt(ex, ATTEMPT_CANCELLED);
    ex->stale_resends++;
    ex->_fresh_conn = true;
    stats_inc(&svc_stats(ex)->upstream_stale_resends, 1);
    log_try(ex, "stale-connection");
    start_attempt(ex);
    return true;
}

static void on_up_error(void *ctx, enum upstream_error err, bool stale)
{
    struct exchange *ex = ctx;
    ex->up.att = NULL; /* released by the codec */
    if (ex->finished)
        return;
    log_debug("exchange %s: upstream %s: %s%s", ex->request_id, ex->endpoint,
              upstream_error_str(err), stale ? " (stale connection)" : "");
    if (!ex->resp_head_sent && resend_stale(ex, stale))
        return;
    stats_inc(&svc_stats(ex)->upstream_failures, 1);
    observe_attempt(ex, 0);
    end_attempt(ex, ATTEMPT_GATEWAY_FAILURE);
    if (ex->resp_head_sent) {
        ex->flags |= EXF_UR;
        fail_after_head(ex, GRPC_UNAVAILABLE, "upstream reset");
        return;
    }
    /* Only a refused stream is known not to have been processed. A stale
     * connection that could not be resent above (a POST, a body too large to
     * replay, the second time) follows the retry policy like any other
     * failure. */
    struct attempt_report r = {.result = result_of(err)};
    attempt_failed(ex, &r, err == UPSTREAM_REFUSED_STREAM);
}

/* ---- timers ------------------------------------------------------------------------- */

/*
 * connection_draining: the endpoint of the attempt in flight left the config
 * (a reload) and its draining_timeout is over: cut the attempt off (503
 * before response headers, a reset or gRPC UNAVAILABLE after). Armed by
 * arm_drain() for the deadline; a later reload that brought the endpoint
 * back disarmed it.
 */
static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    if (ex->finished || ex->endpoint_idx < 0)
        return;
    uint64_t deadline = backend_endpoint_drain_deadline_ms(ex->srt, ex->endpoint_idx);
    if (!deadline)
        return; /* back in the config meanwhile */
    uint64_t now = sy_now_ms();
    if (now < deadline) { /* sy_now_ms is coarse: it may lag the timer by a few ms */
        sy_timer_arm_ms(&ex->drain_ev, deadline - now);
        return;
    }
    log_try(ex, "drained");
    cancel_attempt(ex, ATTEMPT_CANCELLED);
    if (ex->resp_head_sent) {
        ex->flags |= EXF_UR;
        fail_after_head(ex, GRPC_UNAVAILABLE, "endpoint drained");
        return;
    }
    exchange_local_reply(ex, 503, "endpoint removed: connection draining timeout", EXF_UR);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    if (ex->finished)
        return;
    ex->flags |= EXF_UT;
    if (ex->up.att) {
        stats_inc(&svc_stats(ex)->upstream_timeouts, 1);
        observe_attempt(ex, 0);
    }
    disarm_try(ex);
    cancel_attempt(ex, ATTEMPT_GATEWAY_FAILURE);
    if (ex->resp_head_sent) {
        fail_after_head(ex, GRPC_DEADLINE_EXCEEDED, "upstream request timeout");
        return;
    }
    log_try(ex, "timeout");
    exchange_local_reply(ex, 504, "upstream request timeout", 0);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    uint64_t idle = ex->listener->timeouts.stream_idle_ms;
    uint64_t now = sy_now_ms();
    if (ex->finished)
        return;
    uint64_t quiet = now > ex->last_activity_ms ? now - ex->last_activity_ms : 0;
    if (quiet < idle) {
        sy_deadline_arm(&ex->idle_timer, idle - quiet);
        return;
    }
    ex->flags |= EXF_SI;
    disarm_try(ex);
    cancel_attempt(ex, ATTEMPT_CANCELLED);
    if (ex->resp_head_sent) {
        fail_after_head(ex, GRPC_DEADLINE_EXCEEDED, "stream idle timeout");
        return;
    }
    exchange_local_reply(ex, 504, "stream idle timeout", 0);
}
