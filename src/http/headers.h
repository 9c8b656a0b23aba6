/*
 * headers.h — header lists in an arena, and field-syntax checks (RFC 9110).
 * Lists hold pointers; the bytes they point to must live at least as long as
 * the list (the exchange arena). Adding may grow the list inside the arena.
 */
#ifndef SY_HEADERS_H
#define SY_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "http/http-t.h"

/* Make an empty list with room for `cap` fields. 0 or SY_ENOMEM. */
int http_headers_init(struct http_headers *h, struct arena *a, uint32_t cap);

/* Append a field (pointers kept, not copied). 0 or SY_ENOMEM. */
int http_headers_add(struct http_headers *h, struct arena *a, const char *name, size_t name_len,
                     const char *value, size_t value_len);

/* Same, copying name and value into the arena first. */
int http_headers_add_copy(struct http_headers *h, struct arena *a, const char *name,
                          size_t name_len, const char *value, size_t value_len);

/* First field named `name` (lower-case), or NULL. */
const struct http_header *http_headers_get(const struct http_headers *h, const char *name,
                                           size_t name_len);

/* How many fields are named `name`. */
unsigned http_headers_count(const struct http_headers *h, const char *name, size_t name_len);

/* Remove every field named `name`; returns how many were removed. */
unsigned http_headers_remove(struct http_headers *h, const char *name, size_t name_len);

/* Does the comma-separated list `v` contain `token` (case-insensitive)? */
bool http_list_has_token(const char *v, size_t len, const char *token);

/*
 * Remove the hop-by-hop fields (RFC 9110 7.6.1): Connection and every field
 * it names, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade,
 * HTTP2-Settings. `keep_te_trailers`: keep "te: trailers" (gRPC over h2).
 */
void http_headers_strip_hop_by_hop(struct http_headers *h, bool keep_te_trailers);

/* RFC 9110 token characters (field names, methods). */
bool http_is_token(const char *s, size_t len);
/* A field value with no CR, LF, NUL or other CTL except HTAB. */
bool http_is_field_value(const char *s, size_t len);

/*
 * Request-target and authority syntax (RFC 9112 3.2, RFC 3986), shared by the
 * HTTP/1.1 codec (request line, Host) and the HTTP/2 one (:path, :authority).
 * Only bytes RFC 3986 allows pass: no CTL (HTAB, FF, VT, NUL included), SP,
 * DEL, '#', '"', '<', '>', '\\', '^', '`', '{', '|', '}' or byte >= 0x80, and
 * every '%' starts a complete percent-encoding.
 */

/* origin-form: "/" path-chars [ "?" query ] (pchar, "/", "?"). */
bool http_path_is_valid(const char *s, size_t len);

/*
 * uri-host [ ":" port ] as Host and :authority carry it: a non-empty reg-name
 * (unreserved, sub-delims except ',' — a comma would make it a list — and
 * percent-encodings; IPv4 literals are reg-names), or an IPv6 literal in
 * brackets; port 1*5DIGIT up to 65535. No userinfo ("u@h"), path, space or
 * empty value.
 */
bool http_authority_is_valid(const char *s, size_t len);

/* The parts of an absolute-form target "http://authority/path?query". */
struct http_absolute_target {
    const char *authority; /* inside the target, valid per http_authority_is_valid */
    const char *rest;      /* path-abempty [ "?" query ]: empty, or starts with '/' or '?' */
    size_t authority_len, rest_len;
};

/*
 * Split an absolute-form target (RFC 9112 3.2.2) whose scheme is http or
 * https (any case); the authority must be valid (no userinfo) and the rest
 * made of path characters. 0, or SY_EPROTO (`t` then undefined).
 */
int http_absolute_target_parse(const char *s, size_t len, struct http_absolute_target *t);

/*
 * A request-target switchyard accepts: origin-form, asterisk-form ("*"; the
 * caller checks the method is OPTIONS) or absolute-form with an http(s)
 * scheme. Authority-form (CONNECT) is not a valid target here.
 */
bool http_target_is_valid(const char *s, size_t len);

/* Lower-case in place. */
void http_lower(char *s, size_t len);

/* The reason phrase for a status code ("OK", "Not Found", ...; "Unknown"). */
const char *http_reason(int status);

#endif
