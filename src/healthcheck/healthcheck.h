/*
 * healthcheck.h — active health checks (TCP, HTTP, HTTPS, HTTP2, H2C, GRPC).
 *
 * One checker for the process, on the main thread's event base: probes are
 * made once per endpoint (not once per worker), off the request path, and
 * publish their verdict in the shared endpoint_state (backend.h) with
 * rise/fall hysteresis (healthy_threshold / unhealthy_threshold).
 */
#ifndef SY_HEALTHCHECK_H
#define SY_HEALTHCHECK_H

struct event_base;
struct runtime;
struct health_checker;

/* A checker probing nothing yet; NULL on allocation failure. */
struct health_checker *health_checker_new(struct event_base *base);

/*
 * Probe the endpoints of `rt` (a new snapshot after startup or a reload):
 * endpoints that stay keep their probe state and schedule, new ones start,
 * retired ones stop. Takes its own reference on rt (and drops the previous
 * one). Also publishes rt's endpoint set to the registry
 * (backend_services_publish): endpoints that left the config start their
 * connection-draining clock. A NULL hc or rt is a no-op. Main thread only.
 *
 * Verdicts and their logging: see healthcheck.c and docs/backends.md.
 */
void health_checker_update(struct health_checker *hc, struct runtime *rt);

/* Stop every probe (no verdict is published) and free; NULL is a no-op. */
void health_checker_free(struct health_checker *hc);

#endif
