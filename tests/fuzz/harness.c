/* harness.c — see harness.h. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/backend.h"
#include "config/config.h"
#include "core/list.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/strlit.h"
#include "core/worker.h"
#include "exchange/exchange.h"
#include "listener/listener-int.h"
#include "listener/listener.h"
#include "runtime.h"
#include "upstream/upstream.h"

#define MAX_TURNS   4096 /* loop turns per phase of one input */
#define QUIET_TURNS 3    /* turns without any progress that end a phase */

/*
 * No retries (num_retries 0 on every route, so no backoff timer), no fault
 * delays, outlier ejection off; the routes cover a split with rewrites and
 * header actions, a redirect and a fault abort. %u is the backend's port.
 */
static const char config_fmt[] =
    "listeners:\n"
    "  - {name: l, address: '127.0.0.1:0', protocol: HTTP, url_map: m, accept_http_10: true,\n"
    "     max_request_headers_size: 8KiB, http2: {max_concurrent_streams: 16}}\n"
    "access_log: {enabled: false}\n"
    "url_maps:\n"
    "  - name: m\n"
    "    default_service: b\n"
    "    default_route_action: {retry_policy: {num_retries: 0}}\n"
    "    host_rules:\n"
    "      - {hosts: ['*'], path_matcher: p}\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: b\n"
    "        default_route_action: {retry_policy: {num_retries: 0}}\n"
    "        header_action:\n"
    "          request_headers_to_add: [{header_name: x-p, header_value: '1', replace: true}]\n"
    "          request_headers_to_remove: [x-drop]\n"
    "          response_headers_to_add: [{header_name: x-r, header_value: '2'}]\n"
    "        route_rules:\n"
    "          - priority: 1\n"
    "            match_rules: [{prefix_match: /split/}]\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - {backend_service: b, weight: 1}\n"
    "                - {backend_service: c, weight: 1}\n"
    "              url_rewrite: {path_prefix_rewrite: /, host_rewrite: inner}\n"
    "              retry_policy: {num_retries: 0}\n"
    "          - priority: 2\n"
    "            match_rules: [{prefix_match: /old/}]\n"
    "            url_redirect: {prefix_redirect: /new/}\n"
    "          - priority: 3\n"
    "            match_rules: [{prefix_match: /abort}]\n"
    "            service: b\n"
    "            route_action:\n"
    "              fault_injection_policy: {abort: {http_status: 503}}\n"
    "              retry_policy: {num_retries: 0}\n"
    "backend_services:\n"
    "  - name: b\n"
    "    endpoints: [{address: '127.0.0.1:%u'}]\n"
    "    outlier_detection: {enforcing_consecutive_gateway_failure: 0}\n"
    "  - name: c\n"
    "    endpoints: [{address: '127.0.0.1:%u'}]\n"
    "    outlier_detection: {enforcing_consecutive_gateway_failure: 0}\n";

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define BACKEND_HEAD     "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
#define BACKEND_RESPONSE BACKEND_HEAD "ok"

struct harness {
    struct worker w;
    struct stats *stats;
    struct backend_registry *reg;
    struct runtime *rt;
    struct listener_set *set;
    struct listener_worker *lw;
    struct evconnlistener *backend;
    unsigned port;                /* the proxy's listener */
    unsigned n_clients;           /* connections made: picks the next source address */
    struct sy_link backend_conns; /* struct backend_conn.link */
    unsigned n_backend_conns;
    uint64_t backend_bytes; /* read by the backend: progress */
    unsigned backend_reqs;  /* answered by the backend */
    struct harness_hooks hooks;
    char config[sizeof config_fmt + 16];
};

/* One connection the proxy opened to the backend. */
struct backend_conn {
    struct harness *h;
    struct bufferevent *bev;
    http_parser parser;
    char path[64]; /* of the request being parsed (truncated), NUL-terminated */
    size_t path_len;
    bool tunnel;      /* answered 101: bytes are echoed */
    bool close_after; /* close once the response is written */
    struct sy_link link;
};

static void quiet(struct harness *h, bool on)
{
    if (h->hooks.quiet)
        h->hooks.quiet(h->hooks.ctx, on);
}

/* ---- the backend ------------------------------------------------------------------- */

/* `rst`: close with a reset, as a backend dropping a kept-alive connection
 * may; it leaves no TIME_WAIT behind (thousands of inputs a second). */
static void backend_conn_close(struct backend_conn *c, bool rst)
{
    struct linger lg = {1, 0};
    if (rst)
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    sy_list_unlink(&c->link);
    c->h->n_backend_conns--;
    bufferevent_free(c->bev);
    free(c);
}

static bool path_is(const struct backend_conn *c, const char *prefix)
{
    return strncmp(c->path, prefix, strlen(prefix)) == 0;
}

/* A 100 KiB body: more than SY_FLOW_HIGH and than an HTTP/2 stream window. */
static void add_big_body(struct evbuffer *out)
{
    static const char block[4096] = {'x'};
    for (int i = 0; i < 25; i++)
        evbuffer_add(out, block, sizeof block);
}

/*
 * The answer to one request, by its path: /upgrade (with Upgrade) 101 and
 * then an echo tunnel; /big a 100 KiB body; /chunked a chunked body with a
 * trailer; /close a body delimited by the close; /204; /503; anything else
 * "200 ok" (no body for HEAD).
 */
static int on_backend_message(http_parser *p)
{
    struct backend_conn *c = p->data;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool head = p->method == HTTP_HEAD;
    if (path_is(c, "/upgrade") && p->upgrade) {
        evbuffer_add(out, SY_STRLIT("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n"
                                    "upgrade: websocket\r\n\r\n"));
        c->tunnel = true;
    } else if (path_is(c, "/big")) {
        evbuffer_add(out, SY_STRLIT("HTTP/1.1 200 OK\r\ncontent-length: 102400\r\n\r\n"));
        if (!head)
            add_big_body(out);
    } else if (path_is(c, "/chunked")) {
        evbuffer_add(out, SY_STRLIT("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"));
        if (!head)
            evbuffer_add(out, SY_STRLIT("5\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n"));
    } else if (path_is(c, "/close")) {
        evbuffer_add(out, SY_STRLIT("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"));
        if (!head)
            evbuffer_add(out, SY_STRLIT("until the end"));
        c->close_after = true;
    } else if (path_is(c, "/204")) {
        evbuffer_add(out, SY_STRLIT("HTTP/1.1 204 No Content\r\n\r\n"));
    } else if (path_is(c, "/503")) {
        evbuffer_add(out,
                     SY_STRLIT("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"));
    } else {
        if (head)
            evbuffer_add(out, SY_STRLIT(BACKEND_HEAD));
        else
            evbuffer_add(out, SY_STRLIT(BACKEND_RESPONSE));
    }
    c->path_len = 0;
    c->path[0] = '\0';
    c->h->backend_reqs++;
    return 0;
}

static int on_backend_url(http_parser *p, const char *at, size_t len)
{
    struct backend_conn *c = p->data;
    size_t room = sizeof c->path - 1 - c->path_len;
    size_t n = len < room ? len : room;
    memcpy(c->path + c->path_len, at, n);
    c->path_len += n;
    c->path[c->path_len] = '\0';
    return 0;
}

static const http_parser_settings backend_parser = {.on_url = on_backend_url,
                                                    .on_message_complete = on_backend_message};

/* Parse what came; false if the connection was closed. */
static bool backend_parse(struct backend_conn *c, struct evbuffer *in)
{
    struct harness *h = c->h;
    while (evbuffer_get_length(in) && !c->tunnel) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = http_parser_execute(&c->parser, &backend_parser, v.iov_base, v.iov_len);
        h->backend_bytes += n;
        evbuffer_drain(in, n);
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            backend_conn_close(c, false); /* the proxy sent something no backend would take */
            return false;
        }
        if (c->parser.upgrade && !c->tunnel) /* answered without 101: the next request follows */
            http_parser_init(&c->parser, HTTP_REQUEST);
        else if (n == 0)
            break;
    }
    return true;
}

static void on_backend_read(struct bufferevent *bev, void *arg)
{
    struct backend_conn *c = arg;
    struct harness *h = c->h;
    struct evbuffer *in = bufferevent_get_input(bev);
    quiet(h, true);
    if (backend_parse(c, in) && c->tunnel) { /* after a 101: echo */
        h->backend_bytes += evbuffer_get_length(in);
        evbuffer_add_buffer(bufferevent_get_output(bev), in);
    }
    quiet(h, false);
}

/* Everything written: a /close response ends here. */
static void on_backend_write(struct bufferevent *bev, void *arg)
{
    struct backend_conn *c = arg;
    struct harness *h = c->h;
    if (!c->close_after)
        return;
    quiet(h, true);
    backend_conn_close(c, false);
    quiet(h, false);
}

static void on_backend_event(struct bufferevent *bev, short what, void *arg)
{
    struct backend_conn *c = arg;
    struct harness *h = c->h;
    quiet(h, true);
    backend_conn_close(c, false);
    quiet(h, false);
}

static void on_backend_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                              int salen, void *arg)
{
    struct harness *h = arg;
    quiet(h, true);
    struct backend_conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev =
        c ? bufferevent_socket_new(h->w.base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        close(fd);
        quiet(h, false);
        return;
    }
    c->h = h;
    c->bev = bev;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    sy_list_insert_head(&h->backend_conns, &c->link);
    h->n_backend_conns++;
    bufferevent_setcb(bev, on_backend_read, on_backend_write, on_backend_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    quiet(h, false);
}

static void backend_close_all(struct harness *h)
{
    for (struct sy_link *l; (l = sy_list_first(&h->backend_conns));)
        backend_conn_close(SY_CONTAINER_OF(l, struct backend_conn, link), true);
}

/* Listen on 127.0.0.1:0; the port chosen, or 0. */
static unsigned backend_listen(struct harness *h)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    h->backend = evconnlistener_new_bind(h->w.base, on_backend_accept, h,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                         (struct sockaddr *)&sin, sizeof sin);
    if (!h->backend ||
        getsockname(evconnlistener_get_fd(h->backend), (struct sockaddr *)&sin, &len) != 0)
        return 0;
    return ntohs(sin.sin_port);
}

/* ---- setup ---------------------------------------------------------------------------- */

static struct stats *new_stats(const struct config *cfg)
{
    const char *names[8];
    size_t n = cfg->n_listeners < 8 ? cfg->n_listeners : 8;
    for (size_t i = 0; i < n; i++)
        names[i] = cfg->listeners[i].name;
    return stats_new(names, n, 1);
}

static struct config *load_config(struct harness *h, unsigned port)
{
    snprintf(h->config, sizeof h->config, config_fmt, port, port);
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("harness.yaml", h->config, strlen(h->config), &errs);
    if (!cfg && !h->hooks.quiet)
        config_errors_print(&errs, stderr);
    config_errors_free(&errs);
    return cfg;
}

/* The worker's parts, as main.c's start_workers makes them (without the thread). */
static int start_worker(struct harness *h, struct config *cfg)
{
    char err[256] = "";
    struct worker *w = &h->w;
    w->runtime = runtime_ref(h->rt);
    w->rt_hold = rt_hold_new(w->runtime);
    if (!w->rt_hold) {
        runtime_unref(w->runtime);
        w->runtime = NULL;
        return -1;
    }
    w->access_log_fd = -1;
    w->stats = h->stats;
    w->pools = upstream_pools_new(w);
    h->set = listener_set_new(1, h->stats);
    struct listener_change *lc =
        h->set ? listener_set_prepare(h->set, h->rt, err, sizeof err) : NULL;
    if (lc) {
        listener_set_commit(h->set, lc);
        struct sockaddr_in sin;
        socklen_t len = sizeof sin;
        if (getsockname(h->set->slots[0].fds[0], (struct sockaddr *)&sin, &len) == 0)
            h->port = ntohs(sin.sin_port);
    }
    h->lw = h->port ? listener_worker_new(w, h->set) : NULL;
    w->listeners = h->lw;
    if (!w->pools || !h->lw || exchange_worker_init(w) != 0) {
        if (!h->hooks.quiet)
            fprintf(stderr, "harness: cannot start the worker %s\n", err);
        return -1;
    }
    return 0;
}

struct harness *harness_new(const struct harness_hooks *hooks)
{
    struct harness *h = calloc(1, sizeof *h);
    struct config *cfg = NULL;
    if (!h)
        return NULL;
    if (hooks)
        h->hooks = *hooks;
    sy_list_init(&h->backend_conns);
    signal(SIGPIPE, SIG_IGN);
    sy_log_set_level(SY_LOG_ERROR);
    if (worker_init(&h->w, 0, NULL) != 0)
        goto fail;
    /* The same ids (x-request-id, trace ids) every run: a run's bytes are a
     * function of its input (the allocation sweep compares them). */
    h->w.rng = 0x9E3779B97F4A7C15ull;
    unsigned port = backend_listen(h);
    if (!port || !(cfg = load_config(h, port)))
        goto fail;
    h->stats = new_stats(cfg);
    h->reg = backend_registry_new();
    h->rt = h->stats && h->reg ? runtime_new(cfg, h->reg, h->stats, NULL) : NULL;
    if (!h->rt || start_worker(h, cfg) != 0)
        goto fail;
    config_unref(cfg);
    return h;
fail:
    if (!h->hooks.quiet) /* not the allocation sweep, which makes it fail on purpose */
        fprintf(stderr, "harness: setup failed\n");
    config_unref(cfg);
    harness_free(h);
    return NULL;
}

/* Mirrors main.c's free_worker, then the process-level parts. */
void harness_free(struct harness *h)
{
    if (!h)
        return;
    struct worker *w = &h->w;
    if (w->base) {
        listener_worker_free(h->lw);
        upstream_pools_free(w->pools);
        backend_close_all(h);
        for (int i = 0; i < 4; i++)
            event_base_loop(w->base, EVLOOP_NONBLOCK);
        exchange_worker_free(w);
        rt_hold_retire(w->rt_hold);
        if (h->backend)
            evconnlistener_free(h->backend);
        worker_destroy(w);
    }
    listener_set_free(h->set);
    runtime_unref(h->rt);
    backend_registry_free(h->reg);
    stats_free(h->stats);
    free(h);
}

/* ---- one input -------------------------------------------------------------------------- */

/* The client end of one downstream connection. */
struct client {
    int fd;
    const uint8_t *data;
    size_t size, off; /* input bytes sent so far */
    bool eof;         /* the proxy closed its side */
    bool write_done;  /* everything sent, or the proxy stopped taking it */
};

/* Send what the socket takes; true if anything went. */
static bool client_write(struct client *cl)
{
    bool moved = false;
    while (!cl->write_done && cl->off < cl->size) {
        ssize_t n = send(cl->fd, cl->data + cl->off, cl->size - cl->off, MSG_NOSIGNAL);
        if (n > 0) {
            cl->off += (size_t)n;
            moved = true;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            break;
        } else {
            cl->write_done = true; /* EPIPE: the proxy closed */
        }
    }
    if (cl->off == cl->size)
        cl->write_done = true;
    return moved;
}

/* Read and drop what the proxy wrote; true if anything came (or EOF). */
static bool client_read(struct client *cl, struct harness_result *res)
{
    char buf[16384];
    bool moved = false;
    for (;;) {
        ssize_t n = recv(cl->fd, buf, sizeof buf, 0);
        if (n > 0) {
            res->out_bytes += (size_t)n;
            moved = true;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            moved |= !cl->eof;
            cl->eof = true;
        }
        return moved;
    }
}

static uint64_t active_exchanges(const struct harness *h)
{
    return __atomic_load_n(&h->stats->workers[0].active_exchanges, __ATOMIC_RELAXED);
}

/*
 * One loop turn with the client's I/O around it. True if anything moved:
 * client bytes either way, connections opened or closed on either side,
 * backend bytes, or events left active for the next turn.
 */
static bool turn(struct harness *h, struct client *cl, struct harness_result *res)
{
    unsigned conns = listener_worker_conns(h->lw), bconns = h->n_backend_conns;
    uint64_t bbytes = h->backend_bytes, xs = active_exchanges(h);
    bool moved = cl ? client_write(cl) : false;
    event_base_loop(h->w.base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
    res->turns++;
    if (cl)
        moved |= client_read(cl, res);
    return moved || conns != listener_worker_conns(h->lw) || bconns != h->n_backend_conns ||
           bbytes != h->backend_bytes || xs != active_exchanges(h) ||
           event_base_get_num_events(h->w.base, EVENT_BASE_COUNT_ACTIVE) > 0;
}

/* Turn until `done` holds with no event pending, or nothing moved for QUIET_TURNS. */
static void run_until(struct harness *h, struct client *cl, struct harness_result *res,
                      bool (*done)(const struct harness *h))
{
    for (unsigned i = 0, still = 0; i < MAX_TURNS && still < QUIET_TURNS; i++) {
        still = turn(h, cl, res) ? 0 : still + 1;
        if (done && done(h) && event_base_get_num_events(h->w.base, EVENT_BASE_COUNT_ACTIVE) == 0)
            break;
    }
}

static bool no_client(const struct harness *h)
{
    return listener_worker_conns(h->lw) == 0;
}

static bool no_exchange(const struct harness *h)
{
    return active_exchanges(h) == 0;
}

/*
 * Close what outlived the input: client connections (by force: the input
 * is over), then the upstream connections, from the backend's side, as a
 * backend ending kept-alive connections does. An exchange still alive once
 * its client connection is gone is counted in res->exchanges_left.
 */
static void close_leftovers(struct harness *h, struct harness_result *res)
{
    if (listener_worker_conns(h->lw)) {
        res->client_forced = true;
        h1_downstream_close_all(h->lw);
        h2_downstream_close_all(h->lw);
        run_until(h, NULL, res, no_exchange);
    }
    res->exchanges_left = (unsigned)active_exchanges(h);
    if (h->n_backend_conns) {
        res->upstream_forced = res->exchanges_left > 0;
        quiet(h, true);
        backend_close_all(h);
        quiet(h, false);
        run_until(h, NULL, res, no_exchange);
    }
}

/*
 * A client connection to the proxy's listener, accepted by the worker's own
 * accept code on the next turn; for HARNESS_H2 the preface is sent first
 * (prior-knowledge h2c: the HTTP/1.1 codec sniffs it and hands the
 * connection to the HTTP/2 one). The client's fd, or -1.
 */
static int connect_client(struct harness *h, enum harness_proto proto)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons(h->port)};
    /* The client closes second (after its FIN) and so keeps a TIME_WAIT per
     * input: a source address of its own (127.1.x.y, the port chosen at
     * connect) per input keeps thousands a second from using up the ports. */
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f010000u | (++h->n_clients & 0xffffu))};
    int one = 1, err = 0;
    socklen_t elen = sizeof err;
    struct pollfd pfd = {.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
                         .events = POLLOUT};
    int fd = pfd.fd;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0 && errno != EINPROGRESS))
        goto fail;
    /* On loopback the handshake completes in the kernel, before accept();
     * libFuzzer's timer signals may interrupt the wait. */
    while (poll(&pfd, 1, 5000) < 0)
        if (errno != EINTR)
            goto fail;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0 ||
        (proto == HARNESS_H2 && send(fd, h2_preface, sizeof h2_preface - 1, MSG_NOSIGNAL) !=
                                    (ssize_t)(sizeof h2_preface - 1)))
        goto fail;
    return fd;
fail:
    fprintf(stderr, "harness: cannot connect to the listener: %s\n", strerror(err ? err : errno));
    close(fd);
    return -1;
}

int harness_run(struct harness *h, enum harness_proto proto, const uint8_t *data, size_t size,
                struct harness_result *res)
{
    struct harness_result scratch;
    res = res ? res : &scratch;
    memset(res, 0, sizeof *res);
    unsigned reqs0 = h->backend_reqs;
    quiet(h, true);
    struct client cl = {.fd = connect_client(h, proto), .data = data, .size = size};
    quiet(h, false);
    if (cl.fd < 0)
        return -1;
    /* The whole input, and whatever it makes happen (responses included). */
    run_until(h, &cl, res, NULL);
    cl.write_done = true;
    shutdown(cl.fd, SHUT_WR);
    run_until(h, &cl, res, no_client);
    close_leftovers(h, res);
    client_read(&cl, res);
    close(cl.fd);
    res->backend_reqs = h->backend_reqs - reqs0;
    return 0;
}

int harness_fuzz_one(enum harness_proto proto, const char *name, const uint8_t *data, size_t size)
{
    static struct harness *h;
    static int verbose = -1; /* SY_FUZZ_VERBOSE=1: one line per input on stderr */
    if (!h && !(h = harness_new(NULL)))
        abort();
    struct harness_result r;
    if (harness_run(h, proto, data, size, &r) != 0)
        abort(); /* out of fds or memory: the harness itself */
    if (verbose < 0)
        verbose = getenv("SY_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "%s: %zu bytes in, %zu out, %u backend requests, %u turns%s%s\n", name,
                size, r.out_bytes, r.backend_reqs, r.turns,
                r.client_forced ? ", client closed by force" : "",
                r.upstream_forced ? ", upstream closed by force" : "");
    if (r.exchanges_left) {
        fprintf(stderr, "%s: %u exchange(s) outlived the connection\n", name, r.exchanges_left);
        abort();
    }
    return 0;
}
