/*
 * http-t.h — protocol-neutral HTTP message types shared by the codecs
 * (HTTP/1.1 on libhttp-parser, HTTP/2 on nghttp2), the url map and the router.
 * Types only.
 */
#ifndef SY_HTTP_T_H
#define SY_HTTP_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One header field. `name` is lower-case (HTTP/1.1 names are folded on
 * input). Neither string is NUL-terminated necessarily; use the lengths.
 * The bytes live in the owning exchange's arena.
 */
struct http_header {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
};

/* An ordered header list; `v` has room for `cap` entries (arena memory). */
struct http_headers {
    struct http_header *v;
    uint32_t n;
    uint32_t cap;
};

enum http_version {
    HTTP_10 = 10,
    HTTP_11 = 11,
    HTTP_2 = 20,
};

/*
 * A request head in neutral form. For HTTP/1.1 the request line and Host map
 * onto method/authority/path (origin-form), for HTTP/2 the pseudo-headers do.
 * `headers` holds regular fields only (no pseudo-headers, no Host).
 */
struct http_request_head {
    const char *method;
    const char *scheme;    /* "http" or "https" */
    const char *authority; /* Host / :authority, NULL if none */
    const char *path;      /* request target as it goes upstream, query included */
    uint32_t method_len, scheme_len, authority_len, path_len;
    enum http_version version;
    int64_t content_length; /* -1 = unknown (chunked or h2 without it) */
    bool has_body;          /* false: the request ends with its head */
    /* A protocol upgrade the client asked for ("websocket"), NULL when none.
     * The Upgrade/Connection fields themselves are hop-by-hop and are not in
     * `headers`; upstream codecs regenerate them from this. */
    const char *upgrade;
    struct http_headers headers;
};

struct http_response_head {
    int status;
    struct http_headers headers; /* regular fields only */
    int64_t content_length;      /* -1 = unknown */
};

/*
 * Back-pressure thresholds for the body bytes queued toward one side
 * (bytes): a producer pauses when its consumer holds SY_FLOW_HIGH and
 * resumes when it drained below SY_FLOW_LOW. Both codec sides use them.
 */
#define SY_FLOW_HIGH (64 * 1024)
#define SY_FLOW_LOW  (16 * 1024)

#endif
