/*
 * stats.h — process-wide counters for /metrics (Prometheus text format).
 *
 * Counters are plain uint64_t updated with relaxed atomic adds from any
 * worker and read by the admin thread; families are keyed by name so that a
 * reload keeps a backend service's counters. Entries are created on the
 * main thread (at startup and reload) and live until the process ends.
 */
#ifndef SY_STATS_H
#define SY_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Request duration histogram bucket bounds, in milliseconds (+Inf implied). */
#define STATS_N_BUCKETS 13
extern const double stats_bucket_ms[STATS_N_BUCKETS];

struct stats_listener {
    char *name;
    uint64_t by_status[600];              /* requests by status code (0..599) */
    uint64_t duration_bucket[STATS_N_BUCKETS + 1];
    uint64_t duration_us_sum;
    uint64_t downstream_connections_total;
};

struct stats_service {
    char *name;
    uint64_t upstream_requests;   /* attempts sent */
    uint64_t upstream_retries;    /* attempts that were retries */
    uint64_t upstream_failures;   /* attempts that ended without a response */
    uint64_t upstream_timeouts;
    uint64_t by_class[6];         /* responses forwarded by class: 1xx..5xx */
};

struct stats {
    struct stats_listener *listeners; /* fixed at startup */
    size_t n_listeners;
    struct stats_service **services;  /* grows at reloads (main thread) */
    size_t n_services, cap_services;
    uint64_t active_connections;      /* gauge */
    uint64_t active_exchanges;        /* gauge */
    uint64_t reload_failures;
    uint64_t reloads;
    uint64_t config_version;          /* the hash as a number */
};

struct stats *stats_new(const char *const *listener_names, size_t n);
void stats_free(struct stats *st);

/* The entry for a backend service name, created if new (main thread only). */
struct stats_service *stats_service(struct stats *st, const char *name);

static inline void stats_add(uint64_t *c, uint64_t n) { __atomic_add_fetch(c, n, __ATOMIC_RELAXED); }
static inline void stats_sub(uint64_t *c, uint64_t n) { __atomic_sub_fetch(c, n, __ATOMIC_RELAXED); }

/* Record one finished request on a listener. */
void stats_request(struct stats_listener *l, int status, uint64_t duration_us);

/* Write every family in Prometheus text format. */
void stats_write_prometheus(const struct stats *st, FILE *out);

#endif
