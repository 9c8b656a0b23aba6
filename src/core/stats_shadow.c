/*
 * stats_shadow.c — the shadow compare side of the stats (see stats.h):
 * per-route counters (one shard per worker, like every request-path
 * counter) and the ring of the last STATS_SHADOW_LOG_N mismatches that
 * GET /shadow shows.
 *
 * The ring is the only state here that workers share for writing: a fixed
 * array of fixed-size entries behind one mutex, taken once per mismatch
 * for a copy of at most STATS_SHADOW_ENTRY_MAX bytes (matches never take
 * it). The admin thread takes it to copy the entries out. Route entries
 * are created on the main thread (runtime_new) and live until the process
 * ends, so a reload keeps a route's counts when its name stays.
 */
#include "core/stats.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/grow.h"

struct shadow_entry {
    uint32_t len; /* bytes of json */
    char json[STATS_SHADOW_ENTRY_MAX];
};

struct stats_shadow_log {
    pthread_mutex_t lock;
    uint64_t total; /* mismatches noted since start; the newest is entries[(total-1) % N] */
    struct shadow_entry entries[STATS_SHADOW_LOG_N];
};

int stats_shadow_init(struct stats *st)
{
    struct stats_shadow_log *l = calloc(1, sizeof *l);
    if (!l)
        return SY_ENOMEM;
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        free(l);
        return SY_ENOMEM;
    }
    st->shadow_log = l;
    return 0;
}

void stats_shadow_free(struct stats *st)
{
    for (size_t i = 0; i < st->n_routes; i++) {
        free(st->routes[i]->name);
        free(st->routes[i]->shards);
        free(st->routes[i]);
    }
    free(st->routes);
    st->routes = NULL;
    st->n_routes = st->cap_routes = 0;
    if (st->shadow_log) {
        pthread_mutex_destroy(&st->shadow_log->lock);
        free(st->shadow_log);
        st->shadow_log = NULL;
    }
}

struct stats_route *stats_route(struct stats *st, const char *name)
{
    for (size_t i = 0; i < st->n_routes; i++)
        if (strcmp(st->routes[i]->name, name) == 0)
            return st->routes[i];
    struct stats_route **v = sy_grow(st->routes, &st->cap_routes, st->n_routes, sizeof *v, 8);
    if (!v)
        return NULL;
    st->routes = v;
    struct stats_route *r = calloc(1, sizeof *r);
    size_t size = sizeof(struct stats_route_shard) * (size_t)st->n_workers;
    if (!r || !(r->name = strdup(name)) || !(r->shards = aligned_alloc(64, size))) {
        if (r)
            free(r->name);
        free(r);
        return NULL;
    }
    memset(r->shards, 0, size);
    st->routes[st->n_routes++] = r;
    return r;
}

void stats_shadow_note(struct stats *st, const char *json, size_t len)
{
    struct stats_shadow_log *l = st->shadow_log;
    if (len > STATS_SHADOW_ENTRY_MAX)
        len = STATS_SHADOW_ENTRY_MAX;
    pthread_mutex_lock(&l->lock);
    struct shadow_entry *e = &l->entries[l->total % STATS_SHADOW_LOG_N];
    memcpy(e->json, json, len);
    e->len = (uint32_t)len;
    l->total++;
    pthread_mutex_unlock(&l->lock);
}

static uint64_t route_sum(const struct stats *st, const struct stats_route *r, int result)
{
    uint64_t t = 0;
    for (int i = 0; i < st->n_workers; i++)
        t += __atomic_load_n(&r->shards[i].compare[result], __ATOMIC_RELAXED);
    return t;
}

static const char *const compare_results[STATS_N_COMPARE_RESULTS] = {
    [STATS_COMPARE_MATCH] = "match",
    [STATS_COMPARE_MISMATCH] = "mismatch",
    [STATS_COMPARE_INCOMPLETE] = "incomplete",
};

void stats_write_routes(const struct stats *st, FILE *out)
{
    fprintf(out, "# HELP switchyard_shadow_compare_total Mirrored requests of a route with "
                 "request_mirror_policy.compare, by how the mirror's response compared with "
                 "the primary's.\n# TYPE switchyard_shadow_compare_total counter\n");
    for (size_t i = 0; i < st->n_routes; i++)
        for (int r = 0; r < STATS_N_COMPARE_RESULTS; r++)
            fprintf(out, "switchyard_shadow_compare_total{route=\"%s\",result=\"%s\"} %llu\n",
                    st->routes[i]->name, compare_results[r],
                    (unsigned long long)route_sum(st, st->routes[i], r));
}

/*
 * {"routes":[{"route":NAME,"match":N,"mismatch":N,"incomplete":N}...],
 *  "mismatches_total":N,"recent_mismatches":[newest first, at most N]}
 * Route names were made JSON- and label-safe by runtime_new; entries are
 * JSON objects already (exchange/shadow.c).
 */
void stats_write_shadow_json(struct stats *st, FILE *out)
{
    fprintf(out, "{\"routes\":[");
    for (size_t i = 0; i < st->n_routes; i++) {
        const struct stats_route *r = st->routes[i];
        fprintf(out, "%s{\"route\":\"%s\"", i ? "," : "", r->name);
        for (int k = 0; k < STATS_N_COMPARE_RESULTS; k++)
            fprintf(out, ",\"%s\":%llu", compare_results[k],
                    (unsigned long long)route_sum(st, r, k));
        fprintf(out, "}");
    }
    struct stats_shadow_log *l = st->shadow_log;
    /* Copied out under the lock, written after: a slow admin client never holds it. */
    struct shadow_entry *copy = malloc(sizeof l->entries);
    pthread_mutex_lock(&l->lock);
    uint64_t total = l->total;
    if (copy)
        memcpy(copy, l->entries, sizeof l->entries);
    pthread_mutex_unlock(&l->lock);
    fprintf(out, "],\"mismatches_total\":%llu,\"max_recent\":%d,\"recent_mismatches\":[",
            (unsigned long long)total, STATS_SHADOW_LOG_N);
    uint64_t n = total < STATS_SHADOW_LOG_N ? total : STATS_SHADOW_LOG_N;
    for (uint64_t k = 0; copy && k < n; k++) {
        const struct shadow_entry *e = &copy[(total - 1 - k) % STATS_SHADOW_LOG_N];
        fprintf(out, "%s%.*s", k ? "," : "", (int)e->len, e->json);
    }
    fprintf(out, "]}\n");
    free(copy);
}
