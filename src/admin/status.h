/*
 * status.h — admin-internal: the status page (GET /, status_page.c) and the
 * JSON it refreshes from (GET /status.json; schema in docs/operations.md).
 *
 * Rates and "last minute" values come from a sampler on the main thread:
 * once a second it reads the counters the request path already keeps
 * (listener shards in core/stats.h, backend_endpoint_stats) into a bounded
 * ring of STATUS_SAMPLES samples per listener and endpoint; a request
 * computes rates and latency quantiles from the difference between the
 * newest sample and the oldest one in the window. The request path is not
 * touched. An endpoint that leaves the config is followed (a reference on
 * its shared state) while exchanges are still in flight on it: "draining".
 *
 * Main thread only (admin's event base).
 */
#ifndef SY_ADMIN_STATUS_H
#define SY_ADMIN_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct event_base;
struct admin_hooks;
struct status;

#define STATUS_SAMPLE_MS 1000 /* sampling period */
#define STATUS_SAMPLES   61   /* ring length: 60 intervals, the last minute */
#define STATUS_RELOADS   16   /* reload history kept */

/* The sampler, started now (its first sample is taken at once). NULL on ENOMEM. */
struct status *status_new(struct event_base *base, const struct admin_hooks *hooks);
void status_free(struct status *st);

/*
 * Remember one reload attempt among the last STATUS_RELOADS: `version` is the
 * config version served after it, `reason` why it was refused (NULL when ok;
 * cut to 200 bytes). NULL st: nothing.
 */
void status_note_reload(struct status *st, const char *version, bool ok, const char *reason);

/*
 * The q-quantile (0..1), in ms, of a duration histogram: bucket[b] counts
 * the observations in (stats_bucket_ms[b-1], stats_bucket_ms[b]], the last
 * of the STATS_N_BUCKETS + 1 those above 30 s (not cumulative). Linear
 * inside the bucket, as Prometheus' histogram_quantile; the last bucket
 * answers its lower bound. < 0 when every bucket is 0.
 */
double status_quantile_ms(const uint64_t *bucket, double q);

/* GET /status.json. */
void status_write_json(struct status *st, FILE *out);

/* GET /: one self-contained HTML page (inline CSS and JS). */
extern const char status_page_html[];

#endif
