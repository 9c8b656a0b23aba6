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
#include <stdint.h>
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
 * libhttp-parser 2.9 refuses a head, and a trailer section, of more than
 * HTTP_MAX_HEADER_SIZE bytes (80 KiB, compiled in); caps above it are
 * lowered to it so that a head over the cap is always a 431 of ours.
 */
#define H1_PARSER_HEAD_MAX (80 * 1024)

/* How many field lines a head that passed h1_head_check holds. */
unsigned h1_head_fields(const char *p, size_t len);

/* The request line of a head, as h1_request_line_parse splits it. */
struct h1_request_line {
    const char *method, *target; /* inside the head */
    size_t method_len, target_len;
    unsigned major, minor; /* HTTP/major.minor, one digit each */
};

/*
 * Split the request line at the start of a head (RFC 9112 3): method
 * (a token) SP request-target SP "HTTP/" DIGIT "." DIGIT CRLF, exactly one
 * SP between the parts (no autocorrection). The target is only delimited
 * here (bytes other than SP and CR); its syntax is http_target_is_valid's.
 * 0 or SY_EPROTO.
 */
int h1_request_line_parse(const char *p, size_t len, struct h1_request_line *rl);

/* What a request's one Transfer-Encoding value says (RFC 9112 6.1, 6.3). */
enum h1_te {
    H1_TE_CHUNKED,   /* exactly one coding, "chunked" (any case) */
    H1_TE_MALFORMED, /* not a list of tokens, chunked missing, not last or repeated: 400 */
    H1_TE_UNKNOWN,   /* another coding before the final chunked: 501 */
};
enum h1_te h1_transfer_encoding_parse(const char *v, size_t len);

/*
 * A strict chunked-body validator (RFC 9112 7.1) run over the raw body bytes
 * before libhttp-parser sees them, which is lenient: it takes any two bytes
 * after chunk data as CRLF and skips anything up to CR after a chunk size.
 * Grammar enforced: chunk-size 1*HEXDIG (a value below 2^60), chunk-ext
 * *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ) with no
 * CTL but HTAB inside quoted strings, CRLF, exactly chunk-size data bytes,
 * CRLF, last-chunk, trailer fields (token ":" value without CTL but HTAB,
 * no obs-fold), CRLF. Fixed-size state, no allocation.
 */
struct h1_chunked {
    uint64_t n;           /* chunk size being read, then data bytes left */
    uint32_t line;        /* bytes of the current chunk-size line */
    uint32_t trailer;     /* bytes of the trailer section so far */
    uint32_t fields;      /* trailer fields so far */
    uint32_t max_fields;  /* more trailer fields → SY_ELIMIT */
    uint32_t max_trailer; /* a longer trailer section → SY_ELIMIT */
    uint8_t state;        /* private */
};

/* Longest chunk-size line (size and extensions) accepted, bytes. */
#define H1_CHUNK_LINE_MAX 4096

void h1_chunked_init(struct h1_chunked *ck, uint32_t max_fields, uint32_t max_trailer);

/*
 * Validate the next `len` body bytes. Returns how many of them belong to
 * the chunked body: all, or fewer when the body ended inside `p` (then
 * h1_chunked_done is true and the rest is the next message). SY_EPROTO on
 * any deviation from the grammar or a chunk-size line longer than
 * H1_CHUNK_LINE_MAX; SY_ELIMIT when the trailer section has more than
 * max_fields fields or max_trailer bytes (a 431). After an error the state
 * stays failed. Once done, 0 bytes are taken.
 */
ssize_t h1_chunked_check(struct h1_chunked *ck, const char *p, size_t len);

/* The last chunk and the trailer section were complete. */
bool h1_chunked_done(const struct h1_chunked *ck);

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
