/* admin.c — see admin.h. */
#include "admin/admin.h"
#include "admin/status.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "runtime.h"
#include "config/config.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/worker.h"

/* After a failed accept (out of descriptors), the admin socket rests this long. */
#define ACCEPT_PAUSE_MS 250

struct admin {
    struct evhttp *http;
    struct admin_hooks hooks;
    struct status *status; /* GET / and /status.json (status.h) */
};

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

/*
 * evhttp's default would log every failed accept (EMFILE...) while the
 * readable socket spins the main thread: pause the socket instead. The
 * workers' listeners report such an episode (limits.c); this one stays
 * quiet. The one-shot timer cannot outlive the listener: both go with the
 * main event base, whose loop does not run after admin_stop().
 */
static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    log_debug("admin: accept: %s; pausing %d ms", strerror(err), ACCEPT_PAUSE_MS);
    evconnlistener_disable(evl);
    if (event_base_once(evconnlistener_get_base(evl), -1, EV_TIMEOUT, on_accept_resume, evl, &tv) !=
        0)
        evconnlistener_enable(evl); /* no timer: better to retry at once than never */
}

/* Run `fn` with a memory FILE and send what it wrote. */
static void reply_stream(struct evhttp_request *req, int code, const char *type,
                         void (*fn)(struct admin *, FILE *, void *), struct admin *a, void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    fn(a, f, arg);
    fclose(f);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, buf, len);
    free(buf);
    evhttp_add_header(evhttp_request_get_output_headers(req), "content-type", type);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void reply_text(struct evhttp_request *req, int code, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s\n", text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "content-type", "text/plain");
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void write_metrics(struct admin *a, FILE *out, void *arg)
{
    if (a->hooks.metrics)
        a->hooks.metrics(a->hooks.ctx, out);
}

static void write_config(struct admin *a, FILE *out, void *arg)
{
    struct runtime *rt = a->hooks.current(a->hooks.ctx);
    config_write_json(rt->cfg, out);
    runtime_unref(rt);
}

static void write_backends(struct admin *a, FILE *out, void *arg)
{
    struct runtime *rt = a->hooks.current(a->hooks.ctx);
    const struct config *cfg = rt->cfg;
    uint64_t now = sy_now_ms();
    fprintf(out, "{\"version\":\"%s\",\"backend_services\":[", cfg->version);
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *s = &cfg->backend_services[i];
        struct service_rt *srt = runtime_service(rt, s);
        fprintf(out, "%s{\"name\":\"%s\",\"endpoints\":[", i ? "," : "", s->name);
        for (size_t j = 0; j < backend_endpoint_count(srt); j++) {
            const struct endpoint_state *e = backend_endpoint(srt, j);
            const struct cfg_endpoint *ep = backend_endpoint_cfg(srt, j);
            uint64_t until = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
            fprintf(out, "%s{\"address\":\"%s\",", j ? "," : "", ep->address.text);
            if (ep->origin)
                fprintf(out, "\"discovered_from\":\"%s\",", ep->origin);
            fprintf(out,
                    "\"weight\":%u,\"healthy\":%s,\"ejected\":%s,"
                    "\"ejected_for_ms\":%llu,\"ejections\":%u,\"active_requests\":%u,"
                    "\"requests_total\":%llu}",
                    ep->weight, __atomic_load_n(&e->healthy, __ATOMIC_RELAXED) ? "true" : "false",
                    until > now ? "true" : "false",
                    (unsigned long long)(until > now ? until - now : 0),
                    __atomic_load_n(&e->ejections, __ATOMIC_RELAXED),
                    __atomic_load_n(&e->active, __ATOMIC_RELAXED),
                    (unsigned long long)backend_endpoint_requests(e));
        }
        fprintf(out, "]}");
    }
    fprintf(out, "]}\n");
    runtime_unref(rt);
}

static void write_status(struct admin *a, FILE *out, void *arg)
{
    status_write_json(a->status, out);
}

static void write_page(struct admin *a, FILE *out, void *arg)
{
    fputs(status_page_html, out);
}

/* GET /shadow: request_mirror_policy.compare counts per route and the recent mismatches. */
static void write_shadow(struct admin *a, FILE *out, void *arg)
{
    struct runtime *rt = a->hooks.current(a->hooks.ctx);
    stats_write_shadow_json(rt->stats, out);
    runtime_unref(rt);
}

static void do_reload(struct evhttp_request *req, struct admin *a)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *errs = open_memstream(&buf, &len);
    if (!errs) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    int rc = a->hooks.reload(a->hooks.ctx, errs);
    fclose(errs);
    struct evbuffer *b = evbuffer_new();
    if (rc == 0) {
        struct runtime *rt = a->hooks.current(a->hooks.ctx);
        evbuffer_add_printf(b, "{\"version\":\"%s\"}\n", rt->cfg->version);
        runtime_unref(rt);
        evhttp_add_header(evhttp_request_get_output_headers(req), "content-type",
                          "application/json");
    } else {
        evbuffer_add(b, buf, len);
        evhttp_add_header(evhttp_request_get_output_headers(req), "content-type", "text/plain");
    }
    free(buf);
    evhttp_send_reply(req, rc == 0 ? 200 : 400, rc == 0 ? "OK" : "Bad Request", b);
    evbuffer_free(b);
}

/*
 * The methods each endpoint answers: the Allow header of its 405 (RFC 9110
 * 15.5.6) when asked with another. A path not here is a 404.
 */
static const struct {
    const char *path, *allow;
} endpoint_methods[] = {
    {"/ready", "GET, HEAD"},    {"/metrics", "GET, HEAD"}, {"/config", "GET, HEAD"},
    {"/backends", "GET, HEAD"}, {"/reload", "POST"},       {"/drain", "POST"},
    {"/shadow", "GET, HEAD"},   {"/", "GET, HEAD"},        {"/status.json", "GET, HEAD"},
};

static const char *endpoint_allow(const char *path)
{
    for (size_t i = 0; i < sizeof endpoint_methods / sizeof endpoint_methods[0]; i++)
        if (strcmp(path, endpoint_methods[i].path) == 0)
            return endpoint_methods[i].allow;
    return NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char path[64];
    size_t n = strcspn(uri, "?");
    snprintf(path, sizeof path, "%.*s", (int)(n < sizeof path ? n : sizeof path - 1), uri);
    bool get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD, post = m == EVHTTP_REQ_POST;
    const char *allow;
    if (strcmp(path, "/ready") == 0 && get) {
        bool d = a->hooks.draining(a->hooks.ctx);
        bool r = !d && a->hooks.resolving && a->hooks.resolving(a->hooks.ctx);
        reply_text(req, d || r ? 503 : 200, d ? "draining" : r ? "resolving" : "ready");
    } else if (strcmp(path, "/metrics") == 0 && get) {
        reply_stream(req, 200, "text/plain; version=0.0.4", write_metrics, a, NULL);
    } else if (strcmp(path, "/config") == 0 && get) {
        reply_stream(req, 200, "application/json", write_config, a, NULL);
    } else if (strcmp(path, "/backends") == 0 && get) {
        reply_stream(req, 200, "application/json", write_backends, a, NULL);
    } else if (strcmp(path, "/") == 0 && get && a->status) {
        reply_stream(req, 200, "text/html; charset=utf-8", write_page, a, NULL);
    } else if (strcmp(path, "/status.json") == 0 && get && a->status) {
        reply_stream(req, 200, "application/json", write_status, a, NULL);
    } else if (strcmp(path, "/shadow") == 0 && get) {
        reply_stream(req, 200, "application/json", write_shadow, a, NULL);
    } else if (strcmp(path, "/reload") == 0 && post) {
        do_reload(req, a);
    } else if (strcmp(path, "/drain") == 0 && post) {
        a->hooks.drain(a->hooks.ctx);
        reply_text(req, 200, "draining");
    } else if ((allow = endpoint_allow(path))) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "allow", allow);
        reply_text(req, 405, "method not allowed");
    } else {
        reply_text(req, 404,
                   "not found: / /status.json /ready /metrics /backends /config /shadow "
                   "/reload /drain");
    }
}

struct admin *admin_start(struct event_base *base, const struct cfg_addr *addr,
                          const struct admin_hooks *hooks, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a || !(a->http = evhttp_new(base))) {
        snprintf(err, errlen, "admin: out of memory");
        free(a);
        return NULL;
    }
    a->hooks = *hooks;
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct evhttp_bound_socket *bound = NULL;
    if (fd < 0 || bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 ||
        listen(fd, 128) != 0 || !(bound = evhttp_accept_socket_with_handle(a->http, fd))) {
        if (errno == EADDRINUSE) /* no SO_REUSEPORT here: nobody shares this port */
            snprintf(err, errlen, "admin: address %s already in use by another process",
                     addr->text);
        else
            snprintf(err, errlen, "admin: cannot listen on %s: %s", addr->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        admin_stop(a);
        return NULL;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), on_accept_error);
    /* Every method reaches on_request, which answers 405 + Allow (not evhttp's 501). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(a->http, 30);
    evhttp_set_gencb(a->http, on_request, a);
    if (!(a->status = status_new(base, &a->hooks)))
        log_warn("admin: out of memory for the status page; GET / is not served");
    return a;
}

void admin_note_reload(struct admin *a, const char *version, bool ok, const char *reason)
{
    if (a)
        status_note_reload(a->status, version, ok, reason);
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    status_free(a->status);
    free(a);
}
