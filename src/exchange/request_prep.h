/*
 * request_prep.h — what the router does to a request head before it goes
 * upstream, and to a response head before it goes downstream: X-Forwarded-*,
 * X-Request-Id, header actions, URL rewrite. Pure functions over the
 * exchange's head and arena.
 */
#ifndef SY_REQUEST_PREP_H
#define SY_REQUEST_PREP_H

#include "exchange/exchange.h"
#include "urlmap/urlmap.h"

/*
 * Split ex->req.path into path and query, normalize the path
 * (url_path_normalize) and rebuild ex->req.path from the normalized path and
 * the untouched query. Fills `mreq` for the matcher. 0, SY_EINVAL (a bad
 * path: 400) or SY_ENOMEM (no room left in the exchange's arena: see
 * ex->arena.limit_hit).
 */
int request_prepare_match(struct exchange *ex, struct url_map_request *mreq);

/*
 * Apply the route to the request head: forwarding headers (X-Forwarded-For,
 * X-Forwarded-Proto, X-Request-Id: see request_id_valid), header actions,
 * path prefix and host rewrite. 0 or SY_ENOMEM.
 */
int request_apply_route(struct exchange *ex, const struct url_map_request *mreq,
                        const struct url_map_result *res);

/*
 * X-Forwarded-For and X-Forwarded-Proto on request headers `h`, as the
 * router sets them (GCP): the incoming X-Forwarded-For values are kept, in
 * front, only when `client_addr` is in the listener's xff_trusted_cidrs;
 * then the client's IP and the listener's own IP (`local_addr`) are
 * appended; X-Forwarded-Proto is "https" when `tls`, else "http", replacing
 * any value. Allocates from `a`. 0 or SY_ENOMEM. request_apply_route calls
 * it first, then sets X-Request-Id, then applies the route.
 */
int request_set_forwarded(struct http_headers *h, struct arena *a, const struct cfg_listener *l,
                          const struct sockaddr_storage *client_addr,
                          const struct sockaddr_storage *local_addr, bool tls);

/*
 * Is a client's X-Request-Id value kept (forwarded and logged as it is)?
 * 1..EXCHANGE_REQUEST_ID_MAX bytes of [A-Za-z0-9._:+/=-] (UUIDs, hex and
 * base64 ids, Heroku's and most tracers' formats). Any other value is
 * replaced by a generated UUID, so what the backend receives is what the
 * access log shows, and no id can carry quotes, spaces or control bytes.
 */
bool request_id_valid(const char *v, size_t len);

/*
 * Before routing: the exchange's request id (request_id_valid, else a UUID),
 * trace context (a valid client traceparent's trace id and flags, else a new
 * trace when tracing.generate; a new span id for this hop), and the
 * User-Agent and X-Forwarded-For as received, for the access log and local
 * replies. Changes no header (request_apply_route writes them upstream).
 * 0 or SY_ENOMEM.
 */
int request_identify(struct exchange *ex);

/*
 * A W3C traceparent value: version (not ff; 00 exactly 55 bytes, a later one
 * may carry more after a '-'), 32-hex trace id and 16-hex parent id in lower
 * case and not all zero, 2-hex flags. Fills trace_id (NUL-terminated) and
 * flags when valid.
 */
bool traceparent_parse(const char *v, size_t len, char trace_id[EXCHANGE_TRACE_ID_LEN + 1],
                       unsigned char *flags);

/* Apply the response side of the route's header actions. 0 or SY_ENOMEM. */
int response_apply_route(struct exchange *ex, struct http_response_head *h,
                         const struct url_map_result *res);

#endif
