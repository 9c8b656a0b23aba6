/*
 * cors.h — route_action.cors_policy (GCP's CorsPolicy, Envoy's CORS filter),
 * for the router.
 *
 * A request with an Origin header on a route with an enabled cors_policy:
 * - whose origin the policy allows, and which is a preflight (OPTIONS with
 *   Access-Control-Request-Method): the proxy answers it itself, 200 with
 *   the Access-Control-Allow-* headers; the backend never sees it;
 * - whose origin the policy allows otherwise: forwarded; its response gets
 *   Access-Control-Allow-Origin (and -Credentials, -Expose-Headers, and
 *   Vary: Origin);
 * - whose origin the policy does not allow: forwarded untouched, without
 *   CORS headers (the browser then refuses the response), as Envoy does.
 * Rules for the wildcard and credentials: docs/configuration.md.
 */
#ifndef SY_CORS_H
#define SY_CORS_H

#include <stdbool.h>

#include "exchange/exchange.h"
#include "urlmap/urlmap.h"

/*
 * At routing, before the request is changed by the route: remember whether
 * its Origin is allowed (ex->cors_origin). True when it is an allowed
 * preflight, which the caller answers with cors_preflight_headers().
 */
bool cors_on_request(struct exchange *ex, const struct url_map_result *res);

/* The headers of the answer to an allowed preflight, added to h. 0 or SY_ENOMEM. */
int cors_preflight_headers(struct exchange *ex, const struct url_map_result *res,
                           struct http_response_head *h);

/* An allowed cross-origin request's response (or redirect): its CORS headers. 0 or SY_ENOMEM. */
int cors_on_response(struct exchange *ex, const struct url_map_result *res,
                     struct http_response_head *h);

#endif
