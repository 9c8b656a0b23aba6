/*
 * backend_metrics.c — the per-endpoint families of /metrics, read from the
 * shared endpoint state (backend.h: backend_endpoint_stats, health,
 * ejection). Any thread; lock-free reads.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend-int.h"
#include "backend/backend.h"
#include "core/stats.h"
#include "core/worker.h"

/* What one family prints for one endpoint. */
typedef void (*endpoint_series_fn)(FILE *out, const char *name, const char *labels,
                                   const struct endpoint_state *e, const struct endpoint_stats *es,
                                   uint64_t now_ms);

static void series_health_state(FILE *out, const char *name, const char *labels,
                                const struct endpoint_state *e, const struct endpoint_stats *es,
                                uint64_t now_ms)
{
    enum endpoint_health h = backend_endpoint_health(e);
    static const enum endpoint_health all[] = {ENDPOINT_HEALTH_HEALTHY, ENDPOINT_HEALTH_UNHEALTHY,
                                               ENDPOINT_HEALTH_UNKNOWN};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fprintf(out, "%s{%s,state=\"%s\"} %d\n", name, labels, endpoint_health_str(all[i]),
                h == all[i] ? 1 : 0);
}

static void series_ejected(FILE *out, const char *name, const char *labels,
                           const struct endpoint_state *e, const struct endpoint_stats *es,
                           uint64_t now_ms)
{
    fprintf(out, "%s{%s} %d\n", name, labels, backend_endpoint_ejected(e, now_ms) ? 1 : 0);
}

static void series_active(FILE *out, const char *name, const char *labels,
                          const struct endpoint_state *e, const struct endpoint_stats *es,
                          uint64_t now_ms)
{
    fprintf(out, "%s{%s} %u\n", name, labels, __atomic_load_n(&e->active, __ATOMIC_RELAXED));
}

/* A counter of struct endpoint_stats at byte offset `off`. */
static void series_counter(FILE *out, const char *name, const char *labels,
                           const struct endpoint_stats *es, size_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)es + off, sizeof v);
    fprintf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
}

static void series_latency(FILE *out, const char *name, const char *labels,
                           const struct endpoint_state *e, const struct endpoint_stats *es,
                           uint64_t now_ms)
{
    stats_write_histogram(out, name, labels, es->latency_bucket, es->latency_us_sum);
}

static const struct {
    const char *name, *type, *help;
    endpoint_series_fn fn; /* NULL: the counter at `off` of struct endpoint_stats */
    size_t off;
} families[] = {
    {"switchyard_endpoint_health_state", "gauge",
     "1 for the endpoint's current health check state (healthy, unhealthy, or unknown: no "
     "verdict yet or no health checks, which serves), 0 for the others.",
     series_health_state, 0},
    {"switchyard_endpoint_ejected", "gauge", "1 while outlier detection ejects the endpoint.",
     series_ejected, 0},
    {"switchyard_endpoint_active_requests", "gauge", "Attempts in flight on the endpoint.",
     series_active, 0},
    {"switchyard_endpoint_upstream_requests_total", "counter",
     "Attempts sent to the endpoint (retries included).", NULL,
     offsetof(struct endpoint_stats, requests)},
    {"switchyard_endpoint_upstream_5xx_total", "counter",
     "Attempts the endpoint answered with a 5xx status (retried ones included).", NULL,
     offsetof(struct endpoint_stats, responses_5xx)},
    {"switchyard_endpoint_upstream_failures_total", "counter",
     "Attempts on the endpoint that ended without a response (connect failure, reset, "
     "protocol error, timeout).",
     NULL, offsetof(struct endpoint_stats, failures)},
    {"switchyard_endpoint_upstream_duration_seconds", "histogram",
     "Upstream time of each attempt on the endpoint: from the endpoint pick to the response "
     "head, or to the failure.",
     series_latency, 0},
    {"switchyard_outlier_ejections_total", "counter",
     "Times outlier detection ejected the endpoint.", NULL,
     offsetof(struct endpoint_stats, ejections)},
    {"switchyard_endpoint_health_transitions_total", "counter",
     "Times the endpoint's health check verdict flipped between healthy and unhealthy.", NULL,
     offsetof(struct endpoint_stats, health_transitions)},
};

void backend_write_endpoint_metrics(FILE *out, const struct cfg_backend_service *svcs,
                                    struct service_rt *arr, size_t n)
{
    uint64_t now = sy_now_ms();
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                families[f].name, families[f].type);
        for (size_t i = 0; i < n; i++) {
            const struct service_rt *s = backend_service_at(arr, i);
            for (size_t j = 0; j < s->n; j++) {
                char labels[STATS_LABEL_MAX];
                stats_labels(labels, sizeof labels, "backend_service", svcs[i].name, "endpoint",
                             s->ep[j].address.text);
                struct endpoint_stats es;
                backend_endpoint_stats(s->eps[j], &es);
                if (families[f].fn)
                    families[f].fn(out, families[f].name, labels, s->eps[j], &es, now);
                else
                    series_counter(out, families[f].name, labels, &es, families[f].off);
            }
        }
    }
}
