/*
 * hc_h2.c — HTTP/2 health checks with an nghttp2 client session on a fresh
 * connection: HTTP2 (TLS, ALPN h2), H2C (cleartext, prior knowledge) and
 * GRPC (grpc.health.v1.Health/Check).
 *
 * HTTP2 / H2C: GET <request_path> with :authority <host, else the
 * endpoint's address>; healthy when :status is 200 and, if `response` is
 * set, the first 1024 body bytes contain it.
 *
 * GRPC: over h2c, or over TLS (ALPN h2) when the backend service's protocol
 * is HTTPS or HTTP2. POST /grpc.health.v1.Health/Check, content-type
 * application/grpc, te: trailers, one length-prefixed message HealthCheckRequest{service =
 * grpc_service_name}. Healthy only when :status is 200, grpc-status is 0 and
 * the HealthCheckResponse's status (field 1) is SERVING (1).
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "healthcheck/hc-int.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "http/grpc.h"
#include "http/h2.h"

#define GRPC_HEALTH_PATH "/grpc.health.v1.Health/Check"
#define H2_BODY_CAP      (HC_BODY_MAX + 5) /* a gRPC message prefix plus the kept body */
#define SERVING          1                 /* HealthCheckResponse.ServingStatus SERVING */

struct h2_probe {
    nghttp2_session *ng;
    int32_t stream_id;
    int status;      /* :status, 0 = none yet */
    int grpc_status; /* -1 = none */
    char grpc_message[64];
    uint8_t body[H2_BODY_CAP];
    size_t body_len;
    bool closed;                  /* our stream is closed */
    uint32_t error_code;          /* RST_STREAM / GOAWAY code when closed abnormally */
    uint8_t req[5 + 2 + 5 + 256]; /* gRPC request message (name truncated at 256) */
    size_t req_len, req_off;
};

/* :status or grpc-status as a number up to 999999, else -1. */
static int status_value(const uint8_t *v, size_t len)
{
    uint64_t x;
    return sy_parse_dec(v, len, 999999, &x) == 0 ? (int)x : -1;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct h2_probe *h = user;
    if (frame->hd.stream_id != h->stream_id)
        return 0;
    if (h2_name_is(name, namelen, SY_STRLIT(":status")))
        h->status = status_value(value, valuelen);
    else if (h2_name_is(name, namelen, SY_STRLIT("grpc-status")))
        h->grpc_status = status_value(value, valuelen);
    else if (h2_name_is(name, namelen, SY_STRLIT("grpc-message")))
        snprintf(h->grpc_message, sizeof h->grpc_message, "%.*s", (int)valuelen,
                 (const char *)value);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user)
{
    struct h2_probe *h = user;
    if (stream_id != h->stream_id)
        return 0;
    size_t room = sizeof h->body - h->body_len;
    size_t n = len < room ? len : room;
    memcpy(h->body + h->body_len, data, n);
    h->body_len += n;
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user)
{
    struct h2_probe *h = user;
    if (stream_id == h->stream_id) {
        h->closed = true;
        h->error_code = error_code;
    }
    return 0;
}

static ssize_t read_req(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t len,
                        uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct h2_probe *h = user;
    size_t n = h->req_len - h->req_off;
    if (n > len)
        n = len;
    memcpy(buf, h->req + h->req_off, n);
    h->req_off += n;
    if (h->req_off == h->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Queue everything nghttp2 wants to send (a few small frames). 0 or an nghttp2 error. */
static int flush(struct hc_probe *p)
{
    struct h2_probe *h = p->state;
    return h2_session_send(h->ng, bufferevent_get_output(p->bev), SIZE_MAX, NULL);
}

/* HealthCheckRequest{service: name} with its 5-byte gRPC prefix. */
static void grpc_request(struct h2_probe *h, const char *service)
{
    size_t n = strlen(service);
    if (n > 256)
        n = 256;
    size_t msg = n ? 2 + n + (n > 127) : 0, k = 0;
    h->req[k++] = 0; /* not compressed */
    h->req[k++] = (uint8_t)(msg >> 24);
    h->req[k++] = (uint8_t)(msg >> 16);
    h->req[k++] = (uint8_t)(msg >> 8);
    h->req[k++] = (uint8_t)msg;
    if (n) {
        h->req[k++] = 0x0a; /* field 1, length-delimited */
        if (n > 127) {
            h->req[k++] = (uint8_t)(0x80 | (n & 0x7f));
            h->req[k++] = (uint8_t)(n >> 7);
        } else {
            h->req[k++] = (uint8_t)n;
        }
        memcpy(h->req + k, service, n);
        k += n;
    }
    h->req_len = k;
}

static const struct h2_session_def probe_session = {
    .server = false,
    .on_header = on_header,
    .on_data_chunk_recv = on_data_chunk,
    .on_stream_close = on_stream_close,
};

/*
 * nghttp2's callbacks and options for every probe, built on the first one
 * and kept, immutable, for the life of the process (probes run on the main
 * thread only). NULL when out of memory.
 */
static const struct h2_setup *probe_setup(void)
{
    static struct h2_setup setup;
    if (!setup.cbs && h2_setup_init(&setup, &probe_session) != 0)
        return NULL;
    return &setup;
}

/* Submit SETTINGS and the request (GET, or the gRPC health POST). 0 or an nghttp2 error. */
static int submit_probe(struct hc_probe *p, struct h2_probe *h)
{
    static const nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    bool grpc = p->t->type == CFG_HC_GRPC;
    const char *method = grpc ? "POST" : "GET";
    const char *scheme = p->kind->tls ? "https" : "http";
    const char *path = grpc ? GRPC_HEALTH_PATH : p->t->request_path;
    const char *auth = p->t->authority;
    nghttp2_nv nva[] = {
        h2_nv_lit(SY_STRLIT(":method"), method, strlen(method)),
        h2_nv_lit(SY_STRLIT(":scheme"), scheme, strlen(scheme)),
        h2_nv_lit(SY_STRLIT(":authority"), auth, strlen(auth)),
        h2_nv_lit(SY_STRLIT(":path"), path, strlen(path)),
        h2_nv_lit(SY_STRLIT("user-agent"), SY_STRLIT("switchyard-health-check")),
        h2_nv_lit(SY_STRLIT("content-type"), SY_STRLIT("application/grpc")),
        h2_nv_lit(SY_STRLIT("te"), SY_STRLIT("trailers")),
    };
    nghttp2_data_provider prd = {.read_callback = read_req};
    if (h2_submit_settings(h->ng, iv, 1, 0) != 0)
        return NGHTTP2_ERR_NOMEM;
    if (grpc)
        grpc_request(h, p->t->grpc_service_name);
    h->stream_id = nghttp2_submit_request(h->ng, NULL, nva, grpc ? 7 : 5, grpc ? &prd : NULL, h);
    return h->stream_id < 0 ? h->stream_id : 0;
}

static enum hc_verdict h2_read(struct hc_probe *p, struct evbuffer *in);

static enum hc_verdict h2_connected(struct hc_probe *p)
{
    const struct h2_setup *setup = probe_setup();
    struct h2_probe *h = calloc(1, sizeof *h);
    if (!h || !setup) {
        free(h);
        return hc_fail(p, "out of memory");
    }
    p->state = h;
    h->grpc_status = -1;
    if (h2_session_new(setup, h, NULL, &h->ng) != 0)
        return hc_fail(p, "HTTP/2: %s", nghttp2_strerror(NGHTTP2_ERR_NOMEM));
    int rc = submit_probe(p, h);
    if (rc == 0)
        rc = flush(p);
    if (rc)
        return hc_fail(p, "HTTP/2: %s", nghttp2_strerror(rc));
    /* What the server sent before we were told we are connected (libevent may
     * run the read callback first): its SETTINGS, maybe more. */
    struct evbuffer *in = bufferevent_get_input(p->bev);
    return evbuffer_get_length(in) ? h2_read(p, in) : HC_PENDING;
}

/* HealthCheckResponse.status, or -1 when the message cannot be read. */
static int grpc_serving_status(const struct h2_probe *h)
{
    if (h->body_len < 5 || h->body[0] != 0)
        return -1; /* no message, or compressed */
    size_t len =
        (size_t)h->body[1] << 24 | (size_t)h->body[2] << 16 | (size_t)h->body[3] << 8 | h->body[4];
    if (len > h->body_len - 5)
        return -1;
    const uint8_t *m = h->body + 5, *end = m + len;
    int status = 0; /* proto3 default: UNKNOWN */
    while (m < end) {
        uint64_t key = 0, v = 0;
        for (int sh = 0; m < end && sh < 64; sh += 7) { /* varint key */
            key |= (uint64_t)(*m & 0x7f) << sh;
            if (!(*m++ & 0x80))
                break;
        }
        unsigned wt = key & 7;
        if (wt == 0 || wt == 2) {
            for (int sh = 0; m < end && sh < 64; sh += 7) {
                v |= (uint64_t)(*m & 0x7f) << sh;
                if (!(*m++ & 0x80))
                    break;
            }
            if (wt == 0 && key >> 3 == 1)
                status = (int)v;
            if (wt == 2)
                m += v < (uint64_t)(end - m) ? v : (uint64_t)(end - m);
        } else if (wt == 1 || wt == 5) {
            size_t skip = wt == 1 ? 8 : 4;
            m += skip < (size_t)(end - m) ? skip : (size_t)(end - m);
        } else {
            return -1;
        }
    }
    return status;
}

static const char *serving_str(int s)
{
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    return s >= 0 && s < 4 ? names[s] : "unrecognised";
}

static enum hc_verdict judge(struct hc_probe *p)
{
    struct h2_probe *h = p->state;
    if (h->status == 0)
        return hc_fail(p, "stream closed before a response (%s)",
                       nghttp2_http2_strerror(h->error_code));
    if (h->status != 200)
        return hc_fail(p, "HTTP %d", h->status);
    if (h->error_code)
        return hc_fail(p, "stream reset (%s)", nghttp2_http2_strerror(h->error_code));
    if (p->t->type != CFG_HC_GRPC)
        return hc_body_matches(p->t, h->body + 0, h->body_len)
                   ? HC_PASS
                   : hc_fail(p, "HTTP 200 but the body does not contain the expected response");
    if (h->grpc_status < 0)
        return hc_fail(p, "no grpc-status");
    if (h->grpc_status != GRPC_OK)
        return hc_fail(p, "grpc-status %d%s%s", h->grpc_status, h->grpc_message[0] ? ": " : "",
                       h->grpc_message);
    int s = grpc_serving_status(h);
    if (s < 0)
        return hc_fail(p, "no readable HealthCheckResponse");
    return s == SERVING ? HC_PASS : hc_fail(p, "serving status %s (%d)", serving_str(s), s);
}

static enum hc_verdict h2_read(struct hc_probe *p, struct evbuffer *in)
{
    struct h2_probe *h = p->state;
    if (!h)
        return HC_PENDING; /* bytes before the session exists (a server that speaks first:
                              its SETTINGS): h2_connected reads them */
    int rc = h2_session_recv(h->ng, in, NULL, 0, NULL);
    if (rc != 0)
        return hc_fail(p, "HTTP/2: %s", nghttp2_strerror(rc));
    if (h->closed)
        return judge(p);
    rc = flush(p);
    return rc ? hc_fail(p, "HTTP/2: %s", nghttp2_strerror(rc)) : HC_PENDING;
}

static enum hc_verdict h2_eof(struct hc_probe *p)
{
    struct h2_probe *h = p->state;
    if (h && h->closed)
        return judge(p);
    return hc_fail(p, "connection closed before the response ended");
}

static void h2_destroy(struct hc_probe *p)
{
    struct h2_probe *h = p->state;
    if (!h)
        return;
    if (h->ng)
        nghttp2_session_del(h->ng);
    free(h);
    p->state = NULL;
}

const struct hc_kind hc_kind_http2 = {
    .name = "HTTP2",
    .tls = true,
    .alpn = "\x02h2",
    .on_connected = h2_connected,
    .on_read = h2_read,
    .on_eof = h2_eof,
    .destroy = h2_destroy,
};
const struct hc_kind hc_kind_h2c = {
    .name = "H2C",
    .tls = false,
    .alpn = NULL,
    .on_connected = h2_connected,
    .on_read = h2_read,
    .on_eof = h2_eof,
    .destroy = h2_destroy,
};
const struct hc_kind hc_kind_grpc = {
    .name = "GRPC",
    .tls = false,
    .alpn = NULL,
    .on_connected = h2_connected,
    .on_read = h2_read,
    .on_eof = h2_eof,
    .destroy = h2_destroy,
};
const struct hc_kind hc_kind_grpc_tls = {
    .name = "GRPC",
    .tls = true,
    .alpn = "\x02h2",
    .on_connected = h2_connected,
    .on_read = h2_read,
    .on_eof = h2_eof,
    .destroy = h2_destroy,
};
