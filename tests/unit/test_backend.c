/*
 * test_backend.c — backend services at run time: the LB policies'
 * distributions with weights, consistent hashing on endpoint removal,
 * session-affinity keys and cookies, outlier ejection and return,
 * circuit breakers and the per-endpoint concurrency limit.
 *
 * Services come from YAML through config_load_string() (so defaults are the
 * loader's). Randomness is a fixed-seed xorshift and time is passed
 * explicitly (backend_pick_at / backend_release_at): every run is the same.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "backend/backend-int.h"
#include "backend/backend.h"
#include "config/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/worker.h"
#include "exchange/exchange.h"
#include "http/headers.h"
#include "test.h"

/* ---- helpers -----------------------------------------------------------------------------------
 */

struct fixture {
    struct config *cfg;
    struct backend_registry *reg;
    struct service_rt *arr;
    struct service_rt *s;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/*
 * One backend service "svc" with `n` endpoints 10.0.0.<i+1>:80 whose weights
 * are weights[i] (NULL: all 1), skipping endpoint `skip` (-1: none), and
 * `extra` YAML lines (4-space indented keys of the service).
 */
static bool fixture_init(struct fixture *f, struct backend_registry *reg, size_t n,
                         const unsigned *weights, int skip, const char *extra)
{
    char yaml[8192];
    size_t off = (size_t)snprintf(yaml, sizeof yaml,
                                  "listeners: [{name: l, address: \"127.0.0.1:0\", url_map: m}]\n"
                                  "url_maps: [{name: m, default_service: svc}]\n"
                                  "backend_services:\n  - name: svc\n    endpoints:\n");
    for (size_t i = 0; i < n; i++)
        if ((int)i != skip)
            off += (size_t)snprintf(yaml + off, sizeof yaml - off,
                                    "      - {address: \"10.0.0.%zu:80\", weight: %u}\n", i + 1,
                                    weights ? weights[i] : 1);
    snprintf(yaml + off, sizeof yaml - off, "%s", extra ? extra : "");
    struct config_errors errs = {0};
    memset(f, 0, sizeof *f);
    f->cfg = config_load_string("test", yaml, strlen(yaml), &errs);
    if (!f->cfg) {
        config_errors_print(&errs, stderr);
        config_errors_free(&errs);
        return false;
    }
    config_errors_free(&errs);
    f->reg = reg ? reg : backend_registry_new();
    f->arr = backend_services_new(f->reg, f->cfg, NULL);
    if (!f->arr)
        return false;
    f->s = backend_service_at(f->arr, 0);
    return true;
}

/* Free the fixture; its registry too when `own_reg`. */
static void fixture_free(struct fixture *f, bool own_reg)
{
    if (f->arr)
        backend_services_free(f->arr, f->cfg->n_backend_services);
    config_unref(f->cfg);
    if (own_reg)
        backend_registry_free(f->reg);
    memset(f, 0, sizeof *f);
}

/* Pick and release at once, `picks` times; counts per endpoint. */
static void tally(struct service_rt *s, size_t picks, bool use_hash, unsigned *count, size_t n)
{
    memset(count, 0, n * sizeof *count);
    for (size_t k = 0; k < picks; k++) {
        struct pick_ctx ctx = {.has_hash = use_hash};
        if (use_hash)
            ctx.hash = rnd();
        int idx = backend_pick_at(s, &ctx, 1000, rnd());
        if (idx >= 0 && (size_t)idx < n) {
            count[idx]++;
            backend_release_at(s, idx, ATTEMPT_OK, 1000, rnd());
        }
    }
}

/* Every share count[i]/total within `tol` (relative) of weights[i]/sum. */
static bool shares_match(const unsigned *count, const unsigned *weights, size_t n, double tol)
{
    double total = 0, wsum = 0;
    for (size_t i = 0; i < n; i++) {
        total += count[i];
        wsum += weights[i];
    }
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        double want = weights[i] / wsum, got = count[i] / total;
        if (got < want * (1 - tol) || got > want * (1 + tol)) {
            fprintf(stderr, "  endpoint %zu: share %.4f, want %.4f ±%.0f%%\n", i, got, want,
                    tol * 100);
            ok = false;
        }
    }
    return ok;
}

/* ---- hash -------------------------------------------------------------------------------------
 */

static void test_hash64(void)
{
    TEST_CASE("xxh64 reference vectors");
    const char *long_text = "Nobody inspects the spammish repetition";
    CHECK(lb_hash64("", 0, 0) == 0xEF46DB3751D8E999ull);
    CHECK(lb_hash64("a", 1, 0) == 0xD24EC4F1A98C6E5Bull);
    CHECK(lb_hash64("abc", 3, 0) == 0x44BC2CF5AD770999ull);
    CHECK(lb_hash64(long_text, strlen(long_text), 0) == 0xFBCEA83C8A378BF1ull);
}

/* ---- policies
 * ------------------------------------------------------------------------------------ */

static void test_round_robin(void)
{
    struct fixture f;
    static const unsigned w[] = {1, 2, 3, 4};
    unsigned count[4];

    TEST_CASE("round robin: exact shares by weight");
    CHECK(fixture_init(&f, NULL, 4, w, -1, ""));
    tally(f.s, 10000, false, count, 4);
    CHECK(count[0] == 1000 && count[1] == 2000 && count[2] == 3000 && count[3] == 4000);
    fixture_free(&f, true);

    TEST_CASE("round robin: smooth (5,1,1 interleaves)");
    static const unsigned w511[] = {5, 1, 1};
    CHECK(fixture_init(&f, NULL, 3, w511, -1, ""));
    int seq[7], run = 0, max_run = 0;
    for (int k = 0; k < 7; k++) {
        struct pick_ctx ctx = {0};
        seq[k] = backend_pick_at(f.s, &ctx, 1000, rnd());
        backend_release_at(f.s, seq[k], ATTEMPT_OK, 1000, 0);
        run = seq[k] == 0 ? run + 1 : 0;
        max_run = run > max_run ? run : max_run;
    }
    int ones = 0, twos = 0;
    for (int k = 0; k < 7; k++) {
        ones += seq[k] == 1;
        twos += seq[k] == 2;
    }
    CHECK(ones == 1 && twos == 1);
    CHECK(max_run <= 3);
    fixture_free(&f, true);

    TEST_CASE("round robin: an unhealthy endpoint's share is spread evenly");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1, ""));
    backend_endpoint(f.s, 2)->healthy = 0;
    tally(f.s, 9000, false, count, 4);
    CHECK(count[2] == 0);
    CHECK(count[0] == 3000 && count[1] == 3000 && count[3] == 3000);
    fixture_free(&f, true);
}

static void test_random_and_least_request(void)
{
    struct fixture f;
    static const unsigned w[] = {1, 2, 3, 4};
    unsigned count[4];

    TEST_CASE("random: shares by weight within 5%");
    CHECK(fixture_init(&f, NULL, 4, w, -1, "    locality_lb_policy: RANDOM\n"));
    tally(f.s, 100000, false, count, 4);
    CHECK(shares_match(count, w, 4, 0.05));
    fixture_free(&f, true);

    TEST_CASE("least request, idle: shares by weight within 5%");
    CHECK(fixture_init(&f, NULL, 4, w, -1, "    locality_lb_policy: LEAST_REQUEST\n"));
    tally(f.s, 100000, false, count, 4);
    CHECK(shares_match(count, w, 4, 0.05));
    fixture_free(&f, true);

    TEST_CASE("least request, loaded: two choices keep active counts level");
    CHECK(fixture_init(&f, NULL, 8, NULL, -1, "    locality_lb_policy: LEAST_REQUEST\n"));
    for (int k = 0; k < 4000; k++) {
        struct pick_ctx ctx = {0};
        int idx = backend_pick_at(f.s, &ctx, 1000, rnd());
        CHECK(idx >= 0);
        if (k % 3 == 0 && idx >= 0) /* a third finish at once, the rest stay in flight */
            backend_release_at(f.s, idx, ATTEMPT_OK, 1000, 0);
    }
    unsigned lo = ~0u, hi = 0;
    for (size_t i = 0; i < 8; i++) {
        unsigned a = backend_endpoint(f.s, i)->active;
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
    }
    CHECK(hi - lo <= 8); /* random choice would spread by tens */
    fixture_free(&f, true);

    TEST_CASE("weight 0 endpoints get nothing");
    static const unsigned w0[] = {0, 1, 1};
    CHECK(fixture_init(&f, NULL, 3, w0, -1, "    locality_lb_policy: RANDOM\n"));
    tally(f.s, 3000, false, count, 3);
    CHECK(count[0] == 0 && count[1] + count[2] == 3000);
    fixture_free(&f, true);
}

static void test_hash_policies(void)
{
    struct fixture f;
    static const unsigned w[] = {1, 1, 2, 4};
    unsigned count[4];

    TEST_CASE("ring hash: shares by weight within 10% (keys and no keys)");
    CHECK(fixture_init(&f, NULL, 4, w, -1,
                       "    locality_lb_policy: RING_HASH\n"
                       "    consistent_hash: {minimum_ring_size: 16384}\n"));
    tally(f.s, 100000, true, count, 4);
    CHECK(shares_match(count, w, 4, 0.10));
    tally(f.s, 100000, false, count, 4);
    CHECK(shares_match(count, w, 4, 0.10));
    fixture_free(&f, true);

    TEST_CASE("maglev: shares by weight within 5%");
    CHECK(fixture_init(&f, NULL, 4, w, -1, "    locality_lb_policy: MAGLEV\n"));
    tally(f.s, 100000, true, count, 4);
    CHECK(shares_match(count, w, 4, 0.05));
    fixture_free(&f, true);
}

/*
 * 10 endpoints, 10000 keys: remove one endpoint (a new config), or make it
 * unhealthy (same config), and count the keys that change endpoint.
 */
static void consistency(const char *policy_yaml, double max_other_moved)
{
    enum { N = 10, KEYS = 10000, GONE = 3 };
    struct fixture a, b;
    static int before[KEYS];
    unsigned moved = 0, moved_other = 0, on_gone = 0;
    CHECK(fixture_init(&a, NULL, N, NULL, -1, policy_yaml));
    CHECK(fixture_init(&b, NULL, N, NULL, GONE, policy_yaml));
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        int len = snprintf(key, sizeof key, "user-%d", k);
        struct pick_ctx ctx = {.has_hash = true, .hash = lb_hash64(key, (size_t)len, 0)};
        before[k] = backend_pick_at(a.s, &ctx, 1000, rnd());
        backend_release_at(a.s, before[k], ATTEMPT_OK, 1000, 0);
        int after = backend_pick_at(b.s, &ctx, 1000, rnd());
        backend_release_at(b.s, after, ATTEMPT_OK, 1000, 0);
        int after_addr = after >= GONE ? after + 1 : after; /* b lacks endpoint GONE */
        on_gone += before[k] == GONE;
        moved += after_addr != before[k];
        moved_other += before[k] != GONE && after_addr != before[k];
    }
    double share = (double)moved / KEYS;
    CHECK(on_gone > 0 && moved >= on_gone);
    CHECK(share > 0.07 && share < 0.13); /* about its 10% */
    CHECK((double)moved_other / KEYS <= max_other_moved);
    if (share <= 0.07 || share >= 0.13 || (double)moved_other / KEYS > max_other_moved)
        fprintf(stderr, "  moved %u (%u of other endpoints', %u were on the removed one)\n", moved,
                moved_other, on_gone);

    /* Unhealthy instead of removed: only its own keys move, and consistently. */
    backend_endpoint(a.s, GONE)->healthy = 0;
    unsigned moved_unhealthy_other = 0, inconsistent = 0;
    for (int k = 0; k < KEYS; k++) {
        char key[32];
        int len = snprintf(key, sizeof key, "user-%d", k);
        struct pick_ctx ctx = {.has_hash = true, .hash = lb_hash64(key, (size_t)len, 0)};
        int x = backend_pick_at(a.s, &ctx, 1000, rnd());
        backend_release_at(a.s, x, ATTEMPT_OK, 1000, 0);
        int y = backend_pick_at(a.s, &ctx, 1000, rnd());
        backend_release_at(a.s, y, ATTEMPT_OK, 1000, 0);
        moved_unhealthy_other += before[k] != GONE && x != before[k];
        inconsistent += x != y || x == GONE;
    }
    CHECK(moved_unhealthy_other == 0);
    CHECK(inconsistent == 0);
    fixture_free(&a, true);
    fixture_free(&b, true);
}

static void test_consistency_on_removal(void)
{
    TEST_CASE("ring hash: removing 1 of 10 endpoints moves about 10% of keys");
    consistency("    locality_lb_policy: RING_HASH\n", 0.0);
    TEST_CASE("maglev: removing 1 of 10 endpoints moves about 10% of keys");
    consistency("    locality_lb_policy: MAGLEV\n", 0.03);
}

static void test_pick_rules(void)
{
    struct fixture f;
    struct pick_ctx ctx = {0};

    TEST_CASE("hash policy: a tried endpoint is passed over while others can serve");
    CHECK(fixture_init(&f, NULL, 3, NULL, -1, "    locality_lb_policy: MAGLEV\n"));
    ctx = (struct pick_ctx){.has_hash = true, .hash = 12345};
    int first = backend_pick_at(f.s, &ctx, 1000, 1);
    CHECK(first >= 0);
    backend_release_at(f.s, first, ATTEMPT_CANCELLED, 1000, 0);
    ctx.tried[0] = 1ull << first;
    int second = backend_pick_at(f.s, &ctx, 1000, 1);
    CHECK(second >= 0 && second != first);
    backend_release_at(f.s, second, ATTEMPT_CANCELLED, 1000, 0);
    ctx.tried[0] = 7; /* all tried: any is better than none */
    int third = backend_pick_at(f.s, &ctx, 1000, 1);
    CHECK(third >= 0);
    backend_release_at(f.s, third, ATTEMPT_CANCELLED, 1000, 0);

    TEST_CASE("no usable endpoint: SY_ENOTFOUND");
    for (size_t i = 0; i < 3; i++)
        backend_endpoint(f.s, i)->healthy = 0;
    ctx = (struct pick_ctx){0};
    CHECK(backend_pick_at(f.s, &ctx, 1000, 1) == SY_ENOTFOUND);
    fixture_free(&f, true);

    TEST_CASE("max_concurrent_requests_per_endpoint: SY_ELIMIT when all are busy");
    CHECK(fixture_init(&f, NULL, 2, NULL, -1, "    max_concurrent_requests_per_endpoint: 1\n"));
    int a = backend_pick_at(f.s, &ctx, 1000, 1), b = backend_pick_at(f.s, &ctx, 1000, 2);
    CHECK(a >= 0 && b >= 0 && a != b);
    CHECK(backend_pick_at(f.s, &ctx, 1000, 3) == SY_ELIMIT);
    backend_release_at(f.s, b, ATTEMPT_OK, 1000, 0);
    CHECK(backend_pick_at(f.s, &ctx, 1000, 4) == b);
    backend_endpoint(f.s, (size_t)a)->healthy = 0; /* busy b, unhealthy a: still a limit */
    CHECK(backend_pick_at(f.s, &ctx, 1000, 5) == SY_ELIMIT);
    backend_endpoint(f.s, (size_t)b)->healthy = 0;
    CHECK(backend_pick_at(f.s, &ctx, 1000, 6) == SY_ENOTFOUND);
    fixture_free(&f, true);
}

/* ---- affinity
 * --------------------------------------------------------------------------------------- */

static void exchange_init(struct exchange *ex, const char *ip, uint16_t port)
{
    memset(ex, 0, sizeof *ex);
    arena_init(&ex->arena, 1 << 16);
    http_headers_init(&ex->req.headers, &ex->arena, 8);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ex->client_addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    inet_pton(AF_INET, ip, &sin->sin_addr);
}

static void add_header(struct exchange *ex, const char *name, const char *value)
{
    http_headers_add(&ex->req.headers, &ex->arena, name, strlen(name), value, strlen(value));
}

static void test_affinity_keys(void)
{
    struct fixture f;
    struct exchange e1, e2, e3;
    uint64_t h1 = 0, h2 = 0, h3 = 0;

    TEST_CASE("CLIENT_IP: the address, not the port");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1, "    session_affinity: CLIENT_IP\n"));
    exchange_init(&e1, "192.0.2.1", 1000);
    exchange_init(&e2, "192.0.2.1", 2000);
    exchange_init(&e3, "192.0.2.2", 1000);
    CHECK(backend_request_hash(f.s, &e1.req, &e1.client_addr, &h1) &&
          backend_request_hash(f.s, &e2.req, &e2.client_addr, &h2) &&
          backend_request_hash(f.s, &e3.req, &e3.client_addr, &h3));
    CHECK(h1 == h2 && h1 != h3);
    /* ROUND_ROBIN with an affinity key: the key decides, every time. */
    struct pick_ctx ctx = {.has_hash = true, .hash = h1};
    int first = backend_pick_at(f.s, &ctx, 1000, rnd()), same = 1;
    backend_release_at(f.s, first, ATTEMPT_OK, 1000, 0);
    for (int k = 0; k < 50; k++) {
        int idx = backend_pick_at(f.s, &ctx, 1000, rnd());
        same &= idx == first;
        backend_release_at(f.s, idx, ATTEMPT_OK, 1000, 0);
    }
    CHECK(same);
    CHECK(backend_affinity_cookie(f.s, &e1.req, first, (char[64]){0}, 64) == 0);
    arena_free(&e1.arena);
    arena_free(&e2.arena);
    arena_free(&e3.arena);
    fixture_free(&f, true);

    TEST_CASE("HEADER_FIELD: the header's value; absent: no key");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1,
                       "    session_affinity: HEADER_FIELD\n"
                       "    consistent_hash: {http_header_name: x-user}\n"));
    exchange_init(&e1, "192.0.2.1", 1000);
    exchange_init(&e2, "192.0.2.9", 1000);
    exchange_init(&e3, "192.0.2.1", 1000);
    add_header(&e1, "x-user", "alice");
    add_header(&e2, "x-user", "alice");
    add_header(&e3, "x-other", "alice");
    CHECK(backend_request_hash(f.s, &e1.req, &e1.client_addr, &h1) &&
          backend_request_hash(f.s, &e2.req, &e2.client_addr, &h2));
    CHECK(h1 == h2 && h1 == lb_hash64("alice", 5, 0));
    CHECK(!backend_request_hash(f.s, &e3.req, &e3.client_addr, &h3));
    arena_free(&e1.arena);
    arena_free(&e2.arena);
    arena_free(&e3.arena);
    fixture_free(&f, true);

    TEST_CASE("HTTP_COOKIE: the cookie's value; set with its ttl when absent");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1,
                       "    locality_lb_policy: RING_HASH\n"
                       "    session_affinity: HTTP_COOKIE\n"
                       "    consistent_hash: {http_cookie: {name: sid, path: /app, ttl: 90s}}\n"));
    exchange_init(&e1, "192.0.2.1", 1000);
    exchange_init(&e2, "192.0.2.1", 1000);
    add_header(&e1, "cookie", "a=1; sid=\"s3cr3t\"; b=2");
    add_header(&e2, "cookie", "a=1");
    add_header(&e2, "cookie", "sid2=x; sidx=y");
    CHECK(backend_request_hash(f.s, &e1.req, &e1.client_addr, &h1) &&
          h1 == lb_hash64("s3cr3t", 6, 0));
    CHECK(!backend_request_hash(f.s, &e2.req, &e2.client_addr, &h2));
    char cookie[256];
    CHECK(backend_affinity_cookie(f.s, &e1.req, 0, cookie, sizeof cookie) == 0); /* the app's own */
    int n = backend_affinity_cookie(f.s, &e2.req, 2, cookie, sizeof cookie);
    CHECK(n > 0 && strncmp(cookie, "sid=", 4) == 0);
    CHECK(strstr(cookie, "; Path=/app; Max-Age=90; HttpOnly") != NULL);
    arena_free(&e1.arena);
    arena_free(&e2.arena);
    fixture_free(&f, true);

    TEST_CASE("HTTP_COOKIE without ttl: no cookie is generated");
    CHECK(fixture_init(&f, NULL, 2, NULL, -1,
                       "    session_affinity: HTTP_COOKIE\n"
                       "    consistent_hash: {http_cookie: {name: sid}}\n"));
    exchange_init(&e1, "192.0.2.1", 1000);
    CHECK(backend_affinity_cookie(f.s, &e1.req, 0, cookie, sizeof cookie) == 0);
    arena_free(&e1.arena);
    fixture_free(&f, true);
}

static void test_generated_cookie(void)
{
    struct fixture f;
    struct exchange ex;
    char cookie[256], header[300];
    uint64_t h = 0;

    TEST_CASE("GENERATED_COOKIE: set when absent, then routes to its endpoint");
    CHECK(fixture_init(&f, NULL, 5, NULL, -1,
                       "    session_affinity: GENERATED_COOKIE\n"
                       "    consistent_hash: {http_cookie: {ttl: 1h}}\n"));
    for (int idx = 0; idx < 5; idx++) {
        exchange_init(&ex, "192.0.2.1", 1000);
        CHECK(!backend_request_hash(f.s, &ex.req, &ex.client_addr, &h));
        int n = backend_affinity_cookie(f.s, &ex.req, idx, cookie, sizeof cookie);
        CHECK(n > 0 && strncmp(cookie, "sy=", 3) == 0 &&
              strstr(cookie, "; Path=/; Max-Age=3600; HttpOnly") != NULL);
        arena_free(&ex.arena);

        /* The client sends it back: the same endpoint, every time, and no new cookie. */
        exchange_init(&ex, "192.0.2.77", 1000);
        snprintf(header, sizeof header, "other=1; %.*s", (int)strcspn(cookie, ";"), cookie);
        add_header(&ex, "cookie", header);
        CHECK(backend_request_hash(f.s, &ex.req, &ex.client_addr, &h));
        bool same = true;
        for (int k = 0; k < 20; k++) {
            struct pick_ctx ctx = {.has_hash = true, .hash = h};
            int got = backend_pick_at(f.s, &ctx, 1000, rnd());
            same &= got == idx;
            backend_release_at(f.s, got, ATTEMPT_OK, 1000, 0);
        }
        CHECK(same);
        CHECK(backend_affinity_cookie(f.s, &ex.req, idx, cookie, sizeof cookie) == 0);

        /* Its endpoint is down: another serves, and the response re-pins the client. */
        backend_endpoint(f.s, (size_t)idx)->healthy = 0;
        struct pick_ctx ctx = {.has_hash = true, .hash = h};
        int other = backend_pick_at(f.s, &ctx, 1000, rnd());
        CHECK(other >= 0 && other != idx);
        backend_release_at(f.s, other, ATTEMPT_OK, 1000, 0);
        CHECK(backend_affinity_cookie(f.s, &ex.req, other, cookie, sizeof cookie) > 0);
        backend_endpoint(f.s, (size_t)idx)->healthy = 1;
        arena_free(&ex.arena);
    }
    fixture_free(&f, true);

    TEST_CASE("GENERATED_COOKIE without ttl: a session cookie");
    CHECK(fixture_init(&f, NULL, 2, NULL, -1, "    session_affinity: GENERATED_COOKIE\n"));
    exchange_init(&ex, "192.0.2.1", 1000);
    CHECK(backend_affinity_cookie(f.s, &ex.req, 1, cookie, sizeof cookie) > 0);
    CHECK(strstr(cookie, "Max-Age") == NULL && strstr(cookie, "; Path=/; HttpOnly") != NULL);
    CHECK(backend_affinity_cookie(f.s, &ex.req, 1, cookie, 10) == 0); /* does not fit: none */
    arena_free(&ex.arena);
    fixture_free(&f, true);
}

/* ---- outlier detection
 * --------------------------------------------------------------------------- */

static void fail_n(struct service_rt *s, int idx, int n, enum attempt_outcome o, uint64_t now)
{
    struct pick_ctx ctx = {0};
    for (int k = 0; k < n; k++) {
        __atomic_add_fetch(&backend_endpoint(s, (size_t)idx)->active, 1, __ATOMIC_RELAXED);
        backend_release_at(s, idx, o, now, rnd());
    }
    (void)ctx;
}

static void test_outlier(void)
{
    struct fixture f;
    struct pick_ctx ctx = {0};
    const uint64_t t0 = 1000000;
    unsigned count[4];

    TEST_CASE("outlier: 3 gateway failures eject for base_ejection_time");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1,
                       "    outlier_detection: {base_ejection_time: 10s, interval: 1s}\n"));
    struct endpoint_state *e = backend_endpoint(f.s, 1);
    fail_n(f.s, 1, 2, ATTEMPT_GATEWAY_FAILURE, t0);
    CHECK(e->ejected_until_ms == 0);
    fail_n(f.s, 1, 1, ATTEMPT_OK, t0); /* a success resets the count */
    fail_n(f.s, 1, 2, ATTEMPT_GATEWAY_FAILURE, t0);
    CHECK(e->ejected_until_ms == 0);
    fail_n(f.s, 1, 1, ATTEMPT_GATEWAY_FAILURE, t0);
    CHECK(e->ejected_until_ms == t0 + 10000 && e->ejections == 1);
    CHECK(backend_endpoint_ejected(e, t0 + 9999) && !backend_endpoint_ejected(e, t0 + 10000));

    TEST_CASE("outlier: ejected endpoints get nothing, and come back after their time");
    for (int k = 0; k < 400; k++) {
        int idx = backend_pick_at(f.s, &ctx, t0 + 5000, rnd());
        CHECK(idx != 1);
        backend_release_at(f.s, idx, ATTEMPT_OK, t0 + 5000, 0);
    }
    memset(count, 0, sizeof count);
    for (int k = 0; k < 400; k++) {
        int idx = backend_pick_at(f.s, &ctx, t0 + 10000, rnd());
        count[idx]++;
        backend_release_at(f.s, idx, ATTEMPT_OK, t0 + 10000, 0);
    }
    CHECK(count[1] == 100);

    TEST_CASE("outlier: the second ejection lasts twice as long; quiet intervals decay it");
    uint64_t t1 = t0 + 11000; /* 1 s after the return: multiplier 1 - 1 + 1 = 1 */
    fail_n(f.s, 1, 3, ATTEMPT_GATEWAY_FAILURE, t1);
    CHECK(e->ejected_until_ms == t1 + 10000 && e->ejections == 1);
    uint64_t t2 = e->ejected_until_ms; /* straight after the return: multiplier 2 */
    fail_n(f.s, 1, 3, ATTEMPT_GATEWAY_FAILURE, t2);
    CHECK(e->ejected_until_ms == t2 + 20000 && e->ejections == 2);

    TEST_CASE("outlier: max_ejection_percent (50% of 4) stops the third ejection");
    fail_n(f.s, 2, 3, ATTEMPT_GATEWAY_FAILURE, t2);
    CHECK(backend_endpoint_ejected(backend_endpoint(f.s, 2), t2));
    fail_n(f.s, 3, 3, ATTEMPT_GATEWAY_FAILURE, t2);
    CHECK(!backend_endpoint_ejected(backend_endpoint(f.s, 3), t2));

    TEST_CASE("outlier: plain 5xx count only for consecutive_errors (enforcing 0 by default)");
    e = backend_endpoint(f.s, 0);
    fail_n(f.s, 0, 20, ATTEMPT_5XX, t2 + 100000);
    CHECK(e->ejected_until_ms == 0);
    CHECK(e->consecutive_gateway_failure == 0);
    fail_n(f.s, 0, 2, ATTEMPT_CANCELLED, t2 + 100000);
    CHECK(e->consecutive_errors == 20 % 5 || e->consecutive_errors == 0);
    fixture_free(&f, true);

    TEST_CASE("outlier: enforcing_consecutive_errors 100 ejects after 5 errors");
    CHECK(fixture_init(&f, NULL, 4, NULL, -1,
                       "    outlier_detection: {enforcing_consecutive_errors: 100,\n"
                       "                        enforcing_consecutive_gateway_failure: 0}\n"));
    e = backend_endpoint(f.s, 0);
    fail_n(f.s, 0, 4, ATTEMPT_5XX, t0);
    fail_n(f.s, 0, 3, ATTEMPT_GATEWAY_FAILURE, t0); /* gateway detector not enforced... */
    CHECK(backend_endpoint_ejected(e, t0));         /* ...but they are errors too: 5th ejects */
    CHECK(e->ejected_until_ms == t0 + 30000);       /* default base_ejection_time */
    fixture_free(&f, true);

    TEST_CASE("outlier: a single endpoint is never ejected (max_ejection_percent 50)");
    CHECK(fixture_init(&f, NULL, 1, NULL, -1, ""));
    fail_n(f.s, 0, 10, ATTEMPT_GATEWAY_FAILURE, t0);
    CHECK(!backend_endpoint_ejected(backend_endpoint(f.s, 0), t0));
    fixture_free(&f, true);
}

/* ---- breakers, registry, draining -------------------------------------------------------------
 */

static void test_breakers(void)
{
    struct fixture f;
    struct backend_service_load load;

    TEST_CASE("circuit breakers: max_requests, max_pending_requests, max_retries");
    CHECK(fixture_init(&f, NULL, 2, NULL, -1,
                       "    circuit_breakers: {max_requests: 2, max_pending_requests: 0,\n"
                       "                       max_retries: 1, max_connections: 2}\n"));
    CHECK(backend_cb_request_enter(f.s) && backend_cb_request_enter(f.s));
    CHECK(!backend_cb_request_enter(f.s));
    backend_cb_request_leave(f.s);
    CHECK(backend_cb_request_enter(f.s));
    CHECK(!backend_cb_pending_enter(f.s));
    CHECK(backend_cb_retry_enter(f.s) && !backend_cb_retry_enter(f.s));
    backend_service_load(f.s, &load);
    CHECK(load.requests == 2 && load.pending == 0 && load.retries == 1);
    backend_cb_retry_leave(f.s);
    backend_cb_request_leave(f.s);
    backend_cb_request_leave(f.s);
    backend_cb_request_leave(f.s); /* one too many: stays at 0 */
    backend_service_load(f.s, &load);
    CHECK(load.requests == 0 && load.retries == 0);

    TEST_CASE("circuit breakers: max_connections over the service's endpoints");
    struct endpoint_state *c1 = backend_cb_connection_enter(f.s, 0);
    struct endpoint_state *c2 = backend_cb_connection_enter(f.s, 1);
    CHECK(c1 && c2 && !backend_cb_connection_enter(f.s, 0));
    backend_service_load(f.s, &load);
    CHECK(load.connections == 2);
    backend_cb_connection_leave(c1);
    struct endpoint_state *c3 = backend_cb_connection_enter(f.s, 0);
    CHECK(c3 != NULL);
    /* A connection keeps its endpoint state alive past the runtime. */
    struct backend_registry *reg = f.reg;
    backend_services_free(f.arr, f.cfg->n_backend_services);
    f.arr = NULL;
    CHECK(c2->connections == 1 && strcmp(c2->address, "10.0.0.2:80") == 0);
    backend_cb_connection_leave(c2);
    backend_cb_connection_leave(c3);
    fixture_free(&f, false);
    backend_registry_free(reg);
}

static void test_registry_and_draining(void)
{
    struct fixture a, b;
    struct backend_registry *reg = backend_registry_new();

    TEST_CASE("registry: an endpoint that stays keeps its state across configs");
    CHECK(fixture_init(&a, reg, 3, NULL, -1, "    connection_draining: {draining_timeout: 5s}\n"));
    backend_endpoint(a.s, 0)->healthy = 0;
    backend_endpoint(a.s, 0)->health_known = 1;
    CHECK(fixture_init(&b, reg, 3, NULL, 2, "    connection_draining: {draining_timeout: 5s}\n"));
    CHECK(backend_endpoint(b.s, 0) == backend_endpoint(a.s, 0));
    CHECK(backend_endpoint_health(backend_endpoint(b.s, 0)) == ENDPOINT_HEALTH_UNHEALTHY);
    CHECK(backend_endpoint_health(backend_endpoint(b.s, 1)) == ENDPOINT_HEALTH_UNKNOWN);
    CHECK(strcmp(endpoint_health_str(ENDPOINT_HEALTH_HEALTHY), "healthy") == 0);

    TEST_CASE("draining: a removed endpoint gets a deadline in the old runtime");
    CHECK(backend_endpoint_drain_deadline_ms(a.s, 2) == 0);
    backend_services_publish(b.arr, 1);
    uint64_t d = backend_endpoint_drain_deadline_ms(a.s, 2);
    CHECK(d > 5000 && d == backend_endpoint(a.s, 2)->retired_at_ms + 5000);
    CHECK(backend_endpoint_drain_deadline_ms(a.s, 0) == 0);
    backend_services_publish(a.arr, 1); /* it came back */
    CHECK(backend_endpoint_drain_deadline_ms(a.s, 2) == 0);
    fixture_free(&b, false);
    fixture_free(&a, false);
    backend_registry_free(reg);
}

static void test_capacity_waiters(void)
{
    struct fixture a, b;
    struct backend_registry *reg = backend_registry_new();
    const char *limit = "    max_concurrent_requests_per_endpoint: 1\n";

    TEST_CASE("capacity waiters: counted per worker slot, shared across runtimes by name");
    CHECK(fixture_init(&a, reg, 1, NULL, -1, limit));
    CHECK(fixture_init(&b, reg, 1, NULL, -1, limit)); /* a reload of the same service */
    CHECK(backend_capacity_waiters(a.s) == 0);
    backend_capacity_wait_enter(a.s, 3);
    backend_capacity_wait_enter(a.s, 3);
    backend_capacity_wait_enter(b.s, 70); /* worker ids fold onto 64 slots: 70 -> 6 */
    CHECK(backend_capacity_waiters(a.s) == ((1ull << 3) | (1ull << 6)));
    CHECK(backend_capacity_waiters(b.s) == backend_capacity_waiters(a.s));
    backend_capacity_wait_leave(a.s, 3);
    CHECK(backend_capacity_waiters(b.s) == ((1ull << 3) | (1ull << 6)));
    backend_capacity_wait_leave(b.s, 3);
    backend_capacity_wait_leave(a.s, 70);
    CHECK(backend_capacity_waiters(a.s) == 0);

    TEST_CASE("capacity waiters: a release with a waiter names its worker");
    struct pick_ctx ctx = {0};
    int idx = backend_pick_at(a.s, &ctx, 1000, 1);
    CHECK(idx == 0);
    CHECK(backend_pick_at(b.s, &ctx, 1000, 2) == SY_ELIMIT); /* same endpoint, other runtime */
    backend_capacity_wait_enter(b.s, 1);
    CHECK(backend_pick_at(b.s, &ctx, 1000, 2) == SY_ELIMIT); /* still busy: stays queued */
    backend_release_at(a.s, idx, ATTEMPT_OK, 1000, 0);
    CHECK(backend_capacity_waiters(a.s) == 1ull << 1); /* wake worker 1 */
    CHECK(backend_pick_at(b.s, &ctx, 1000, 2) == 0);
    backend_capacity_wait_leave(b.s, 1);
    backend_release_at(b.s, 0, ATTEMPT_OK, 1000, 0);
    CHECK(backend_capacity_waiters(a.s) == 0);

    TEST_CASE("capacity waiters: the entry lives while a runtime of that name does");
    fixture_free(&a, false);
    backend_capacity_wait_enter(b.s, 2);
    CHECK(backend_capacity_waiters(b.s) == 1ull << 2);
    backend_capacity_wait_leave(b.s, 2);
    fixture_free(&b, false);
    backend_registry_free(reg);
}

static void test_endpoint_stats(void)
{
    struct fixture f;
    const uint64_t t0 = 1000000;
    TEST_CASE("endpoint stats: requests, 5xx, failures, latency buckets, ejections");
    struct backend_registry *reg = backend_registry_new();
    backend_registry_set_workers(reg, 2); /* counter copies: shared, worker 0, worker 1 */
    CHECK(fixture_init(&f, reg, 2, NULL, -1,
                       "    outlier_detection: {base_ejection_time: 10s, interval: 1s}\n"));
    struct endpoint_state *e = backend_endpoint(f.s, 0);
    struct endpoint_stats st;
    backend_endpoint_stats(e, &st);
    CHECK(st.requests == 0 && st.latency_count == 0 && st.ejections == 0);
    struct worker w0 = {.id = 0}, w1 = {.id = 1}, w7 = {.id = 7};
    backend_endpoint_observe(e, &w0, 200, 500);     /* 0.5 ms: bucket 0 (<= 1 ms) */
    backend_endpoint_observe(e, &w1, 503, 7000);    /* 7 ms: bucket 2 (<= 10 ms) */
    backend_endpoint_observe(e, NULL, 0, 40000000); /* 40 s failure: +Inf */
    backend_endpoint_observe(e, &w7, 500, 1000);    /* exactly 1 ms: bucket 0 (no copy: shared) */
    /* Each worker counted in its own copy, the others in the shared one. */
    CHECK(e->n_counters == 3);
    CHECK(e->counters[1].latency_bucket[0] == 1 && e->counters[1].responses_5xx == 0);
    CHECK(e->counters[2].responses_5xx == 1 && e->counters[2].latency_us_sum == 7000);
    CHECK(e->counters[0].failures == 1 && e->counters[0].responses_5xx == 1);
    struct pick_ctx pc = {.w = &w1};
    CHECK(backend_pick(f.s, &pc) >= 0 && backend_pick(f.s, &pc) >= 0);
    CHECK(backend_endpoint_requests(e) + backend_endpoint_requests(backend_endpoint(f.s, 1)) == 2);
    CHECK(e->counters[0].requests_total == 0);
    backend_endpoint_stats(e, &st);
    CHECK(st.responses_5xx == 2 && st.failures == 1);
    CHECK(st.latency_bucket[0] == 2 && st.latency_bucket[2] == 1);
    CHECK(st.latency_bucket[STATS_N_BUCKETS] == 1 && st.latency_count == 4);
    CHECK(st.latency_us_sum == 500 + 7000 + 40000000 + 1000);
    fail_n(f.s, 0, 3, ATTEMPT_GATEWAY_FAILURE, t0);
    backend_endpoint_stats(e, &st);
    CHECK(st.ejections == 1);
    CHECK(stats_bucket_of(0) == 0 && stats_bucket_of(30000000) == STATS_N_BUCKETS - 1 &&
          stats_bucket_of(30000001) == STATS_N_BUCKETS);
    fixture_free(&f, true);
}

void test_backend_suite(void)
{
    test_hash64();
    test_round_robin();
    test_random_and_least_request();
    test_hash_policies();
    test_consistency_on_removal();
    test_pick_rules();
    test_affinity_keys();
    test_generated_cookie();
    enum sy_log_level lvl = sy_log_get_level();
    sy_log_set_level(SY_LOG_ERROR); /* ejections are logged at warn */
    test_outlier();
    test_endpoint_stats();
    sy_log_set_level(lvl);
    test_breakers();
    test_registry_and_draining();
    test_capacity_waiters();
}
