/*
 * shadow.h — request_mirror_policy.compare: does the mirror answer like the
 * primary? For mirror.c, which feeds both responses in as they arrive, in
 * any order, and finishes the compare once both are over.
 *
 * What is compared (docs/backends.md):
 *   - the status code;
 *   - the header fields and trailers together (so grpc-status counts wherever
 *     it came), names case-insensitively, a repeated name as its values in
 *     order; never compared: hop-by-hop and framing fields (connection,
 *     keep-alive, proxy-connection, transfer-encoding, te, trailer, upgrade,
 *     content-length), date, server, x-request-id, and compare.ignore_headers.
 *     At most SHADOW_MAX_FIELDS fields of each side are compared;
 *   - the first compare.max_body_bytes bytes of the body, hashed as they
 *     pass (64-bit FNV-1a) in chunks of SHADOW_MIN_CHUNK bytes, or
 *     max_body_bytes / SHADOW_MAX_CHUNKS rounded up to a multiple of
 *     SHADOW_MIN_CHUNK when larger: a difference is reported as the start
 *     offset of the first chunk that differs. Bodies are never buffered.
 *
 * Memory: one struct shadow_compare (about 7 KiB) plus the compared field
 * names, in the mirror's arena.
 */
#ifndef SY_SHADOW_H
#define SY_SHADOW_H

#include "exchange/exchange.h"

struct stats;
struct runtime_route;

#define SHADOW_MAX_FIELDS 100 /* header fields + trailers compared per side */
#define SHADOW_MAX_CHUNKS 128 /* body chunk hashes kept per side */
#define SHADOW_MIN_CHUNK  512 /* bytes */

enum shadow_side { SHADOW_PRIMARY = 0, SHADOW_MIRROR = 1 };

/*
 * Call fn(arg, bytes, n) on each extent of the first `max` bytes of `b`, in
 * order, without removing them (mirror.c copies the client's body with it).
 */
void shadow_each_extent(struct evbuffer *b, size_t max,
                        void (*fn)(void *arg, const char *p, size_t n), void *arg);

struct shadow_compare;

/* A compare for `p` (compare.enabled), allocated in `a`. NULL on ENOMEM. */
struct shadow_compare *shadow_compare_new(struct arena *a, const struct cfg_mirror_policy *p);

/* A side's response head (field names copied into the arena). */
void shadow_compare_head(struct shadow_compare *c, enum shadow_side s,
                         const struct http_response_head *h);
/* Body bytes of a side; `buf` is unchanged. */
void shadow_compare_body(struct shadow_compare *c, enum shadow_side s, struct evbuffer *buf);
/* A side's response is complete, with its trailers (may be NULL). */
void shadow_compare_end(struct shadow_compare *c, enum shadow_side s,
                        const struct http_headers *trailers);

/* What the compare was about: for the counters and the mismatch line. */
struct shadow_subject {
    int worker_id;                       /* the counting shard */
    struct stats *stats;                 /* for the GET /shadow ring */
    const struct runtime_route *route;   /* counters and name */
    const struct http_request_head *req; /* method and path as sent to the mirror */
    const char *request_id;
    const char *mirror_service;
};

/*
 * Both sides are over (a side that never completed counts "incomplete"):
 * count the result for the route; a mismatch is also written to stderr as
 * one JSON line (at log level info and below) and kept for GET /shadow
 * (stats_shadow_note). Call once.
 */
void shadow_compare_finish(struct shadow_compare *c, const struct shadow_subject *s);

#endif
