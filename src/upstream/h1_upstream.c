/*
 * h1_upstream.c — HTTP/1.1 to backends: per-worker keep-alive pools per
 * endpoint address, and the codec that carries one attempt at a time on a
 * connection (no pipelining upstream).
 *
 * Connection states:
 *   CONNECTING  socket connect in progress; the request is already queued
 *   ACTIVE      carrying an attempt (c->r set)
 *   DRAINING    its attempt abandoned by a client that went away, the
 *               response read to its end unseen, then IDLE (bounded:
 *               UPSTREAM_DRAIN_MAX bytes, UPSTREAM_DRAIN_MS; else CLOSED)
 *   IDLE        in its pool's idle list, waiting for reuse
 *   CLOSED      closed; the struct is freed on a later loop turn
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upstream/tls_client.h"
#include "upstream/upstream-int.h"
#include "core/bev_flush.h"
#include "core/defer.h"
#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/tls_bev.h"
#include "core/worker.h"
#include "http/h1.h"
#include "http/headers.h"

#define POOL_MAX_IDLE                                                                              \
    1024 /* per endpoint per worker; an HTTP/2 client may have hundreds in flight */
#define UPSTREAM_IDLE_MS  60000
#define UPSTREAM_MAX_HEAD (64 * 1024)
/*
 * An abandoned response is read to its end within these, or the connection
 * closes; and at most POOL_MAX_DRAINING connections per endpoint per worker
 * do so at a time (each still counts against the service's max_connections).
 */
#define UPSTREAM_DRAIN_MAX (64 * 1024)
#define UPSTREAM_DRAIN_MS  1000
#define POOL_MAX_DRAINING  128

enum h1u_state { H1U_CONNECTING, H1U_ACTIVE, H1U_DRAINING, H1U_IDLE, H1U_CLOSED };

static const char *h1u_state_str(enum h1u_state s)
{
    static const char *const names[] = {"connecting", "active", "draining", "idle", "closed"};
    return names[s];
}

struct pool;

struct h1_up {
    struct h1_pools *pools;
    void *conn_token;                /* from upstream_request.conn_enter, or NULL */
    void (*conn_leave)(void *token); /* gives conn_token back when the connection closes */
    struct pool *pool;
    struct bufferevent *bev;
    const struct upstream_request *r; /* the attempt carried; NULL unless ACTIVE */
    enum h1u_state state;
    http_parser parser;
    bool connected;
    bool reused;    /* carried an attempt before this one */
    bool got_bytes; /* any response byte for the current attempt */
    bool peer_fin;  /* the backend closed its side (end of stream, or EPIPE after it) */
    bool head_done; /* response head delivered */
    bool msg_done;  /* parser saw the end of the response */
    bool req_sent;  /* the whole request went into the output buffer */
    bool req_chunked;
    bool paused;       /* response reading paused by back-pressure */
    bool tunnel;       /* 101 Switching Protocols: bytes pass through as they are */
    bool is_head;      /* the attempt's request is a HEAD: the response has no body */
    size_t drain_left; /* DRAINING: response bytes it may still read */
    struct http_response_head head;
    struct evbuffer *body;    /* decoded body bytes collected during one parse pass */
    struct sy_deadline timer; /* connect timeout, then idle timeout */
    struct sy_defer flush_d;  /* one optimistic write per loop turn (bev_flush.h; defer.h) */
    bool tls;
    struct sy_defer reap_d;   /* the free, on the worker's defer queue */
    struct sy_link all_link;  /* on h1_pools.all: every connection of this worker */
    struct sy_link idle_link; /* on pool.idle while IDLE */
};

struct pool {
    struct sockaddr_storage ss;
    socklen_t len;
    uint64_t tls_key;    /* 0 for plain HTTP; else a hash of the TLS settings */
    struct sy_link idle; /* idle connections, most recently used first */
    unsigned n_idle;
    unsigned n_draining; /* connections in DRAINING */
    struct pool *next;
};

struct h1_pools {
    struct worker *w;
    struct pool *pools;
    struct sy_link all;           /* every connection (struct h1_up), until its reap */
    struct tls_client_cache *tls; /* HTTPS client contexts, made on first use */
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void process_input(struct h1_up *c);
static void on_flush(struct sy_defer *d);

static void set_state(struct h1_up *c, enum h1u_state s)
{
    log_debug("h1 upstream %p: %s -> %s", (void *)c, h1u_state_str(c->state), h1u_state_str(s));
    if (c->state == H1U_DRAINING)
        c->pool->n_draining--;
    else if (s == H1U_DRAINING)
        c->pool->n_draining++;
    c->state = s;
}

/* ---- pools ------------------------------------------------------------------- */

struct h1_pools *h1_pools_new(struct worker *w)
{
    struct h1_pools *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->w = w;
    sy_list_init(&p->all);
    return p;
}

/*
 * FNV-1a over the settings that make two TLS connections interchangeable:
 * the CA, verification, and the name sent and verified (tls_client_name):
 * a connection verified for one name never carries a request for another.
 */
static uint64_t tls_key_of(const struct cfg_backend_service *svc, const struct cfg_endpoint *ep)
{
    if (svc->protocol != CFG_BACKEND_HTTPS)
        return 0;
    char name[256];
    tls_client_name(svc, ep, name, sizeof name);
    uint64_t h = 0xcbf29ce484222325ull;
    const char *parts[] = {svc->tls.ca_file ? svc->tls.ca_file : "", name,
                           svc->tls.verify ? "v" : "n"};
    for (size_t i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull;
    }
    return h | 1; /* never 0 */
}

/* The pool of one endpoint address and TLS setting and name (plain and TLS never mix). */
static struct pool *pool_get(struct h1_pools *ps, const struct cfg_endpoint *ep,
                             const struct cfg_backend_service *svc)
{
    const struct cfg_addr *a = &ep->address;
    uint64_t key = tls_key_of(svc, ep);
    for (struct pool *p = ps->pools; p; p = p->next)
        if (p->len == a->len && p->tls_key == key && memcmp(&p->ss, &a->ss, a->len) == 0)
            return p;
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(&p->ss, &a->ss, a->len);
    p->len = a->len;
    p->tls_key = key;
    sy_list_init(&p->idle);
    p->next = ps->pools;
    ps->pools = p;
    return p;
}

static void idle_unlink(struct h1_up *c)
{
    sy_list_unlink(&c->idle_link);
    c->pool->n_idle--;
}

static void reap(struct h1_up *c)
{
    sy_list_unlink(&c->all_link);
    evbuffer_free(c->body);
    if (c->conn_token)
        c->conn_leave(c->conn_token);
    free(c);
}

static void on_reap(struct sy_defer *d)
{
    reap(SY_CONTAINER_OF(d, struct h1_up, reap_d));
}

/* Close now; free later (a callback of ours may be on the stack). */
static void conn_close(struct h1_up *c)
{
    if (c->state == H1U_CLOSED)
        return;
    if (c->state == H1U_IDLE)
        idle_unlink(c);
    set_state(c, H1U_CLOSED);
    c->r = NULL;
    sy_deadline_del(&c->timer);
    sy_defer_cancel(&c->flush_d);
    bufferevent_free(c->bev);
    c->bev = NULL;
    sy_defer(&c->pools->w->defer, &c->reap_d);
}

void h1_pools_close_idle(struct h1_pools *ps)
{
    for (struct pool *p = ps->pools; p; p = p->next)
        for (struct sy_link *l; (l = sy_list_first(&p->idle));)
            conn_close(SY_CONTAINER_OF(l, struct h1_up, idle_link)); /* unlinks it */
}

void h1_pools_free(struct h1_pools *ps)
{
    if (!ps)
        return;
    for (struct sy_link *l; (l = sy_list_first(&ps->all));) {
        struct h1_up *c = SY_CONTAINER_OF(l, struct h1_up, all_link);
        const struct upstream_request *r = c->r;
        conn_close(c);
        sy_defer_cancel(&c->reap_d);
        reap(c);
        if (r)
            r->cbs->on_error(r->ctx, UPSTREAM_RESET, false);
    }
    while (ps->pools) {
        struct pool *p = ps->pools;
        ps->pools = p->next;
        free(p);
    }
    tls_client_cache_free(ps->tls);
    free(ps);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct h1_up *c = arg;
    const struct upstream_request *r = c->r;
    if (c->state == H1U_IDLE || c->state == H1U_DRAINING) {
        conn_close(c);
        return;
    }
    /* Connect timeout. */
    conn_close(c);
    if (r)
        r->cbs->on_error(r->ctx, UPSTREAM_CONNECT_FAILED, false);
}

/* HTTPS: TLS with ALPN http/1.1 (tls_client.h); otherwise a plain socket. */
static struct bufferevent *bev_new(struct h1_pools *ps, const struct upstream_request *r)
{
    const struct cfg_backend_service *svc = r->svc;
    struct event_base *base = ps->w->base;
    if (svc->protocol != CFG_BACKEND_HTTPS)
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!ps->tls && !(ps->tls = tls_client_cache_new()))
        return NULL;
    /* The handshake runs first; BEV_EVENT_CONNECTED comes after it. On
     * failure sy_bev_openssl_new has freed the SSL (tls_bev.h). */
    return sy_bev_openssl_new(base, -1, tls_client_ssl_new(ps->tls, svc, r->ep, r->cfg_version),
                              BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
}

static struct h1_up *conn_new(struct h1_pools *ps, struct pool *p, const struct upstream_request *r)
{
    struct event_base *base = ps->w->base;
    struct h1_up *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->body = evbuffer_new();
    const struct cfg_backend_service *svc = r->svc;
    c->bev = bev_new(ps, r);
    if (!c->body || !c->bev)
        goto fail;
    c->pools = ps;
    c->pool = p;
    c->state = H1U_CONNECTING;
    sy_deadline_assign(&c->timer, base, on_timer, c);
    sy_defer_init(&c->reap_d, on_reap);
    sy_defer_init(&c->flush_d, on_flush);
    c->tls = svc->protocol == CFG_BACKEND_HTTPS;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    sy_bev_set_read_cap(c->bev, c->tls, 2 * SY_FLOW_HIGH);
    bufferevent_setwatermark(c->bev, EV_WRITE, SY_FLOW_LOW, 0);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&p->ss, (int)p->len) != 0)
        goto fail;
    if (!c->tls)
        sy_bev_direct_read(c->bev);
    int one = 1;
    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sy_deadline_arm(&c->timer, svc->connect_timeout_ms ? svc->connect_timeout_ms : 5000);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    sy_list_insert_head(&ps->all, &c->all_link);
    return c;
fail:
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->body)
        evbuffer_free(c->body);
    free(c);
    return NULL;
}

/* ---- response parsing -------------------------------------------------------------- */

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct h1_up *c = hp->data;
    if (c->head_done)
        return 0; /* trailers of a chunked response are not forwarded to HTTP/1.1 */
    http_lower((char *)at, len);
    return http_headers_add(&c->head.headers, c->r->arena, at, len, SY_STRLIT("")) ? -1 : 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct h1_up *c = hp->data;
    if (c->head_done || c->head.headers.n == 0)
        return 0;
    struct http_header *f = &c->head.headers.v[c->head.headers.n - 1];
    f->value = at;
    f->value_len = (uint32_t)len;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct h1_up *c = hp->data;
    c->head.status = hp->status_code;
    c->head.content_length = (hp->flags & F_CHUNKED) || hp->content_length == ULLONG_MAX
                                 ? -1
                                 : (int64_t)hp->content_length;
    if (hp->status_code == 101 && c->r && c->r->head->upgrade) {
        c->head_done = c->tunnel = true;
        return 1; /* no body: what follows is the upgraded protocol */
    }
    if (hp->status_code >= 100 && hp->status_code < 200)
        return 0;
    c->head_done = true;
    /* A response to HEAD has no body whatever it announces. */
    return c->is_head ? 1 : 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct h1_up *c = hp->data;
    return evbuffer_add(c->body, at, len) ? -1 : 0;
}

static int on_message_complete(http_parser *hp)
{
    struct h1_up *c = hp->data;
    if (!c->head_done) /* 1xx: the real response follows */
        return 0;
    c->msg_done = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* DRAINING: the head's fields and the body are dropped (c->r is NULL). */
static const http_parser_settings drain_settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/*
 * The attempt is over without a (complete) response. It is reported
 * `stale` (upstream.h) when the connection had carried an attempt before,
 * no byte of this response came, and the backend had closed the connection
 * (FIN): it was an idle keep-alive connection the backend let go. A reset
 * of a connection the backend had not closed is not stale: the backend may
 * have read the request and aborted it.
 */
static void fail(struct h1_up *c, enum upstream_error err)
{
    const struct upstream_request *r = c->r;
    bool stale = c->reused && !c->got_bytes && c->peer_fin;
    conn_close(c);
    if (r)
        r->cbs->on_error(r->ctx, err, stale);
}

static void pool_put_idle(struct h1_up *c)
{
    struct pool *p = c->pool;
    if (p->n_idle >= POOL_MAX_IDLE || c->pools->w->draining) {
        conn_close(c);
        return;
    }
    c->r = NULL;
    c->reused = true;
    set_state(c, H1U_IDLE);
    sy_list_insert_head(&p->idle, &c->idle_link);
    p->n_idle++;
    sy_deadline_arm(&c->timer, UPSTREAM_IDLE_MS);
    bufferevent_enable(c->bev, EV_READ);
}

/* After a complete response: the request was all queued, the response
 * keeps the connection alive, and nothing follows it. */
static bool may_reuse(struct h1_up *c)
{
    return c->req_sent && http_should_keep_alive(&c->parser) &&
           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
}

/* The response is complete: release the connection, then tell the owner. */
static void finish_response(struct h1_up *c)
{
    const struct upstream_request *r = c->r;
    bool reuse = may_reuse(c);
    c->r = NULL;
    if (reuse)
        pool_put_idle(c);
    else
        conn_close(c);
    if (evbuffer_get_length(c->body))
        r->cbs->on_body(r->ctx, c->body);
    r->cbs->on_end(r->ctx, NULL);
}

/* Parse and deliver the response head; returns false if the attempt ended. */
static bool read_head(struct h1_up *c, struct evbuffer *in)
{
    for (;;) {
        ssize_t n = h1_head_length(in, UPSTREAM_MAX_HEAD);
        if (n == 0)
            return false;
        if (n < 0) {
            fail(c, UPSTREAM_PROTOCOL);
            return false;
        }
        char *copy = arena_alloc(c->r->arena, (size_t)n);
        if (!copy || http_headers_init(&c->head.headers, c->r->arena, 16) != 0) {
            fail(c, UPSTREAM_PROTOCOL);
            return false;
        }
        evbuffer_remove(in, copy, (size_t)n);
        size_t done = http_parser_execute(&c->parser, &parser_settings, copy, (size_t)n);
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK &&
            HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED) {
            fail(c, UPSTREAM_PROTOCOL);
            return false;
        }
        (void)done;
        if (c->head_done)
            return true;
        /* An interim 1xx response: drop it and read the next head. */
    }
}

static void deliver_head(struct h1_up *c)
{
    struct http_response_head *h = &c->head;
    http_headers_strip_hop_by_hop(&h->headers, false);
    http_headers_remove(&h->headers, SY_STRLIT("content-length"));
    if (c->tunnel) {
        const struct upstream_request *r = c->r;
        c->msg_done = false;
        h->content_length = -1;
        http_headers_add(&h->headers, r->arena, SY_STRLIT("connection"), SY_STRLIT("upgrade"));
        http_headers_add(&h->headers, r->arena, SY_STRLIT("upgrade"), r->head->upgrade,
                         strlen(r->head->upgrade));
        r->cbs->on_head(r->ctx, h, false);
        return;
    }
    bool end = c->msg_done && evbuffer_get_length(c->body) == 0;
    c->r->cbs->on_head(c->r->ctx, h, end);
}

/*
 * Feed the first chunk of `in` to the parser and drain what it took
 * (*done); its error, or HPE_OK when it stopped at a pause.
 */
static enum http_errno parse_chunk(struct h1_up *c, struct evbuffer *in,
                                   const http_parser_settings *ps, size_t *done)
{
    struct evbuffer_iovec v;
    *done = 0;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return HPE_OK;
    *done = http_parser_execute(&c->parser, ps, v.iov_base, v.iov_len);
    evbuffer_drain(in, *done);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    return e == HPE_PAUSED ? HPE_OK : e;
}

/* Feed buffered body bytes to the parser until empty, paused or done. */
static void read_body(struct h1_up *c, struct evbuffer *in)
{
    while (!c->msg_done && !c->paused && c->r && evbuffer_get_length(in)) {
        size_t done;
        if (parse_chunk(c, in, &parser_settings, &done) != HPE_OK) {
            fail(c, UPSTREAM_PROTOCOL);
            return;
        }
        if (c->msg_done)
            break;
        if (evbuffer_get_length(c->body)) {
            c->r->cbs->on_body(c->r->ctx, c->body);
            /* The owner may have paused or cancelled us. */
        }
    }
    if (c->r && c->msg_done)
        finish_response(c);
}

static void process_input(struct h1_up *c)
{
    if (c->state != H1U_ACTIVE || !c->r)
        return;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (!c->head_done) {
        if (!read_head(c, in))
            return;
        deliver_head(c);
        if (c->state != H1U_ACTIVE || !c->r)
            return;
    }
    if (c->tunnel) {
        if (evbuffer_get_length(in) && c->r)
            c->r->cbs->on_body(c->r->ctx, in);
        return;
    }
    if (c->msg_done) {
        finish_response(c);
        return;
    }
    read_body(c, in);
}

/*
 * DRAINING: feed what came to the parser, fields and body dropped; at the
 * end of the response the connection goes back to its pool if it may be
 * reused (keep-alive, nothing more buffered, the request all written).
 */
static void drain_input(struct h1_up *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->msg_done && evbuffer_get_length(in)) {
        size_t done;
        if (parse_chunk(c, in, &drain_settings, &done) != HPE_OK || (done == 0 && !c->msg_done) ||
            done > c->drain_left) {
            conn_close(c);
            return;
        }
        c->drain_left -= done;
    }
    if (!c->msg_done)
        return;
    if (may_reuse(c) && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        pool_put_idle(c);
    else
        conn_close(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct h1_up *c = arg;
    if (c->state == H1U_DRAINING) {
        drain_input(c);
        return;
    }
    if (c->state == H1U_IDLE) {
        /* Bytes on an idle connection: the backend is confused; drop it. */
        conn_close(c);
        return;
    }
    c->got_bytes = true;
    if (!c->paused)
        process_input(c);
}

static void output_progress(struct h1_up *c, size_t left)
{
    if (c->state == H1U_ACTIVE && c->r && left <= SY_FLOW_LOW)
        c->r->cbs->on_drained(c->r->ctx);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct h1_up *c = arg;
    sy_bev_written(bev, c->tls);
    output_progress(c, evbuffer_get_length(bufferevent_get_output(bev)));
}

/* Write the request bytes queued during this loop turn (once connected). */
static void on_flush(struct sy_defer *d)
{
    struct h1_up *c = SY_CONTAINER_OF(d, struct h1_up, flush_d);
    if ((c->state == H1U_ACTIVE || c->state == H1U_DRAINING) && c->connected)
        output_progress(c, sy_bev_flush(c->bev, c->tls));
}

static void schedule_flush(struct h1_up *c)
{
    if (c->state != H1U_CLOSED)
        sy_defer(&c->pools->w->defer, &c->flush_d);
}

/* EOF: completes a close-delimited body, otherwise the attempt failed. */
static void on_eof(struct h1_up *c)
{
    if (c->state == H1U_ACTIVE && c->r && c->tunnel) {
        process_input(c);
        if (c->state != H1U_ACTIVE || !c->r)
            return;
        c->req_sent = false; /* never reuse a tunnel */
        finish_response(c);
        return;
    }
    if (c->state == H1U_ACTIVE && c->r && c->head_done && !c->msg_done) {
        process_input(c);
        if (c->state != H1U_ACTIVE || !c->r)
            return;
        http_parser_execute(&c->parser, &parser_settings, NULL, 0);
        if (c->msg_done) {
            c->req_sent = false; /* never reuse */
            finish_response(c);
            return;
        }
    }
    fail(c, UPSTREAM_RESET);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct h1_up *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        sy_deadline_cancel(&c->timer);
        if (c->state == H1U_CONNECTING)
            set_state(c, c->r ? H1U_ACTIVE : H1U_IDLE);
        /* (TCP_NODELAY was set with the socket, in conn_new.) */
        sy_bev_flush(bev, c->tls); /* what was queued while connecting */
        return;
    }
    if (c->state == H1U_IDLE) {
        conn_close(c);
        return;
    }
    if (!c->connected) {
        fail(c, UPSTREAM_CONNECT_FAILED);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->peer_fin = true;
        on_eof(c);
        return;
    }
    /* EPIPE: our write or read came after the backend's FIN and its reset
     * (Linux reports a reset in CLOSE_WAIT as EPIPE, in ESTABLISHED as
     * ECONNRESET). */
    c->peer_fin = EVUTIL_SOCKET_ERROR() == EPIPE;
    fail(c, UPSTREAM_RESET);
}

/* ---- attempt ops ---------------------------------------------------------------- */

static void op_send_body(void *att, struct evbuffer *buf)
{
    struct h1_up *c = att;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->r && c->r->head->upgrade && !c->tunnel) {
        /* Before the 101 the backend would read these bytes as requests;
         * the router holds them until then (tunnel_held), so this is a
         * last line, not a path. */
        log_warn("h1 upstream: %zu tunnel bytes before the 101 dropped", evbuffer_get_length(buf));
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    if (c->req_chunked)
        h1_write_chunk(out, buf);
    else
        evbuffer_add_buffer(out, buf);
    schedule_flush(c);
}

static void op_send_end(void *att, const struct http_headers *trailers)
{
    struct h1_up *c = att;
    if (c->r && c->r->head->upgrade)
        return; /* a tunnel ends when the backend closes */
    if (c->req_chunked)
        h1_write_last_chunk(bufferevent_get_output(c->bev), NULL);
    c->req_sent = true;
    schedule_flush(c);
}

static size_t op_pending(void *att)
{
    struct h1_up *c = att;
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void op_read_response(void *att, bool enable)
{
    struct h1_up *c = att;
    if (enable == !c->paused)
        return;
    c->paused = !enable;
    if (!enable) {
        http_parser_pause(&c->parser, 1);
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    if (!c->msg_done)
        http_parser_pause(&c->parser, 0);
    bufferevent_enable(c->bev, EV_READ);
    process_input(c);
}

static void op_cancel(void *att)
{
    conn_close(att);
}

/*
 * The client went away (upstream.h, abandon). A response whose request was
 * all queued, that is not a tunnel and not delimited by the close, is read
 * to its end without an owner, and the connection reused: reconnecting
 * costs the backend and the proxy more than reading a short answer. A
 * longer one (UPSTREAM_DRAIN_MAX), a slow one (UPSTREAM_DRAIN_MS) or any
 * other state closes the connection, as cancel does.
 */
static void op_abandon(void *att)
{
    struct h1_up *c = att;
    bool sized = !c->head_done || (c->parser.flags & F_CHUNKED) || c->msg_done ||
                 c->parser.content_length <= UPSTREAM_DRAIN_MAX; /* ULLONG_MAX: to the close */
    /* (An upgrade, tunnel or not, never has req_sent.) */
    if (c->state != H1U_ACTIVE || !c->req_sent || !sized || c->pools->w->draining ||
        c->pool->n_draining >= POOL_MAX_DRAINING) {
        conn_close(c);
        return;
    }
    c->r = NULL;
    set_state(c, H1U_DRAINING);
    c->drain_left = UPSTREAM_DRAIN_MAX;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    if (!c->msg_done)
        http_parser_pause(&c->parser, 0);
    if (c->paused) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
    sy_deadline_arm(&c->timer, UPSTREAM_DRAIN_MS);
    drain_input(c);
}

static const struct upstream_ops h1_upstream_ops = {
    .send_body = op_send_body,
    .send_end = op_send_end,
    .pending = op_pending,
    .read_response = op_read_response,
    .cancel = op_cancel,
    .abandon = op_abandon,
};

/*
 * An idle connection of the pool (none when r->fresh_connection), or a new
 * one when the service's circuit_breakers.max_connections allows (*err =
 * SY_ELIMIT when not).
 */
static struct h1_up *pool_take(struct h1_pools *ps, struct pool *p,
                               const struct upstream_request *r, int *err)
{
    struct sy_link *l = r->fresh_connection ? NULL : sy_list_first(&p->idle);
    if (l) {
        struct h1_up *c = SY_CONTAINER_OF(l, struct h1_up, idle_link);
        idle_unlink(c);
        sy_deadline_cancel(&c->timer);
        set_state(c, H1U_ACTIVE);
        return c;
    }
    void *token = r->conn_enter(r->conn_arg);
    if (!token) {
        *err = SY_ELIMIT;
        return NULL;
    }
    struct h1_up *c = conn_new(ps, p, r);
    if (!c) {
        r->conn_leave(token);
        *err = SY_EIO;
        return NULL;
    }
    c->conn_token = token;
    c->conn_leave = r->conn_leave;
    return c;
}

int h1_attempt_start(struct h1_pools *ps, const struct upstream_request *r,
                     struct upstream_attempt *out)
{
    struct pool *p = pool_get(ps, r->ep, r->svc);
    if (!p)
        return SY_ENOMEM;
    int err = SY_EIO;
    struct h1_up *c = pool_take(ps, p, r, &err);
    if (!c)
        return err;
    c->r = r;
    c->got_bytes = c->peer_fin = c->head_done = c->msg_done = c->paused = c->tunnel = false;
    memset(&c->head, 0, sizeof c->head);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->req_chunked = r->head->has_body && r->head->content_length < 0 && !r->head->upgrade;
    c->req_sent = !r->head->has_body && !r->head->upgrade;
    c->is_head = r->is_head;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    out->ops = &h1_upstream_ops;
    out->att = c;
    h1_write_request_head(bufferevent_get_output(c->bev), r->head);
    bufferevent_enable(c->bev, EV_READ);
    schedule_flush(c);
    return 0;
}
