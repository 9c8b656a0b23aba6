/*
 * tb_respond.c — decides how the testbed answers a complete request: the
 * control endpoints (/healthz, /testbed/health, gRPC health), the steering
 * headers (x-testbed-*), and the default JSON echo. Shared by HTTP/1.1 and
 * HTTP/2; produces a `struct tb_plan` the exchange driver plays.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/parse.h"
#include "http/grpc.h"
#include "testbed/testbed.h"

#define STEER_VALUE_MAX 128 /* longest steering header value accepted */

static const char TB_PATTERN[64] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

void tb_pattern_fill(char *dst, uint64_t off, size_t n)
{
    size_t pos = (size_t)(off % sizeof(TB_PATTERN));

    while (n > 0) {
        size_t take = sizeof(TB_PATTERN) - pos;
        if (take > n)
            take = n;
        memcpy(dst, TB_PATTERN + pos, take);
        dst += take;
        n -= take;
        pos = 0;
    }
}

/* ---- x-testbed-fail-first counters ------------------------------------------ */

struct tb_fail_entry {
    char *key; /* NULL = free slot */
    size_t key_len;
    uint64_t count; /* requests seen with this key */
    uint64_t used;  /* table tick of the last use, for LRU eviction */
};

struct tb_fail_table {
    struct tb_fail_entry v[TB_FAIL_KEYS];
    uint64_t tick;
};

struct tb_fail_table *tb_fail_table_new(void)
{
    return calloc(1, sizeof(struct tb_fail_table));
}

void tb_fail_table_free(struct tb_fail_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < TB_FAIL_KEYS; i++)
        free(t->v[i].key);
    free(t);
}

uint64_t tb_fail_table_hit(struct tb_fail_table *t, const char *key, size_t n)
{
    struct tb_fail_entry *lru = &t->v[0];

    t->tick++;
    for (size_t i = 0; i < TB_FAIL_KEYS; i++) {
        struct tb_fail_entry *e = &t->v[i];
        if (e->key && e->key_len == n && memcmp(e->key, key, n) == 0) {
            e->used = t->tick;
            return ++e->count;
        }
        if (!e->key ? lru->key != NULL : (lru->key && e->used < lru->used))
            lru = e;
    }
    /* Not found: take a free slot, else evict the least recently used key. */
    free(lru->key);
    lru->key = malloc(n + 1);
    if (!lru->key)
        return 0;
    if (n)
        memcpy(lru->key, key, n);
    lru->key[n] = '\0';
    lru->key_len = n;
    lru->count = 1;
    lru->used = t->tick;
    return 1;
}

/* ---- plan helpers ----------------------------------------------------------- */

void tb_plan_free(struct tb_plan *plan)
{
    free(plan->body);
    free(plan->grpc_message);
    for (unsigned i = 0; i < plan->nextra; i++) {
        free(plan->extra[i].name);
        free(plan->extra[i].value);
    }
    memset(plan, 0, sizeof(*plan));
}

void tb_plan_add_header(struct tb_plan *plan, const char *name, const char *value)
{
    struct tb_extra_header *h;

    if (plan->nextra == TB_EXTRA_MAX)
        return;
    h = &plan->extra[plan->nextra];
    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return;
    }
    plan->nextra++;
}

/* Replaces the body with a copy of text (text/plain). */
static void plan_text(struct tb_plan *plan, int status, const char *text)
{
    free(plan->body);
    plan->status = status;
    plan->content_type = "text/plain";
    plan->body = strdup(text);
    plan->body_len = plan->body ? strlen(text) : 0;
}

/* A 400 naming the steering header at fault; drops every other steering. */
static void plan_bad_header(struct tb_plan *plan, const char *name)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "bad %s\n", name);
    plan->delay_ms = plan->body_delay_ms = 0;
    plan->reset = TB_RESET_NONE;
    plan->close = false;
    plan->grpc = TB_GRPC_NONE;
    plan_text(plan, 400, msg);
}

static bool bad_header(struct tb_plan *plan, const char *name)
{
    plan_bad_header(plan, name);
    return false;
}

/* The whole of s as a decimal in [min, max]; false (*out untouched) otherwise. */
static bool parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v;

    if (sy_parse_dec(s, strlen(s), max, &v) != 0 || v < min)
        return false;
    *out = v;
    return true;
}

/*
 * Copies the first value of header `name` into buf (NUL-terminated).
 * Returns 1 when present, 0 when absent, -1 when too long.
 */
static int steer_value(const struct tb_request *req, const char *name, char *buf, size_t cap)
{
    struct tb_span s;

    if (!tb_request_header(req, name, &s))
        return 0;
    return tb_request_copy(req, s, buf, cap) ? 1 : -1;
}

/* Length of the path without its query. */
static uint32_t path_len_no_query(const struct tb_request *req)
{
    const char *q = memchr(req->buf + req->path.off, '?', req->path.len);

    return q ? (uint32_t)(q - (req->buf + req->path.off)) : req->path.len;
}

static bool path_is(const struct tb_request *req, const char *p)
{
    struct tb_span s = {.off = req->path.off, .len = path_len_no_query(req)};

    return tb_span_eq(req, s, p);
}

/* ---- control endpoints -------------------------------------------------------- */

/*
 * Query parameter `name` of the request target into buf (NUL-terminated,
 * not percent-decoded). Returns 1 present, 0 absent, -1 too long.
 */
static int query_param(const struct tb_request *req, const char *name, char *buf, size_t cap)
{
    uint32_t qoff = path_len_no_query(req);
    const char *p = req->buf + req->path.off + qoff,
               *end = req->buf + req->path.off + req->path.len;
    size_t nlen = strlen(name);

    if (p == end)
        return 0;
    for (p++; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t vlen = (size_t)(stop - p) - nlen - 1;
            if (vlen + 1 > cap)
                return -1;
            memcpy(buf, p + nlen + 1, vlen);
            buf[vlen] = '\0';
            return 1;
        }
        p = stop + 1;
    }
    return 0;
}

/* POST /testbed/health?status=ok|fail[&delay=DURATION] */
static void control_health_set(struct testbed *tb, const struct tb_request *req,
                               struct tb_plan *plan)
{
    char status[16], delay[STEER_VALUE_MAX], body[128];
    int hs = query_param(req, "status", status, sizeof(status));
    int hd = query_param(req, "delay", delay, sizeof(delay));
    uint64_t delay_ms = tb->health_delay_ms;
    bool healthy = tb->healthy;

    if (!tb_span_eq(req, req->method, "POST")) {
        plan_text(plan, 405, "use POST\n");
        return;
    }
    if (hs < 0 || (hs == 1 && strcmp(status, "ok") != 0 && strcmp(status, "fail") != 0)) {
        plan_text(plan, 400, "status must be ok or fail\n");
        return;
    }
    if (hd < 0 || (hd == 1 && sy_parse_duration_ms(delay, &delay_ms) != 0)) {
        plan_text(plan, 400, "bad delay\n");
        return;
    }
    if (hs == 1)
        healthy = strcmp(status, "ok") == 0;
    tb->healthy = healthy;
    tb->health_delay_ms = delay_ms;
    snprintf(body, sizeof(body), "{\"healthy\": %s, \"delay_ms\": %llu}\n",
             healthy ? "true" : "false", (unsigned long long)delay_ms);
    plan_text(plan, 200, body);
    plan->content_type = "application/json";
}

/* A grpc.health.v1.HealthCheckResponse{status: SERVING or NOT_SERVING}, framed. */
static void control_grpc_health(struct testbed *tb, struct tb_plan *plan)
{
    static const char serving[7] = {0, 0, 0, 0, 2, 0x08, 0x01};
    static const char not_serving[7] = {0, 0, 0, 0, 2, 0x08, 0x02};

    plan->body = malloc(sizeof(serving));
    if (plan->body) {
        memcpy(plan->body, tb->healthy ? serving : not_serving, sizeof(serving));
        plan->body_len = sizeof(serving);
    }
    plan->content_type = "application/grpc";
    plan->grpc = TB_GRPC_TRAILERS;
    plan->grpc_status = GRPC_OK;
    plan->delay_ms = tb->health_delay_ms;
}

/* Answers the control endpoints; false when req is not one. */
static bool plan_control(struct testbed *tb, const struct tb_request *req, struct tb_plan *plan)
{
    if (path_is(req, "/healthz") &&
        (tb_span_eq(req, req->method, "GET") || tb_span_eq(req, req->method, "HEAD"))) {
        plan_text(plan, tb->healthy ? 200 : 503, tb->healthy ? "ok" : "fail");
        plan->delay_ms = tb->health_delay_ms;
        return true;
    }
    if (path_is(req, "/testbed/health")) {
        control_health_set(tb, req, plan);
        return true;
    }
    if (path_is(req, "/grpc.health.v1.Health/Check") && tb_span_eq(req, req->method, "POST")) {
        control_grpc_health(tb, plan);
        return true;
    }
    return false;
}

/* ---- steering headers ------------------------------------------------------------ */

/* x-testbed-status, -delay, -body-delay, -body-size. Returns false after plan_bad_header. */
static bool steer_basic(const struct tb_request *req, struct tb_plan *plan, uint64_t *body_size,
                        bool *sized)
{
    char v[STEER_VALUE_MAX];
    uint64_t n;
    int r;

    if ((r = steer_value(req, "x-testbed-status", v, sizeof(v))) != 0) {
        if (r < 0 || !parse_uint(v, 200, 599, &n))
            return bad_header(plan, "x-testbed-status");
        plan->status = (int)n;
    }
    if ((r = steer_value(req, "x-testbed-delay", v, sizeof(v))) != 0) {
        if (r < 0 || sy_parse_duration_ms(v, &plan->delay_ms) != 0)
            return bad_header(plan, "x-testbed-delay");
    }
    if ((r = steer_value(req, "x-testbed-body-delay", v, sizeof(v))) != 0) {
        if (r < 0 || sy_parse_duration_ms(v, &plan->body_delay_ms) != 0)
            return bad_header(plan, "x-testbed-body-delay");
    }
    if ((r = steer_value(req, "x-testbed-body-size", v, sizeof(v))) != 0) {
        if (r < 0 || sy_parse_size(v, body_size) != 0 || *body_size > TB_BODY_SIZE_MAX)
            return bad_header(plan, "x-testbed-body-size");
        *sized = true;
    }
    return true;
}

/* x-testbed-reset, -close, -grpc-status, -grpc-message. */
static bool steer_abort_grpc(const struct tb_request *req, struct tb_plan *plan)
{
    char v[STEER_VALUE_MAX];
    uint64_t n;
    int r;

    if ((r = steer_value(req, "x-testbed-reset", v, sizeof(v))) != 0) {
        if (r > 0 && strcmp(v, "before-headers") == 0)
            plan->reset = TB_RESET_BEFORE_HEADERS;
        else if (r > 0 && strcmp(v, "after-headers") == 0)
            plan->reset = TB_RESET_AFTER_HEADERS;
        else if (r > 0 && strcmp(v, "mid-body") == 0)
            plan->reset = TB_RESET_MID_BODY;
        else
            return bad_header(plan, "x-testbed-reset");
    }
    if ((r = steer_value(req, "x-testbed-close", v, sizeof(v))) != 0) {
        if (r < 0 || (strcmp(v, "1") != 0 && strcmp(v, "0") != 0 && strcmp(v, "true") != 0))
            return bad_header(plan, "x-testbed-close");
        plan->close = strcmp(v, "0") != 0;
    }
    if ((r = steer_value(req, "x-testbed-grpc-status", v, sizeof(v))) != 0) {
        if (r < 0 || !parse_uint(v, 0, 99, &n))
            return bad_header(plan, "x-testbed-grpc-status");
        plan->grpc = TB_GRPC_TRAILERS_ONLY;
        plan->grpc_status = (int)n;
        if (steer_value(req, "x-testbed-grpc-message", v, sizeof(v)) > 0)
            plan->grpc_message = strdup(v);
    }
    return true;
}

/*
 * x-testbed-fail-first: N with x-testbed-key: K (default key ""): the first N
 * requests with K fail with x-testbed-fail-status [503] (gRPC: grpc-status UNAVAILABLE)
 * after x-testbed-fail-delay [x-testbed-delay]. Sets x-testbed-attempt.
 */
static bool steer_fail_first(struct testbed *tb, const struct tb_request *req, struct tb_plan *plan)
{
    char v[STEER_VALUE_MAX], key[TB_FAIL_KEY_MAX + 1], attempt[24];
    uint64_t n, count, fail_status = 503, fail_delay = plan->delay_ms;
    int r;

    if ((r = steer_value(req, "x-testbed-fail-first", v, sizeof(v))) == 0)
        return true;
    if (r < 0 || !parse_uint(v, 0, UINT32_MAX, &n))
        return bad_header(plan, "x-testbed-fail-first");
    if ((r = steer_value(req, "x-testbed-key", key, sizeof(key))) < 0)
        return bad_header(plan, "x-testbed-key");
    if (r == 0)
        key[0] = '\0';
    if ((r = steer_value(req, "x-testbed-fail-status", v, sizeof(v))) != 0) {
        if (r < 0 || !parse_uint(v, 200, 599, &fail_status))
            return bad_header(plan, "x-testbed-fail-status");
    }
    if ((r = steer_value(req, "x-testbed-fail-delay", v, sizeof(v))) != 0) {
        if (r < 0 || sy_parse_duration_ms(v, &fail_delay) != 0)
            return bad_header(plan, "x-testbed-fail-delay");
    }
    count = tb_fail_table_hit(tb->fail, key, strlen(key));
    snprintf(attempt, sizeof(attempt), "%llu", (unsigned long long)count);
    tb_plan_add_header(plan, "x-testbed-attempt", attempt);
    if (count > n)
        return true;
    plan->delay_ms = fail_delay;
    if (plan->grpc != TB_GRPC_NONE) {
        plan->grpc_status = GRPC_UNAVAILABLE;
        free(plan->grpc_message);
        plan->grpc_message = strdup("testbed fail-first");
    } else {
        plan->status = (int)fail_status;
    }
    return true;
}

/* The default body: the echo, or a pattern of x-testbed-body-size bytes. */
static void plan_body(struct testbed *tb, const struct tb_request *req, struct tb_plan *plan,
                      uint64_t body_size, bool sized)
{
    size_t len = 0;

    if (plan->grpc == TB_GRPC_TRAILERS_ONLY) {
        plan->content_type = "application/grpc";
        plan->no_body = true;
        return;
    }
    if (plan->status == 204 || plan->status == 304) {
        plan->content_type = NULL;
        plan->no_body = true;
        return;
    }
    if (sized) {
        plan->content_type = "application/octet-stream";
        plan->body_len = body_size;
        return;
    }
    plan->body = tb_echo_json(tb, req, &len);
    if (!plan->body) {
        plan->status = 500;
        plan->content_type = NULL;
        plan->no_body = true;
        return;
    }
    plan->body_len = len;
}

void tb_plan_build(struct testbed *tb, const struct tb_request *req, struct tb_plan *plan)
{
    uint64_t body_size = 0;
    bool sized = false;

    memset(plan, 0, sizeof(*plan));
    plan->status = 200;
    plan->content_type = "application/json";
    plan->head = tb_span_eq(req, req->method, "HEAD");
    tb_plan_add_header(plan, "x-testbed-instance", tb->name);
    if (req->too_large) {
        plan_text(plan, 431, "request head too large\n");
        return;
    }
    if (plan_control(tb, req, plan))
        return;
    if (!steer_basic(req, plan, &body_size, &sized) || !steer_abort_grpc(req, plan) ||
        !steer_fail_first(tb, req, plan))
        return;
    plan_body(tb, req, plan, body_size, sized);
}
