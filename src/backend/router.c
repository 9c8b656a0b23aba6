/*
 * router.c — runs one exchange from routed request to finished response.
 * See router.h for the entry points and exchange.h for the flow contract.
 *
 * Failure mapping before response headers went out (docs/operations.md):
 *   no endpoint / all unhealthy      503  (UH)
 *   connect refused / timed out      503  (UF)
 *   reset or closed before headers   502  (UR)
 *   malformed response               502  (UP)
 *   backend timeout                  504  (UT)
 * After headers: the client stream is reset (HTTP/1.1: connection closed).
 * For gRPC requests each becomes HTTP 200 with grpc-status (14, or 4 for
 * timeouts), trailers-only.
 */
#include "backend/router.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/access_log.h"
#include "backend/request_prep.h"
#include "backend/runtime.h"
#include "backend/upstream.h"
#include "config/config-t.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/worker.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

#define EXCHANGE_ARENA_LIMIT (1024 * 1024)

static void start_attempt(struct exchange *ex);

const char *upstream_error_str(enum upstream_error e)
{
    switch (e) {
    case UPSTREAM_CONNECT_FAILED: return "connect_failed";
    case UPSTREAM_RESET: return "reset";
    case UPSTREAM_PROTOCOL: return "protocol_error";
    case UPSTREAM_REFUSED_STREAM: return "refused_stream";
    }
    return "unknown";
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    if (ex->req_pending)
        evbuffer_free(ex->req_pending);
    runtime_unref(ex->rt);
    arena_free(&ex->arena);
    free(ex);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg);
static void on_idle(evutil_socket_t fd, short what, void *arg);

struct exchange *exchange_new(struct worker *w, const struct cfg_listener *listener)
{
    struct exchange *ex = calloc(1, sizeof *ex);
    if (!ex)
        return NULL;
    ex->req_pending = evbuffer_new();
    if (!ex->req_pending) {
        free(ex);
        return NULL;
    }
    ex->w = w;
    ex->rt = runtime_ref(w->runtime);
    ex->listener = listener;
    arena_init(&ex->arena, EXCHANGE_ARENA_LIMIT);
    evtimer_assign(&ex->timeout_ev, w->base, on_timeout, ex);
    evtimer_assign(&ex->idle_ev, w->base, on_idle, ex);
    evtimer_assign(&ex->reap_ev, w->base, on_reap, ex);
    ex->start_us = sy_now_us();
    ex->last_activity_ms = ex->start_us / 1000;
    ex->req.content_length = -1;
    return ex;
}

/* The single exit: log, let go of both sides, free on a later loop turn. */
static void exchange_finish(struct exchange *ex)
{
    if (ex->finished)
        return;
    ex->finished = true;
    evtimer_del(&ex->timeout_ev);
    evtimer_del(&ex->idle_ev);
    if (ex->att) {
        void *att = ex->att;
        ex->att = NULL;
        ex->up->cancel(att);
    }
    access_log_write(ex);
    ex->down->detach(ex);
    event_active(&ex->reap_ev, EV_TIMEOUT, 1);
}

static void touch(struct exchange *ex)
{
    ex->last_activity_ms = sy_now_ms();
}

static void arm_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* HTTP status → gRPC status for replies the proxy makes itself. */
static int grpc_status_for(int http)
{
    switch (http) {
    case 504: return 4;  /* DEADLINE_EXCEEDED */
    case 429: return 8;  /* RESOURCE_EXHAUSTED */
    case 400: return 13; /* INTERNAL */
    case 404: return 12; /* UNIMPLEMENTED */
    case 500: return 13;
    default: return 14;  /* UNAVAILABLE */
    }
}

void exchange_local_reply(struct exchange *ex, int status, const char *body, unsigned flags)
{
    if (ex->finished || ex->resp_head_sent)
        return;
    if (ex->att) {
        void *att = ex->att;
        ex->att = NULL;
        ex->up->cancel(att);
    }
    ex->flags |= flags;
    struct http_response_head h = {.status = status, .content_length = -1};
    struct evbuffer *b = NULL;
    http_headers_init(&h.headers, &ex->arena, 4);
    if (ex->is_grpc) {
        char code[8];
        int n = snprintf(code, sizeof code, "%d", grpc_status_for(status));
        h.status = 200;
        http_headers_add(&h.headers, &ex->arena, "content-type", 12, "application/grpc", 16);
        http_headers_add_copy(&h.headers, &ex->arena, "grpc-status", 11, code, (size_t)n);
        http_headers_add(&h.headers, &ex->arena, "grpc-message", 12, body, strlen(body));
        h.content_length = 0;
    } else {
        b = evbuffer_new();
        if (b)
            evbuffer_add_printf(b, "%s\n", body);
        h.content_length = b ? (int64_t)evbuffer_get_length(b) : 0;
        http_headers_add(&h.headers, &ex->arena, "content-type", 12, "text/plain", 10);
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

static void send_redirect(struct exchange *ex, const struct url_map_request *m,
                          const struct url_map_result *res)
{
    const struct cfg_url_redirect *r = res->action->url_redirect;
    char loc[4096];
    int n = url_map_redirect_location(r, m, loc, sizeof loc);
    if (n < 0) {
        exchange_local_reply(ex, 500, "redirect target too long", EXF_LR);
        return;
    }
    struct http_response_head h = {.status = r->redirect_response_code, .content_length = 0};
    http_headers_init(&h.headers, &ex->arena, 2);
    http_headers_add_copy(&h.headers, &ex->arena, "location", 8, loc, (size_t)n);
    response_apply_route(ex, &h, res);
    ex->status = h.status;
    ex->flags |= EXF_LR;
    ex->resp_head_sent = true;
    ex->down->send_head(ex, &h, true);
    ex->resp_done = true;
    exchange_finish(ex);
}

static uint64_t route_timeout_ms(const struct exchange *ex)
{
    const struct cfg_route_action *a = ex->route->action;
    return a->timeout_set ? a->timeout_ms : ex->service->timeout_ms;
}

void router_start(struct exchange *ex)
{
    struct url_map_request m;
    int rc = request_prepare_match(ex, &m);
    if (rc != 0) {
        exchange_local_reply(ex, rc == SY_EINVAL ? 400 : 500, "bad request path", EXF_LR);
        return;
    }
    struct url_map_result *res = arena_alloc(&ex->arena, sizeof *res);
    if (!res) {
        exchange_local_reply(ex, 500, "out of memory", EXF_LR);
        return;
    }
    const struct cfg_url_map *um = ex->listener->url_map;
    url_map_match(runtime_url_map(ex->rt, um), &m, (uint32_t)worker_rand(ex->w), res);
    ex->route = res;
    if (res->action->url_redirect) {
        send_redirect(ex, &m, res);
        return;
    }
    ex->service = res->service;
    if (!ex->service) {
        exchange_local_reply(ex, 404, "no route", EXF_NR);
        return;
    }
    if (request_apply_route(ex, &m, res) != 0) {
        exchange_local_reply(ex, 500, "out of memory", EXF_LR);
        return;
    }
    uint64_t t = route_timeout_ms(ex);
    if (t)
        arm_ms(&ex->timeout_ev, t);
    uint64_t idle = ex->listener->timeouts.stream_idle_ms;
    if (idle)
        arm_ms(&ex->idle_ev, idle);
    start_attempt(ex);
}

/* Round robin over the service's endpoints (weights and health: backend issue). */
static const struct cfg_endpoint *pick_endpoint(struct exchange *ex)
{
    const struct cfg_backend_service *s = ex->service;
    if (s->n_endpoints == 0)
        return NULL;
    struct service_rt *srt = runtime_service(ex->rt, s);
    unsigned i = __atomic_fetch_add(&srt->rr_next, 1, __ATOMIC_RELAXED);
    return &s->endpoints[i % s->n_endpoints];
}

static void start_attempt(struct exchange *ex)
{
    const struct cfg_endpoint *ep = pick_endpoint(ex);
    if (!ep) {
        exchange_local_reply(ex, 503, "no healthy upstream", EXF_UH);
        return;
    }
    snprintf(ex->endpoint, sizeof ex->endpoint, "%s", ep->address.text);
    ex->attempts++;
    if (upstream_attempt_start(ex->w, ex->service, ep, ex) != 0) {
        exchange_local_reply(ex, 503, "upstream connect error", EXF_UF);
        return;
    }
    if (evbuffer_get_length(ex->req_pending))
        ex->up->send_body(ex->att, ex->req_pending);
    if (ex->req_done && ex->req.has_body)
        ex->up->send_end(ex->att, NULL);
}

/* ---- request body ------------------------------------------------------------ */

void exchange_on_request_body(struct exchange *ex, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    ex->bytes_in += n;
    touch(ex);
    if (ex->finished || ex->resp_done) {
        evbuffer_drain(buf, n);
        return;
    }
    if (ex->att) {
        ex->up->send_body(ex->att, buf);
        if (ex->up->pending(ex->att) >= SY_FLOW_HIGH)
            ex->down->read_body(ex, false);
        return;
    }
    evbuffer_add_buffer(ex->req_pending, buf);
    if (evbuffer_get_length(ex->req_pending) >= SY_FLOW_HIGH)
        ex->down->read_body(ex, false);
}

void exchange_on_request_end(struct exchange *ex, const struct http_headers *trailers)
{
    ex->req_done = true;
    touch(ex);
    if (ex->att && !ex->finished && ex->req.has_body)
        ex->up->send_end(ex->att, trailers);
}

void exchange_on_upstream_drained(struct exchange *ex)
{
    if (!ex->req_done && !ex->finished)
        ex->down->read_body(ex, true);
}

void exchange_reject(struct exchange *ex, int status)
{
    ex->status = status;
    ex->flags |= EXF_LR;
    exchange_finish(ex);
}

void exchange_on_downstream_abort(struct exchange *ex)
{
    ex->flags |= EXF_DC;
    if (!ex->status)
        ex->status = 499; /* client closed before a response, as nginx logs it */
    exchange_finish(ex);
}

/* ---- response ------------------------------------------------------------------ */

void exchange_on_response_head(struct exchange *ex, struct http_response_head *h, bool end)
{
    touch(ex);
    response_apply_route(ex, h, ex->route);
    ex->status = h->status;
    ex->resp_head_sent = true;
    ex->down->send_head(ex, h, end);
    /* With `end` the codec still calls exchange_on_response_end to release
     * the attempt; the downstream side is complete already. */
    if (end)
        ex->resp_done = true;
}

void exchange_on_response_body(struct exchange *ex, struct evbuffer *buf)
{
    touch(ex);
    ex->bytes_out += evbuffer_get_length(buf);
    ex->down->send_body(ex, buf);
    if (ex->att && !ex->finished && ex->down->pending(ex) >= SY_FLOW_HIGH)
        ex->up->read_response(ex->att, false);
}

void exchange_on_response_end(struct exchange *ex, const struct http_headers *trailers)
{
    ex->att = NULL; /* released by the codec */
    if (ex->finished)
        return;
    if (!ex->resp_done)
        ex->down->send_end(ex, trailers);
    ex->resp_done = true;
    exchange_finish(ex);
}

void exchange_on_downstream_drained(struct exchange *ex)
{
    if (ex->att && !ex->finished)
        ex->up->read_response(ex->att, true);
}

void exchange_on_upstream_error(struct exchange *ex, enum upstream_error err, bool stale)
{
    ex->att = NULL; /* released by the codec */
    if (ex->finished)
        return;
    log_debug("exchange %s: upstream %s: %s%s", ex->request_id, ex->endpoint,
              upstream_error_str(err), stale ? " (stale connection)" : "");
    if (ex->resp_head_sent) {
        ex->flags |= EXF_UR;
        ex->down->reset(ex);
        exchange_finish(ex);
        return;
    }
    /* A reused connection the backend had closed: the request never reached
     * it; send it again on a fresh connection when the body can be replayed. */
    if (stale && !ex->req.has_body && ex->attempts < 3) {
        start_attempt(ex);
        return;
    }
    switch (err) {
    case UPSTREAM_CONNECT_FAILED:
        exchange_local_reply(ex, 503, "upstream connect error", EXF_UF);
        break;
    case UPSTREAM_PROTOCOL:
        exchange_local_reply(ex, 502, "upstream protocol error", EXF_UP);
        break;
    case UPSTREAM_RESET:
    case UPSTREAM_REFUSED_STREAM:
        exchange_local_reply(ex, 502, "upstream reset before response headers", EXF_UR);
        break;
    }
}

/* ---- timers ------------------------------------------------------------------------- */

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    if (ex->finished)
        return;
    ex->flags |= EXF_UT;
    if (ex->att) {
        void *att = ex->att;
        ex->att = NULL;
        ex->up->cancel(att);
    }
    if (ex->resp_head_sent) {
        ex->down->reset(ex);
        exchange_finish(ex);
        return;
    }
    exchange_local_reply(ex, 504, "upstream request timeout", 0);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *ex = arg;
    uint64_t idle = ex->listener->timeouts.stream_idle_ms;
    uint64_t now = sy_now_ms();
    if (ex->finished)
        return;
    if (now - ex->last_activity_ms < idle) {
        arm_ms(&ex->idle_ev, idle - (now - ex->last_activity_ms));
        return;
    }
    ex->flags |= EXF_SI;
    if (ex->att) {
        void *att = ex->att;
        ex->att = NULL;
        ex->up->cancel(att);
    }
    if (ex->resp_head_sent) {
        ex->down->reset(ex);
        exchange_finish(ex);
        return;
    }
    exchange_local_reply(ex, 504, "stream idle timeout", 0);
}
