/*
 * stats.h — process counters for /metrics (Prometheus text format).
 *
 * Every counter the request path touches has one writer: each worker owns a
 * shard (a cache-line aligned copy) and bumps it with plain loads and
 * stores, no locked instruction; the admin thread sums the shards when it
 * renders /metrics. Families are keyed by name so that a reload keeps a
 * backend service's counters. Entries are created on the main thread (at
 * startup and reload) and live until the process ends.
 */
#ifndef SY_STATS_H
#define SY_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Request duration histogram bucket bounds, in milliseconds (+Inf implied). */
#define STATS_N_BUCKETS 13
extern const double stats_bucket_ms[STATS_N_BUCKETS];

/* The histogram bucket (0..STATS_N_BUCKETS) of a duration in microseconds. */
size_t stats_bucket_of(uint64_t duration_us);

/* Why a listener stopped accepting (label `reason` of switchyard_accept_pauses_total). */
enum stats_pause_reason {
    STATS_PAUSE_LISTENER_CAP, /* "max_connections": the listener's cap */
    STATS_PAUSE_PROCESS_CAP,  /* "process_max_connections": the top-level cap */
    STATS_PAUSE_ACCEPT_ERROR, /* "accept_error": out of descriptors or memory */
    STATS_N_PAUSE_REASONS
};

struct stats_listener_shard {
    uint64_t by_status[600]; /* requests by status code (0..599) */
    uint64_t duration_bucket[STATS_N_BUCKETS + 1];
    uint64_t duration_us_sum;
    uint64_t downstream_connections_total;
    uint64_t connections;   /* gauge: open client connections (TLS handshakes included) */
    uint64_t accept_paused; /* gauge: 1 while this worker's socket does not accept */
    uint64_t accept_pauses[STATS_N_PAUSE_REASONS]; /* times it stopped accepting, by reason */
    uint64_t accept_errors;    /* failed accept() calls (EMFILE, ENFILE, ENOBUFS, ENOMEM...) */
    uint64_t overload_refused; /* requests refused while overloaded */
} __attribute__((aligned(64)));

struct stats_listener {
    char *name;
    struct stats_listener_shard *shards; /* [n_workers] */
};

/* Listener entries a process can ever have: st->listeners is allocated once with
 * this capacity, so workers index it while a reload appends (never moves). */
#define STATS_MAX_LISTENERS 256

/* What became of a request's mirror (request_mirror_policy, exchange/mirror.h):
 * label `result` of switchyard_mirror_requests_total, one per mirrored request. */
enum stats_mirror_result {
    STATS_MIRROR_SENT,          /* "sent": the whole copy went out and the mirror answered */
    STATS_MIRROR_ABANDONED,     /* "abandoned": body over max_buffered_bytes, the client's
                                 * request never completed, or out of memory */
    STATS_MIRROR_FAILED,        /* "failed": no healthy endpoint, connect failure, reset,
                                 * protocol error or the mirror service's timeout */
    STATS_MIRROR_SKIPPED_LIMIT, /* "skipped_limit": the mirror service's circuit breakers
                                 * (max_requests, max_connections) or endpoint limits were full */
    STATS_N_MIRROR_RESULTS
};

struct stats_service_shard {
    uint64_t upstream_requests; /* attempts sent */
    uint64_t upstream_retries;  /* attempts that were retries */
    uint64_t upstream_failures; /* attempts that ended without a response */
    uint64_t upstream_timeouts;
    uint64_t upstream_stale_resends;  /* attempts re-sent after a stale keep-alive connection */
    uint64_t upstream_retry_overflow; /* retries not made: circuit_breakers.max_retries full */
    uint64_t by_class[6];             /* response heads received from the backend by class, per
                                       * attempt (a retried 503 counts): 1xx..5xx */
    uint64_t attempt_bucket[STATS_N_BUCKETS + 1]; /* attempts by upstream time */
    uint64_t attempt_us_sum;
    uint64_t duration_bucket[STATS_N_BUCKETS + 1]; /* exchanges routed to it, by duration */
    uint64_t duration_us_sum;
    uint64_t mirror[STATS_N_MIRROR_RESULTS]; /* this service as a mirror target */
} __attribute__((aligned(64)));

struct stats_service {
    char *name;
    struct stats_service_shard *shards; /* [n_workers] */
};

/* Shadow compare of a mirrored route (label `result` of switchyard_shadow_compare_total). */
enum stats_compare_result {
    STATS_COMPARE_MATCH,      /* "match": both answered alike */
    STATS_COMPARE_MISMATCH,   /* "mismatch": status, a header or the body differed */
    STATS_COMPARE_INCOMPLETE, /* "incomplete": a side had no complete response to compare */
    STATS_N_COMPARE_RESULTS
};

struct stats_route_shard {
    uint64_t compare[STATS_N_COMPARE_RESULTS];
} __attribute__((aligned(64)));

/* A route with a request_mirror_policy, keyed by its name (runtime.h). */
struct stats_route {
    char *name;
    struct stats_route_shard *shards; /* [n_workers] */
};

/* GET /shadow keeps the last STATS_SHADOW_LOG_N mismatches, each a JSON
 * object of at most STATS_SHADOW_ENTRY_MAX bytes (stats_shadow.c). */
#define STATS_SHADOW_LOG_N     50
#define STATS_SHADOW_ENTRY_MAX 2048
struct stats_shadow_log;

struct stats_worker_shard {
    uint64_t active_connections; /* gauge: open client connections */
    uint64_t active_exchanges;   /* gauge: exchanges in flight */
} __attribute__((aligned(64)));

struct stats {
    int n_workers;
    struct stats_listener *listeners; /* [STATS_MAX_LISTENERS]; appended at reloads */
    size_t n_listeners;               /* written by the main thread only (release) */
    struct stats_service **services;  /* grows at reloads (main thread) */
    size_t n_services, cap_services;
    struct stats_route **routes; /* mirrored routes; grow at reloads (main thread) */
    size_t n_routes, cap_routes;
    struct stats_shadow_log *shadow_log; /* recent mismatches (mutex inside) */
    struct stats_worker_shard *workers;  /* [n_workers] */
    double start_time_s;                 /* process_start_time_seconds (Unix time) */
    uint64_t reload_failures;            /* main thread only */
    uint64_t reloads;
};

struct stats *stats_new(const char *const *listener_names, size_t n, int n_workers);
void stats_free(struct stats *st);

/*
 * The index in st->listeners of a listener name, appended if new (main
 * thread only; a reload keeps a name's counters). -1 when
 * STATS_MAX_LISTENERS names exist already, or out of memory.
 */
int stats_listener(struct stats *st, const char *name);

/* The entry for a backend service name, created if new (main thread only). */
struct stats_service *stats_service(struct stats *st, const char *name);

/* The entry for a route name, created if new (main thread only). */
struct stats_route *stats_route(struct stats *st, const char *name);

/*
 * Keep one shadow compare mismatch (`json`: one JSON object, no newline; cut
 * to STATS_SHADOW_ENTRY_MAX) among the last STATS_SHADOW_LOG_N. Any thread:
 * a mutex held for one copy.
 */
void stats_shadow_note(struct stats *st, const char *json, size_t len);

/* GET /shadow: the compare counts per route and the recent mismatches, as JSON. */
void stats_write_shadow_json(struct stats *st, FILE *out);

/* stats_shadow.c, for stats.c: make / free the mismatch ring (0 or SY_ENOMEM), and
 * the per-route families of /metrics. */
int stats_shadow_init(struct stats *st);
void stats_shadow_free(struct stats *st);
void stats_write_routes(const struct stats *st, FILE *out);

/* Bump a counter of the calling worker's own shard (single writer). */
static inline void stats_inc(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void stats_dec(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
}

/* Record one finished request in a listener shard. */
void stats_request(struct stats_listener_shard *l, int status, uint64_t duration_us);

/*
 * One histogram series in Prometheus text format: `buckets` are the
 * STATS_N_BUCKETS + 1 NON-cumulative counts (bounds stats_bucket_ms),
 * `labels` the label pairs without braces ("" for none), `us_sum` the sum in
 * microseconds (written in seconds).
 */
void stats_write_histogram(FILE *out, const char *name, const char *labels, const uint64_t *buckets,
                           uint64_t us_sum);

/* Label pairs `k1="v1",k2="v2"` (k2 NULL: one pair) with the values escaped
 * for the text format, cut to fit `cap` (STATS_LABEL_MAX is enough for names). */
#define STATS_LABEL_MAX 512
void stats_labels(char *out, size_t cap, const char *k1, const char *v1, const char *k2,
                  const char *v2);

/* switchyard_build_info{version,libevent,openssl} and process_start_time_seconds. */
void stats_write_process(const struct stats *st, FILE *out, const char *version);

/* Write every family in Prometheus text format (any thread; sums the shards). */
void stats_write_prometheus(const struct stats *st, FILE *out);

#endif
