/*
 * hc-int.h — private to src/healthcheck: probe targets, one probe in
 * flight, and the probe kinds (TCP, HTTP/1.1 plain or TLS, HTTP/2 over TLS
 * or h2c, gRPC health) as static const ops tables.
 *
 * Everything here runs on the main thread's event base.
 */
#ifndef SY_HC_INT_H
#define SY_HC_INT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config-t.h"

struct event_base;
struct event;
struct bufferevent;
struct evbuffer;
struct endpoint_state;
struct runtime;
struct hc_probe;

/* Why a probe failed: a short human text for the logs. */
#define HC_REASON_MAX 160

/*
 * One probe schedule: a health check definition applied to one address.
 * Two services sharing an endpoint and a health check share the target (one
 * probe, not one per service). Kept across reloads while the definition and
 * the address stay the same.
 */
struct hc_target {
    struct health_checker *hc;
    /* identity (copies) */
    char *check_name;
    enum cfg_health_check_type type;
    bool tls; /* GRPC only: over TLS (ALPN h2) instead of h2c */
    uint32_t port;
    char *request_path, *host_cfg, *response, *grpc_service_name;
    char *addr_text; /* the endpoint's address as configured */
    /* derived */
    struct sockaddr_storage ss; /* probed address (port override applied) */
    socklen_t len;
    char *authority; /* Host / :authority sent */
    char *sni;       /* TLS server name, NULL for an IP literal */
    /* schedule, refreshed from each config */
    uint64_t interval_ms, timeout_ms;
    uint32_t healthy_threshold, unhealthy_threshold;
    /* verdict with hysteresis */
    bool known; /* at least one probe finished */
    bool healthy;
    unsigned successes, failures; /* consecutive */
    char reason[HC_REASON_MAX];   /* last failure */
    struct event *timer;          /* next probe */
    uint64_t last_start_ms;       /* when the last probe started (sy_now_ms) */
    struct hc_probe *probe;       /* in flight, NULL when none */
    bool mark;                    /* health_checker_update: still used */
    struct hc_target *next;
};

/* The health checks of one endpoint of the current runtime. */
struct hc_endpoint {
    struct endpoint_state *state;
    struct hc_target **targets; /* one per health check of its service */
    size_t n;
};

struct health_checker {
    struct event_base *base;
    struct runtime *rt; /* the snapshot probed (one reference) */
    struct hc_target *targets;
    struct hc_endpoint *eps;
    size_t n_eps;
    SSL_CTX *tls; /* client context, made on first TLS probe */
    uint64_t rng; /* xorshift state for jitter */
};

enum hc_verdict {
    HC_PENDING = 0,
    HC_PASS,
    HC_FAIL,
};

/* A probe kind. Each callback returns a verdict; HC_PENDING keeps waiting. */
struct hc_kind {
    const char *name;
    bool tls;
    const char *alpn; /* wire-format ALPN list for TLS kinds, NULL = none */
    /* TCP (and TLS) connection established: send the request. */
    enum hc_verdict (*on_connected)(struct hc_probe *p);
    /* Response bytes arrived in `in` (consume what you use). */
    enum hc_verdict (*on_read)(struct hc_probe *p, struct evbuffer *in);
    /* The server closed the connection. */
    enum hc_verdict (*on_eof)(struct hc_probe *p);
    /* Free the kind's state (p->state). */
    void (*destroy)(struct hc_probe *p);
};

extern const struct hc_kind hc_kind_tcp;
extern const struct hc_kind hc_kind_http;
extern const struct hc_kind hc_kind_https;
extern const struct hc_kind hc_kind_http2;
extern const struct hc_kind hc_kind_h2c;
extern const struct hc_kind hc_kind_grpc;
extern const struct hc_kind hc_kind_grpc_tls;

struct hc_probe {
    struct hc_target *t;
    const struct hc_kind *kind;
    struct bufferevent *bev;
    struct event *timeout_ev;
    uint64_t started_ms;
    bool connected;
    void *state; /* the kind's */
    char reason[HC_REASON_MAX];
};

/* Set p->reason (printf) and return HC_FAIL. */
enum hc_verdict hc_fail(struct hc_probe *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* HTTP-style body check: `response` empty, or found in the first HC_BODY_MAX body bytes. */
#define HC_BODY_MAX 1024
bool hc_body_matches(const struct hc_target *t, const uint8_t *body, size_t len);

/*
 * Start a probe of t (connect, then the kind's exchange), bounded by
 * t->timeout_ms. On success t->probe is set and hc_probe_finished() will be
 * called exactly once (unless the probe is cancelled); returns SY_ENOMEM or
 * SY_EIO otherwise (no callback).
 */
int hc_probe_start(struct hc_target *t);

/* Stop a probe without a verdict (target retired, checker freed). */
void hc_probe_cancel(struct hc_probe *p);

/* healthcheck.c: the probe of t ended with `pass` (reason when failed). */
void hc_probe_finished(struct hc_target *t, bool pass, const char *reason);

#endif
