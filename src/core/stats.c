/* stats.c — see stats.h. */
#include "core/stats.h"

#include <stdlib.h>
#include <string.h>

const double stats_bucket_ms[STATS_N_BUCKETS] = {1,   5,    10,   25,   50,    100,  250,
                                                 500, 1000, 2500, 5000, 10000, 30000};

struct stats *stats_new(const char *const *names, size_t n)
{
    struct stats *st = calloc(1, sizeof *st);
    if (!st || !(st->listeners = calloc(n + 1, sizeof *st->listeners)))
        goto fail;
    st->n_listeners = n;
    for (size_t i = 0; i < n; i++)
        if (!(st->listeners[i].name = strdup(names[i])))
            goto fail;
    return st;
fail:
    stats_free(st);
    return NULL;
}

void stats_free(struct stats *st)
{
    if (!st)
        return;
    for (size_t i = 0; st->listeners && i < st->n_listeners; i++)
        free(st->listeners[i].name);
    free(st->listeners);
    for (size_t i = 0; i < st->n_services; i++) {
        free(st->services[i]->name);
        free(st->services[i]);
    }
    free(st->services);
    free(st);
}

struct stats_service *stats_service(struct stats *st, const char *name)
{
    for (size_t i = 0; i < st->n_services; i++)
        if (strcmp(st->services[i]->name, name) == 0)
            return st->services[i];
    if (st->n_services == st->cap_services) {
        size_t cap = st->cap_services ? st->cap_services * 2 : 16;
        struct stats_service **v = realloc(st->services, cap * sizeof *v);
        if (!v)
            return NULL;
        st->services = v;
        st->cap_services = cap;
    }
    struct stats_service *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return NULL;
    }
    /* Publish after it is complete: the admin thread may be iterating. */
    st->services[st->n_services] = s;
    __atomic_store_n(&st->n_services, st->n_services + 1, __ATOMIC_RELEASE);
    return s;
}

void stats_request(struct stats_listener *l, int status, uint64_t duration_us)
{
    if (status < 0 || status >= 600)
        status = 0;
    stats_add(&l->by_status[status], 1);
    double ms = (double)duration_us / 1000.0;
    size_t b = 0;
    while (b < STATS_N_BUCKETS && ms > stats_bucket_ms[b])
        b++;
    stats_add(&l->duration_bucket[b], 1);
    stats_add(&l->duration_us_sum, duration_us);
}

static uint64_t rd(const uint64_t *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }

static void write_listeners(const struct stats *st, FILE *out)
{
    fprintf(out, "# HELP switchyard_requests_total Requests answered, by listener and status code.\n"
                 "# TYPE switchyard_requests_total counter\n");
    for (size_t i = 0; i < st->n_listeners; i++)
        for (int code = 0; code < 600; code++) {
            uint64_t v = rd(&st->listeners[i].by_status[code]);
            if (v)
                fprintf(out, "switchyard_requests_total{listener=\"%s\",code=\"%d\"} %llu\n",
                        st->listeners[i].name, code, (unsigned long long)v);
        }
    fprintf(out, "# HELP switchyard_request_duration_seconds Time from request head to the "
                 "end of the response.\n# TYPE switchyard_request_duration_seconds histogram\n");
    for (size_t i = 0; i < st->n_listeners; i++) {
        const struct stats_listener *l = &st->listeners[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= STATS_N_BUCKETS; b++) {
            cum += rd(&l->duration_bucket[b]);
            if (b < STATS_N_BUCKETS)
                fprintf(out,
                        "switchyard_request_duration_seconds_bucket{listener=\"%s\",le=\"%g\"} "
                        "%llu\n",
                        l->name, stats_bucket_ms[b] / 1000.0, (unsigned long long)cum);
            else
                fprintf(out,
                        "switchyard_request_duration_seconds_bucket{listener=\"%s\",le=\"+Inf\"} "
                        "%llu\n",
                        l->name, (unsigned long long)cum);
        }
        fprintf(out, "switchyard_request_duration_seconds_sum{listener=\"%s\"} %.6f\n", l->name,
                (double)rd(&l->duration_us_sum) / 1e6);
        fprintf(out, "switchyard_request_duration_seconds_count{listener=\"%s\"} %llu\n", l->name,
                (unsigned long long)cum);
    }
    fprintf(out, "# HELP switchyard_downstream_connections_total Client connections accepted.\n"
                 "# TYPE switchyard_downstream_connections_total counter\n");
    for (size_t i = 0; i < st->n_listeners; i++)
        fprintf(out, "switchyard_downstream_connections_total{listener=\"%s\"} %llu\n",
                st->listeners[i].name,
                (unsigned long long)rd(&st->listeners[i].downstream_connections_total));
}

static void write_family(const struct stats *st, FILE *out, const char *name, const char *help,
                         size_t field)
{
    size_t n = __atomic_load_n(&st->n_services, __ATOMIC_ACQUIRE);
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n; i++) {
        const struct stats_service *s = st->services[i];
        const uint64_t *c = (const uint64_t *)((const char *)s + field);
        fprintf(out, "%s{backend_service=\"%s\"} %llu\n", name, s->name,
                (unsigned long long)rd(c));
    }
}

static void write_services(const struct stats *st, FILE *out)
{
    write_family(st, out, "switchyard_upstream_requests_total",
                 "Attempts sent to backends, retries included.",
                 offsetof(struct stats_service, upstream_requests));
    write_family(st, out, "switchyard_upstream_retries_total", "Attempts that were retries.",
                 offsetof(struct stats_service, upstream_retries));
    write_family(st, out, "switchyard_upstream_failures_total",
                 "Attempts that ended without a response (connect failure, reset, timeout).",
                 offsetof(struct stats_service, upstream_failures));
    write_family(st, out, "switchyard_upstream_timeouts_total",
                 "Attempts cancelled by a timeout (per try or the whole exchange).",
                 offsetof(struct stats_service, upstream_timeouts));
    size_t n = __atomic_load_n(&st->n_services, __ATOMIC_ACQUIRE);
    fprintf(out, "# HELP switchyard_upstream_responses_total Backend responses forwarded, by "
                 "status class.\n# TYPE switchyard_upstream_responses_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int c = 1; c <= 5; c++)
            fprintf(out,
                    "switchyard_upstream_responses_total{backend_service=\"%s\",class=\"%dxx\"} "
                    "%llu\n",
                    st->services[i]->name, c, (unsigned long long)rd(&st->services[i]->by_class[c]));
}

void stats_write_prometheus(const struct stats *st, FILE *out)
{
    write_listeners(st, out);
    write_services(st, out);
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
            (unsigned long long)rd(&st->active_connections),
            (unsigned long long)rd(&st->active_exchanges), (unsigned long long)rd(&st->reloads),
            (unsigned long long)rd(&st->reload_failures));
}
