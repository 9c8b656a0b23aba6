/*
 * hc_probe.c — one health-check probe: a fresh TCP (or TLS) connection to
 * the target, the kind's request/response, a timeout over the whole of it;
 * and the TCP kind (the connection alone decides).
 *
 * TLS probes do not verify the server's certificate (as GCP's HTTPS and
 * HTTP/2 health checks): they prove the backend serves, not who it is. SNI
 * is the health check's host, else the endpoint's host name (none for an IP
 * literal); ALPN is "http/1.1" (HTTPS) or "h2" (HTTP2, which must be
 * selected).
 *
 * States: connecting → connected (kind exchanging) → finished. A verdict
 * from any callback ends the probe: hc_probe_finished() is told, then the
 * bufferevent and timer are freed (freeing a bufferevent from its own
 * callback is allowed by libevent).
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "core/tls_bev.h"
#include "core/worker.h"
#include "healthcheck/hc-int.h"

enum hc_verdict hc_fail(struct hc_probe *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
    return HC_FAIL;
}

bool hc_body_matches(const struct hc_target *t, const uint8_t *body, size_t len)
{
    size_t n = strlen(t->response);
    if (n == 0)
        return true;
    if (len > HC_BODY_MAX)
        len = HC_BODY_MAX;
    return memmem(body, len, t->response, n) != NULL;
}

static void probe_free(struct hc_probe *p)
{
    if (p->kind->destroy)
        p->kind->destroy(p);
    if (p->bev)
        bufferevent_free(p->bev);
    if (p->timeout_ev)
        event_free(p->timeout_ev);
    free(p);
}

void hc_probe_cancel(struct hc_probe *p)
{
    if (!p)
        return;
    p->t->probe = NULL;
    probe_free(p);
}

/* A verdict was reached: report it and free the probe. */
static void probe_end(struct hc_probe *p, enum hc_verdict v)
{
    if (v == HC_PENDING)
        return;
    struct hc_target *t = p->t;
    char reason[HC_REASON_MAX];
    snprintf(reason, sizeof reason, "%s", p->reason);
    t->probe = NULL;
    probe_free(p);
    hc_probe_finished(t, v == HC_PASS, reason);
}

static void ssl_error(struct hc_probe *p)
{
    unsigned long e = bufferevent_get_openssl_error(p->bev);
    char buf[120];
    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
        hc_fail(p, "TLS: %s", buf);
    } else {
        hc_fail(p, "TLS handshake failed");
    }
}

/* The TLS kinds that need h2 fail when the server did not select it. */
static bool alpn_ok(struct hc_probe *p)
{
    if (!p->kind->tls || !p->kind->alpn || strcmp(p->kind->alpn, "\x02h2") != 0)
        return true;
    const unsigned char *sel = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(p->bev), &sel, &len);
    return len == SY_STRLEN("h2") && memcmp(sel, SY_STRLIT("h2")) == 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct hc_probe *p = arg;
    probe_end(p, p->kind->on_read(p, bufferevent_get_input(bev)));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct hc_probe *p = arg;
    enum hc_verdict v = HC_PENDING;
    if (what & BEV_EVENT_CONNECTED) {
        p->connected = true;
        if (!alpn_ok(p))
            v = hc_fail(p, "TLS: the server did not select ALPN h2");
        else
            v = p->kind->on_connected(p);
    } else if (what & BEV_EVENT_EOF) {
        struct evbuffer *in = bufferevent_get_input(bev);
        if (evbuffer_get_length(in))
            v = p->kind->on_read(p, in);
        if (v == HC_PENDING)
            v = p->kind->on_eof(p);
    } else if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        if (p->kind->tls && bufferevent_get_openssl_error(bev))
            ssl_error(p);
        else if (err)
            hc_fail(p, "%s: %s", p->connected ? "read" : "connect",
                    evutil_socket_error_to_string(err));
        else if (p->kind->tls && !p->connected)
            hc_fail(p, "TLS handshake failed");
        else
            hc_fail(p, "connection error");
        v = HC_FAIL;
    }
    probe_end(p, v);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct hc_probe *p = arg;
    probe_end(p, hc_fail(p, "%s after %llums", p->connected ? "timeout" : "connect timeout",
                         (unsigned long long)p->t->timeout_ms));
}

static SSL_CTX *tls_ctx(struct health_checker *hc)
{
    if (hc->tls)
        return hc->tls;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    hc->tls = ctx;
    return ctx;
}

static struct bufferevent *bev_new(struct hc_probe *p)
{
    struct health_checker *hc = p->t->hc;
    if (!p->kind->tls)
        return bufferevent_socket_new(hc->base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL_CTX *ctx = tls_ctx(hc);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (!ssl)
        return NULL;
    if (p->kind->alpn)
        SSL_set_alpn_protos(ssl, (const unsigned char *)p->kind->alpn,
                            (unsigned)strlen(p->kind->alpn));
    if (p->t->sni)
        SSL_set_tlsext_host_name(ssl, p->t->sni);
    /* On failure the SSL has been freed (tls_bev.h): not again here. */
    return sy_bev_openssl_new(hc->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
}

static const struct hc_kind *kind_of(const struct hc_target *t)
{
    switch (t->type) {
    case CFG_HC_HTTP: return &hc_kind_http;
    case CFG_HC_HTTPS: return &hc_kind_https;
    case CFG_HC_HTTP2: return &hc_kind_http2;
    case CFG_HC_H2C: return &hc_kind_h2c;
    case CFG_HC_GRPC: return t->tls ? &hc_kind_grpc_tls : &hc_kind_grpc;
    case CFG_HC_TCP: break;
    }
    return &hc_kind_tcp;
}

int hc_probe_start(struct hc_target *t)
{
    struct hc_probe *p = calloc(1, sizeof *p);
    if (!p)
        return SY_ENOMEM;
    p->t = t;
    p->kind = kind_of(t);
    p->started_ms = sy_now_ms();
    p->bev = bev_new(p);
    p->timeout_ev = evtimer_new(t->hc->base, on_timeout, p);
    if (!p->bev || !p->timeout_ev) {
        probe_free(p);
        return SY_ENOMEM;
    }
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&t->ss, (int)t->len) != 0) {
        probe_free(p);
        return SY_EIO;
    }
    int one = 1;
    setsockopt(bufferevent_getfd(p->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    sy_timer_arm_ms(p->timeout_ev, t->timeout_ms);
    t->probe = p;
    return 0;
}

/* ---- TCP: connecting is the whole check --------------------------------------------------------
 */

static enum hc_verdict tcp_connected(struct hc_probe *p)
{
    return HC_PASS;
}

static enum hc_verdict tcp_read(struct hc_probe *p, struct evbuffer *in)
{
    return HC_PENDING;
}

static enum hc_verdict tcp_eof(struct hc_probe *p)
{
    return hc_fail(p, "connection closed");
}

const struct hc_kind hc_kind_tcp = {
    .name = "TCP",
    .on_connected = tcp_connected,
    .on_read = tcp_read,
    .on_eof = tcp_eof,
};
