/* stats.c — see stats.h. */
#include "core/stats.h"

#include <event2/event.h>
#include <openssl/opensslv.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/grow.h"

const double stats_bucket_ms[STATS_N_BUCKETS] = {1,   5,    10,   25,   50,    100,  250,
                                                 500, 1000, 2500, 5000, 10000, 30000};

static void *shards_new(size_t size, int n)
{
    void *p = aligned_alloc(64, size * (size_t)n);
    if (p)
        memset(p, 0, size * (size_t)n);
    return p;
}

struct stats *stats_new(const char *const *names, size_t n, int n_workers)
{
    struct stats *st = calloc(1, sizeof *st);
    if (!st || n > STATS_MAX_LISTENERS ||
        !(st->listeners = calloc(STATS_MAX_LISTENERS, sizeof *st->listeners)))
        goto fail;
    st->n_workers = n_workers > 0 ? n_workers : 1;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    st->start_time_s = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    st->n_listeners = n;
    st->workers = shards_new(sizeof *st->workers, st->n_workers);
    if (!st->workers || stats_shadow_init(st) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        st->listeners[i].name = strdup(names[i]);
        st->listeners[i].shards = shards_new(sizeof(struct stats_listener_shard), st->n_workers);
        if (!st->listeners[i].name || !st->listeners[i].shards)
            goto fail;
    }
    return st;
fail:
    stats_free(st);
    return NULL;
}

void stats_free(struct stats *st)
{
    if (!st)
        return;
    for (size_t i = 0; st->listeners && i < st->n_listeners; i++) {
        free(st->listeners[i].name);
        free(st->listeners[i].shards);
    }
    free(st->listeners);
    for (size_t i = 0; i < st->n_services; i++) {
        free(st->services[i]->name);
        free(st->services[i]->shards);
        free(st->services[i]);
    }
    free(st->services);
    stats_shadow_free(st);
    free(st->workers);
    free(st);
}

int stats_listener(struct stats *st, const char *name)
{
    size_t n = st->n_listeners;
    for (size_t i = 0; i < n; i++)
        if (strcmp(st->listeners[i].name, name) == 0)
            return (int)i;
    if (n == STATS_MAX_LISTENERS)
        return -1;
    struct stats_listener *l = &st->listeners[n];
    l->name = strdup(name);
    l->shards = shards_new(sizeof(struct stats_listener_shard), st->n_workers);
    if (!l->name || !l->shards) {
        free(l->name);
        free(l->shards);
        *l = (struct stats_listener){0};
        return -1;
    }
    __atomic_store_n(&st->n_listeners, n + 1, __ATOMIC_RELEASE);
    return (int)n;
}

struct stats_service *stats_service(struct stats *st, const char *name)
{
    for (size_t i = 0; i < st->n_services; i++)
        if (strcmp(st->services[i]->name, name) == 0)
            return st->services[i];
    struct stats_service **v =
        sy_grow(st->services, &st->cap_services, st->n_services, sizeof *v, 16);
    if (!v)
        return NULL;
    st->services = v;
    struct stats_service *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name)) ||
        !(s->shards = shards_new(sizeof(struct stats_service_shard), st->n_workers))) {
        if (s)
            free(s->name);
        free(s);
        return NULL;
    }
    st->services[st->n_services++] = s;
    return s;
}

size_t stats_bucket_of(uint64_t duration_us)
{
    double ms = (double)duration_us / 1000.0;
    size_t b = 0;
    while (b < STATS_N_BUCKETS && ms > stats_bucket_ms[b])
        b++;
    return b;
}

void stats_request(struct stats_listener_shard *l, int status, uint64_t duration_us)
{
    if (status < 0 || status >= 600)
        status = 0;
    stats_inc(&l->by_status[status], 1);
    stats_inc(&l->duration_bucket[stats_bucket_of(duration_us)], 1);
    stats_inc(&l->duration_us_sum, duration_us);
}

/* Sum of the counter at byte offset `off` over `n` shards of `size` bytes. */
static uint64_t sum(const void *shards, size_t size, int n, size_t off)
{
    uint64_t t = 0;
    for (int i = 0; i < n; i++)
        t += __atomic_load_n((const uint64_t *)((const char *)shards + size * (size_t)i + off),
                             __ATOMIC_RELAXED);
    return t;
}

static uint64_t lsum(const struct stats *st, const struct stats_listener *l, size_t off)
{
    return sum(l->shards, sizeof(struct stats_listener_shard), st->n_workers, off);
}

#define L_OFF(field) offsetof(struct stats_listener_shard, field)

static void write_listener_codes(const struct stats *st, FILE *out)
{
    fprintf(out,
            "# HELP switchyard_requests_total Requests answered, by listener and status code.\n"
            "# TYPE switchyard_requests_total counter\n");
    for (size_t i = 0; i < st->n_listeners; i++)
        for (int code = 0; code < 600; code++) {
            uint64_t v =
                lsum(st, &st->listeners[i], L_OFF(by_status) + sizeof(uint64_t) * (size_t)code);
            if (v)
                fprintf(out, "switchyard_requests_total{listener=\"%s\",code=\"%d\"} %llu\n",
                        st->listeners[i].name, code, (unsigned long long)v);
        }
}

static void write_listener_durations(const struct stats *st, FILE *out)
{
    fprintf(out, "# HELP switchyard_request_duration_seconds Time from request head to the "
                 "end of the response.\n# TYPE switchyard_request_duration_seconds histogram\n");
    for (size_t i = 0; i < st->n_listeners; i++) {
        const struct stats_listener *l = &st->listeners[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= STATS_N_BUCKETS; b++) {
            cum += lsum(st, l, L_OFF(duration_bucket) + sizeof(uint64_t) * b);
            char le[32];
            if (b < STATS_N_BUCKETS)
                snprintf(le, sizeof le, "%g", stats_bucket_ms[b] / 1000.0);
            else
                snprintf(le, sizeof le, "+Inf");
            fprintf(out,
                    "switchyard_request_duration_seconds_bucket{listener=\"%s\",le=\"%s\"} %llu\n",
                    l->name, le, (unsigned long long)cum);
        }
        fprintf(out, "switchyard_request_duration_seconds_sum{listener=\"%s\"} %.6f\n", l->name,
                (double)lsum(st, l, L_OFF(duration_us_sum)) / 1e6);
        fprintf(out, "switchyard_request_duration_seconds_count{listener=\"%s\"} %llu\n", l->name,
                (unsigned long long)cum);
    }
    fprintf(out, "# HELP switchyard_downstream_connections_total Client connections accepted.\n"
                 "# TYPE switchyard_downstream_connections_total counter\n");
    for (size_t i = 0; i < st->n_listeners; i++)
        fprintf(
            out, "switchyard_downstream_connections_total{listener=\"%s\"} %llu\n",
            st->listeners[i].name,
            (unsigned long long)lsum(st, &st->listeners[i], L_OFF(downstream_connections_total)));
}

static const char *const pause_reason_names[STATS_N_PAUSE_REASONS] = {
    [STATS_PAUSE_LISTENER_CAP] = "max_connections",
    [STATS_PAUSE_PROCESS_CAP] = "process_max_connections",
    [STATS_PAUSE_ACCEPT_ERROR] = "accept_error",
};

/* One series per listener of the per-listener field at `off`. */
static void write_listener_family(const struct stats *st, FILE *out, const char *name,
                                  const char *type, const char *help, size_t off)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < st->n_listeners; i++)
        fprintf(out, "%s{listener=\"%s\"} %llu\n", name, st->listeners[i].name,
                (unsigned long long)lsum(st, &st->listeners[i], off));
}

static void write_listener_limits(const struct stats *st, FILE *out)
{
    write_listener_family(st, out, "switchyard_listener_connections", "gauge",
                          "Open client connections (TLS handshakes included).", L_OFF(connections));
    write_listener_family(st, out, "switchyard_accept_paused", "gauge",
                          "Workers whose socket of this listener is not accepting now "
                          "(a max_connections cap, or an accept error backoff).",
                          L_OFF(accept_paused));
    fprintf(out, "# HELP switchyard_accept_pauses_total Times a worker stopped accepting on "
                 "the listener, by reason.\n# TYPE switchyard_accept_pauses_total counter\n");
    for (size_t i = 0; i < st->n_listeners; i++)
        for (int r = 0; r < STATS_N_PAUSE_REASONS; r++)
            fprintf(out, "switchyard_accept_pauses_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                    st->listeners[i].name, pause_reason_names[r],
                    (unsigned long long)lsum(st, &st->listeners[i],
                                             L_OFF(accept_pauses) + sizeof(uint64_t) * (size_t)r));
    write_listener_family(st, out, "switchyard_accept_errors_total", "counter",
                          "Failed accepts for lack of file descriptors or memory.",
                          L_OFF(accept_errors));
    write_listener_family(st, out, "switchyard_overload_refused_total", "counter",
                          "Requests refused because the process was overloaded.",
                          L_OFF(overload_refused));
}

void stats_write_histogram(FILE *out, const char *name, const char *labels, const uint64_t *buckets,
                           uint64_t us_sum)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++) {
        cum += buckets[b];
        char le[32];
        if (b < STATS_N_BUCKETS)
            snprintf(le, sizeof le, "%g", stats_bucket_ms[b] / 1000.0);
        else
            snprintf(le, sizeof le, "+Inf");
        fprintf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le,
                (unsigned long long)cum);
    }
    fprintf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, (double)us_sum / 1e6, name,
            labels, (unsigned long long)cum);
}

/* Append `v` to out[*n] as a Prometheus label value (\\, \", \n escaped), NUL-terminated. */
static void label_value(char *out, size_t cap, size_t *n, const char *v)
{
    for (; *v && *n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            out[(*n)++] = '\\';
            out[(*n)++] = *v == '\n' ? 'n' : *v;
        } else {
            out[(*n)++] = *v;
        }
    }
    out[*n] = '\0';
}

void stats_labels(char *out, size_t cap, const char *k1, const char *v1, const char *k2,
                  const char *v2)
{
    size_t n = 0;
    out[0] = '\0';
    const char *k[2] = {k1, k2}, *v[2] = {v1, v2};
    for (int i = 0; i < 2 && k[i]; i++) {
        int w = snprintf(out + n, cap - n, "%s%s=\"", i ? "," : "", k[i]);
        if (w < 0 || (size_t)w >= cap - n)
            return;
        n += (size_t)w;
        label_value(out, cap, &n, v[i]);
        if (n + 2 > cap)
            return;
        out[n++] = '"';
        out[n] = '\0';
    }
}

void stats_write_process(const struct stats *st, FILE *out, const char *version)
{
    char labels[STATS_LABEL_MAX];
    stats_labels(labels, sizeof labels, "version", version, "libevent", event_get_version());
    fprintf(out,
            "# HELP switchyard_build_info Always 1; the labels say which build is running.\n"
            "# TYPE switchyard_build_info gauge\nswitchyard_build_info{%s,openssl=\"%s\"} 1\n"
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch "
            "in seconds.\n# TYPE process_start_time_seconds gauge\n"
            "process_start_time_seconds %.3f\n",
            labels, OPENSSL_VERSION_TEXT, st->start_time_s);
}

static uint64_t svc_sum(const struct stats *st, const struct stats_service *s, size_t off)
{
    return sum(s->shards, sizeof(struct stats_service_shard), st->n_workers, off);
}

static void write_family(const struct stats *st, FILE *out, const char *name, const char *help,
                         size_t off)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < st->n_services; i++)
        fprintf(out, "%s{backend_service=\"%s\"} %llu\n", name, st->services[i]->name,
                (unsigned long long)svc_sum(st, st->services[i], off));
}

/* Sum the [STATS_N_BUCKETS + 1] counters at `off` of a service's shards into `b`. */
static void svc_buckets(const struct stats *st, const struct stats_service *s, size_t off,
                        uint64_t *b)
{
    for (size_t k = 0; k <= STATS_N_BUCKETS; k++)
        b[k] = svc_sum(st, s, off + sizeof(uint64_t) * k);
}

static void write_service_histograms(const struct stats *st, FILE *out)
{
    static const struct {
        const char *name, *help;
        size_t buckets, sum;
    } h[] = {
        {"switchyard_backend_request_duration_seconds",
         "Exchanges routed to the backend service, from request head to the end of the "
         "response (retries and backoff included), as the client saw them.",
         offsetof(struct stats_service_shard, duration_bucket),
         offsetof(struct stats_service_shard, duration_us_sum)},
        {"switchyard_upstream_attempt_duration_seconds",
         "Upstream time of each attempt: from the endpoint pick to the response head, or to "
         "the failure (connect failure, reset, timeout). Cancelled attempts are not counted.",
         offsetof(struct stats_service_shard, attempt_bucket),
         offsetof(struct stats_service_shard, attempt_us_sum)},
    };
    for (size_t k = 0; k < sizeof h / sizeof h[0]; k++) {
        fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", h[k].name, h[k].help, h[k].name);
        for (size_t i = 0; i < st->n_services; i++) {
            uint64_t b[STATS_N_BUCKETS + 1];
            char labels[STATS_LABEL_MAX];
            svc_buckets(st, st->services[i], h[k].buckets, b);
            stats_labels(labels, sizeof labels, "backend_service", st->services[i]->name, NULL,
                         NULL);
            stats_write_histogram(out, h[k].name, labels, b,
                                  svc_sum(st, st->services[i], h[k].sum));
        }
    }
}

static void write_services(const struct stats *st, FILE *out)
{
    write_service_histograms(st, out);
    write_family(st, out, "switchyard_upstream_requests_total",
                 "Attempts sent to backends, retries included.",
                 offsetof(struct stats_service_shard, upstream_requests));
    write_family(st, out, "switchyard_upstream_retries_total", "Attempts that were retries.",
                 offsetof(struct stats_service_shard, upstream_retries));
    write_family(st, out, "switchyard_upstream_failures_total",
                 "Attempts that ended without a response (connect failure, reset, timeout).",
                 offsetof(struct stats_service_shard, upstream_failures));
    write_family(st, out, "switchyard_upstream_timeouts_total",
                 "Attempts cancelled by a timeout (per try or the whole exchange).",
                 offsetof(struct stats_service_shard, upstream_timeouts));
    write_family(st, out, "switchyard_upstream_stale_resends_total",
                 "Requests sent again on a new connection after a reused keep-alive connection "
                 "turned out closed by the backend (idempotent methods; not retries).",
                 offsetof(struct stats_service_shard, upstream_stale_resends));
    write_family(st, out, "switchyard_upstream_retry_overflow_total",
                 "Retries not made because circuit_breakers.max_retries was full (flag URO).",
                 offsetof(struct stats_service_shard, upstream_retry_overflow));
    fprintf(out, "# HELP switchyard_upstream_responses_total Response heads received from the "
                 "backend service, per attempt (a 503 that was retried counts too), by status "
                 "class.\n# TYPE switchyard_upstream_responses_total counter\n");
    for (size_t i = 0; i < st->n_services; i++)
        for (int c = 1; c <= 5; c++)
            fprintf(out,
                    "switchyard_upstream_responses_total{backend_service=\"%s\",class=\"%dxx\"} "
                    "%llu\n",
                    st->services[i]->name, c,
                    (unsigned long long)svc_sum(st, st->services[i],
                                                offsetof(struct stats_service_shard, by_class) +
                                                    sizeof(uint64_t) * (size_t)c));
    static const char *const mirror_results[STATS_N_MIRROR_RESULTS] = {
        [STATS_MIRROR_SENT] = "sent",
        [STATS_MIRROR_ABANDONED] = "abandoned",
        [STATS_MIRROR_FAILED] = "failed",
        [STATS_MIRROR_SKIPPED_LIMIT] = "skipped_limit",
    };
    fprintf(out, "# HELP switchyard_mirror_requests_total Request copies for a "
                 "request_mirror_policy naming this backend service, by result.\n"
                 "# TYPE switchyard_mirror_requests_total counter\n");
    for (size_t i = 0; i < st->n_services; i++)
        for (int r = 0; r < STATS_N_MIRROR_RESULTS; r++)
            fprintf(out,
                    "switchyard_mirror_requests_total{backend_service=\"%s\",result=\"%s\"} "
                    "%llu\n",
                    st->services[i]->name, mirror_results[r],
                    (unsigned long long)svc_sum(st, st->services[i],
                                                offsetof(struct stats_service_shard, mirror) +
                                                    sizeof(uint64_t) * (size_t)r));
}

void stats_write_prometheus(const struct stats *st, FILE *out)
{
    write_listener_codes(st, out);
    write_listener_durations(st, out);
    write_listener_limits(st, out);
    write_services(st, out);
    stats_write_routes(st, out);
    uint64_t conns = sum(st->workers, sizeof *st->workers, st->n_workers,
                         offsetof(struct stats_worker_shard, active_connections));
    uint64_t exch = sum(st->workers, sizeof *st->workers, st->n_workers,
                        offsetof(struct stats_worker_shard, active_exchanges));
    fprintf(out,
            "# HELP switchyard_active_connections Open client connections.\n"
            "# TYPE switchyard_active_connections gauge\nswitchyard_active_connections %llu\n"
            "# HELP switchyard_active_streams Exchanges in flight (HTTP/1.1 requests and "
            "HTTP/2 streams).\n"
            "# TYPE switchyard_active_streams gauge\nswitchyard_active_streams %llu\n"
            "# HELP switchyard_config_reloads_total Successful config reloads.\n"
            "# TYPE switchyard_config_reloads_total counter\nswitchyard_config_reloads_total %llu\n"
            "# HELP switchyard_config_reload_failures_total Reloads refused (bad config).\n"
            "# TYPE switchyard_config_reload_failures_total counter\n"
            "switchyard_config_reload_failures_total %llu\n",
            (unsigned long long)conns, (unsigned long long)exch, (unsigned long long)st->reloads,
            (unsigned long long)st->reload_failures);
}
