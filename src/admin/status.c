/* status.c — see status.h. */
#include "admin/status.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/admin.h"
#include "backend/backend.h"
#include "runtime.h"
#include "config/config.h"
#include "core/grow.h"
#include "core/stats.h"
#include "core/timer.h"
#include "core/worker.h"

#define REASON_MAX 200

/* The counters sampled per series: requests, 5xx, failures, then latency buckets. */
enum { V_REQ, V_5XX, V_FAIL, V_BUCKET, NV = V_BUCKET + STATS_N_BUCKETS + 1 };

enum series_kind { SERIES_LISTENER, SERIES_ENDPOINT };

/*
 * One listener (by name) or one endpoint (by its shared state) and its
 * samples: v[i] goes with the ring's t_ms[i]; the `n` newest slots (ending at
 * the ring's head) are valid.
 */
struct series {
    enum series_kind kind;
    char *name;               /* listener name; NULL for an endpoint */
    struct endpoint_state *e; /* endpoint: a reference held */
    unsigned n;
    bool seen; /* in the current runtime at the last sample */
    uint64_t v[STATUS_SAMPLES][NV];
};

struct reload_entry {
    uint64_t wall_ms;
    bool ok;
    char version[17];
    char reason[REASON_MAX + 1];
};

struct status {
    const struct admin_hooks *hooks;
    struct event *timer;
    uint64_t t_ms[STATUS_SAMPLES]; /* sy_now_ms of each sample */
    unsigned head, n;              /* newest slot; valid slots */
    struct series **series;
    size_t n_series, cap_series;
    struct reload_entry reloads[STATUS_RELOADS]; /* ring; n_reloads counts every one */
    uint64_t n_reloads;
    uint64_t started_ms;      /* sy_now_ms at status_new */
    uint64_t started_wall_ms; /* the same instant, wall clock */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- sampling ---------------------------------------------------------------------------- */

static void series_free(struct series *s)
{
    if (s->e)
        backend_endpoint_unref(s->e);
    free(s->name);
    free(s);
}

/* Is s the series of endpoint e (when e), else of the listener `name`? */
static bool series_is(const struct series *s, const char *name, const struct endpoint_state *e)
{
    if (e)
        return s->e == e;
    return s->name && name && strcmp(s->name, name) == 0;
}

/* The series for a listener name or an endpoint, created if new; NULL on ENOMEM. */
static struct series *series_get(struct status *st, const char *name, struct endpoint_state *e)
{
    for (size_t i = 0; i < st->n_series; i++)
        if (series_is(st->series[i], name, e))
            return st->series[i];
    struct series **v = sy_grow(st->series, &st->cap_series, st->n_series, sizeof *v, 16);
    if (!v)
        return NULL;
    st->series = v;
    struct series *s = calloc(1, sizeof *s);
    if (!s || (name && !(s->name = strdup(name)))) {
        free(s);
        return NULL;
    }
    s->kind = e ? SERIES_ENDPOINT : SERIES_LISTENER;
    s->e = e ? backend_endpoint_ref(e) : NULL;
    st->series[st->n_series++] = s;
    return s;
}

static void endpoint_counters(const struct endpoint_state *e, uint64_t *v)
{
    struct endpoint_stats es;
    backend_endpoint_stats(e, &es);
    v[V_REQ] = es.requests;
    v[V_5XX] = es.responses_5xx;
    v[V_FAIL] = es.failures;
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++)
        v[V_BUCKET + b] = es.latency_bucket[b];
}

/* Sum of a listener's counter at byte offset `off` over the worker shards. */
static uint64_t listener_sum(const struct stats *sts, const struct stats_listener *l, size_t off)
{
    uint64_t t = 0;
    for (int w = 0; w < sts->n_workers; w++)
        t += __atomic_load_n((const uint64_t *)((const char *)&l->shards[w] + off),
                             __ATOMIC_RELAXED);
    return t;
}

#define L_OFF(field) offsetof(struct stats_listener_shard, field)

static void listener_counters(const struct stats *sts, const struct stats_listener *l, uint64_t *v)
{
    memset(v, 0, NV * sizeof *v);
    for (int code = 0; code < 600; code++) {
        uint64_t c = listener_sum(sts, l, L_OFF(by_status) + sizeof(uint64_t) * (size_t)code);
        v[V_REQ] += c;
        if (code >= 500)
            v[V_5XX] += c;
        else if (code == 0)
            v[V_FAIL] += c;
    }
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++)
        v[V_BUCKET + b] = listener_sum(sts, l, L_OFF(duration_bucket) + sizeof(uint64_t) * b);
}

static void series_put(struct status *st, struct series *s, const uint64_t *v)
{
    memcpy(s->v[st->head], v, sizeof s->v[st->head]);
    if (s->n < STATUS_SAMPLES)
        s->n++;
    s->seen = true;
}

/*
 * Endpoints of the current runtime and listeners are sampled; an endpoint
 * that left it is sampled while exchanges are in flight on it (draining),
 * then forgotten, as is a listener that left.
 */
static void sample(struct status *st)
{
    st->head = (st->head + 1) % STATUS_SAMPLES;
    st->t_ms[st->head] = sy_now_ms();
    if (st->n < STATUS_SAMPLES)
        st->n++;
    for (size_t i = 0; i < st->n_series; i++)
        st->series[i]->seen = false;
    struct runtime *rt = st->hooks->current(st->hooks->ctx);
    const struct config *cfg = rt->cfg;
    uint64_t v[NV];
    for (size_t i = 0; i < rt->stats->n_listeners; i++) {
        const struct stats_listener *l = &rt->stats->listeners[i];
        struct series *s = series_get(st, l->name, NULL);
        if (s) {
            listener_counters(rt->stats, l, v);
            series_put(st, s, v);
        }
    }
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        struct service_rt *srt = runtime_service(rt, &cfg->backend_services[i]);
        for (size_t j = 0; j < backend_endpoint_count(srt); j++) {
            struct endpoint_state *e = backend_endpoint(srt, j);
            struct series *s = series_get(st, NULL, e);
            if (s) {
                endpoint_counters(e, v);
                series_put(st, s, v);
            }
        }
    }
    runtime_unref(rt);
    size_t k = 0;
    for (size_t i = 0; i < st->n_series; i++) {
        struct series *s = st->series[i];
        if (!s->seen && s->e && __atomic_load_n(&s->e->active, __ATOMIC_RELAXED) > 0) {
            endpoint_counters(s->e, v); /* draining: keep following it */
            series_put(st, s, v);
        } else if (!s->seen) {
            series_free(s);
            continue;
        }
        st->series[k++] = s;
    }
    st->n_series = k;
}

static void on_sample(evutil_socket_t fd, short what, void *arg)
{
    sample(arg);
}

struct status *status_new(struct event_base *base, const struct admin_hooks *hooks)
{
    struct status *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->hooks = hooks;
    st->started_ms = sy_now_ms();
    st->started_wall_ms = wall_ms();
    st->head = STATUS_SAMPLES - 1;
    st->timer = event_new(base, -1, EV_PERSIST, on_sample, st);
    struct timeval tv = sy_tv_ms(STATUS_SAMPLE_MS);
    if (!st->timer || event_add(st->timer, &tv) != 0) {
        status_free(st);
        return NULL;
    }
    sample(st);
    return st;
}

void status_free(struct status *st)
{
    if (!st)
        return;
    if (st->timer)
        event_free(st->timer);
    for (size_t i = 0; i < st->n_series; i++)
        series_free(st->series[i]);
    free(st->series);
    free(st);
}

void status_note_reload(struct status *st, const char *version, bool ok, const char *reason)
{
    if (!st)
        return;
    struct reload_entry *r = &st->reloads[st->n_reloads++ % STATUS_RELOADS];
    r->wall_ms = wall_ms();
    r->ok = ok;
    snprintf(r->version, sizeof r->version, "%s", version ? version : "");
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
}

/* ---- window arithmetic ------------------------------------------------------------------- */

/* The window of a series: its newest and oldest valid sample and the seconds between. */
struct window {
    const uint64_t *now, *old;
    double seconds; /* 0: fewer than two samples */
};

static struct window series_window(const struct status *st, const struct series *s)
{
    unsigned m = s->n < st->n ? s->n : st->n;
    unsigned old = (st->head + STATUS_SAMPLES - (m ? m - 1 : 0)) % STATUS_SAMPLES;
    struct window w = {s->v[st->head], s->v[old], 0};
    if (m >= 2)
        w.seconds = (double)(st->t_ms[st->head] - st->t_ms[old]) / 1000.0;
    return w;
}

/* A counter's increase over the window (a counter that went back counts from 0). */
static uint64_t delta(const struct window *w, int k)
{
    return w->now[k] >= w->old[k] ? w->now[k] - w->old[k] : w->now[k];
}

/* Window totals of a set of series added up (a backend service: its endpoints). */
struct totals {
    uint64_t d[NV];
    double seconds;
};

static void totals_add(struct totals *t, const struct window *w)
{
    if (w->seconds <= 0)
        return;
    for (int k = 0; k < NV; k++)
        t->d[k] += delta(w, k);
    if (w->seconds > t->seconds)
        t->seconds = w->seconds;
}

double status_quantile_ms(const uint64_t *bucket, double q)
{
    uint64_t total = 0;
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++)
        total += bucket[b];
    if (!total)
        return -1;
    double rank = q * (double)total, cum = 0;
    for (size_t b = 0; b <= STATS_N_BUCKETS; b++) {
        double c = (double)bucket[b];
        if (c > 0 && cum + c >= rank) {
            if (b == STATS_N_BUCKETS)
                return stats_bucket_ms[STATS_N_BUCKETS - 1];
            double lo = b ? stats_bucket_ms[b - 1] : 0, hi = stats_bucket_ms[b];
            return lo + (hi - lo) * (rank - cum) / c;
        }
        cum += c;
    }
    return stats_bucket_ms[STATS_N_BUCKETS - 1];
}

/* ---- JSON -------------------------------------------------------------------------------- */

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

/* A number, or null when negative (unknown). */
static void json_num(FILE *out, double v)
{
    if (v < 0)
        fputs("null", out);
    else
        fprintf(out, "%.3f", v);
}

static void json_time(FILE *out, uint64_t ms)
{
    char buf[40];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(out, "\"%s.%03uZ\"", buf, (unsigned)(ms % 1000));
}

/* "requests_per_s", "error_5xx_ratio", "p50_ms"...: the rate fields of a window. */
static void json_rates(FILE *out, const uint64_t *d, double seconds)
{
    bool ok = seconds > 0;
    uint64_t answered = d[V_REQ];
    fputs("\"requests_per_s\":", out);
    json_num(out, ok ? (double)d[V_REQ] / seconds : -1);
    fputs(",\"error_5xx_per_s\":", out);
    json_num(out, ok ? (double)d[V_5XX] / seconds : -1);
    fputs(",\"error_5xx_ratio\":", out);
    json_num(out, ok && answered ? (double)d[V_5XX] / (double)answered : -1);
    fputs(",\"failures_per_s\":", out);
    json_num(out, ok ? (double)d[V_FAIL] / seconds : -1);
    fputs(",\"p50_ms\":", out);
    json_num(out, ok ? status_quantile_ms(d + V_BUCKET, 0.5) : -1);
    fputs(",\"p99_ms\":", out);
    json_num(out, ok ? status_quantile_ms(d + V_BUCKET, 0.99) : -1);
}

static const char *listener_protocol_str(enum cfg_listener_protocol p)
{
    switch (p) {
    case CFG_LISTENER_HTTP: return "HTTP";
    case CFG_LISTENER_HTTPS: return "HTTPS";
    case CFG_LISTENER_H2C: return "H2C";
    }
    return "?";
}

static const char *backend_protocol_str(enum cfg_backend_protocol p)
{
    switch (p) {
    case CFG_BACKEND_HTTP: return "HTTP";
    case CFG_BACKEND_HTTPS: return "HTTPS";
    case CFG_BACKEND_HTTP2: return "HTTP2";
    case CFG_BACKEND_H2C: return "H2C";
    }
    return "?";
}

static const struct series *find_series(const struct status *st, const char *name,
                                        const struct endpoint_state *e)
{
    for (size_t i = 0; i < st->n_series; i++)
        if (series_is(st->series[i], name, e))
            return st->series[i];
    return NULL;
}

static void write_reloads(const struct status *st, FILE *out)
{
    fputs("\"reloads\":[", out);
    uint64_t n = st->n_reloads < STATUS_RELOADS ? st->n_reloads : STATUS_RELOADS;
    for (uint64_t i = 0; i < n; i++) { /* newest first */
        const struct reload_entry *r = &st->reloads[(st->n_reloads - 1 - i) % STATUS_RELOADS];
        fprintf(out, "%s{\"time\":", i ? "," : "");
        json_time(out, r->wall_ms);
        fprintf(out, ",\"ok\":%s,\"version\":", r->ok ? "true" : "false");
        json_str(out, r->version);
        fputs(",\"reason\":", out);
        if (r->ok)
            fputs("null", out);
        else
            json_str(out, r->reason);
        fputc('}', out);
    }
    fputc(']', out);
}

/*
 * The listeners of the config, and those a reload removed while they still
 * have client connections ("removed": true; their counters live on in
 * core/stats.h, by name).
 */
static void write_listeners(const struct status *st, const struct runtime *rt, FILE *out)
{
    const struct config *cfg = rt->cfg;
    bool first = true;
    fputs("\"listeners\":[", out);
    for (size_t i = 0; i < rt->stats->n_listeners; i++) {
        const struct stats_listener *l = &rt->stats->listeners[i];
        const struct cfg_listener *cl = NULL;
        for (size_t j = 0; j < cfg->n_listeners && !cl; j++)
            if (strcmp(cfg->listeners[j].name, l->name) == 0)
                cl = &cfg->listeners[j];
        uint64_t conns = listener_sum(rt->stats, l, L_OFF(connections));
        if (!cl && !conns)
            continue;
        fprintf(out, "%s{\"name\":", first ? "" : ",");
        first = false;
        json_str(out, l->name);
        fputs(",\"address\":", out);
        json_str(out, cl ? cl->address.text : "");
        fputs(",\"protocol\":", out);
        json_str(out, cl ? listener_protocol_str(cl->protocol) : "");
        uint64_t now[NV];
        listener_counters(rt->stats, l, now);
        fprintf(out, ",\"removed\":%s,\"connections\":%llu,\"requests_total\":%llu,",
                cl ? "false" : "true", (unsigned long long)conns, (unsigned long long)now[V_REQ]);
        const struct series *s = find_series(st, l->name, NULL);
        struct totals t = {{0}, 0};
        if (s) {
            struct window w = series_window(st, s);
            totals_add(&t, &w);
        }
        json_rates(out, t.d, t.seconds);
        fputc('}', out);
    }
    fputc(']', out);
}

/*
 * The state an operator reads first, worst first: draining (left the
 * config), ejected (outlier detection), unhealthy, healthy, unknown.
 */
static const char *endpoint_state_str(const struct endpoint_state *e, bool draining, uint64_t now)
{
    if (draining)
        return "draining";
    if (backend_endpoint_ejected(e, now))
        return "ejected";
    return endpoint_health_str(backend_endpoint_health(e));
}

static void write_endpoint(const struct status *st, FILE *out, const struct endpoint_state *e,
                           const struct cfg_endpoint *ep, bool draining, struct totals *svc)
{
    uint64_t now = sy_now_ms();
    uint64_t until = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
    uint64_t changed = __atomic_load_n(&e->health_changed_ms, __ATOMIC_RELAXED);
    uint64_t retired = __atomic_load_n(&e->retired_at_ms, __ATOMIC_RELAXED);
    fputs("{\"address\":", out);
    json_str(out, e->address);
    if (ep && ep->origin) {
        fputs(",\"discovered_from\":", out);
        json_str(out, ep->origin);
    }
    fputs(",\"state\":", out);
    json_str(out, endpoint_state_str(e, draining, now));
    fputs(",\"health\":", out);
    json_str(out, endpoint_health_str(backend_endpoint_health(e)));
    fputs(",\"health_changed\":", out);
    if (changed) {
        json_time(out, wall_ms() - (now - changed));
        fprintf(out, ",\"health_changed_ago_s\":%.1f", (double)(now - changed) / 1000.0);
    } else {
        fputs("null,\"health_changed_ago_s\":null", out);
    }
    fprintf(out,
            ",\"weight\":%u,\"ejected\":%s,\"ejected_for_ms\":%llu,\"draining\":%s,"
            "\"draining_for_ms\":%llu,\"in_flight\":%u,\"connections\":%u,\"requests_total\":%llu,",
            ep ? ep->weight : 0, until > now ? "true" : "false",
            (unsigned long long)(until > now ? until - now : 0), draining ? "true" : "false",
            (unsigned long long)(draining && retired && now > retired ? now - retired : 0),
            __atomic_load_n(&e->active, __ATOMIC_RELAXED),
            __atomic_load_n(&e->connections, __ATOMIC_RELAXED),
            (unsigned long long)backend_endpoint_requests(e));
    const struct series *s = find_series(st, NULL, e);
    struct totals t = {{0}, 0};
    if (s) {
        struct window w = series_window(st, s);
        totals_add(&t, &w);
        totals_add(svc, &w);
    }
    json_rates(out, t.d, t.seconds);
    fputc('}', out);
}

/* Is e an endpoint of the runtime's service srt? */
static bool in_service(const struct service_rt *srt, const struct endpoint_state *e)
{
    for (size_t j = 0; j < backend_endpoint_count(srt); j++)
        if (backend_endpoint(srt, j) == e)
            return true;
    return false;
}

static void write_breaker(FILE *out, const char *name, unsigned used, uint32_t max, bool first)
{
    fprintf(out, "%s\"%s\":{\"used\":%u,\"max\":%u}", first ? "" : ",", name, used, max);
}

static void write_service(const struct status *st, const struct runtime *rt, size_t i, FILE *out)
{
    const struct cfg_backend_service *c = &rt->cfg->backend_services[i];
    struct service_rt *srt = runtime_service(rt, c);
    uint64_t now = sy_now_ms();
    size_t n = backend_endpoint_count(srt), healthy = 0;
    struct totals t = {{0}, 0};
    fputs("{\"name\":", out);
    json_str(out, c->name);
    fputs(",\"protocol\":", out);
    json_str(out, backend_protocol_str(c->protocol));
    fputs(",\"endpoints\":[", out);
    for (size_t j = 0; j < n; j++) {
        const struct endpoint_state *e = backend_endpoint(srt, j);
        if (backend_endpoint_health(e) != ENDPOINT_HEALTH_UNHEALTHY &&
            !backend_endpoint_ejected(e, now))
            healthy++;
        if (j)
            fputc(',', out);
        write_endpoint(st, out, e, backend_endpoint_cfg(srt, j), false, &t);
    }
    bool any = n > 0;
    for (size_t k = 0; k < st->n_series; k++) { /* endpoints that left the config, in flight */
        const struct endpoint_state *e = st->series[k]->e;
        if (!e || strcmp(e->service, c->name) != 0 || in_service(srt, e) ||
            !__atomic_load_n(&e->active, __ATOMIC_RELAXED))
            continue;
        if (any)
            fputc(',', out);
        any = true;
        write_endpoint(st, out, e, NULL, true, &t);
    }
    struct backend_service_load load;
    backend_service_load(srt, &load);
    fprintf(out, "],\"endpoints_total\":%zu,\"endpoints_serving\":%zu,\"in_flight\":%u,", n,
            healthy, load.active);
    fputs("\"circuit_breakers\":{", out);
    write_breaker(out, "requests", load.requests, c->circuit_breakers.max_requests, true);
    write_breaker(out, "pending", load.pending, c->circuit_breakers.max_pending_requests, false);
    write_breaker(out, "retries", load.retries, c->circuit_breakers.max_retries, false);
    write_breaker(out, "connections", load.connections, c->circuit_breakers.max_connections, false);
    fputs("},", out);
    json_rates(out, t.d, t.seconds);
    fputc('}', out);
}

void status_write_json(struct status *st, FILE *out)
{
    struct runtime *rt = st->hooks->current(st->hooks->ctx);
    const struct config *cfg = rt->cfg;
    uint64_t now = sy_now_ms();
    unsigned m = st->n;
    unsigned old = (st->head + STATUS_SAMPLES - (m ? m - 1 : 0)) % STATUS_SAMPLES;
    fputs("{\"time\":", out);
    json_time(out, wall_ms());
    fputs(",\"started\":", out);
    json_time(out, st->started_wall_ms);
    fprintf(out,
            ",\"uptime_s\":%.1f,\"window_s\":%.1f,\"sample_interval_s\":%.1f,"
            "\"draining\":%s,\"config\":{\"version\":",
            (double)(now - st->started_ms) / 1000.0,
            (double)(st->t_ms[st->head] - st->t_ms[old]) / 1000.0, STATUS_SAMPLE_MS / 1000.0,
            st->hooks->draining(st->hooks->ctx) ? "true" : "false");
    json_str(out, cfg->version);
    fprintf(out, ",\"reloads_total\":%llu,", (unsigned long long)st->n_reloads);
    write_reloads(st, out);
    fputs("},", out);
    write_listeners(st, rt, out);
    fputs(",\"backend_services\":[", out);
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        if (i)
            fputc(',', out);
        write_service(st, rt, i, out);
    }
    fputs("]}\n", out);
    runtime_unref(rt);
}
