/*
 * test_urlmap_trace.c — url_map_match_traced(): the trace `switchyard
 * explain` and `diff` read. The traced match must decide exactly what
 * url_map_match decides (checked on a few thousand generated requests),
 * and its events must tell the decision truthfully: one HOST event first;
 * every route rule up to the one that matched, in priority order, each once;
 * a rule the route index passed over fails on its path; a MATCH_RULE's
 * failed condition exists; exactly one CHOSEN path pattern when a path rule
 * decided; DEFAULT exactly when no rule did. (SHADOWED, a pattern listed
 * twice, needs a hand-built config: the loader refuses duplicate paths.)
 */
#include <stdlib.h>

#include "config/config.h"
#include "test.h"
#include "urlmap/urlmap.h"

#define MAX_EVENTS 256

static const char trace_yaml[] =
    "listeners: [{name: l, address: \"127.0.0.1:0\", url_map: m}]\n"
    "backend_services:\n"
    "  - {name: def, endpoints: [{address: \"127.0.0.1:9001\"}]}\n"
    "  - {name: a, endpoints: [{address: \"127.0.0.1:9001\"}]}\n"
    "  - {name: b, endpoints: [{address: \"127.0.0.1:9001\"}]}\n"
    "  - {name: c, endpoints: [{address: \"127.0.0.1:9001\"}]}\n"
    "url_maps:\n"
    "  - name: m\n"
    "    default_service: def\n"
    "    host_rules:\n"
    "      - {hosts: [\"r.test\", \"*.r.test\"], path_matcher: routes}\n"
    "      - {hosts: [\"r.test:8080\"], path_matcher: paths}\n"
    "      - {hosts: [\"p.test\", \"*.p.test\"], path_matcher: paths}\n"
    "      - {hosts: [\"*\"], path_matcher: any}\n"
    "    path_matchers:\n"
    "      - name: routes\n"
    "        default_service: def\n"
    "        route_rules:\n"
    "          - {priority: 1, match_rules: [{prefix_match: /api/v1/, header_matches: "
    "[{header_name: x-h, exact_match: \"1\"}]}], service: a}\n"
    "          - {priority: 2, match_rules: [{prefix_match: /img/}], service: b}\n"
    "          - {priority: 3, match_rules: [{full_path_match: /exact}], service: c}\n"
    "          - {priority: 4, match_rules: [{prefix_match: /api/, query_parameter_matches: "
    "[{name: q, present_match: true}]}, {prefix_match: /API/, ignore_case: true, "
    "header_matches: [{header_name: \":method\", exact_match: POST}]}], service: b}\n"
    "          - {priority: 5, match_rules: [{header_matches: [{header_name: x-any, "
    "present_match: true}]}], service: c}\n"
    "          - {priority: 6, match_rules: [{regex_match: \"/api/v[0-9]+/.*\"}], "
    "route_action: {weighted_backend_services: [{backend_service: a, weight: 1}, "
    "{backend_service: b, weight: 3}]}}\n"
    "          - {priority: 7, match_rules: [{prefix_match: /img}], service: a}\n"
    "      - name: paths\n"
    "        default_service: def\n"
    "        path_rules:\n"
    "          - {paths: [\"/x/*\", \"/x\"], service: a}\n"
    "          - {paths: [\"/x/y/*\"], service: b}\n"
    "          - {paths: [\"/x/y/z\"], service: c}\n"
    "      - {name: any, default_service: c}\n"
    "  - name: m2\n"
    "    default_service: def\n"
    "    host_rules: [{hosts: [\"only.test\"], path_matcher: any}]\n"
    "    path_matchers: [{name: any, default_service: c}]\n";

struct trace_log {
    struct url_map_trace_event v[MAX_EVENTS];
    size_t n;
};

static void on_event(void *ctx, const struct url_map_trace_event *e)
{
    struct trace_log *t = ctx;
    if (t->n < MAX_EVENTS)
        t->v[t->n] = *e;
    t->n++;
}

struct treq {
    const char *host, *path, *query, *method;
    struct http_header hv[2];
    struct http_headers hs;
    struct url_map_request r;
};

static void treq_init(struct treq *q, const char *host, const char *path, const char *query,
                      const char *method, const char *h1, const char *h1v)
{
    q->hs = (struct http_headers){q->hv, 0, 2};
    if (h1)
        q->hv[q->hs.n++] =
            (struct http_header){h1, h1v, (uint32_t)strlen(h1), (uint32_t)strlen(h1v)};
    q->r = (struct url_map_request){
        .method = method,
        .method_len = strlen(method),
        .scheme = "http",
        .scheme_len = 4,
        .authority = host,
        .authority_len = host ? strlen(host) : 0,
        .path = path,
        .path_len = strlen(path),
        .query = query,
        .query_len = query ? strlen(query) : 0,
        .headers = &q->hs,
    };
}

/* The invariants of one trace against the untraced result. */
static void check_trace(const struct url_map *m, const struct url_map_request *r, uint32_t rand)
{
    struct url_map_result plain, traced;
    struct trace_log t = {.n = 0};
    struct url_map_trace tr = {.on_event = on_event, .ctx = &t};
    url_map_match(m, r, rand, &plain);
    url_map_match_traced(m, r, rand, &traced, &tr);
    CHECK(memcmp(&plain, &traced, sizeof plain) == 0);
    CHECK(t.n >= 1 && t.n <= MAX_EVENTS);
    if (t.n < 1 || t.n > MAX_EVENTS)
        return;
    CHECK(t.v[0].kind == URL_MAP_TRACE_HOST);
    const struct cfg_path_matcher *pm = t.v[0].path_matcher;
    size_t next_rule = 0, chosen = 0, defaults = 0, hosts = 0;
    const struct cfg_route_action *decided = NULL;
    for (size_t i = 0; i < t.n; i++) {
        const struct url_map_trace_event *e = &t.v[i];
        hosts += e->kind == URL_MAP_TRACE_HOST;
        defaults += e->kind == URL_MAP_TRACE_DEFAULT;
        if (e->kind == URL_MAP_TRACE_ROUTE_RULE) {
            CHECK(e->route_rule_index == next_rule); /* each rule, once, in order */
            next_rule++;
            CHECK(!(e->matched && e->skipped_by_index));
            if (e->matched)
                decided = &pm->route_rules[e->route_rule_index].action;
            CHECK(decided == NULL || i == t.n - 1 || t.v[i + 1].kind != URL_MAP_TRACE_ROUTE_RULE);
        }
        if (e->kind == URL_MAP_TRACE_MATCH_RULE) {
            const struct cfg_match_rule *mr =
                &pm->route_rules[e->route_rule_index].match_rules[e->match_rule_index];
            CHECK(e->matched == (e->cond == URL_MAP_COND_NONE));
            if (e->skipped_by_index) /* the index may only drop rules whose path fails */
                CHECK(e->cond == URL_MAP_COND_PATH);
            if (e->cond == URL_MAP_COND_HEADER)
                CHECK(e->cond_index < mr->n_header_matches);
            if (e->cond == URL_MAP_COND_QUERY)
                CHECK(e->cond_index < mr->n_query_parameter_matches);
        }
        if (e->kind == URL_MAP_TRACE_PATH_PATTERN && e->pattern_state == URL_MAP_PATTERN_CHOSEN) {
            chosen++;
            decided = &pm->path_rules[e->path_rule_index].action;
        }
    }
    CHECK(hosts == 1);
    CHECK(chosen <= 1);
    if (pm && pm->n_route_rules && !decided)
        CHECK(next_rule == pm->n_route_rules); /* no match: every rule was reported */
    CHECK(defaults == (decided ? 0u : 1u));
    if (decided)
        CHECK(traced.action == decided);
}

static const char *const hosts[] = {"r.test", "a.r.test", "R.TEST:80",  "r.test:8080",
                                    "p.test", "x.p.test", "other.test", NULL};
static const char *const paths[] = {"/api/v1/x", "/api/v2/y", "/API/z", "/api/", "/img/a",
                                    "/img",      "/imgx",     "/exact", "/x",    "/x/",
                                    "/x/y/z",    "/x/y/q",    "/",      "/other"};
static const char *const queries[] = {NULL, "q", "q=1&r=2", "r=1"};
static const char *const methods[] = {"GET", "POST"};
static const char *const hdrs[][2] = {{NULL, NULL}, {"x-h", "1"}, {"x-h", "2"}, {"x-any", ""}};

static void test_generated(const struct url_map *m)
{
    uint64_t s = 0x9e3779b97f4a7c15u;
    TEST_CASE("trace: generated requests");
    for (int i = 0; i < 3000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        struct treq q;
        const char *const *h = &hosts[s % 8];
        size_t hi = (s >> 8) % 4;
        treq_init(&q, *h, paths[(s >> 16) % 14], queries[(s >> 24) % 4], methods[(s >> 32) % 2],
                  hdrs[hi][0], hdrs[hi][1]);
        check_trace(m, &q.r, (uint32_t)(s >> 40));
    }
}

/* Events of one request, for the specific cases. */
static size_t trace_of(const struct url_map *m, const char *host, const char *path,
                       const char *query, const char *method, const char *h, const char *hv,
                       struct trace_log *t)
{
    struct treq q;
    struct url_map_result res;
    struct url_map_trace tr = {.on_event = on_event, .ctx = t};
    t->n = 0;
    treq_init(&q, host, path, query, method, h, hv);
    url_map_match_traced(m, &q.r, 0, &res, &tr);
    return t->n;
}

static void test_cases(const struct url_map *m)
{
    struct trace_log t;
    TEST_CASE("trace: hosts");
    trace_of(m, "r.test", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(t.v[0].host_how == URL_MAP_HOST_EXACT);
    CHECK_STR(t.v[0].host_pattern, "r.test");
    trace_of(m, "r.test:8080", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(t.v[0].host_how == URL_MAP_HOST_EXACT_PORT);
    CHECK_STR(t.v[0].host_pattern, "r.test:8080");
    CHECK_STR(t.v[0].path_matcher->name, "paths");
    trace_of(m, "deep.a.r.test", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(t.v[0].host_how == URL_MAP_HOST_WILDCARD);
    CHECK_STR(t.v[0].host_pattern, "*.r.test");
    trace_of(m, NULL, "/", NULL, "GET", NULL, NULL, &t);
    CHECK(t.v[0].host_how == URL_MAP_HOST_ANY);
    CHECK_STR(t.v[0].host_pattern, "*");

    TEST_CASE("trace: route rules, first failing condition");
    /* /api/v1/x without x-h: rule 1 fails on its header; 2, 3 are skipped by the
     * index (their paths cannot match); 4 fails on its query (match rule 1) and
     * its method (match rule 2); 5 fails on x-any; 6 matches. */
    size_t n = trace_of(m, "r.test", "/api/v1/x", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 15);
    CHECK(t.v[0].kind == URL_MAP_TRACE_HOST);
    CHECK(t.v[1].kind == URL_MAP_TRACE_MATCH_RULE && t.v[1].cond == URL_MAP_COND_HEADER);
    CHECK(t.v[2].kind == URL_MAP_TRACE_ROUTE_RULE && !t.v[2].matched && !t.v[2].skipped_by_index);
    CHECK(t.v[3].skipped_by_index && t.v[3].cond == URL_MAP_COND_PATH);
    CHECK(t.v[4].kind == URL_MAP_TRACE_ROUTE_RULE && t.v[4].skipped_by_index);
    CHECK(t.v[6].kind == URL_MAP_TRACE_ROUTE_RULE && t.v[6].route_rule_index == 2);
    CHECK(t.v[7].cond == URL_MAP_COND_QUERY && t.v[7].match_rule_index == 0);
    CHECK(t.v[8].cond == URL_MAP_COND_HEADER && t.v[8].match_rule_index == 1);
    CHECK(t.v[10].cond == URL_MAP_COND_HEADER && t.v[11].route_rule_index == 4);
    CHECK(t.v[12].matched && t.v[13].kind == URL_MAP_TRACE_ROUTE_RULE && t.v[13].matched);
    CHECK(t.v[14].kind == URL_MAP_TRACE_SPLIT && t.v[14].split_index == 0); /* rand 0 */

    TEST_CASE("trace: no route rule matches");
    n = trace_of(m, "r.test", "/other", NULL, "GET", NULL, NULL, &t);
    CHECK(n >= 2 && t.v[n - 1].kind == URL_MAP_TRACE_DEFAULT);
    CHECK(n >= 2 && t.v[n - 1].path_matcher && !strcmp(t.v[n - 1].path_matcher->name, "routes"));

    TEST_CASE("trace: path rule patterns");
    n = trace_of(m, "p.test", "/x/y/z", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 5);
    enum url_map_pattern_state want[] = {URL_MAP_PATTERN_OUTRANKED, URL_MAP_PATTERN_NO_MATCH,
                                         URL_MAP_PATTERN_OUTRANKED, URL_MAP_PATTERN_CHOSEN};
    for (size_t i = 0; i < 4 && i + 1 < n; i++)
        CHECK(t.v[i + 1].kind == URL_MAP_TRACE_PATH_PATTERN && t.v[i + 1].pattern_state == want[i]);
    n = trace_of(m, "p.test", "/x/q", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 5 && t.v[1].pattern_state == URL_MAP_PATTERN_CHOSEN);
    CHECK(n == 5 && t.v[3].pattern_state == URL_MAP_PATTERN_NO_MATCH);
    n = trace_of(m, "p.test", "/x", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 5 && t.v[1].pattern_state == URL_MAP_PATTERN_NO_MATCH);
    CHECK(n == 5 && t.v[2].pattern_state == URL_MAP_PATTERN_CHOSEN);
    n = trace_of(m, "p.test", "/nothing", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 6 && t.v[5].kind == URL_MAP_TRACE_DEFAULT);

    TEST_CASE("trace: \"*\" and its path matcher's default");
    n = trace_of(m, "other.test", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 2 && t.v[0].host_how == URL_MAP_HOST_ANY && t.v[1].kind == URL_MAP_TRACE_DEFAULT);
    CHECK(n == 2 && t.v[1].path_matcher && !strcmp(t.v[1].path_matcher->name, "any"));
}

/* No host rule matches: HOST says none, DEFAULT is the url map's. */
static void test_url_map_default(const struct url_map *m2)
{
    struct trace_log t;
    TEST_CASE("trace: url map default");
    size_t n = trace_of(m2, "x.test", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 2 && t.v[0].host_how == URL_MAP_HOST_NONE && t.v[0].host_pattern == NULL);
    CHECK(n == 2 && t.v[1].kind == URL_MAP_TRACE_DEFAULT && t.v[1].path_matcher == NULL);
    n = trace_of(m2, "ONLY.test.", "/", NULL, "GET", NULL, NULL, &t);
    CHECK(n == 2 && t.v[0].host_how == URL_MAP_HOST_EXACT);
}

void test_urlmap_trace_suite(void)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("trace.yaml", trace_yaml, strlen(trace_yaml), &errs);
    TEST_CASE("trace: config");
    CHECK(cfg != NULL);
    if (!cfg) {
        config_errors_print(&errs, stderr);
        config_errors_free(&errs);
        return;
    }
    config_errors_free(&errs);
    struct url_map *m = url_map_compile(&cfg->url_maps[0]);
    struct url_map *m2 = url_map_compile(&cfg->url_maps[1]);
    CHECK(m != NULL && m2 != NULL);
    if (m && m2) {
        test_generated(m);
        test_cases(m);
        test_url_map_default(m2);
    }
    url_map_free(m);
    url_map_free(m2);
    config_unref(cfg);
}
