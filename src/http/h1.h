/*
 * h1.h — HTTP/1.1 framing helpers shared by the downstream and upstream
 * codecs (both parse with libhttp-parser). libhttp-parser 2.9 accepts
 * obs-fold, whitespace before the colon and bare LF; h1_head_check rejects
 * them before the parser sees the head (RFC 9112 5.1, 5.2, 2.2).
 */
#ifndef SY_H1_H
#define SY_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "http/http-t.h"

struct evbuffer;

/*
 * Find the end of a message head in `buf`: returns the head length including
 * the final CRLFCRLF, 0 when not complete yet, or SY_ELIMIT when no end was
 * found within `max` bytes.
 */
ssize_t h1_head_length(struct evbuffer *buf, size_t max);

/*
 * Check a complete raw head (start line, fields, CRLFCRLF): every line ends
 * in CRLF, no obs-fold, no whitespace between a field name and its colon,
 * field names are tokens, values hold no NUL/CR/LF/CTL. 0 or SY_EPROTO.
 */
int h1_head_check(const char *p, size_t len);

/*
 * Serialize a request head for an HTTP/1.1 upstream: request line, Host
 * (authority), fields, and the framing header: Content-Length when known,
 * Transfer-Encoding: chunked when the body length is unknown.
 */
void h1_write_request_head(struct evbuffer *out, const struct http_request_head *h);

/*
 * Serialize a response head for an HTTP/1.x client. `framing`: how the body
 * is delimited. `close`: add Connection: close.
 */
enum h1_framing {
    H1_FRAMING_NONE,   /* no body (HEAD, 204, 304) — Content-Length kept if given */
    H1_FRAMING_LENGTH, /* Content-Length: content_length */
    H1_FRAMING_CHUNKED,
    H1_FRAMING_CLOSE, /* HTTP/1.0 client: delimited by close */
};
void h1_write_response_head(struct evbuffer *out, enum http_version v, int status,
                            const struct http_headers *hs, enum h1_framing framing,
                            int64_t content_length, bool close);

/* Append one chunk (size line, data moved from `data`, CRLF). */
void h1_write_chunk(struct evbuffer *out, struct evbuffer *data);
/* The last chunk, with optional trailer fields. */
void h1_write_last_chunk(struct evbuffer *out, const struct http_headers *trailers);

#endif
