/*
 * hc_http1.c — HTTP and HTTPS health checks: on a fresh connection,
 *
 *   GET <request_path> HTTP/1.1
 *   Host: <host, else the endpoint's address>
 *   User-Agent: switchyard-health-check
 *   Connection: close
 *
 * Healthy when the status is 200 and, if `response` is set, the first
 * HC_BODY_MAX (1024) bytes of the body contain it (GCP's rule). The
 * verdict comes as soon as it is known: at the response head when no body
 * match is needed.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "healthcheck/hc-int.h"

struct h1_probe {
    http_parser parser;
    int status; /* 0 until the head is parsed */
    bool msg_done;
    uint8_t body[HC_BODY_MAX];
    size_t body_len; /* kept bytes (at most HC_BODY_MAX) */
};

static int on_headers_complete(http_parser *hp)
{
    struct h1_probe *h = hp->data;
    if (hp->status_code >= 100 && hp->status_code < 200)
        return 0; /* interim response: keep reading */
    h->status = hp->status_code;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct h1_probe *h = hp->data;
    size_t room = sizeof h->body - h->body_len;
    size_t n = len < room ? len : room;
    memcpy(h->body + h->body_len, at, n);
    h->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct h1_probe *h = hp->data;
    if (h->status)
        h->msg_done = true;
    return 0;
}

static const http_parser_settings settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* A verdict when one can be given (`final`: nothing more will come). */
static enum hc_verdict judge(struct hc_probe *p, bool final)
{
    struct h1_probe *h = p->state;
    const struct hc_target *t = p->t;
    if (!h->status)
        return final ? hc_fail(p, "connection closed before a response") : HC_PENDING;
    if (h->status != 200)
        return hc_fail(p, "HTTP %d", h->status);
    if (!t->response[0])
        return HC_PASS;
    if (hc_body_matches(t, h->body, h->body_len))
        return HC_PASS;
    if (final || h->msg_done || h->body_len >= sizeof h->body)
        return hc_fail(p, "HTTP 200 but the body does not contain the expected response");
    return HC_PENDING;
}

static enum hc_verdict h1_connected(struct hc_probe *p)
{
    struct h1_probe *h = calloc(1, sizeof *h);
    if (!h)
        return hc_fail(p, "out of memory");
    p->state = h;
    http_parser_init(&h->parser, HTTP_RESPONSE);
    h->parser.data = h;
    struct evbuffer *out = bufferevent_get_output(p->bev);
    if (evbuffer_add_printf(out,
                            "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchyard-health-check\r\n"
                            "Accept: */*\r\nConnection: close\r\n\r\n",
                            p->t->request_path, p->t->authority) < 0)
        return hc_fail(p, "out of memory");
    return HC_PENDING;
}

static enum hc_verdict h1_read(struct hc_probe *p, struct evbuffer *in)
{
    struct h1_probe *h = p->state;
    if (!h) { /* bytes before our request: not an HTTP server */
        evbuffer_drain(in, evbuffer_get_length(in));
        return HC_PENDING;
    }
    for (int k = 0; k < 1024 && evbuffer_get_length(in); k++) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = http_parser_execute(&h->parser, &settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, v.iov_len);
        if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK || n != v.iov_len)
            return hc_fail(p, "malformed HTTP response (%s)",
                           http_errno_name(HTTP_PARSER_ERRNO(&h->parser)));
        enum hc_verdict verdict = judge(p, false);
        if (verdict != HC_PENDING)
            return verdict;
    }
    return HC_PENDING;
}

static enum hc_verdict h1_eof(struct hc_probe *p)
{
    struct h1_probe *h = p->state;
    if (!h)
        return hc_fail(p, "connection closed");
    http_parser_execute(&h->parser, &settings, NULL, 0); /* ends a body read until close */
    return judge(p, true);
}

static void h1_destroy(struct hc_probe *p)
{
    free(p->state);
    p->state = NULL;
}

const struct hc_kind hc_kind_http = {
    .name = "HTTP",
    .tls = false,
    .alpn = NULL,
    .on_connected = h1_connected,
    .on_read = h1_read,
    .on_eof = h1_eof,
    .destroy = h1_destroy,
};
const struct hc_kind hc_kind_https = {
    .name = "HTTPS",
    .tls = true,
    .alpn = "\x08http/1.1",
    .on_connected = h1_connected,
    .on_read = h1_read,
    .on_eof = h1_eof,
    .destroy = h1_destroy,
};
