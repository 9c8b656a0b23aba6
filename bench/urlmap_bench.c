/*
 * urlmap_bench.c — microbenchmark of url_map_match().
 *
 * Builds (in memory, without the config loader) a url map of 1000 route
 * rules mixing prefix, full-path, regex, header and query matches (ten of
 * the regexes have no literal start, so every request tries them), plus
 * exact and wildcard host rules and a path-rule matcher; then times N
 * matches over a mixed request set (early, late and missed rules, default
 * routes) and prints nanoseconds per match (best and median of 7 runs).
 * It also checks that the timed loop allocates nothing (mallinfo2) and that each request routes
 * where it should.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Isrc bench/urlmap_bench.c src/urlmap/[a-z]*.c \
 *      src/core/parse.c src/core/errors.c \
 *      $(pkg-config --cflags --libs libpcre2-8) -lpthread -o build/urlmap_bench
 *   build/urlmap_bench [N]         (N matches per run, default 1000000)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "urlmap/urlmap.h"

#define N_RULES    1000
#define N_SERVICES 50
#define N_REQUESTS 64
#define N_REPS     7 /* timed runs; the best and the median are printed */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static char *xfmt(const char *fmt, int i)
{
    char buf[128];
    snprintf(buf, sizeof(buf), fmt, i);
    return strdup(buf);
}

static struct cfg_backend_service services[N_SERVICES];

/* Rule i: kind i % 5, except that every 100th is a case-insensitive regex
 * and every 100th a regex without a literal start. */
static void rule_init(struct cfg_route_rule *rr, int i)
{
    struct cfg_match_rule *mr = xcalloc(1, sizeof(*mr));
    rr->priority = i;
    rr->match_rules = mr;
    rr->n_match_rules = 1;
    rr->action.service = &services[i % N_SERVICES];
    if (i % 100 == 49) {
        mr->path_kind = CFG_PATH_REGEX;
        mr->path = xfmt("(?i)/gen%d/.*", i);
        return;
    }
    if (i % 100 == 99) {
        mr->path_kind = CFG_PATH_REGEX; /* no literal start: tried for every request */
        mr->path = xfmt("/v[0-9]+/gen%d/.*", i);
        return;
    }
    switch (i % 5) {
    case 0:
        mr->path_kind = CFG_PATH_PREFIX;
        mr->path = xfmt("/svc%d/", i);
        break;
    case 1:
        mr->path_kind = CFG_PATH_FULL;
        mr->path = xfmt("/full/%d", i);
        break;
    case 2:
        mr->path_kind = CFG_PATH_REGEX;
        mr->path = xfmt("/re%d/[0-9]+/item", i);
        break;
    case 3:
        mr->path_kind = CFG_PATH_PREFIX;
        mr->path = xfmt("/hdr%d/", i);
        mr->header_matches = xcalloc(1, sizeof(*mr->header_matches));
        mr->n_header_matches = 1;
        mr->header_matches[0] = (struct cfg_header_match){
            .header_name = "x-tenant", .kind = CFG_HDR_EXACT, .value = xfmt("t%d", i)};
        break;
    default:
        mr->path_kind = CFG_PATH_PREFIX;
        mr->path = xfmt("/q%d/", i);
        mr->query_parameter_matches = xcalloc(1, sizeof(*mr->query_parameter_matches));
        mr->n_query_parameter_matches = 1;
        mr->query_parameter_matches[0] =
            (struct cfg_query_match){.name = "v", .kind = CFG_QUERY_EXACT, .value = xfmt("%d", i)};
        break;
    }
}

static void path_rules_init(struct cfg_path_matcher *pm)
{
    static const char *paths[] = {"/static/*", "/static/img/*", "/index.html", "/api/*"};
    pm->n_path_rules = 4;
    pm->path_rules = xcalloc(4, sizeof(*pm->path_rules));
    for (size_t i = 0; i < 4; i++) {
        pm->path_rules[i].paths = (char **)&paths[i];
        pm->path_rules[i].n_paths = 1;
        pm->path_rules[i].action.service = &services[i];
    }
}

/* Hosts: 20 exact and 10 wildcards to the route rules, one to path rules. */
static void url_map_init(struct cfg_url_map *um)
{
    for (int i = 0; i < N_SERVICES; i++)
        services[i].name = xfmt("svc-%d", i);
    um->name = "bench";
    um->default_action.service = &services[0];
    um->n_path_matchers = 2;
    um->path_matchers = xcalloc(2, sizeof(*um->path_matchers));
    struct cfg_path_matcher *routes = &um->path_matchers[0];
    routes->name = "routes";
    routes->default_action.service = &services[1];
    routes->n_route_rules = N_RULES;
    routes->route_rules = xcalloc(N_RULES, sizeof(*routes->route_rules));
    for (int i = 0; i < N_RULES; i++)
        rule_init(&routes->route_rules[i], i);
    um->path_matchers[1].name = "paths";
    um->path_matchers[1].default_action.service = &services[2];
    path_rules_init(&um->path_matchers[1]);

    um->n_host_rules = 2;
    um->host_rules = xcalloc(2, sizeof(*um->host_rules));
    um->host_rules[0].n_hosts = 30;
    um->host_rules[0].hosts = xcalloc(30, sizeof(char *));
    for (int i = 0; i < 20; i++)
        um->host_rules[0].hosts[i] = xfmt("api%d.example.com", i);
    for (int i = 0; i < 10; i++)
        um->host_rules[0].hosts[20 + i] = xfmt("*.zone%d.example.net", i);
    um->host_rules[0].path_matcher = routes;
    um->host_rules[1].n_hosts = 1;
    um->host_rules[1].hosts = xcalloc(1, sizeof(char *));
    um->host_rules[1].hosts[0] = "www.example.org";
    um->host_rules[1].path_matcher = &um->path_matchers[1];
}

struct breq {
    struct url_map_request req;
    struct http_header hv[6];
    struct http_headers hs;
    const struct cfg_backend_service *want;
};

/* Request j targets rule (j * 157) % N_RULES, or is a miss / path rule. */
static void request_init(struct breq *b, int j, const struct cfg_url_map *um)
{
    int i = (j * 157) % N_RULES;
    char *host =
        j % 3 == 0 ? xfmt("api%d.example.com:443", j % 20) : xfmt("a.b.zone%d.example.net", j % 10);
    char *path = NULL, *query = NULL, *tenant = xfmt("t%d", j % 4 == 3 ? i : -1);
    b->want = &services[i % N_SERVICES];
    if (i % 100 == 49)
        path = xfmt("/GEN%d/x/y", i);
    else if (i % 100 == 99)
        path = xfmt("/v2/gen%d/x", i);
    else if (i % 5 == 0)
        path = xfmt("/svc%d/some/resource", i);
    else if (i % 5 == 1)
        path = xfmt("/full/%d", i);
    else if (i % 5 == 2)
        path = xfmt("/re%d/12345/item", i);
    else if (i % 5 == 3)
        path = xfmt("/hdr%d/x", i);
    else
        path = xfmt("/q%d/x", i), query = xfmt("a=1&v=%d&b=2", i);
    if (i % 5 == 3 && j % 4 != 3)
        b->want = &services[1]; /* header mismatch: the path matcher default */
    if (j % 16 == 15) {
        path = xfmt("/nothing/%d/here", j);
        b->want = &services[1];
    }
    if (j % 16 == 7) {
        free(host);
        host = strdup("www.example.org");
        path = xfmt(j % 32 == 7 ? "/static/img/%d.png" : "/api/v%d", j);
        b->want = um->path_matchers[1].path_rules[j % 32 == 7 ? 1 : 3].action.service;
    }
    b->hv[0] = (struct http_header){"user-agent", "bench/1.0", 10, 9};
    b->hv[1] = (struct http_header){"accept", "*/*", 6, 3};
    b->hv[2] = (struct http_header){"x-request-id", "0123456789abcdef", 12, 16};
    b->hv[3] = (struct http_header){"x-tenant", tenant, 8, (uint32_t)strlen(tenant)};
    b->hs = (struct http_headers){.v = b->hv, .n = 4, .cap = 6};
    b->req = (struct url_map_request){
        .method = "GET",
        .method_len = 3,
        .scheme = "https",
        .scheme_len = 5,
        .authority = host,
        .authority_len = strlen(host),
        .path = path,
        .path_len = strlen(path),
        .query = query,
        .query_len = query ? strlen(query) : 0,
        .headers = &b->hs,
    };
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    static struct cfg_url_map um;
    static struct breq reqs[N_REQUESTS];
    url_map_init(&um);
    double t0 = now_ns();
    struct url_map *m = url_map_compile(&um);
    double t1 = now_ns();
    if (!m) {
        fprintf(stderr, "url_map_compile failed\n");
        return 1;
    }
    int bad = 0;
    for (int j = 0; j < N_REQUESTS; j++) {
        struct url_map_result res;
        request_init(&reqs[j], j, &um);
        url_map_match(m, &reqs[j].req, (uint32_t)j, &res); /* also warms the thread state */
        if (res.service != reqs[j].want) {
            fprintf(stderr, "request %d (%s) routed to %s, want %s\n", j, reqs[j].req.path,
                    res.service ? res.service->name : "(none)", reqs[j].want->name);
            bad++;
        }
    }
    struct mallinfo2 before = mallinfo2();
    double ns[N_REPS];
    size_t sink = 0;
    for (int rep = 0; rep < N_REPS; rep++) {
        double t2 = now_ns();
        for (long k = 0; k < n; k++) {
            struct url_map_result res;
            url_map_match(m, &reqs[k % N_REQUESTS].req, (uint32_t)k, &res);
            sink += res.matched_prefix_len;
        }
        ns[rep] = (now_ns() - t2) / (double)n;
    }
    struct mallinfo2 after = mallinfo2();
    qsort(ns, N_REPS, sizeof(ns[0]), cmp_double);
    printf("url map: %d route rules, 31 host patterns; compile %.2f ms\n", N_RULES,
           (t1 - t0) / 1e6);
    printf("%d x %ld matches over %d requests: best %.1f ns/match, median %.1f (checksum %zu)\n",
           N_REPS, n, N_REQUESTS, ns[0], ns[N_REPS / 2], sink);
    printf("heap in use during matching: %+lld bytes\n",
           (long long)after.uordblks - (long long)before.uordblks);
    url_map_free(m);
    return bad || after.uordblks != before.uordblks ? 1 : 0;
}
