/*
 * shadow.c — see shadow.h.
 *
 * Each side keeps what is needed to find the first difference without
 * keeping the responses: its status, the (name, hash of value) of each
 * compared field, and one hash per body chunk. The fields are sorted by
 * name (arrival order within a name) when the compare finishes, so the
 * header reported is the alphabetically first name that differs.
 */
#include "exchange/shadow.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "exchange/access_log.h"
#include "runtime.h"
#include "core/log.h"
#include "core/stats.h"

#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME  0x100000001b3ull

/* Escaped bytes kept per field of a mismatch line (the line fits STATS_SHADOW_ENTRY_MAX). */
#define LINE_PATH_MAX    256
#define LINE_METHOD_MAX  48
#define LINE_HEADER_MAX  96
#define LINE_SERVICE_MAX 192

/* Never compared: hop-by-hop and framing, and what differs between any two answers. */
static const char *const always_ignored[] = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding",
    "te",         "trailer",    "upgrade",          "content-length",
    "date",       "server",     "x-request-id",
};

struct shadow_field {
    const char *name; /* lower-case copy in the arena */
    uint32_t name_len;
    uint32_t order;      /* arrival order, for a stable sort */
    uint64_t value_hash; /* after the sort and fold: all values of the name */
};

struct shadow_state {
    int status; /* 0 = no head yet */
    bool done;  /* the response completed */
    uint32_t n_fields;
    struct shadow_field fields[SHADOW_MAX_FIELDS];
    uint64_t body_bytes; /* every body byte seen, compared or not */
    uint64_t chunk_hash; /* the chunk being hashed */
    uint64_t chunk_fill; /* its bytes so far */
    uint32_t n_chunks;   /* finished chunks in `chunks` */
    uint64_t chunks[SHADOW_MAX_CHUNKS];
};

struct shadow_compare {
    struct arena *arena;
    const struct cfg_mirror_policy *policy;
    uint64_t chunk_size; /* bytes per body chunk hash */
    struct shadow_state side[2];
};

static uint64_t fnv64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * FNV64_PRIME;
    return h;
}

void shadow_each_extent(struct evbuffer *b, size_t max,
                        void (*fn)(void *arg, const char *p, size_t n), void *arg)
{
    struct evbuffer_ptr at;
    struct evbuffer_iovec v[8];
    size_t left = evbuffer_get_length(b);
    if (left > max)
        left = max;
    evbuffer_ptr_set(b, &at, 0, EVBUFFER_PTR_SET);
    while (left > 0) {
        int k = evbuffer_peek(b, (ev_ssize_t)left, &at, v, 8);
        if (k <= 0)
            break;
        size_t done = 0;
        for (int i = 0; i < k && i < 8 && left > 0; i++) {
            size_t n = v[i].iov_len < left ? v[i].iov_len : left;
            fn(arg, v[i].iov_base, n);
            left -= n;
            done += n;
        }
        if (left > 0 && evbuffer_ptr_set(b, &at, done, EVBUFFER_PTR_ADD) != 0)
            break;
    }
}

struct shadow_compare *shadow_compare_new(struct arena *a, const struct cfg_mirror_policy *p)
{
    struct shadow_compare *c = arena_alloc(a, sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->arena = a;
    c->policy = p;
    uint64_t per = (p->compare.max_body_bytes + SHADOW_MAX_CHUNKS - 1) / SHADOW_MAX_CHUNKS;
    per = (per + SHADOW_MIN_CHUNK - 1) / SHADOW_MIN_CHUNK * SHADOW_MIN_CHUNK;
    c->chunk_size = per > SHADOW_MIN_CHUNK ? per : SHADOW_MIN_CHUNK;
    for (int s = 0; s < 2; s++)
        c->side[s].chunk_hash = FNV64_OFFSET;
    return c;
}

static bool ignored(const struct shadow_compare *c, const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof always_ignored / sizeof always_ignored[0]; i++)
        if (strlen(always_ignored[i]) == len && strncasecmp(always_ignored[i], name, len) == 0)
            return true;
    for (size_t i = 0; i < c->policy->compare.n_ignore_headers; i++) {
        const char *ig = c->policy->compare.ignore_headers[i];
        if (strlen(ig) == len && strncasecmp(ig, name, len) == 0)
            return true;
    }
    return false;
}

/* Keep one field of a side (past SHADOW_MAX_FIELDS, or out of memory: not compared). */
static void add_fields(struct shadow_compare *c, struct shadow_state *st,
                       const struct http_headers *h)
{
    for (uint32_t i = 0; h && i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (st->n_fields == SHADOW_MAX_FIELDS || ignored(c, f->name, f->name_len))
            continue;
        char *name = arena_alloc(c->arena, f->name_len + 1);
        if (!name)
            return;
        for (uint32_t k = 0; k < f->name_len; k++) {
            char ch = f->name[k];
            name[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
        }
        name[f->name_len] = '\0';
        st->fields[st->n_fields] = (struct shadow_field){
            .name = name,
            .name_len = f->name_len,
            .order = st->n_fields,
            .value_hash = fnv64(FNV64_OFFSET, f->value, f->value_len),
        };
        st->n_fields++;
    }
}

void shadow_compare_head(struct shadow_compare *c, enum shadow_side s,
                         const struct http_response_head *h)
{
    struct shadow_state *st = &c->side[s];
    st->status = h->status;
    add_fields(c, st, &h->headers);
}

/* Close the chunk being hashed (its length mixed in, so a shorter body differs). */
static void end_chunk(struct shadow_state *st)
{
    if (st->chunk_fill == 0 || st->n_chunks == SHADOW_MAX_CHUNKS)
        return;
    st->chunks[st->n_chunks++] = fnv64(st->chunk_hash, &st->chunk_fill, sizeof st->chunk_fill);
    st->chunk_hash = FNV64_OFFSET;
    st->chunk_fill = 0;
}

struct hash_ctx {
    struct shadow_compare *c;
    struct shadow_state *st;
};

static void hash_extent(void *arg, const char *p, size_t n)
{
    struct hash_ctx *h = arg;
    while (n > 0) {
        size_t take = h->c->chunk_size - h->st->chunk_fill;
        if (take > n)
            take = n;
        h->st->chunk_hash = fnv64(h->st->chunk_hash, p, take);
        h->st->chunk_fill += take;
        p += take;
        n -= take;
        if (h->st->chunk_fill == h->c->chunk_size)
            end_chunk(h->st);
    }
}

void shadow_compare_body(struct shadow_compare *c, enum shadow_side s, struct evbuffer *buf)
{
    struct shadow_state *st = &c->side[s];
    size_t n = evbuffer_get_length(buf);
    uint64_t limit = c->policy->compare.max_body_bytes;
    if (st->body_bytes < limit) {
        struct hash_ctx h = {c, st};
        shadow_each_extent(buf, (size_t)(limit - st->body_bytes), hash_extent, &h);
    }
    st->body_bytes += n;
}

void shadow_compare_end(struct shadow_compare *c, enum shadow_side s,
                        const struct http_headers *trailers)
{
    struct shadow_state *st = &c->side[s];
    add_fields(c, st, trailers);
    end_chunk(st);
    st->done = st->status != 0;
}

/* ---- finding the first difference ---------------------------------------------------- */

static int cmp_field(const void *a, const void *b)
{
    const struct shadow_field *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int r = memcmp(x->name, y->name, n);
    if (r)
        return r;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Sort by name and fold each name's values into its first entry; returns the count left. */
static uint32_t fold_fields(struct shadow_state *st)
{
    qsort(st->fields, st->n_fields, sizeof st->fields[0], cmp_field);
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->n_fields; i++) {
        struct shadow_field *f = &st->fields[i];
        if (n > 0 && st->fields[n - 1].name_len == f->name_len &&
            memcmp(st->fields[n - 1].name, f->name, f->name_len) == 0) {
            st->fields[n - 1].value_hash =
                fnv64(st->fields[n - 1].value_hash, &f->value_hash, sizeof f->value_hash);
            continue;
        }
        st->fields[n++] = *f;
    }
    return n;
}

/* The alphabetically first field name whose values differ or that one side lacks; NULL: none. */
static const struct shadow_field *first_field_diff(struct shadow_compare *c)
{
    struct shadow_state *a = &c->side[SHADOW_PRIMARY], *b = &c->side[SHADOW_MIRROR];
    uint32_t na = fold_fields(a), nb = fold_fields(b), i = 0, j = 0;
    while (i < na && j < nb) {
        const struct shadow_field *x = &a->fields[i], *y = &b->fields[j];
        size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
        int r = memcmp(x->name, y->name, n);
        if (r == 0 && x->name_len != y->name_len)
            r = x->name_len < y->name_len ? -1 : 1;
        if (r < 0)
            return x;
        if (r > 0)
            return y;
        if (x->value_hash != y->value_hash)
            return x;
        i++;
        j++;
    }
    return i < na ? &a->fields[i] : j < nb ? &b->fields[j] : NULL;
}

/* Start offset of the first body chunk that differs; -1 when the compared bytes are equal. */
static int64_t first_body_diff(const struct shadow_compare *c)
{
    const struct shadow_state *a = &c->side[SHADOW_PRIMARY], *b = &c->side[SHADOW_MIRROR];
    uint32_t i = 0;
    while (i < a->n_chunks && i < b->n_chunks && a->chunks[i] == b->chunks[i])
        i++;
    if (i == a->n_chunks && i == b->n_chunks)
        return -1;
    return (int64_t)(i * c->chunk_size);
}

/* ---- the mismatch line --------------------------------------------------------------- */

static size_t esc(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = access_log_json_escape(out, cap - 1, s ? s : "", s ? len : 0);
    out[n] = '\0';
    return n;
}

/*
 * One JSON object, no newline; fits STATS_SHADOW_ENTRY_MAX: the escaped
 * fields are capped (LINE_*_MAX), the request id (EXCHANGE_REQUEST_ID_MAX)
 * and the route name (runtime.h, 255) hold safe bytes only.
 */
static int format_mismatch(char *line, size_t cap, const struct shadow_compare *c,
                           const struct shadow_subject *s, const char *kind,
                           const struct shadow_field *hdr, int64_t body_off)
{
    char when[96], method[LINE_METHOD_MAX + 1], path[LINE_PATH_MAX + 1], svc[LINE_SERVICE_MAX + 1],
        header[LINE_HEADER_MAX + 3], off[32];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(tv.tv_usec / 1000));
    esc(method, sizeof method, s->req->method, s->req->method_len);
    esc(path, sizeof path, s->req->path, s->req->path_len);
    esc(svc, sizeof svc, s->mirror_service, strlen(s->mirror_service));
    if (hdr) {
        header[0] = '"';
        size_t n = esc(header + 1, sizeof header - 2, hdr->name, hdr->name_len);
        header[n + 1] = '"';
        header[n + 2] = '\0';
    } else {
        snprintf(header, sizeof header, "null");
    }
    if (body_off >= 0)
        snprintf(off, sizeof off, "%lld", (long long)body_off);
    else
        snprintf(off, sizeof off, "null");
    const struct shadow_state *p = &c->side[SHADOW_PRIMARY], *m = &c->side[SHADOW_MIRROR];
    return snprintf(line, cap,
                    "{\"time\":\"%s\",\"level\":\"info\",\"msg\":\"shadow mismatch\","
                    "\"request_id\":\"%s\",\"route\":\"%s\",\"method\":\"%s\",\"path\":\"%s\","
                    "\"mirror_service\":\"%s\",\"primary_status\":%d,\"mirror_status\":%d,"
                    "\"diff\":\"%s\",\"header\":%s,\"body_offset\":%s,\"body_chunk_bytes\":%llu,"
                    "\"primary_body_bytes\":%llu,\"mirror_body_bytes\":%llu}",
                    when, s->request_id, s->route->stats->name, method, path, svc, p->status,
                    m->status, kind, header, off, (unsigned long long)c->chunk_size,
                    (unsigned long long)p->body_bytes, (unsigned long long)m->body_bytes);
}

void shadow_compare_finish(struct shadow_compare *c, const struct shadow_subject *s)
{
    struct stats_route_shard *sh = &s->route->stats->shards[s->worker_id];
    if (!c->side[SHADOW_PRIMARY].done || !c->side[SHADOW_MIRROR].done) {
        stats_inc(&sh->compare[STATS_COMPARE_INCOMPLETE], 1);
        return;
    }
    bool status_diff = c->side[SHADOW_PRIMARY].status != c->side[SHADOW_MIRROR].status;
    const struct shadow_field *hdr = first_field_diff(c);
    int64_t body_off = first_body_diff(c);
    if (!status_diff && !hdr && body_off < 0) {
        stats_inc(&sh->compare[STATS_COMPARE_MATCH], 1);
        return;
    }
    stats_inc(&sh->compare[STATS_COMPARE_MISMATCH], 1);
    const char *kind = status_diff ? "status" : hdr ? "header" : "body";
    char line[STATS_SHADOW_ENTRY_MAX + 1];
    int n = format_mismatch(line, sizeof line - 1, c, s, kind, hdr, body_off);
    if (n <= 0 || (size_t)n >= sizeof line - 1)
        return; /* cannot happen (see format_mismatch); never a cut line */
    stats_shadow_note(s->stats, line, (size_t)n);
    if (sy_log_get_level() <= SY_LOG_INFO) {
        line[n++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, (size_t)n); /* one write: the line stays whole */
        (void)w;
    }
}
