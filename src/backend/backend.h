/*
 * backend.h — backend services at run time: endpoint health and ejection,
 * load balancing, session affinity, circuit breakers and outlier detection.
 *
 * Endpoint state is shared by every worker (atomics) and survives reloads:
 * it lives in a process-wide registry keyed by (backend service name,
 * endpoint address), and each runtime snapshot points at the entries of its
 * config. A reload that keeps an endpoint keeps its health; an endpoint that
 * leaves the config is retired (its in-flight exchanges drain).
 *
 * Threads: backend_* functions called on the request path (pick, release,
 * hash) are lock-free and may run on any worker. The registry and the health
 * checker are driven from the main thread.
 */
#ifndef SY_BACKEND_H
#define SY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config-t.h"
#include "core/stats.h"

struct http_request_head;
struct sockaddr_storage;
struct worker;
struct backend_registry;
struct service_rt;
struct http_response_head;

/* Shared state of one endpoint of one backend service. */
/*
 * Per-attempt counters of one endpoint, one copy per worker: a worker adds
 * to its own without a locked instruction and without sharing a cache line
 * with another worker; readers sum the copies (backend_endpoint_stats).
 */
struct endpoint_counters {
    uint64_t requests_total; /* attempts sent */
    uint64_t responses_5xx;  /* attempts answered 5xx by the endpoint */
    uint64_t failures;       /* attempts ended without a response (connect failure,
                              * reset, protocol error, timeout) */
    uint64_t latency_us_sum; /* their upstream time, us */
    uint64_t latency_bucket[STATS_N_BUCKETS + 1]; /* attempts by upstream time */
} __attribute__((aligned(64)));

struct endpoint_state {
    char *service;             /* backend service name */
    char *address;             /* "host:port" as configured */
    int refcount;              /* atomic: runtimes and upstream connections using it */
    int healthy;               /* atomic: 1 serving, 0 failed its health checks */
    int health_known;          /* atomic: 1 once its health checks gave a verdict; 0 = unknown
                                * (counts as healthy) or the service has no health checks */
    uint64_t ejected_until_ms; /* atomic: outlier ejection end (sy_now_ms clock), 0 = none;
                                * kept after the ejection ended (ejection-count decay) */
    unsigned ejections;        /* atomic: ejection multiplier (decays, see docs/backends.md) */
    unsigned active; /* atomic: exchanges in flight (max_concurrent_requests_per_endpoint) */
    unsigned consecutive_errors;          /* atomic: 5xx or failures in a row */
    unsigned consecutive_gateway_failure; /* atomic: 502/503/504 or failures in a row */
    /* Attempts and their results (backend_pick, backend_endpoint_observe; read
     * with backend_endpoint_stats): [0] for callers without a worker (atomic
     * adds), [1 + id] for worker id (backend_registry_set_workers). */
    struct endpoint_counters *counters;
    unsigned n_counters;
    uint64_t health_transitions; /* atomic: healthy <-> unhealthy flips */
    uint64_t ejections_total;    /* atomic: outlier ejections */
    unsigned connections;        /* atomic: open upstream connections (max_connections) */
    uint64_t retired_at_ms;      /* atomic: when it left the newest config (draining), 0 = in it */
    uint64_t health_changed_ms;  /* atomic: last health transition (unknown/healthy/unhealthy),
                                  * sy_now_ms clock; 0 = none yet (admin status page) */
    struct backend_registry *_reg; /* owner, for references taken by connections */
};

/* How an attempt on an endpoint ended, for outlier detection. */
enum attempt_outcome {
    ATTEMPT_OK = 0,          /* a response below 500 */
    ATTEMPT_5XX,             /* 500, 501, 505.. from the backend */
    ATTEMPT_GATEWAY_FAILURE, /* 502/503/504 from the backend, connect failure, reset, timeout */
    ATTEMPT_CANCELLED,       /* the client went away: counts for nothing */
};

/* How an attempt answered with HTTP `status` counts for outlier detection. */
static inline enum attempt_outcome backend_outcome_of_status(int status)
{
    if (status == 502 || status == 503 || status == 504)
        return ATTEMPT_GATEWAY_FAILURE;
    return status >= 500 ? ATTEMPT_5XX : ATTEMPT_OK;
}

/* ---- registry (main thread) -------------------------------------------------------- */

struct backend_registry *backend_registry_new(void);
/* How many workers count attempts (one counter copy each); before any endpoint is made. */
void backend_registry_set_workers(struct backend_registry *reg, unsigned n_workers);
/* Frees entries no runtime references any more; then the registry itself. */
void backend_registry_free(struct backend_registry *reg);

/*
 * Build the per-service run-time state for `cfg` (LB tables, endpoint
 * entries from the registry). A discovery: DNS service's names become the
 * addresses `disc` has for them now (none when disc is NULL). Returns an
 * array parallel to cfg->backend_services, or NULL on allocation failure.
 */
struct discovery;
struct service_rt *backend_services_new(struct backend_registry *reg, const struct config *cfg,
                                        const struct discovery *disc);
void backend_services_free(struct service_rt *s, size_t n);

/* Element i of the array backend_services_new returned. */
struct service_rt *backend_service_at(struct service_rt *arr, size_t i);

/*
 * The endpoints of a service in this runtime: its cfg->endpoints, except
 * that under discovery: DNS each name is replaced by the addresses it
 * resolved to (an endpoint with `origin` set). Index i of these is the
 * index backend_pick returns.
 */
const struct cfg_endpoint *backend_endpoint_cfg(const struct service_rt *s, size_t i);
/* The shared state of endpoint i. */
struct endpoint_state *backend_endpoint(const struct service_rt *s, size_t i);

/* ---- request path (any worker) --------------------------------------------------- */

/* At most this many endpoints are tracked as "already tried" by an exchange. */
#define BACKEND_MAX_TRIED 64

struct pick_ctx {
    struct worker *w; /* for its random numbers */
    bool has_hash;
    uint64_t hash;                          /* affinity key (backend_request_hash) */
    uint64_t tried[BACKEND_MAX_TRIED / 64]; /* bit i: endpoint i already tried */
};

/*
 * Choose an endpoint for one attempt: healthy, not ejected, weight > 0,
 * under max_concurrent_requests_per_endpoint, preferring one not yet tried;
 * by the service's locality_lb_policy, driven by ctx->hash when has_hash
 * (RING_HASH / MAGLEV natively; the other policies through a consistent-hash
 * ring; a GENERATED_COOKIE / HTTP_COOKIE id goes straight to its endpoint).
 * Returns the endpoint index (counted active until backend_release), or
 * SY_ENOTFOUND when no endpoint can serve, or SY_ELIMIT when usable
 * endpoints exist but all are at their concurrency limit (the caller may
 * queue). Lock-free; see docs/backends.md.
 */
int backend_pick(struct service_rt *s, const struct pick_ctx *ctx);

/*
 * The attempt on endpoint `idx` (from backend_pick) ended with `outcome`:
 * active count and outlier detection (which may eject the endpoint, and logs
 * it). Exactly once per successful backend_pick.
 */
void backend_release(struct service_rt *s, int idx, enum attempt_outcome outcome);

/*
 * An active health check passed for endpoint `e` and every health check of
 * its service that has a verdict says healthy: if outlier detection ejected
 * it, it comes back now instead of at the end of its ejection (Envoy's
 * successful_active_health_check_uneject_host, on by default). `why` names
 * the check for the log line. The ejection multiplier is kept (it decays as
 * usual from now). True when it was ejected. Any thread (the health checker
 * calls it on the main thread).
 */
bool backend_endpoint_uneject(struct endpoint_state *e, const char *why);

/* ---- waiting for endpoint capacity (any worker) -------------------------------------------- */

/*
 * max_concurrent_requests_per_endpoint: an exchange that got SY_ELIMIT from
 * backend_pick queues on its worker and is counted here, so that whoever
 * frees capacity knows which workers to wake (no polling). The count is
 * shared by every runtime's service of the same name (they share endpoint
 * state).
 *
 * Lost wake-ups are avoided Dekker-style, with a full fence on both sides:
 * a waiter calls backend_capacity_wait_enter *before* its last
 * backend_pick; a releaser calls backend_capacity_waiters *after*
 * backend_release. Either the waiter's pick sees the freed slot, or the
 * releaser sees the waiter.
 */
void backend_capacity_wait_enter(struct service_rt *s, int worker_id);
void backend_capacity_wait_leave(struct service_rt *s, int worker_id);

/*
 * Which workers have exchanges waiting for capacity in s's service: bit i
 * set = some worker with id % 64 == i (0: nobody; one atomic load on the
 * common path). Call after backend_release.
 */
uint64_t backend_capacity_waiters(const struct service_rt *s);

/*
 * The affinity hash of a request for the service's session_affinity
 * (CLIENT_IP, HEADER_FIELD, HTTP_COOKIE, GENERATED_COOKIE). Returns false
 * when the policy is NONE or the key is absent (HTTP_COOKIE without cookie:
 * a random pick; GENERATED_COOKIE: see backend_affinity_cookie).
 */
bool backend_request_hash(const struct service_rt *s, const struct http_request_head *req,
                          const struct sockaddr_storage *client, uint64_t *hash);

/*
 * The Set-Cookie value to add to the response answered by endpoint `idx`
 * (written into `out`, NUL-terminated): for GENERATED_COOKIE when the request
 * carried no cookie naming idx; for HTTP_COOKIE with a ttl when it carried
 * none. Returns its length, or 0 when no cookie is to be set (or it does not
 * fit in cap).
 */
int backend_affinity_cookie(const struct service_rt *s, const struct http_request_head *req,
                            int idx, char *out, size_t cap);

/* ---- circuit breakers (any worker)
 * ----------------------------------------------------------------- */

/*
 * Take / give back one slot of a circuit breaker; false when it is open
 * (full). The counters live in the service's runtime: a reload starts them
 * afresh for new exchanges (the old runtime's exchanges count in the old one).
 */
bool backend_cb_request_enter(struct service_rt *s);
void backend_cb_request_leave(struct service_rt *s);
bool backend_cb_retry_enter(struct service_rt *s);
void backend_cb_retry_leave(struct service_rt *s);
bool backend_cb_pending_enter(struct service_rt *s);
void backend_cb_pending_leave(struct service_rt *s);

/*
 * circuit_breakers.max_connections, for the upstream pools: before opening
 * a connection to endpoint `idx` of `s`, take a slot. Returns the endpoint's
 * state with a reference held for the connection (give it back with
 * backend_cb_connection_leave when the connection closes, from any thread),
 * or NULL when the service already has max_connections open connections
 * (count: every worker, every runtime; connections outlive reloads, so the
 * count is kept per endpoint in the registry, not in the runtime).
 */
struct endpoint_state *backend_cb_connection_enter(struct service_rt *s, int idx);
void backend_cb_connection_leave(struct endpoint_state *e);

/* ---- introspection (admin API, any thread) ------------------------------------------------- */

enum endpoint_health {
    ENDPOINT_HEALTH_UNKNOWN = 0, /* no verdict yet, or no health checks: serving */
    ENDPOINT_HEALTH_HEALTHY,
    ENDPOINT_HEALTH_UNHEALTHY,
};

/* Number of endpoints of a service in this runtime (see backend_endpoint_cfg). */
size_t backend_endpoint_count(const struct service_rt *s);
enum endpoint_health backend_endpoint_health(const struct endpoint_state *e);
/* "unknown", "healthy", "unhealthy". */
const char *endpoint_health_str(enum endpoint_health h);
/* Is the endpoint ejected by outlier detection at `now_ms` (sy_now_ms clock)? */
bool backend_endpoint_ejected(const struct endpoint_state *e, uint64_t now_ms);
/*
 * Keep / let go of an endpoint's shared state beyond the runtimes that name
 * it (the admin status page follows an endpoint that left the config while
 * it drains). ref: the caller already holds a reference (a runtime's).
 */
struct endpoint_state *backend_endpoint_ref(struct endpoint_state *e);
void backend_endpoint_unref(struct endpoint_state *e);

/*
 * Counters of one endpoint since the process started (they survive reloads
 * that keep the endpoint), for the status page and /metrics. Monotonic: a
 * rate is the difference of two snapshots. Upstream time runs from the start
 * of an attempt (endpoint picked) to the response head, or to the failure;
 * attempts the client cancelled are not observed.
 */
struct endpoint_stats {
    uint64_t requests;      /* attempts sent */
    uint64_t responses_5xx; /* attempts answered 5xx by the endpoint (retried ones included) */
    uint64_t failures;      /* attempts that ended without a response */
    /* Attempts observed by upstream time, NOT cumulative: bucket b counts
     * stats_bucket_ms[b-1] < t <= stats_bucket_ms[b] (ms); the last one is > 30 s. */
    uint64_t latency_bucket[STATS_N_BUCKETS + 1];
    uint64_t latency_count;      /* sum of latency_bucket */
    uint64_t latency_us_sum;     /* total upstream time of those, microseconds */
    uint64_t health_transitions; /* health check verdict flips (healthy <-> unhealthy) */
    uint64_t ejections;          /* outlier detection ejections */
};
/* A consistent-enough snapshot (relaxed loads; any thread, lock-free). */
void backend_endpoint_stats(const struct endpoint_state *e, struct endpoint_stats *out);

/*
 * The request path: an attempt on `e` got a response head with `status`
 * (0: it failed without one) after `upstream_us`, counted in worker w's copy
 * (no locked instruction); w NULL: the shared copy, with atomic adds.
 */
void backend_endpoint_observe(struct endpoint_state *e, const struct worker *w, int status,
                              uint64_t upstream_us);

/* Attempts sent to `e`, every worker's copy summed. */
uint64_t backend_endpoint_requests(const struct endpoint_state *e);

/*
 * The per-endpoint families of /metrics (health state, ejection, in-flight,
 * attempts, 5xx, failures, upstream time histogram, ejections, health
 * transitions; docs/operations.md) for the services `arr` of a runtime,
 * parallel to `svcs` (n of them). Any thread.
 */
void backend_write_endpoint_metrics(FILE *out, const struct cfg_backend_service *svcs,
                                    struct service_rt *arr, size_t n);

/* Circuit-breaker occupancy of one service (this runtime's counters, connections: all). */
struct backend_service_load {
    unsigned requests;    /* exchanges holding a max_requests slot */
    unsigned pending;     /* exchanges waiting for endpoint capacity */
    unsigned retries;     /* exchanges holding a max_retries slot */
    unsigned connections; /* open upstream connections to its endpoints */
    unsigned active;      /* attempts in flight on its endpoints */
};
void backend_service_load(const struct service_rt *s, struct backend_service_load *out);

/* ---- connection draining ----------------------------------------------------------------------
 */

/*
 * Main thread, after a new runtime is published: every registry entry that
 * is not an endpoint of `arr` (the new runtime's services, n of them) is
 * marked retired now (retired_at_ms), entries of `arr` are un-retired.
 * health_checker_update() calls it.
 */
void backend_services_publish(struct service_rt *arr, size_t n);

/*
 * connection_draining: when must the in-flight exchanges on endpoint `idx`
 * of `s` (an old runtime's service) end? Returns the sy_now_ms deadline
 * (retired_at + draining_timeout), or 0 when the endpoint is still in the
 * newest config or draining_timeout is 0 (no limit beyond the exchange's
 * own timeouts).
 */
uint64_t backend_endpoint_drain_deadline_ms(const struct service_rt *s, int idx);

#endif
