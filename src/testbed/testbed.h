/*
 * testbed.h — private types of switchyard-testbed, the controllable test
 * backend (see SPEC.md "Test backend" and docs/testbed.md).
 *
 * Shape: one process, one thread, one libevent loop. A `struct testbed` is
 * the whole context and is passed explicitly (no globals). Each accepted
 * socket is a `struct tb_conn` (a callback-driven state machine in
 * tb_conn.c) that speaks HTTP/1.1 (tb_h1.c) or HTTP/2 (tb_h2.c). Each request
 * is a `struct tb_exchange` (tb_exchange.c): its head is stored in a capped
 * buffer, its body is only counted, and once it is complete tb_respond.c
 * turns it into a `struct tb_plan` (status, delays, body, reset point) that
 * the exchange driver plays through protocol ops.
 *
 * Memory is bounded: request heads are capped (TB_HEAD_CAP), output buffers
 * are filled only up to TB_OUT_CAP (generated bodies are produced as the
 * socket drains), input is read only up to TB_IN_CAP.
 */
#ifndef SY_TESTBED_H
#define SY_TESTBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "core/list.h"

/* ---- caps -------------------------------------------------------------- */
#define TB_HEAD_CAP       (64 * 1024)  /* request line/pseudo-headers + headers, bytes */
#define TB_FIELDS_CAP     256          /* header fields per request */
#define TB_IN_CAP         (256 * 1024) /* bytes read ahead per connection */
#define TB_OUT_CAP        (256 * 1024) /* bytes queued for the socket per connection */
#define TB_OUT_LOW        (64 * 1024)  /* refill the output below this */
#define TB_CHUNK_MAX      (16 * 1024)  /* body chunk size when a body delay is set */
#define TB_FAIL_KEYS      4096         /* x-testbed-key entries remembered (LRU) */
#define TB_FAIL_KEY_MAX   256          /* longest x-testbed-key, bytes */
#define TB_H2_MAX_STREAMS 512          /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define TB_BODY_SIZE_MAX  (1ULL << 40) /* x-testbed-body-size upper bound: 1 TiB */

struct tb_conn;
struct tb_exchange;
struct tb_fail_table;

/* The process context. */
struct testbed {
    struct event_base *base;
    const char *name; /* --name, echoed as "instance" */
    SSL_CTX *ssl_ctx; /* NULL: plain listener (HTTP/1.1 + h2c) */
    struct evconnlistener *listener;
    struct event *accept_retry; /* re-enables the listener after an accept error */
    struct sy_link conns;       /* live connections (tb_conn.link), freed at exit */
    struct tb_fail_table *fail; /* x-testbed-fail-first counters */
    bool healthy;               /* GET /healthz: 200 when true, else 503 */
    uint64_t health_delay_ms;   /* delay before answering /healthz */
    bool trace;                 /* --verbose: log connection states to stderr */
};

/* ---- requests (tb_exchange.c) ------------------------------------------ */

enum tb_protocol {
    TB_HTTP1 = 1,
    TB_HTTP2 = 2,
};

/* A span of the request's byte buffer. */
struct tb_span {
    uint32_t off, len;
};

struct tb_field {
    struct tb_span name; /* lower-case */
    struct tb_span value;
};

/* What a piece of request head is (tb_request_append). */
enum tb_piece {
    TB_PIECE_METHOD,
    TB_PIECE_PATH,
    TB_PIECE_AUTHORITY, /* HTTP/2 :authority */
    TB_PIECE_NAME,      /* a header name; with `start`, a new field */
    TB_PIECE_VALUE,
};

/*
 * A request as the testbed saw it. Head bytes live in `buf` (capped at
 * TB_HEAD_CAP, TB_FIELDS_CAP fields); past a cap `too_large` is set and the
 * rest is dropped (the answer is then 431). The body is never stored.
 */
struct tb_request {
    char *buf;
    uint32_t len, cap;
    struct tb_span method, path, authority;
    struct tb_field fields[TB_FIELDS_CAP];
    uint32_t nfields;
    bool too_large;
    enum tb_protocol protocol;
    uint64_t body_bytes; /* request body bytes received (counted, discarded) */
};

/* ---- plans (tb_respond.c) ----------------------------------------------- */

enum tb_reset {
    TB_RESET_NONE,
    TB_RESET_BEFORE_HEADERS,
    TB_RESET_AFTER_HEADERS,
    TB_RESET_MID_BODY,
};

enum tb_grpc {
    TB_GRPC_NONE,
    TB_GRPC_TRAILERS_ONLY, /* HEADERS with grpc-status and END_STREAM */
    TB_GRPC_TRAILERS,      /* HEADERS, DATA (the body), trailers with grpc-status */
};

/* A response header beyond the fixed ones; both strings owned by the plan. */
struct tb_extra_header {
    char *name, *value;
};
#define TB_EXTRA_MAX 4

/* How to answer one exchange. Owns `body`, the extra headers and grpc_message. */
struct tb_plan {
    int status;               /* HTTP status, 200..599 */
    const char *content_type; /* static string, NULL = none */
    uint64_t delay_ms;        /* before the response headers */
    uint64_t body_delay_ms;   /* between body chunks, 0 = none */
    bool close;               /* close the connection without answering */
    enum tb_reset reset;
    enum tb_grpc grpc;
    int grpc_status;
    char *grpc_message; /* NULL = none */
    bool head;          /* HEAD: headers (with content-length) only */
    bool no_body;       /* 204/304: no body, no content-length */
    char *body;         /* fixed body bytes, or NULL for the pattern */
    uint64_t body_len;  /* body length either way */
    struct tb_extra_header extra[TB_EXTRA_MAX];
    unsigned nextra;
};

/*
 * Builds the plan for a complete request. Never fails: bad steering headers
 * become a 400 plan, allocation failures a 500 plan with no body.
 */
void tb_plan_build(struct testbed *tb, const struct tb_request *req, struct tb_plan *plan);
void tb_plan_free(struct tb_plan *plan);
/* Adds a response header to the plan (copied); ignored when full. */
void tb_plan_add_header(struct tb_plan *plan, const char *name, const char *value);

/* Echo JSON body for req (tb_echo.c); malloc'd, NULL on ENOMEM. */
char *tb_echo_json(const struct testbed *tb, const struct tb_request *req, size_t *len);
/* JSON string escaping of n bytes into out (cap bytes); bytes used, or -1 if it does not fit. */
long tb_json_escape(char *out, size_t cap, const char *s, size_t n);

/* Pattern body bytes [off, off + n) into dst: byte i is TB_PATTERN[i % 64]. */
void tb_pattern_fill(char *dst, uint64_t off, size_t n);

struct tb_fail_table *tb_fail_table_new(void);
void tb_fail_table_free(struct tb_fail_table *t);
/* Counts one request for key (n bytes); returns the count including this one, 0 on ENOMEM. */
uint64_t tb_fail_table_hit(struct tb_fail_table *t, const char *key, size_t n);

/* ---- exchanges (tb_exchange.c) ------------------------------------------ */

/*
 * Protocol operations an exchange drives. None of them may free the
 * exchange or the connection: they only queue output or mark the connection
 * for closing (it is reaped after the current libevent callback returns).
 */
struct tb_exchange_ops {
    void (*respond)(struct tb_exchange *ex); /* send the head; body comes via tb_exchange_pull */
    void (*resume_body)(struct tb_exchange *ex); /* tb_exchange_pull has more after a WAIT */
    void (*reset)(struct tb_exchange *ex);       /* abort now: RST_STREAM / TCP RST */
    void (*close)(struct tb_exchange *ex);       /* drop the connection without answering */
};

/* Exchange states; every change goes through exchange_set_state(). */
enum tb_exchange_state {
    TB_EX_REQUEST,    /* reading the request head and body */
    TB_EX_DELAY,      /* request complete, waiting for x-testbed-delay */
    TB_EX_RESPONDING, /* head sent or queued; body pulled by the protocol */
    TB_EX_BODY_WAIT,  /* body paused by x-testbed-body-delay */
    TB_EX_DONE,       /* the protocol is done with it; reaped with its connection's list */
};

/* Result of tb_exchange_pull. */
enum tb_pull {
    TB_PULL_MORE,  /* call again */
    TB_PULL_WAIT,  /* nothing until ops->resume_body */
    TB_PULL_EOF,   /* the body is complete */
    TB_PULL_RESET, /* reset the exchange once the bytes pulled so far are sent */
};

struct tb_exchange {
    struct tb_conn *conn;
    const struct tb_exchange_ops *ops;
    void *proto;       /* protocol's per-exchange data, unused by the driver */
    int32_t stream_id; /* HTTP/2 stream, 0 for HTTP/1.1 */
    enum tb_exchange_state state;
    struct tb_request req;
    struct tb_plan plan;
    bool planned;   /* plan is built (and must be freed) */
    uint64_t sent;  /* body bytes pulled */
    uint64_t limit; /* body bytes to pull before EOF or reset */
    uint64_t chunk_size, chunk_left;
    struct event *timer; /* delay and body-delay */
    struct sy_link link; /* in conn->exchanges or conn->retired */
};

/* New exchange on conn (linked into conn->exchanges); NULL on ENOMEM. */
struct tb_exchange *tb_exchange_new(struct tb_conn *conn, const struct tb_exchange_ops *ops,
                                    enum tb_protocol protocol, int32_t stream_id);
/*
 * Appends head bytes of one kind; `start` begins a new item (a new field for
 * NAME, a replacement for METHOD/PATH/AUTHORITY), otherwise the bytes extend
 * the current one (HTTP/1.1 callbacks deliver items in pieces). Items must be
 * appended one after the other. Sets too_large past a cap.
 */
void tb_request_append(struct tb_request *req, enum tb_piece kind, bool start, const char *p,
                       size_t n);
/* First value of header `name` (lower-case) as a span; false if absent. */
bool tb_request_header(const struct tb_request *req, const char *name, struct tb_span *out);
/* Copies a span, NUL-terminated, into dst (cap bytes); false if it does not fit. */
bool tb_request_copy(const struct tb_request *req, struct tb_span s, char *dst, size_t cap);
/* Is span s equal to the C string lit? (case-sensitive) */
bool tb_span_eq(const struct tb_request *req, struct tb_span s, const char *lit);

/* The request is complete: plan it and start answering (after the delay). */
void tb_exchange_request_done(struct tb_exchange *ex);
/*
 * Pulls up to max body bytes into dst, *n set to the count. The status says
 * what follows (see enum tb_pull); bytes may come with any status.
 */
enum tb_pull tb_exchange_pull(struct tb_exchange *ex, char *dst, size_t max, size_t *n);
/* The protocol is done with ex: cancel its timer and move it to conn->retired. */
void tb_exchange_retire(struct tb_exchange *ex);
/* Frees an exchange (already unlinked). */
void tb_exchange_free(struct tb_exchange *ex);
const char *tb_exchange_state_str(enum tb_exchange_state s);

/* ---- connections (tb_conn.c) -------------------------------------------- */

/* Connection states; every change goes through conn_set_state() in tb_conn.c. */
enum tb_conn_state {
    TB_CONN_HANDSHAKE, /* TLS handshake in progress */
    TB_CONN_SNIFF,     /* plain: looking for the HTTP/2 preface */
    TB_CONN_H1,        /* HTTP/1.1 (tb_h1.c) */
    TB_CONN_H2,        /* HTTP/2 (tb_h2.c) */
    TB_CONN_FLUSHING,  /* writing what is queued, then close (FIN) */
    TB_CONN_DEAD,      /* to be freed once the current callback returns */
};

struct tb_h1;
struct tb_h2;

struct tb_conn {
    struct testbed *tb;
    struct bufferevent *bev;
    enum tb_conn_state state;
    bool tls;
    bool peer_eof;              /* the client shut its side */
    bool reset_after_flush;     /* TCP RST once the output is written */
    struct event *linger_timer; /* polls the kernel send queue before that RST */
    unsigned linger_polls;
    struct tb_h1 *h1;
    struct tb_h2 *h2;
    struct sy_link exchanges; /* live (tb_exchange.link) */
    struct sy_link retired;   /* done, freed by tb_conn_reap */
    struct sy_link link;      /* in tb->conns */
};

/* Accepts fd (owned from now on). Returns 0 or SY_ENOMEM / SY_EIO (fd closed). */
int tb_conn_accept(struct testbed *tb, int fd);
/*
 * Closing: after flushing output (FIN), after flushing output with a TCP
 * RST, abruptly, or with a TCP RST now (SO_LINGER 0; unsent output is lost).
 */
void tb_conn_close_after_flush(struct tb_conn *c);
void tb_conn_reset_after_flush(struct tb_conn *c);
void tb_conn_abort(struct tb_conn *c);
void tb_conn_reset(struct tb_conn *c);
/* Frees retired exchanges, and the connection if dead. Call last in a callback. */
void tb_conn_reap(struct tb_conn *c);
void tb_conn_free(struct tb_conn *c);
/* Switches the connection to HTTP/1.1 or HTTP/2 handling. */
void tb_conn_set_h1(struct tb_conn *c);
void tb_conn_set_h2(struct tb_conn *c);
bool tb_conn_closing(const struct tb_conn *c);
/*
 * h2c upgrade from HTTP/1.1: the connection becomes HTTP/2 and ex becomes
 * stream 1 (see tb_h2_start). Returns 0, or SY_ENOMEM / SY_EPROTO.
 */
int tb_conn_upgrade_h2(struct tb_conn *c, const uint8_t *settings, size_t settings_len,
                       bool head_request, struct tb_exchange *ex);

/* ---- protocols ------------------------------------------------------------- */

/* HTTP/1.1: allocate state; feed input; output drained below TB_OUT_LOW; EOF. */
int tb_h1_start(struct tb_conn *c);
void tb_h1_on_read(struct tb_conn *c);
void tb_h1_on_write(struct tb_conn *c);
void tb_h1_on_eof(struct tb_conn *c);
void tb_h1_free(struct tb_h1 *h1);

/*
 * HTTP/2: allocate a server session. With an upgrade (non-NULL settings, the
 * decoded HTTP2-Settings), `ex` becomes stream 1 and is answered over HTTP/2.
 * Returns 0 or SY_ENOMEM / SY_EPROTO (nothing changed).
 */
int tb_h2_start(struct tb_conn *c, const uint8_t *settings, size_t settings_len, bool head_request,
                struct tb_exchange *ex);
void tb_h2_on_read(struct tb_conn *c);
void tb_h2_on_write(struct tb_conn *c);
void tb_h2_free(struct tb_h2 *h2);
/* Ops for an exchange handed over from HTTP/1.1 by an h2c upgrade. */
extern const struct tb_exchange_ops tb_h2_exchange_ops;

#endif
