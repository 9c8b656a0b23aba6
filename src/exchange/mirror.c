/*
 * mirror.c — see mirror.h.
 *
 * A mirror goes through three phases, named by two flags:
 *
 *   sending     (!over)          its attempt is in flight: request body
 *                                copies go to it as the client sends them,
 *                                its response is read and discarded
 *                                (hashed first for a compare);
 *   over, held  (over && ex)     the attempt ended and its result was
 *                                counted; the exchange still points at us
 *                                (its primary response may still be coming,
 *                                for the compare);
 *   released    (over && !ex)    the compare is finished and the mirror is
 *                                freed on a later loop turn (reap_ev).
 *
 * The exchange lets go of the mirror from a cleanup registered on its arena
 * (on_exchange_end, run by exchange_finish); a mirror still sending then is
 * abandoned if the client's request never completed, and otherwise goes on
 * alone until its response, a failure or its timeout. Resources and where
 * they go back: the max_requests slot and the endpoint (conclude), the
 * runtime hold, the scratch buffer and the arena (on_reap).
 */
#include "exchange/mirror.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "exchange/retry.h"
#include "exchange/shadow.h"
#include "runtime.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/worker.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

#define MIRROR_ARENA_LIMIT  (256 * 1024) /* request head copy, response head, compare state */
#define MIRROR_INLINE_ARENA 2048         /* bytes of arena allocated with the mirror itself */
#define SHADOW_HOST_SUFFIX  "-shadow"

struct mirror {
    struct worker *w;
    struct arena arena;
    struct runtime *rt;
    struct rt_hold *rt_hold;
    const struct cfg_mirror_policy *policy;
    struct service_rt *srt;            /* the mirror service's run-time state */
    const struct runtime_route *route; /* name and counters of the mirrored route */
    struct exchange *ex;               /* the primary exchange; NULL once it finished */
    struct http_request_head head;     /* the copy sent (arena) */
    char *request_id;
    bool is_head;
    bool has_hash;
    uint64_t hash; /* session affinity key in the mirror service */
    struct upstream_request up_req;
    struct upstream_attempt up; /* up.att: the attempt in flight, NULL when none */
    int endpoint_idx;           /* endpoint held (backend_pick), -1 = none */
    struct evbuffer *scratch;   /* a body copy on its way to the attempt */
    bool scratch_failed;        /* copying into `scratch` ran out of memory */
    uint64_t body_bytes;        /* request body bytes copied so far */
    int status;                 /* the mirror's response status, 0 = none yet */
    bool req_done;              /* the client's request is complete */
    bool over;                  /* the attempt is over and the result counted */
    bool stale_resent;          /* sent again after a stale keep-alive connection */
    bool released;              /* compare finished, reap_ev armed */
    struct shadow_compare *cmp; /* NULL: no compare */
    struct event timeout_ev;    /* the mirror service's timeout */
    struct event reap_ev;       /* deferred free */
};

static void on_mirror_head(void *ctx, struct http_response_head *h, bool end);
static void on_mirror_body(void *ctx, struct evbuffer *buf);
static void on_mirror_end(void *ctx, const struct http_headers *trailers);
static void on_mirror_drained(void *ctx);
static void on_mirror_error(void *ctx, enum upstream_error err, bool stale);

static const struct upstream_cbs mirror_cbs = {
    .on_head = on_mirror_head,
    .on_body = on_mirror_body,
    .on_end = on_mirror_end,
    .on_drained = on_mirror_drained,
    .on_error = on_mirror_error,
};

static struct stats_service_shard *svc_stats(const struct mirror *m)
{
    return &runtime_service_stats(m->rt, m->policy->backend_service)->shards[m->w->id];
}

/* A request of `ex` that gets no mirror after all: why, and no compare for its route. */
static void count_refused(struct exchange *ex, const struct cfg_mirror_policy *p,
                          enum stats_mirror_result r)
{
    stats_inc(&runtime_service_stats(ex->rt, p->backend_service)->shards[ex->w->id].mirror[r], 1);
    const struct runtime_route *rr = runtime_route(ex->rt, ex->route->action);
    if (p->compare.enabled && rr)
        stats_inc(&rr->stats->shards[ex->w->id].compare[STATS_COMPARE_INCOMPLETE], 1);
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct mirror *m = arg;
    evbuffer_free(m->scratch);
    struct rt_hold *hold = m->rt_hold;
    arena_free(&m->arena);
    free(m);
    rt_hold_put(hold);
}

/* Over and let go of by the exchange: finish the compare, free on a later loop turn. */
static void release(struct mirror *m)
{
    if (!m->over || m->ex || m->released)
        return;
    m->released = true;
    if (m->cmp) {
        struct shadow_subject s = {
            .worker_id = m->w->id,
            .stats = m->rt->stats,
            .route = m->route,
            .req = &m->head,
            .request_id = m->request_id,
            .mirror_service = m->policy->backend_service->name,
        };
        shadow_compare_finish(m->cmp, &s);
    }
    event_active(&m->reap_ev, EV_TIMEOUT, 1);
}

/*
 * The attempt is over with result `r` (counted once): cancel what is in
 * flight, give back the endpoint (with outcome `o`) and the max_requests slot.
 */
static void conclude(struct mirror *m, enum stats_mirror_result r, enum attempt_outcome o)
{
    if (m->over)
        return;
    m->over = true;
    evtimer_del(&m->timeout_ev);
    if (m->up.att) {
        void *att = m->up.att;
        m->up.att = NULL;
        m->up.ops->cancel(att);
    }
    if (m->endpoint_idx >= 0) {
        backend_release(m->srt, m->endpoint_idx, o);
        m->endpoint_idx = -1;
        exchange_capacity_released(m->w, m->srt);
    }
    backend_cb_request_leave(m->srt);
    stats_inc(&svc_stats(m)->mirror[r], 1);
    evbuffer_drain(m->scratch, evbuffer_get_length(m->scratch));
    log_debug("mirror %s: %s to %s", m->request_id,
              r == STATS_MIRROR_SENT        ? "sent"
              : r == STATS_MIRROR_ABANDONED ? "abandoned"
              : r == STATS_MIRROR_FAILED    ? "failed"
                                            : "skipped (limit)",
              m->policy->backend_service->name);
}

static void finish(struct mirror *m, enum stats_mirror_result r, enum attempt_outcome o)
{
    conclude(m, r, o);
    release(m);
}

/*
 * exchange_finish ran the exchange's cleanups: it lets go of us. A copy
 * whose request will never complete (the client went away, or the primary
 * answered before the body was all in) is abandoned; any other goes on.
 */
static void on_exchange_end(void *arg)
{
    struct mirror *m = arg;
    if (m->ex)
        m->ex->mirror = NULL;
    m->ex = NULL;
    if (!m->req_done)
        conclude(m, STATS_MIRROR_ABANDONED, ATTEMPT_CANCELLED);
    release(m);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct mirror *m = arg;
    stats_inc(&svc_stats(m)->upstream_timeouts, 1);
    finish(m, STATS_MIRROR_FAILED, ATTEMPT_GATEWAY_FAILURE);
}

/* ---- the copy of the request ------------------------------------------------------------ */

/*
 * Envoy's shadowAppendedHost: "-shadow" goes before the port
 * ("orders.example:8080" → "orders.example-shadow:8080"); the colons of an
 * IPv6 literal are not a port ("[::1]" → "[::1]-shadow").
 */
static int shadow_authority(struct mirror *m, const char *a, size_t n)
{
    size_t at = n;
    const char *colon = memrchr(a, ':', n), *bracket = memrchr(a, ']', n);
    if (colon && (!bracket || bracket < colon))
        at = (size_t)(colon - a);
    size_t len = n + SY_STRLEN(SHADOW_HOST_SUFFIX);
    char *v = arena_alloc(&m->arena, len + 1);
    if (!v)
        return SY_ENOMEM;
    memcpy(v, a, at);
    memcpy(v + at, SY_STRLIT(SHADOW_HOST_SUFFIX));
    memcpy(v + at + SY_STRLEN(SHADOW_HOST_SUFFIX), a + at, n - at);
    v[len] = '\0';
    m->head.authority = v;
    m->head.authority_len = (uint32_t)len;
    return 0;
}

/* A deep copy of `list` in the mirror's arena (it outlives the exchange's). */
static int copy_headers(struct mirror *m, struct http_headers *dst, const struct http_headers *src)
{
    if (http_headers_init(dst, &m->arena, src->n ? src->n : 1) != 0)
        return SY_ENOMEM;
    for (uint32_t i = 0; i < src->n; i++)
        if (http_headers_add_copy(dst, &m->arena, src->v[i].name, src->v[i].name_len,
                                  src->v[i].value, src->v[i].value_len) != 0)
            return SY_ENOMEM;
    return 0;
}

/* The request head as the primary sends it, in the mirror's arena. 0 or SY_ENOMEM. */
static int copy_head(struct mirror *m, const struct http_request_head *r)
{
    struct http_request_head *h = &m->head;
    struct arena *a = &m->arena;
    h->version = r->version;
    h->content_length = r->content_length;
    h->has_body = r->has_body;
    h->method = arena_strndup(a, r->method, r->method_len);
    h->method_len = r->method_len;
    h->path = arena_strndup(a, r->path, r->path_len);
    h->path_len = r->path_len;
    if (r->scheme) {
        h->scheme = arena_strndup(a, r->scheme, r->scheme_len);
        h->scheme_len = r->scheme_len;
    }
    if (!h->method || !h->path || (r->scheme && !h->scheme))
        return SY_ENOMEM;
    if (r->authority && r->authority_len && shadow_authority(m, r->authority, r->authority_len))
        return SY_ENOMEM;
    return copy_headers(m, &h->headers, &r->headers);
}

static void free_unattached(struct mirror *m)
{
    if (m->scratch)
        evbuffer_free(m->scratch);
    arena_free(&m->arena);
    free(m);
}

/*
 * A mirror for `ex`, holding the copy of its head, attached to it (ex->mirror
 * and a cleanup on its arena). NULL on allocation failure (nothing held).
 */
static struct mirror *mirror_new(struct exchange *ex, const struct cfg_mirror_policy *p,
                                 struct service_rt *srt)
{
    size_t head = (sizeof(struct mirror) + 15) & ~(size_t)15;
    struct mirror *m = malloc(head + MIRROR_INLINE_ARENA);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    arena_init_buf(&m->arena, MIRROR_ARENA_LIMIT, (char *)m + head, MIRROR_INLINE_ARENA);
    m->w = ex->w;
    m->policy = p;
    m->srt = srt;
    m->endpoint_idx = -1;
    m->is_head = ex->is_head;
    m->req_done = !ex->req.has_body; /* nothing more to wait for from the client */
    m->route = runtime_route(ex->rt, ex->route->action);
    evtimer_assign(&m->timeout_ev, m->w->base, on_timeout, m);
    evtimer_assign(&m->reap_ev, m->w->base, on_reap, m);
    m->has_hash = backend_request_hash(srt, &ex->req, &ex->client_addr, &m->hash);
    if (copy_head(m, &ex->req) != 0 || !(m->scratch = evbuffer_new()) ||
        !(m->request_id = arena_strndup(&m->arena, ex->request_id, strlen(ex->request_id))))
        goto fail;
    if (p->compare.enabled && m->route && !(m->cmp = shadow_compare_new(&m->arena, p)))
        goto fail;
    if (!arena_on_cleanup(&ex->arena, on_exchange_end, m))
        goto fail;
    m->rt_hold = ex->rt_hold;
    m->rt = rt_hold_get(m->rt_hold);
    m->ex = ex;
    ex->mirror = m;
    return m;
fail:
    free_unattached(m);
    return NULL;
}

static void *conn_enter(void *arg)
{
    struct mirror *m = arg;
    return backend_cb_connection_enter(m->srt, m->endpoint_idx);
}

static void conn_leave(void *token)
{
    backend_cb_connection_leave(token);
}

/* Send the head to an endpoint of the mirror service (`fresh`: on a new connection). */
static void send_attempt(struct mirror *m, bool fresh)
{
    struct pick_ctx ctx = {.w = m->w, .has_hash = m->has_hash, .hash = m->hash};
    int idx = backend_pick(m->srt, &ctx);
    if (idx == SY_ELIMIT) { /* every endpoint at max_concurrent_requests_per_endpoint */
        finish(m, STATS_MIRROR_SKIPPED_LIMIT, ATTEMPT_CANCELLED);
        return;
    }
    if (idx < 0) {
        finish(m, STATS_MIRROR_FAILED, ATTEMPT_CANCELLED);
        return;
    }
    m->endpoint_idx = idx;
    stats_inc(&svc_stats(m)->upstream_requests, 1);
    m->up_req = (struct upstream_request){
        .svc = m->policy->backend_service,
        .ep = backend_endpoint_cfg(m->srt, (size_t)idx),
        .cfg_version = m->rt->cfg->version,
        .head = &m->head,
        .arena = &m->arena,
        .is_head = m->is_head,
        .fresh_connection = fresh,
        .conn_enter = conn_enter,
        .conn_leave = conn_leave,
        .conn_arg = m,
        .cbs = &mirror_cbs,
        .ctx = m,
    };
    int rc = upstream_attempt_start(m->w->pools, &m->up_req, &m->up);
    if (rc == SY_ELIMIT) { /* circuit_breakers.max_connections */
        finish(m, STATS_MIRROR_SKIPPED_LIMIT, ATTEMPT_CANCELLED);
    } else if (rc != 0) {
        stats_inc(&svc_stats(m)->upstream_failures, 1);
        finish(m, STATS_MIRROR_FAILED, ATTEMPT_GATEWAY_FAILURE);
    }
}

void mirror_start(struct exchange *ex)
{
    const struct cfg_mirror_policy *p = ex->route->action->request_mirror_policy;
    bool connect = ex->req.method_len == SY_STRLEN("CONNECT") &&
                   memcmp(ex->req.method, SY_STRLIT("CONNECT")) == 0;
    if (!p || ex->mirror || ex->req.upgrade || connect)
        return;
    if (ex->req.has_body && ex->req.content_length > 0 &&
        (uint64_t)ex->req.content_length > p->max_buffered_bytes) {
        count_refused(ex, p, STATS_MIRROR_ABANDONED);
        return;
    }
    struct service_rt *srt = runtime_service(ex->rt, p->backend_service);
    if (!backend_cb_request_enter(srt)) { /* the mirror's concurrency limit */
        count_refused(ex, p, STATS_MIRROR_SKIPPED_LIMIT);
        return;
    }
    struct mirror *m = mirror_new(ex, p, srt);
    if (!m) {
        backend_cb_request_leave(srt);
        count_refused(ex, p, STATS_MIRROR_ABANDONED);
        return;
    }
    /* From here the mirror holds the slot and ends through conclude(). */
    send_attempt(m, false);
    if (m->over)
        return;
    if (p->backend_service->timeout_ms)
        sy_timer_arm_ms(&m->timeout_ev, p->backend_service->timeout_ms);
    if (ex->req_pending && evbuffer_get_length(ex->req_pending))
        mirror_on_request_body(m, ex->req_pending);
    if (ex->req_done)
        mirror_on_request_end(m, NULL);
}

/* ---- request body ------------------------------------------------------------------------ */

static void copy_extent(void *arg, const char *p, size_t n)
{
    struct mirror *m = arg;
    if (evbuffer_add(m->scratch, p, n) != 0)
        m->scratch_failed = true;
}

void mirror_on_request_body(struct mirror *m, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    if (m->over || !m->up.att || n == 0)
        return;
    if (m->body_bytes + n > m->policy->max_buffered_bytes) {
        conclude(m, STATS_MIRROR_ABANDONED, ATTEMPT_CANCELLED);
        return;
    }
    m->scratch_failed = false;
    shadow_each_extent(buf, n, copy_extent, m);
    if (m->scratch_failed) {
        conclude(m, STATS_MIRROR_ABANDONED, ATTEMPT_CANCELLED);
        return;
    }
    m->body_bytes += n;
    m->up.ops->send_body(m->up.att, m->scratch);
}

void mirror_on_request_end(struct mirror *m, const struct http_headers *trailers)
{
    if (m->req_done)
        return;
    m->req_done = true;
    if (m->over || !m->up.att || !m->head.has_body)
        return;
    struct http_headers copy, *t = NULL;
    if (trailers && trailers->n) {
        if (copy_headers(m, &copy, trailers) != 0) {
            conclude(m, STATS_MIRROR_ABANDONED, ATTEMPT_CANCELLED);
            return;
        }
        t = &copy;
    }
    m->up.ops->send_end(m->up.att, t);
}

/* ---- the mirror's response (discarded) ------------------------------------------------------ */

static void on_mirror_head(void *ctx, struct http_response_head *h, bool end)
{
    struct mirror *m = ctx;
    m->status = h->status;
    if (m->cmp)
        shadow_compare_head(m->cmp, SHADOW_MIRROR, h);
}

static void on_mirror_body(void *ctx, struct evbuffer *buf)
{
    struct mirror *m = ctx;
    if (m->cmp)
        shadow_compare_body(m->cmp, SHADOW_MIRROR, buf);
    evbuffer_drain(buf, evbuffer_get_length(buf));
}

static void on_mirror_end(void *ctx, const struct http_headers *trailers)
{
    struct mirror *m = ctx;
    m->up.att = NULL; /* released by the codec */
    if (m->cmp)
        shadow_compare_end(m->cmp, SHADOW_MIRROR, trailers);
    finish(m, STATS_MIRROR_SENT, backend_outcome_of_status(m->status));
}

static void on_mirror_drained(void *ctx)
{
    /* Nothing waits for it: the client is never paused for the mirror. */
}

static void on_mirror_error(void *ctx, enum upstream_error err, bool stale)
{
    struct mirror *m = ctx;
    m->up.att = NULL; /* released by the codec */
    log_debug("mirror %s: upstream %s%s", m->request_id, upstream_error_str(err),
              stale ? " (stale connection)" : "");
    /* A keep-alive connection the backend had closed: once more on a new
     * connection, as the primary does, when no body had to be kept. */
    if (!m->status && !m->stale_resent &&
        retry_stale_resend(stale, m->head.method, m->head.method_len, !m->head.has_body, 0)) {
        m->stale_resent = true;
        backend_release(m->srt, m->endpoint_idx, ATTEMPT_CANCELLED);
        m->endpoint_idx = -1;
        exchange_capacity_released(m->w, m->srt);
        send_attempt(m, true);
        return;
    }
    stats_inc(&svc_stats(m)->upstream_failures, 1);
    finish(m, STATS_MIRROR_FAILED, ATTEMPT_GATEWAY_FAILURE);
}

/* ---- the primary's response, for the compare ------------------------------------------------- */

void mirror_on_primary_head(struct mirror *m, const struct http_response_head *h)
{
    if (m->cmp)
        shadow_compare_head(m->cmp, SHADOW_PRIMARY, h);
}

void mirror_on_primary_body(struct mirror *m, struct evbuffer *buf)
{
    if (m->cmp)
        shadow_compare_body(m->cmp, SHADOW_PRIMARY, buf);
}

void mirror_on_primary_end(struct mirror *m, const struct http_headers *trailers)
{
    if (m->cmp)
        shadow_compare_end(m->cmp, SHADOW_PRIMARY, trailers);
}
