/*
 * mirror.h — route_action.request_mirror_policy, for the router: a copy of
 * the request sent to another backend service, fire-and-forget (GCP's
 * request mirroring, Envoy's request_mirror_policies), and the compare of
 * its response with the primary's (shadow.h). docs/backends.md, "Request
 * mirroring and shadow compare", is the user's description.
 *
 * The copy is the request as the primary's first attempt sends it (path
 * after rewrites, X-Forwarded-*, X-Request-Id, header actions) with Host /
 * :authority suffixed "-shadow" before any port, as Envoy does. Its response
 * is read and discarded (hashed first for a compare). Nothing the mirror
 * does reaches the client's exchange: the client is never paused for it,
 * its failures only end it, and the exchange never waits for it.
 *
 * Bounds: at most the mirror service's circuit_breakers.max_requests
 * mirrors (plus its primary exchanges) at once, as Envoy's shadow uses its
 * cluster's breakers: a request that finds them full is not mirrored
 * (counted skipped_limit); at most max_buffered_bytes of request body per
 * mirror, past which it is abandoned; and the mirror service's timeout.
 *
 * Lifetime: a mirror has its own arena and runtime hold; it outlives its
 * exchange when it is slower, and is freed on a later loop turn once both
 * its attempt and its exchange are over (STYLE 7). Results:
 * switchyard_mirror_requests_total (stats.h, enum stats_mirror_result),
 * one per mirror started or refused.
 */
#ifndef SY_MIRROR_H
#define SY_MIRROR_H

#include "exchange/exchange.h"

struct mirror;

/*
 * The request of `ex` is to be mirrored (its route has a mirror policy and
 * mirror_percent chose it): start the copy on ex's worker, before the
 * primary's first attempt takes the body received so far (ex->req_pending).
 * Sets ex->mirror once a mirror exists (its attempt may have failed at
 * once: it is then over and counted, and stays attached until the
 * exchange ends, for the compare count); a request refused before that
 * (body known to be over max_buffered_bytes, max_requests full, no memory)
 * is only counted. Upgrades and CONNECT are never mirrored (nor counted).
 * Never calls back into the exchange.
 */
void mirror_start(struct exchange *ex);

/* Request body bytes from the client: a copy goes to the mirror; `buf` is unchanged. */
void mirror_on_request_body(struct mirror *m, struct evbuffer *buf);
/* The client's request is complete (trailers may be NULL; copied). */
void mirror_on_request_end(struct mirror *m, const struct http_headers *trailers);

/*
 * The primary's response, for a compare (no-ops without one): its head as
 * the backend sent it (before the route's response header actions), its
 * body bytes (`buf` unchanged), its end.
 */
void mirror_on_primary_head(struct mirror *m, const struct http_response_head *h);
void mirror_on_primary_body(struct mirror *m, struct evbuffer *buf);
void mirror_on_primary_end(struct mirror *m, const struct http_headers *trailers);

/* router.c, for mirror.c: an endpoint slot of `srt` was released on w: wake its waiters. */
void exchange_capacity_released(struct worker *w, struct service_rt *srt);

#endif
