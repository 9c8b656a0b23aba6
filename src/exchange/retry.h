/*
 * retry.h — retry decisions as pure functions (unit-tested in
 * tests/unit/test_retry.c). The router asks retry_should() after each failed
 * attempt, before any response byte went to the client.
 *
 * Conditions (SPEC.md, GCP retryPolicy, Envoy's retry_on):
 *   5xx               any 5xx response, or no response at all: connect
 *                     failure, reset, per-try timeout, refused stream
 *   gateway-error     a 502, 503 or 504 response, or a failure the proxy
 *                     itself answers with one of those (connect failure →
 *                     503, reset → 502, per-try timeout → 504)
 *   connect-failure   the connection to the endpoint could not be made
 *   retriable-4xx     a 409 response
 *   refused-stream    the backend refused the stream (REFUSED_STREAM)
 *   cancelled, deadline-exceeded, internal, resource-exhausted, unavailable
 *                     the gRPC status 1, 4, 13, 8, 14 in response headers
 *                     (a trailers-only answer)
 * Without a policy: gateway-error with one retry, for requests without a
 * body only.
 *
 * Apart from the policy, a request whose attempt failed on a reused
 * keep-alive connection before any response byte (the backend had closed
 * the idle connection: a "stale" connection) is sent once more on a new
 * connection when its method is idempotent and its body can be replayed
 * (retry_stale_resend); that resend is not one of num_retries.
 */
#ifndef SY_RETRY_H
#define SY_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "http/http-t.h"

/* What happened to one attempt. */
enum attempt_result {
    RESULT_RESPONSE = 0, /* a response head arrived: see status/grpc_status */
    RESULT_CONNECT_FAILURE,
    RESULT_RESET,          /* reset or closed before the response head */
    RESULT_PROTOCOL_ERROR, /* malformed response */
    RESULT_REFUSED_STREAM, /* REFUSED_STREAM / above GOAWAY's last stream id */
    RESULT_PER_TRY_TIMEOUT,
};

struct attempt_report {
    enum attempt_result result;
    int status;      /* RESULT_RESPONSE: HTTP status */
    int grpc_status; /* RESULT_RESPONSE: grpc-status in the head, -1 when none */
};

/* The effective policy of a route: its retry_policy, or the default. */
struct retry_policy {
    uint32_t conditions; /* enum cfg_retry_cond bits */
    uint32_t num_retries;
    uint64_t per_try_timeout_ms; /* 0 = the route timeout */
    bool allow_body;             /* requests with a body may be retried (policy given) */
};

void retry_policy_from_route(const struct cfg_route_action *a, struct retry_policy *out);

/*
 * The whole-exchange deadline in ms (0 = none): the route's `timeout` when
 * set, else the backend service's; a valid `grpc-timeout` request header
 * (in `h`, may be NULL) shorter than that wins (at least 1 ms).
 */
uint64_t route_timeout_ms(const struct cfg_route_action *a, const struct cfg_backend_service *s,
                          const struct http_headers *h);

/* The condition bits an attempt's outcome satisfies (0 = a success). */
uint32_t retry_conditions_met(const struct attempt_report *r);

/* The name of the first condition in `bits` ("gateway-error", ...), for the log. */
const char *retry_condition_name(uint32_t bits);

/*
 * Backoff before retry number `n` (1 = the first retry): full jitter,
 * uniform in [0, min(max_ms, base_ms * 2^(n-1))], using `rand`.
 */
uint64_t retry_backoff_ms(unsigned n, uint64_t base_ms, uint64_t max_ms, uint64_t rand);

/* The HTTP status the proxy answers for a failed attempt it cannot retry. */
int retry_local_status(enum attempt_result r);

/*
 * Is `method` (len bytes, case-sensitive as in RFC 9110) idempotent (RFC 9110
 * 9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE?
 */
bool retry_method_idempotent(const char *method, size_t len);

/*
 * May an attempt that failed on a stale keep-alive connection (`stale`: the
 * upstream codec's report, upstream.h) be sent again at once on a new
 * connection? Only an idempotent method whose body (if any) is `replayable`,
 * and only once per exchange (`resends_done`: stale resends made so far).
 */
bool retry_stale_resend(bool stale, const char *method, size_t len, bool replayable,
                        unsigned resends_done);

#endif
