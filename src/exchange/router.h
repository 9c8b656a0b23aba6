/*
 * router.h — runs an exchange: route match, local replies, attempts,
 * timeouts, body flow between the two sides, and the single exit
 * exchange_finish(). Codecs call the exchange_on_* entry points.
 */
#ifndef SY_ROUTER_H
#define SY_ROUTER_H

#include <stdbool.h>

#include "exchange/exchange.h"

struct cfg_listener;

/*
 * Create an exchange on worker `w` for a request arriving on `listener`
 * (its arena holds `arena_limit` bytes at most). The runtime reference is
 * taken from the worker. NULL on allocation failure.
 */
struct exchange *exchange_new(struct worker *w, const struct cfg_listener *listener);

/*
 * The request head is complete (ex->req filled by the codec). The router
 * takes it from here; it may answer locally at once (send_head/send_end
 * called before this returns).
 */
void router_start(struct exchange *ex);

/*
 * The codec answered the request itself (malformed, 4xx): log it with
 * `status` and free the exchange. Never attached to an attempt.
 */
void exchange_reject(struct exchange *ex, int status);

/* From the downstream codec. */
void exchange_on_request_body(struct exchange *ex, struct evbuffer *buf);
void exchange_on_request_end(struct exchange *ex, const struct http_headers *trailers);
void exchange_on_downstream_drained(struct exchange *ex);
/* The client went away or reset the stream: cancel and finish. */
void exchange_on_downstream_abort(struct exchange *ex);

/* From the upstream codec (attempt `att` is the current one). */
void exchange_on_response_head(struct exchange *ex, struct http_response_head *h, bool end);
void exchange_on_response_body(struct exchange *ex, struct evbuffer *buf);
void exchange_on_response_end(struct exchange *ex, const struct http_headers *trailers);
void exchange_on_upstream_drained(struct exchange *ex);
/*
 * The attempt failed; the codec has already released it (no further
 * callbacks). `stale`: a reused keep-alive connection failed before any
 * response byte — the request can be sent again on a fresh connection.
 */
void exchange_on_upstream_error(struct exchange *ex, enum upstream_error err, bool stale);

/*
 * Answer locally with `status` and a short text body (or, for a gRPC
 * request, a trailers-only gRPC status). Only before response headers went out.
 */
void exchange_local_reply(struct exchange *ex, int status, const char *body, unsigned flags);

#endif
