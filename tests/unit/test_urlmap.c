/*
 * test_urlmap.c — url map matching, path normalization and redirects.
 *
 * Url maps come from YAML through config_load_string(), so the tests also
 * pin down what the loader hands the matcher. Each path matcher's default
 * service is distinct, so the chosen service's name says which rule won.
 */
#include <pthread.h>
#include <stdlib.h>

#include "config/config.h"
#include "core/errors.h"
#include "test.h"
#include "urlmap/urlmap.h"

/* ---- helpers --------------------------------------------------------------- */

/* A test config: `url_maps` (YAML from "url_maps:" on) behind a listener on
 * the first url map and a backend service for each name in `services`. */
struct test_config {
    const char *services; /* space-separated names */
    const char *url_maps;
};

static struct config *load_yaml(const struct test_config *tc)
{
    size_t cap = strlen(tc->url_maps) + 80 * strlen(tc->services) + 256;
    char *yaml = malloc(cap);
    const char *first = strstr(tc->url_maps, "name: ");
    if (!yaml || !first)
        abort();
    first += 6;
    size_t off =
        (size_t)snprintf(yaml, cap,
                         "listeners: [{name: l, address: \"127.0.0.1:0\", url_map: %.*s}]\n"
                         "backend_services:\n",
                         (int)strcspn(first, "\n"), first);
    for (const char *s = tc->services; *s;) {
        size_t n = strcspn(s, " ");
        off += (size_t)snprintf(yaml + off, cap - off,
                                "  - {name: %.*s, endpoints: [{address: \"127.0.0.1:9001\"}]}\n",
                                (int)n, s);
        s += n + (s[n] == ' ');
    }
    snprintf(yaml + off, cap - off, "%s", tc->url_maps);
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("test_urlmap.yaml", yaml, strlen(yaml), &errs);
    CHECK(cfg != NULL);
    if (!cfg)
        config_errors_print(&errs, stderr);
    config_errors_free(&errs);
    free(yaml);
    return cfg;
}

static const struct cfg_url_map *find_map(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && i < cfg->n_url_maps; i++) {
        if (strcmp(cfg->url_maps[i].name, name) == 0)
            return &cfg->url_maps[i];
    }
    return NULL;
}

/* One request and what it must route to. */
struct mcase {
    const char *name;
    const char *authority; /* NULL = none */
    const char *path;
    const char *query;   /* NULL = none */
    const char *headers; /* "name: value\n..." lower-case names, or NULL */
    const char *method;  /* NULL = GET */
    uint32_t rand;
    const char *want; /* service name, "redirect", or "(none)" */
    long want_prefix; /* matched_prefix_len, -1 = not checked */
};

#define MAX_TEST_HEADERS 8

/* Parse "a: 1\nb: 2" into `v` (pointing into `spec`). */
static uint32_t parse_headers(const char *spec, struct http_header *v)
{
    uint32_t n = 0;
    while (spec && *spec && n < MAX_TEST_HEADERS) {
        const char *colon = strchr(spec, ':');
        const char *nl = strchr(spec, '\n');
        const char *end = nl ? nl : spec + strlen(spec);
        if (colon == spec)
            colon = strchr(spec + 1, ':'); /* a pseudo-header-like name */
        v[n].name = spec;
        v[n].name_len = (uint32_t)(colon - spec);
        v[n].value = colon + 2;
        v[n].value_len = (uint32_t)(end - colon - 2);
        n++;
        spec = nl ? nl + 1 : end;
    }
    return n;
}

static void req_init(struct url_map_request *req, const struct mcase *c, struct http_headers *hs,
                     struct http_header *hv)
{
    hs->v = hv;
    hs->n = parse_headers(c->headers, hv);
    hs->cap = MAX_TEST_HEADERS;
    const char *method = c->method ? c->method : "GET";
    *req = (struct url_map_request){
        .method = method,
        .method_len = strlen(method),
        .scheme = "http",
        .scheme_len = 4,
        .authority = c->authority,
        .authority_len = c->authority ? strlen(c->authority) : 0,
        .path = c->path,
        .path_len = c->path ? strlen(c->path) : 0,
        .query = c->query,
        .query_len = c->query ? strlen(c->query) : 0,
        .headers = hs,
    };
}

static const char *result_name(const struct url_map_result *r)
{
    if (r->action && r->action->url_redirect)
        return "redirect";
    return r->service ? r->service->name : "(none)";
}

static void run_cases(const struct url_map *m, const struct mcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct mcase *c = &cases[i];
        struct http_header hv[MAX_TEST_HEADERS];
        struct http_headers hs;
        struct url_map_request req;
        struct url_map_result res;
        TEST_CASE(c->name);
        req_init(&req, c, &hs, hv);
        CHECK(url_map_match(m, &req, c->rand, &res) == 0 && res.action != NULL);
        CHECK_STR(result_name(&res), c->want);
        if (c->want_prefix >= 0)
            CHECK(res.matched_prefix_len == (size_t)c->want_prefix);
    }
}

/* Load `tc`, compile url map `name`, run the cases, free everything. */
static void run_map(const struct test_config *tc, const char *name, const struct mcase *cases,
                    size_t n)
{
    struct config *cfg = load_yaml(tc);
    const struct cfg_url_map *um = find_map(cfg, name);
    TEST_CASE(name);
    CHECK(um != NULL);
    struct url_map *m = um ? url_map_compile(um) : NULL;
    CHECK(um == NULL || m != NULL);
    if (m)
        run_cases(m, cases, n);
    url_map_free(m);
    config_unref(cfg);
}

#define RUN_MAP(tc, name, cases) run_map(&tc, name, cases, sizeof(cases) / sizeof(cases[0]))

/* ---- host rules ------------------------------------------------------------ */

static const struct test_config hosts_config = {
    "def exact wild wild-eu dev v6 port star dot",
    "url_maps:\n"
    "  - name: hosts\n"
    "    default_service: def\n"
    "    host_rules:\n"
    "      - {hosts: [api.example.com], path_matcher: exact}\n"
    "      - {hosts: [\"*.example.com\"], path_matcher: wild}\n"
    "      - {hosts: [\"*.eu.example.com\"], path_matcher: wild-eu}\n"
    "      - {hosts: [\"*-dev.example.com\"], path_matcher: dev}\n"
    "      - {hosts: [\"[::1]\"], path_matcher: v6}\n"
    "      - {hosts: [\"port.test:8080\"], path_matcher: port}\n"
    "      - {hosts: [\"*.dot.test.\"], path_matcher: dot}\n"
    "    path_matchers:\n"
    "      - {name: exact, default_service: exact}\n"
    "      - {name: wild, default_service: wild}\n"
    "      - {name: wild-eu, default_service: wild-eu}\n"
    "      - {name: dev, default_service: dev}\n"
    "      - {name: v6, default_service: v6}\n"
    "      - {name: port, default_service: port}\n"
    "      - {name: dot, default_service: dot}\n"
    "  - name: star\n"
    "    default_service: def\n"
    "    host_rules:\n"
    "      - {hosts: [api.example.com], path_matcher: exact}\n"
    "      - {hosts: [\"*\"], path_matcher: star}\n"
    "      - {hosts: [\"*.example.com\"], path_matcher: wild}\n"
    "    path_matchers:\n"
    "      - {name: exact, default_service: exact}\n"
    "      - {name: star, default_service: star}\n"
    "      - {name: wild, default_service: wild}\n",
};

static const struct mcase host_cases[] = {
    {"host exact", "api.example.com", "/", NULL, NULL, NULL, 0, "exact", 0},
    {"host exact case", "API.Example.COM", "/", NULL, NULL, NULL, 0, "exact", -1},
    {"host exact port", "api.example.com:8443", "/", NULL, NULL, NULL, 0, "exact", -1},
    {"host exact trailing dot", "api.example.com.", "/", NULL, NULL, NULL, 0, "exact", -1},
    {"host exact dot+port", "api.example.com.:80", "/", NULL, NULL, NULL, 0, "exact", -1},
    {"host wildcard", "a.example.com", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"host wildcard deep", "a.b.example.com", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"host wildcard case+port", "A.Example.Com:1", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"host wildcard needs a label", "example.com", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host wildcard not bare dot", ".example.com", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host longest suffix", "x.eu.example.com", "/", NULL, NULL, NULL, 0, "wild-eu", -1},
    {"host longest suffix deep", "a.b.eu.example.com:80", "/", NULL, NULL, NULL, 0, "wild-eu", -1},
    {"host shorter suffix", "eu.example.com", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"host dash wildcard", "foo-dev.example.com", "/", NULL, NULL, NULL, 0, "dev", -1},
    {"host dash wildcard deep", "x.foo-dev.example.com", "/", NULL, NULL, NULL, 0, "dev", -1},
    {"host dash needs a char", "-dev.example.com", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"host v6 port", "[::1]:8080", "/", NULL, NULL, NULL, 0, "v6", -1},
    {"host v6", "[::1]", "/", NULL, NULL, NULL, 0, "v6", -1},
    {"host other v6", "[::2]:80", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host pattern port", "port.test:8080", "/", NULL, NULL, NULL, 0, "port", -1},
    {"host pattern port case", "PORT.test:8080", "/", NULL, NULL, NULL, 0, "port", -1},
    {"host pattern port missing", "port.test", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host pattern port other", "port.test:9090", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host none", NULL, "/", NULL, NULL, NULL, 0, "def", 0},
    {"host empty", "", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host unknown", "other.org", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host suffix trick", "a.example.com.evil", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host no dot trick", "xexample.com", "/", NULL, NULL, NULL, 0, "def", -1},
    {"host wildcard pattern with final dot", "a.dot.test", "/", NULL, NULL, NULL, 0, "dot", -1},
    {"host wildcard both final dots", "a.DOT.test.:80", "/", NULL, NULL, NULL, 0, "dot", -1},
};

static const struct mcase star_cases[] = {
    {"star exact first", "api.example.com", "/", NULL, NULL, NULL, 0, "exact", -1},
    {"star wildcard beats *", "a.example.com", "/", NULL, NULL, NULL, 0, "wild", -1},
    {"star any host", "zzz", "/", NULL, NULL, NULL, 0, "star", -1},
    {"star no authority", NULL, "/", NULL, NULL, NULL, 0, "star", -1},
    {"star empty authority", "", "/", NULL, NULL, NULL, 0, "star", -1},
};

/* ---- path rules -------------------------------------------------------------- */

static const struct test_config paths_config = {
    "def p-def video video-hd live root r-def",
    "url_maps:\n"
    "  - name: paths\n"
    "    default_service: def\n"
    "    host_rules:\n"
    "      - {hosts: [root.test], path_matcher: root}\n"
    "      - {hosts: [\"*\"], path_matcher: p}\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: p-def\n"
    "        path_rules:\n"
    "          - {paths: [/video, \"/video/*\"], service: video}\n"
    "          - {paths: [\"/video/hd/*\"], service: video-hd}\n"
    "          - {paths: [/video/hd/live], service: live}\n"
    "      - name: root\n"
    "        default_service: r-def\n"
    "        path_rules:\n"
    "          - {paths: [\"/*\"], service: root}\n"
    "          - {paths: [/exact], service: live}\n",
};

static const struct mcase path_cases[] = {
    {"path exact", "x", "/video", NULL, NULL, NULL, 0, "video", 6},
    {"path prefix slash", "x", "/video/", NULL, NULL, NULL, 0, "video", 7},
    {"path prefix", "x", "/video/a", NULL, NULL, NULL, 0, "video", 7},
    {"path no partial segment", "x", "/videos", NULL, NULL, NULL, 0, "p-def", 0},
    {"path prefix hd not exact", "x", "/video/hd", NULL, NULL, NULL, 0, "video", 7},
    {"path longest prefix", "x", "/video/hd/", NULL, NULL, NULL, 0, "video-hd", 10},
    {"path longest prefix deep", "x", "/video/hd/x/y", NULL, NULL, NULL, 0, "video-hd", 10},
    {"path exact beats prefix", "x", "/video/hd/live", NULL, NULL, NULL, 0, "live", 14},
    {"path exact only exact", "x", "/video/hd/live/", NULL, NULL, NULL, 0, "video-hd", 10},
    {"path case sensitive", "x", "/Video", NULL, NULL, NULL, 0, "p-def", 0},
    {"path root default", "x", "/", NULL, NULL, NULL, 0, "p-def", 0},
    {"path query ignored", "x", "/video", "a=/video/x", NULL, NULL, 0, "video", 6},
    {"path empty", "x", "", NULL, NULL, NULL, 0, "p-def", 0},
    {"path slash star", "root.test", "/anything/at/all", NULL, NULL, NULL, 0, "root", 1},
    {"path slash star root", "root.test", "/", NULL, NULL, NULL, 0, "root", 1},
    {"path slash star exact", "root.test", "/exact", NULL, NULL, NULL, 0, "live", 6},
};

/* ---- route rules ------------------------------------------------------------- */

static const struct test_config routes_config = {
    "def r-def api api-v2 exact ci re both h-exact h-prefix h-suffix h-regex h-present h-absent "
    "h-range h-invert h-method h-authority h-scheme h-multi h-invpresent h-invrange q-present "
    "q-exact q-regex q-absent alt alt-re anch idx gen prio pk h-host mix fseg fgen igen",
    "url_maps:\n"
    "  - name: routes\n"
    "    default_service: def\n"
    "    host_rules: [{hosts: [\"*\"], path_matcher: r}]\n"
    "    path_matchers:\n"
    "      - name: r\n"
    "        default_service: r-def\n"
    "        route_rules:\n"
    "          - {priority: 20, match_rules: [{prefix_match: /api/}], service: api}\n"
    "          - {priority: 10, match_rules: [{prefix_match: /api/v2/}], service: api-v2}\n"
    "          - priority: 5\n"
    "            match_rules: [{full_path_match: /exact}, {full_path_match: /Other, "
    "ignore_case: true}]\n"
    "            service: exact\n"
    "          - {priority: 6, match_rules: [{prefix_match: /CI/, ignore_case: true}], "
    "service: ci}\n"
    "          - {priority: 7, match_rules: [{regex_match: \"/re/[0-9]+\"}], service: re}\n"
    "          - priority: 8\n"
    "            match_rules:\n"
    "              - prefix_match: /both/\n"
    "                header_matches: [{header_name: x-a, exact_match: \"1\"}]\n"
    "                query_parameter_matches: [{name: q, exact_match: \"1\"}]\n"
    "            service: both\n"
    "          - {priority: 30, service: h-exact, match_rules: [{prefix_match: /h/exact, "
    "header_matches: [{header_name: x-h, exact_match: abc}]}]}\n"
    "          - {priority: 31, service: h-prefix, match_rules: [{prefix_match: /h/prefix, "
    "header_matches: [{header_name: x-h, prefix_match: ab}]}]}\n"
    "          - {priority: 32, service: h-suffix, match_rules: [{prefix_match: /h/suffix, "
    "header_matches: [{header_name: x-h, suffix_match: bc}]}]}\n"
    "          - {priority: 33, service: h-regex, match_rules: [{prefix_match: /h/regex, "
    "header_matches: [{header_name: x-h, regex_match: \"a[0-9]+\"}]}]}\n"
    "          - {priority: 34, service: h-present, match_rules: [{prefix_match: /h/present, "
    "header_matches: [{header_name: x-h, present_match: true}]}]}\n"
    "          - {priority: 35, service: h-absent, match_rules: [{prefix_match: /h/absent, "
    "header_matches: [{header_name: x-h, present_match: false}]}]}\n"
    "          - {priority: 36, service: h-range, match_rules: [{prefix_match: /h/range, "
    "header_matches: [{header_name: x-h, range_match: {start: -5, end: 10}}]}]}\n"
    "          - {priority: 37, service: h-invert, match_rules: [{prefix_match: /h/invert, "
    "header_matches: [{header_name: x-h, exact_match: abc, invert_match: true}]}]}\n"
    "          - {priority: 38, service: h-method, match_rules: [{prefix_match: /h/method, "
    "header_matches: [{header_name: \":method\", exact_match: POST}]}]}\n"
    "          - {priority: 39, service: h-authority, match_rules: [{prefix_match: /h/auth, "
    "header_matches: [{header_name: \":authority\", suffix_match: .internal}]}]}\n"
    "          - {priority: 40, service: h-scheme, match_rules: [{prefix_match: /h/scheme, "
    "header_matches: [{header_name: \":scheme\", exact_match: http}]}]}\n"
    "          - {priority: 41, service: h-multi, match_rules: [{prefix_match: /h/multi, "
    "header_matches: [{header_name: x-m, exact_match: \"a,b\"}]}]}\n"
    "          - {priority: 42, service: h-invpresent, match_rules: [{prefix_match: /h/invp, "
    "header_matches: [{header_name: x-h, present_match: true, invert_match: true}]}]}\n"
    "          - {priority: 43, service: h-invrange, match_rules: [{prefix_match: /h/invr, "
    "header_matches: [{header_name: x-h, range_match: {start: 0, end: 10}, "
    "invert_match: true}]}]}\n"
    "          - {priority: 44, service: h-host, match_rules: [{prefix_match: /h/host, "
    "header_matches: [{header_name: X-Case, exact_match: v}]}]}\n"
    "          - {priority: 50, service: q-present, match_rules: [{prefix_match: /q/present, "
    "query_parameter_matches: [{name: debug, present_match: true}]}]}\n"
    "          - {priority: 51, service: q-exact, match_rules: [{prefix_match: /q/exact, "
    "query_parameter_matches: [{name: v, exact_match: x%20y}]}]}\n"
    "          - {priority: 52, service: q-regex, match_rules: [{prefix_match: /q/regex, "
    "query_parameter_matches: [{name: v, regex_match: \"[a-z]+\"}]}]}\n"
    "          - {priority: 53, service: q-absent, match_rules: [{prefix_match: /q/absent, "
    "query_parameter_matches: [{name: debug, present_match: false}]}]}\n"
    "          - priority: 60\n"
    "            match_rules:\n"
    "              - {prefix_match: /alt/a, header_matches: [{header_name: x-alt, "
    "exact_match: \"1\"}]}\n"
    "              - {prefix_match: /alt/b}\n"
    "            service: alt\n"
    "          - {priority: 61, service: alt-re, match_rules: [{regex_match: "
    "\"/(foo|bar)/.*\"}]}\n"
    "          - {priority: 62, service: anch, match_rules: [{regex_match: \"^/anch/x\"}]}\n"
    "          - {priority: 63, service: idx, match_rules: [{regex_match: \"/idx/a*b\"}]}\n"
    "          - {priority: 64, service: gen, match_rules: [{prefix_match: /gen}]}\n"
    "          - {priority: 1, service: prio, match_rules: [{regex_match: \"/.*/prio\"}]}\n"
    "          - {priority: 2, service: pk, match_rules: [{prefix_match: /pk/}]}\n"
    "          - {priority: 65, service: mix, match_rules: [{prefix_match: /mix/a/}, "
    "{prefix_match: /MIX/b/, ignore_case: true}]}\n"
    "          - {priority: 66, service: fseg, match_rules: [{full_path_match: /f1/a}, "
    "{full_path_match: /f1/b}]}\n"
    "          - {priority: 67, service: fgen, match_rules: [{full_path_match: /fa}, "
    "{full_path_match: /fb}]}\n"
    "          - {priority: 68, service: igen, match_rules: [{regex_match: "
    "\"(?i)/Gen/[a-z]+\"}]}\n",
};

static const struct mcase route_cases[] = {
    {"route prefix", "h", "/api/x", NULL, NULL, NULL, 0, "api", 5},
    {"route priority order", "h", "/api/v2/x", NULL, NULL, NULL, 0, "api-v2", 8},
    {"route prefix not matched", "h", "/apix", NULL, NULL, NULL, 0, "r-def", 0},
    {"route full path", "h", "/exact", NULL, NULL, NULL, 0, "exact", 6},
    {"route full path not prefix", "h", "/exact/", NULL, NULL, NULL, 0, "r-def", 0},
    {"route full path case", "h", "/EXACT", NULL, NULL, NULL, 0, "r-def", -1},
    {"route full ignore_case alt", "h", "/oTHER", NULL, NULL, NULL, 0, "exact", 6},
    {"route prefix ignore_case", "h", "/ci/x", NULL, NULL, NULL, 0, "ci", 4},
    {"route prefix ignore_case upper", "h", "/Ci/X", NULL, NULL, NULL, 0, "ci", 4},
    {"route regex", "h", "/re/123", NULL, NULL, NULL, 0, "re", 7},
    {"route regex whole path", "h", "/re/123x", NULL, NULL, NULL, 0, "r-def", -1},
    {"route regex anchored start", "h", "/x/re/1", NULL, NULL, NULL, 0, "r-def", -1},
    {"route regex no query", "h", "/re/1", "a=b", NULL, NULL, 0, "re", 5},
    {"route all conditions", "h", "/both/", "q=1", "x-a: 1", NULL, 0, "both", 6},
    {"route all: header missing", "h", "/both/", "q=1", NULL, NULL, 0, "r-def", -1},
    {"route all: query missing", "h", "/both/", NULL, "x-a: 1", NULL, 0, "r-def", -1},
    {"route all: query wrong", "h", "/both/", "q=2", "x-a: 1", NULL, 0, "r-def", -1},
    {"hdr exact", "h", "/h/exact", NULL, "x-h: abc", NULL, 0, "h-exact", 8},
    {"hdr exact mismatch", "h", "/h/exact", NULL, "x-h: abcd", NULL, 0, "r-def", -1},
    {"hdr exact case", "h", "/h/exact", NULL, "x-h: ABC", NULL, 0, "r-def", -1},
    {"hdr exact absent", "h", "/h/exact", NULL, NULL, NULL, 0, "r-def", -1},
    {"hdr exact other header", "h", "/h/exact", NULL, "x-g: abc", NULL, 0, "r-def", -1},
    {"hdr prefix", "h", "/h/prefix", NULL, "x-h: abz", NULL, 0, "h-prefix", -1},
    {"hdr prefix mismatch", "h", "/h/prefix", NULL, "x-h: a", NULL, 0, "r-def", -1},
    {"hdr suffix", "h", "/h/suffix", NULL, "x-h: zbc", NULL, 0, "h-suffix", -1},
    {"hdr suffix mismatch", "h", "/h/suffix", NULL, "x-h: bcz", NULL, 0, "r-def", -1},
    {"hdr regex", "h", "/h/regex", NULL, "x-h: a12", NULL, 0, "h-regex", -1},
    {"hdr regex full", "h", "/h/regex", NULL, "x-h: a12x", NULL, 0, "r-def", -1},
    {"hdr regex full start", "h", "/h/regex", NULL, "x-h: xa12", NULL, 0, "r-def", -1},
    {"hdr present", "h", "/h/present", NULL, "x-h: ", NULL, 0, "h-present", -1},
    {"hdr present absent", "h", "/h/present", NULL, NULL, NULL, 0, "r-def", -1},
    {"hdr present:false", "h", "/h/absent", NULL, NULL, NULL, 0, "h-absent", -1},
    {"hdr present:false there", "h", "/h/absent", NULL, "x-h: 1", NULL, 0, "r-def", -1},
    {"hdr range in", "h", "/h/range", NULL, "x-h: 9", NULL, 0, "h-range", -1},
    {"hdr range start", "h", "/h/range", NULL, "x-h: -5", NULL, 0, "h-range", -1},
    {"hdr range end excl", "h", "/h/range", NULL, "x-h: 10", NULL, 0, "r-def", -1},
    {"hdr range below", "h", "/h/range", NULL, "x-h: -6", NULL, 0, "r-def", -1},
    {"hdr range junk", "h", "/h/range", NULL, "x-h: 5x", NULL, 0, "r-def", -1},
    {"hdr range empty", "h", "/h/range", NULL, "x-h: ", NULL, 0, "r-def", -1},
    {"hdr range plus", "h", "/h/range", NULL, "x-h: +5", NULL, 0, "r-def", -1},
    {"hdr range overflow", "h", "/h/range", NULL, "x-h: 99999999999999999999", NULL, 0, "r-def",
     -1},
    {"hdr invert other value", "h", "/h/invert", NULL, "x-h: abd", NULL, 0, "h-invert", -1},
    {"hdr invert same value", "h", "/h/invert", NULL, "x-h: abc", NULL, 0, "r-def", -1},
    {"hdr invert absent", "h", "/h/invert", NULL, NULL, NULL, 0, "h-invert", -1},
    {"hdr :method", "h", "/h/method", NULL, NULL, "POST", 0, "h-method", -1},
    {"hdr :method other", "h", "/h/method", NULL, NULL, "GET", 0, "r-def", -1},
    {"hdr :authority", "svc.internal:80", "/h/auth", NULL, NULL, NULL, 0, "r-def", -1},
    {"hdr :authority suffix", "svc.internal", "/h/auth", NULL, NULL, NULL, 0, "h-authority", -1},
    {"hdr :scheme", "h", "/h/scheme", NULL, NULL, NULL, 0, "h-scheme", -1},
    {"hdr joined", "h", "/h/multi", NULL, "x-m: a\nx-m: b", NULL, 0, "h-multi", -1},
    {"hdr joined other between", "h", "/h/multi", NULL, "x-m: a\nx-n: z\nx-m: b", NULL, 0,
     "h-multi", -1},
    {"hdr single not joined", "h", "/h/multi", NULL, "x-m: a", NULL, 0, "r-def", -1},
    {"hdr inverted present", "h", "/h/invp", NULL, NULL, NULL, 0, "h-invpresent", -1},
    {"hdr inverted present there", "h", "/h/invp", NULL, "x-h: 1", NULL, 0, "r-def", -1},
    {"hdr inverted range in", "h", "/h/invr", NULL, "x-h: 3", NULL, 0, "r-def", -1},
    {"hdr inverted range out", "h", "/h/invr", NULL, "x-h: 30", NULL, 0, "h-invrange", -1},
    {"hdr inverted range absent", "h", "/h/invr", NULL, NULL, NULL, 0, "h-invrange", -1},
    {"hdr name lower-cased", "h", "/h/host", NULL, "x-case: v", NULL, 0, "h-host", -1},
    {"query present", "h", "/q/present", "a=1&debug", NULL, NULL, 0, "q-present", -1},
    {"query present with value", "h", "/q/present", "debug=0", NULL, NULL, 0, "q-present", -1},
    {"query present absent", "h", "/q/present", "debugx=1&xdebug", NULL, NULL, 0, "r-def", -1},
    {"query present no query", "h", "/q/present", NULL, NULL, NULL, 0, "r-def", -1},
    {"query exact raw", "h", "/q/exact", "v=x%20y", NULL, NULL, 0, "q-exact", -1},
    {"query exact not decoded", "h", "/q/exact", "v=x y", NULL, NULL, 0, "r-def", -1},
    {"query exact first occurrence", "h", "/q/exact", "v=z&v=x%20y", NULL, NULL, 0, "r-def", -1},
    {"query exact empty parts", "h", "/q/exact", "&&v=x%20y&", NULL, NULL, 0, "q-exact", -1},
    {"query regex", "h", "/q/regex", "v=abc", NULL, NULL, 0, "q-regex", -1},
    {"query regex full", "h", "/q/regex", "v=abc1", NULL, NULL, 0, "r-def", -1},
    {"query regex empty value", "h", "/q/regex", "v", NULL, NULL, 0, "r-def", -1},
    {"query absent", "h", "/q/absent", "a=b", NULL, NULL, 0, "q-absent", -1},
    {"query absent there", "h", "/q/absent", "debug=", NULL, NULL, 0, "r-def", -1},
    {"alternatives first", "h", "/alt/a", NULL, "x-alt: 1", NULL, 0, "alt", 6},
    {"alternatives first fails", "h", "/alt/a", NULL, NULL, NULL, 0, "r-def", -1},
    {"alternatives second", "h", "/alt/b/x", NULL, NULL, NULL, 0, "alt", 6},
    {"regex alternation foo", "h", "/foo/x", NULL, NULL, NULL, 0, "alt-re", -1},
    {"regex alternation bar", "h", "/bar/", NULL, NULL, NULL, 0, "alt-re", -1},
    {"regex caret", "h", "/anch/x", NULL, NULL, NULL, 0, "anch", -1},
    {"regex quantified literal", "h", "/idx/b", NULL, NULL, NULL, 0, "idx", -1},
    {"regex quantified literal 2", "h", "/idx/aab", NULL, NULL, NULL, 0, "idx", -1},
    {"prefix without 2nd slash", "h", "/generic/x", NULL, NULL, NULL, 0, "gen", 4},
    {"generic rule first by priority", "h", "/pk/prio", NULL, NULL, NULL, 0, "prio", 8},
    {"keyed rule after generic", "h", "/pk/x", NULL, NULL, NULL, 0, "pk", 4},
    {"mixed keys case-sensitive", "h", "/mix/a/x", NULL, NULL, NULL, 0, "mix", 7},
    {"mixed keys ignore_case", "h", "/Mix/B/x", NULL, NULL, NULL, 0, "mix", 7},
    {"mixed keys wrong case", "h", "/MIX/a/x", NULL, NULL, NULL, 0, "r-def", -1},
    {"full paths one segment a", "h", "/f1/a", NULL, NULL, NULL, 0, "fseg", 5},
    {"full paths one segment b", "h", "/f1/b", NULL, NULL, NULL, 0, "fseg", 5},
    {"full paths one segment c", "h", "/f1/c", NULL, NULL, NULL, 0, "r-def", -1},
    {"full paths two segments", "h", "/fb", NULL, NULL, NULL, 0, "fgen", 3},
    {"regex (?i)", "h", "/gEN/abc", NULL, NULL, NULL, 0, "igen", -1},
    {"regex (?i) whole", "h", "/gEN/abc/", NULL, NULL, NULL, 0, "r-def", -1},
};

/* ---- weighted splits and header actions ---------------------------------------- */

static const struct test_config split_config = {
    "def s0 s1 s2",
    "url_maps:\n"
    "  - name: ha\n"
    "    default_service: def\n"
    "    header_action: {request_headers_to_add: [{header_name: x-from, header_value: um}]}\n"
    "    host_rules: [{hosts: [ha.test], path_matcher: p}]\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: s0\n"
    "        header_action: {request_headers_to_add: [{header_name: x-from, header_value: pm}]}\n"
    "        route_rules:\n"
    "          - priority: 1\n"
    "            match_rules: [{prefix_match: /split/}]\n"
    "            header_action: {response_headers_to_remove: [x-rr]}\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - {backend_service: s1, weight: 10, header_action: "
    "{request_headers_to_remove: [x-w1]}}\n"
    "                - {backend_service: s0, weight: 0}\n"
    "                - {backend_service: s2, weight: 30}\n"
    "          - priority: 2\n"
    "            match_rules: [{prefix_match: /plain/}]\n"
    "            header_action: {}\n"
    "            service: s1\n"
    "  - name: bare\n"
    "    default_service: s2\n",
};

/* Which level each header action came from, as a comma list. */
static void header_action_order(const struct url_map_result *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; i < r->n_header_actions; i++) {
        const struct cfg_header_action *ha = r->header_actions[i];
        const char *tag = "?";
        if (ha->n_request_headers_to_remove)
            tag = "w1";
        else if (ha->n_response_headers_to_remove)
            tag = "rr";
        else if (ha->n_request_headers_to_add)
            tag = ha->request_headers_to_add[0].value;
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? "," : "", tag);
    }
}

struct scase {
    const char *name;
    const char *map;
    const char *authority;
    const char *path;
    uint32_t rand;
    const char *want;
    const char *want_actions;
};

static const struct scase split_cases[] = {
    {"split first bucket", "ha", "ha.test", "/split/", 0, "s1", "w1,rr,pm,um"},
    {"split first bucket end", "ha", "ha.test", "/split/", 9, "s1", "w1,rr,pm,um"},
    {"split weight 0 skipped", "ha", "ha.test", "/split/", 10, "s2", "rr,pm,um"},
    {"split last bucket end", "ha", "ha.test", "/split/", 39, "s2", "rr,pm,um"},
    {"split wraps", "ha", "ha.test", "/split/", 40, "s1", "w1,rr,pm,um"},
    {"split big rand", "ha", "ha.test", "/split/", 4294967295u, "s2", "rr,pm,um"},
    {"empty header action skipped", "ha", "ha.test", "/plain/", 0, "s1", "pm,um"},
    {"path matcher default", "ha", "ha.test", "/zzz", 0, "s0", "pm,um"},
    {"url map default", "ha", "other.test", "/split/", 0, "def", "um"},
    {"no header actions", "bare", "x", "/", 0, "s2", ""},
};

static void test_splits(void)
{
    struct config *cfg = load_yaml(&split_config);
    struct url_map *ha = cfg ? url_map_compile(find_map(cfg, "ha")) : NULL;
    struct url_map *bare = cfg ? url_map_compile(find_map(cfg, "bare")) : NULL;
    CHECK(!cfg || (ha && bare));
    for (size_t i = 0; ha && bare && i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
        const struct scase *c = &split_cases[i];
        struct url_map_request req = {
            .method = "GET",
            .method_len = 3,
            .scheme = "http",
            .scheme_len = 4,
            .authority = c->authority,
            .authority_len = strlen(c->authority),
            .path = c->path,
            .path_len = strlen(c->path),
        };
        struct url_map_result res;
        char order[64];
        TEST_CASE(c->name);
        url_map_match(strcmp(c->map, "ha") == 0 ? ha : bare, &req, c->rand, &res);
        CHECK_STR(result_name(&res), c->want);
        header_action_order(&res, order, sizeof(order));
        CHECK_STR(order, c->want_actions);
    }
    url_map_free(ha);
    url_map_free(bare);
    config_unref(cfg);
}

/* ---- path normalization ---------------------------------------------------------- */

struct ncase {
    const char *in;
    bool merge;
    int rc;
    const char *want;
};

static const struct ncase norm_cases[] = {
    {"/", true, 0, "/"},
    {"/a/b", true, 0, "/a/b"},
    {"/a/../admin", true, 0, "/admin"},
    {"//admin", true, 0, "/admin"},
    {"//admin", false, 0, "//admin"},
    {"/%2e%2e/admin", true, 0, "/admin"},
    {"/%2E%2e/admin", true, 0, "/admin"},
    {"/.%2e/x", true, 0, "/x"},
    {"/admin%2F..", true, 0, "/admin%2F.."},
    {"/admin%2f..%2fx", true, 0, "/admin%2F..%2Fx"},
    {"/..%2fadmin", true, 0, "/..%2Fadmin"},
    {"/ADMIN", true, 0, "/ADMIN"},
    {"/%zz", true, SY_EINVAL, NULL},
    {"/%2", true, SY_EINVAL, NULL},
    {"/%", true, SY_EINVAL, NULL},
    {"/a%g0", true, SY_EINVAL, NULL},
    {"/%u002e", true, SY_EINVAL, NULL},
    {"a/b", true, SY_EINVAL, NULL},
    {"", true, SY_EINVAL, NULL},
    {"*", true, SY_EINVAL, NULL},
    {"/a/./b", true, 0, "/a/b"},
    {"/a/b/.", true, 0, "/a/b/"},
    {"/a/b/..", true, 0, "/a/"},
    {"/..", true, 0, "/"},
    {"/.", true, 0, "/"},
    {"/../../x", true, 0, "/x"},
    {"/a/..", true, 0, "/"},
    {"/a/b/../../..", true, 0, "/"},
    {"/%41%42c", true, 0, "/ABc"},
    {"/%7e%2d%5f%2E", true, 0, "/~-_."},
    {"/a%5cb", true, 0, "/a%5Cb"},
    {"/a\\b", true, 0, "/a\\b"},
    {"/a\\..\\b", true, 0, "/a\\..\\b"},
    {"/a//b//", true, 0, "/a/b/"},
    {"/a//b//", false, 0, "/a//b//"},
    {"/a/b//..", false, 0, "/a/b/"},
    {"/a/b//..", true, 0, "/a/"},
    {"///", true, 0, "/"},
    {"///", false, 0, "///"},
    {"/%20", true, 0, "/%20"},
    {"/%00x", true, 0, "/%00x"},
    {"/a/.../b", true, 0, "/a/.../b"},
    {"/a/..b/c", true, 0, "/a/..b/c"},
    {"/a/.b", true, 0, "/a/.b"},
    {"/%e2%82%ac", true, 0, "/%E2%82%AC"},
};

static void test_normalize(void)
{
    char out[256];
    for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
        const struct ncase *c = &norm_cases[i];
        size_t n = 0;
        TEST_CASE(c->in);
        int rc = url_path_normalize(c->in, strlen(c->in), out, sizeof(out), &n, c->merge);
        CHECK(rc == c->rc);
        if (rc == 0 && c->want) {
            out[n] = '\0';
            CHECK_STR(out, c->want);
        }
    }
    TEST_CASE("normalize in place");
    char buf[] = "/a/./b/../%63//d";
    size_t n = 0;
    CHECK(url_path_normalize(buf, strlen(buf), buf, sizeof(buf), &n, true) == 0);
    buf[n] = '\0';
    CHECK_STR(buf, "/a/c/d");
    TEST_CASE("normalize cap too small");
    CHECK(url_path_normalize("/abc", 4, out, 2, &n, true) == SY_ERANGE);
    TEST_CASE("normalize cap exact");
    CHECK(url_path_normalize("/abc", 4, out, 4, &n, true) == 0 && n == 4);
}

/* ---- redirects ---------------------------------------------------------------------- */

struct rcase {
    const char *name;
    struct cfg_url_redirect r;
    const char *scheme;
    const char *authority;
    const char *path;
    const char *query;
    size_t prefix_len;
    size_t cap;
    int rc; /* 0 = the length of want */
    const char *want;
};

static const struct rcase redirect_cases[] = {
    {"redir https",
     {.https_redirect = true},
     "http",
     "ex.com",
     "/a",
     "x=1",
     0,
     256,
     0,
     "https://ex.com/a?x=1"},
    {"redir https drops :80",
     {.https_redirect = true},
     "http",
     "ex.com:80",
     "/a",
     NULL,
     0,
     256,
     0,
     "https://ex.com/a"},
    {"redir https keeps :8080",
     {.https_redirect = true},
     "http",
     "ex.com:8080",
     "/a",
     NULL,
     0,
     256,
     0,
     "https://ex.com:8080/a"},
    {"redir host",
     {.host_redirect = "new.com"},
     "http",
     "ex.com",
     "/a",
     "x=1",
     0,
     256,
     0,
     "http://new.com/a?x=1"},
    {"redir keeps https",
     {.host_redirect = "new.com"},
     "https",
     "ex.com",
     "/a",
     NULL,
     0,
     256,
     0,
     "https://new.com/a"},
    {"redir path",
     {.path_redirect = "/p"},
     "http",
     "ex.com",
     "/a",
     "x=1",
     0,
     256,
     0,
     "http://ex.com/p?x=1"},
    {"redir path own query",
     {.path_redirect = "/p?y=2"},
     "http",
     "ex.com",
     "/a",
     "x=1",
     0,
     256,
     0,
     "http://ex.com/p?y=2"},
    {"redir strip query",
     {.strip_query = true},
     "http",
     "ex.com",
     "/a",
     "x=1",
     0,
     256,
     0,
     "http://ex.com/a"},
    {"redir empty query", {0}, "http", "ex.com", "/a", "", 0, 256, 0, "http://ex.com/a"},
    {"redir prefix",
     {.prefix_redirect = "/new/"},
     "http",
     "ex.com",
     "/old/x/y",
     "x=1",
     5,
     256,
     0,
     "http://ex.com/new/x/y?x=1"},
    {"redir prefix whole path",
     {.prefix_redirect = "/n"},
     "http",
     "ex.com",
     "/old",
     NULL,
     4,
     256,
     0,
     "http://ex.com/n"},
    {"redir prefix no double slash",
     {.prefix_redirect = "/new/"},
     "http",
     "ex.com",
     "/old/x",
     NULL,
     4,
     256,
     0,
     "http://ex.com/new/x"},
    {"redir prefix len 0",
     {.prefix_redirect = "/new"},
     "http",
     "ex.com",
     "/old/x",
     NULL,
     0,
     256,
     0,
     "http://ex.com/new/old/x"},
    {"redir no authority", {0}, "http", NULL, "/a", "x=1", 0, 256, 0, "/a?x=1"},
    {"redir all",
     {.host_redirect = "h", .path_redirect = "/p", .https_redirect = true, .strip_query = true},
     "http",
     "ex.com",
     "/a",
     "q",
     0,
     256,
     0,
     "https://h/p"},
    {"redir cap small", {0}, "http", "ex.com", "/a", NULL, 0, 10, SY_ERANGE, NULL},
    {"redir cap exact", {0}, "http", "ex.com", "/a", NULL, 0, 16, 0, "http://ex.com/a"},
    {"redir cap one short", {0}, "http", "ex.com", "/a", NULL, 0, 15, SY_ERANGE, NULL},
    {"redir crlf refused", {0}, "http", "ex.com\r\nx: y", "/a", NULL, 0, 256, SY_EINVAL, NULL},
    {"redir space refused", {0}, "http", "ex.com", "/a b", NULL, 0, 256, SY_EINVAL, NULL},
};

static void test_redirects(void)
{
    for (size_t i = 0; i < sizeof(redirect_cases) / sizeof(redirect_cases[0]); i++) {
        const struct rcase *c = &redirect_cases[i];
        struct url_map_request req = {
            .scheme = c->scheme,
            .scheme_len = strlen(c->scheme),
            .authority = c->authority,
            .authority_len = c->authority ? strlen(c->authority) : 0,
            .path = c->path,
            .path_len = strlen(c->path),
            .query = c->query,
            .query_len = c->query ? strlen(c->query) : 0,
        };
        char out[256];
        TEST_CASE(c->name);
        int rc = url_map_redirect_location2(&c->r, &req, c->prefix_len, out, c->cap);
        if (c->want) {
            CHECK(rc == (int)strlen(c->want));
            CHECK_STR(rc >= 0 ? out : NULL, c->want);
        } else {
            CHECK(rc == c->rc);
        }
    }
    struct cfg_url_redirect r = {.prefix_redirect = "/n"};
    struct url_map_request req = {.scheme = "http", .scheme_len = 4, .path = "/o/x", .path_len = 4};
    char out[64];
    TEST_CASE("redirect without prefix len");
    CHECK(url_map_redirect_location(&r, &req, out, sizeof(out)) == 6);
    CHECK_STR(out, "/n/o/x");
}

/* A redirect chosen by the matcher, with its matched prefix. */
static const struct test_config redirect_config = {
    "def",
    "url_maps:\n"
    "  - name: redir\n"
    "    default_service: def\n"
    "    host_rules: [{hosts: [\"*\"], path_matcher: p}]\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: def\n"
    "        route_rules:\n"
    "          - priority: 1\n"
    "            match_rules: [{prefix_match: /old/}]\n"
    "            url_redirect: {prefix_redirect: /new/, https_redirect: true}\n",
};

static void test_matched_redirect(void)
{
    struct config *cfg = load_yaml(&redirect_config);
    struct url_map *m = cfg ? url_map_compile(find_map(cfg, "redir")) : NULL;
    struct url_map_request req = {
        .method = "GET",
        .method_len = 3,
        .scheme = "http",
        .scheme_len = 4,
        .authority = "h.test",
        .authority_len = 6,
        .path = "/old/a/b",
        .path_len = 8,
        .query = "k=v",
        .query_len = 3,
    };
    struct url_map_result res;
    char out[128];
    TEST_CASE("matched redirect");
    CHECK(!cfg || m);
    if (m) {
        url_map_match(m, &req, 0, &res);
        CHECK(res.action->url_redirect != NULL && res.service == NULL);
        CHECK(res.action->url_redirect && res.action->url_redirect->redirect_response_code == 301);
        CHECK(url_map_redirect_location2(res.action->url_redirect, &req, res.matched_prefix_len,
                                         out, sizeof(out)) > 0);
        CHECK_STR(out, "https://h.test/new/a/b?k=v");
    }
    url_map_free(m);
    config_unref(cfg);
}

/* ---- a hand-built url map (no loader: regexes compiled by the matcher) --------- */

#define BIG_VALUE (40 * 1024)

static struct cfg_backend_service svc_a = {.name = "a"}, svc_b = {.name = "b"},
                                  svc_d = {.name = "d"}, svc_e = {.name = "e"};

static void run_hand_built(const struct url_map *m, struct http_headers *hs)
{
    struct {
        const char *name, *authority, *path;
        uint32_t n_headers;
        const char *want;
    } cases[] = {
        {"hand regex", "upper.example", "/r/12", 0, "a"},
        {"hand regex whole", "UPPER.example", "/r/12x", 0, "e"},
        {"hand host default", "zzz", "/r/12", 0, "d"},
        {"hand joined too long is present", "upper.example", "/big/", 2, "b"},
        {"hand joined too long matches nothing", "upper.example", "/bigre/", 2, "e"},
        {"hand single long value", "upper.example", "/bigre/", 1, "a"},
        {"hand rule without match rules", "upper.example", "/other", 0, "e"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct url_map_request req = {
            .method = "GET",
            .method_len = 3,
            .scheme = "http",
            .scheme_len = 4,
            .authority = cases[i].authority,
            .authority_len = strlen(cases[i].authority),
            .path = cases[i].path,
            .path_len = strlen(cases[i].path),
            .headers = hs,
        };
        struct url_map_result res;
        hs->n = cases[i].n_headers;
        TEST_CASE(cases[i].name);
        url_map_match(m, &req, 0, &res);
        CHECK_STR(result_name(&res), cases[i].want);
        if (strcmp(cases[i].want, "e") == 0)
            CHECK(res.matched_prefix_len == 0); /* no path condition (rule M) */
    }
}

/* No loader: regexes are compiled by url_map_compile, the host pattern is
 * not lower-cased, the path matcher is found by name, and the last route
 * rule has no match rules at all. */
static void test_hand_built(void)
{
    static char *hosts[] = {"Upper.Example"};
    struct cfg_header_match present = {
        .header_name = "x-big", .kind = CFG_HDR_PRESENT, .present = true};
    struct cfg_header_match any = {.header_name = "x-big", .kind = CFG_HDR_REGEX, .value = ".*"};
    struct cfg_match_rule mrs[3] = {
        {.path_kind = CFG_PATH_REGEX, .path = "/r/[0-9]+"},
        {.path_kind = CFG_PATH_PREFIX,
         .path = "/big/",
         .header_matches = &present,
         .n_header_matches = 1},
        {.path_kind = CFG_PATH_PREFIX,
         .path = "/bigre/",
         .header_matches = &any,
         .n_header_matches = 1},
    };
    struct cfg_route_rule rrs[4] = {
        {.priority = 1, .match_rules = &mrs[0], .n_match_rules = 1, .action = {.service = &svc_a}},
        {.priority = 2, .match_rules = &mrs[1], .n_match_rules = 1, .action = {.service = &svc_b}},
        {.priority = 3, .match_rules = &mrs[2], .n_match_rules = 1, .action = {.service = &svc_a}},
        {.priority = 4, .action = {.service = &svc_e}},
    };
    struct cfg_path_matcher pm = {
        .name = "p", .default_action = {.service = &svc_d}, .route_rules = rrs, .n_route_rules = 4};
    struct cfg_host_rule hr = {.hosts = hosts, .n_hosts = 1, .path_matcher_name = "p"};
    struct cfg_url_map um = {.name = "m",
                             .default_action = {.service = &svc_d},
                             .host_rules = &hr,
                             .n_host_rules = 1,
                             .path_matchers = &pm,
                             .n_path_matchers = 1};
    char *big = malloc(BIG_VALUE);
    struct url_map *m = url_map_compile(&um);
    TEST_CASE("hand-built compile");
    CHECK(m != NULL && big != NULL);
    if (m && big) {
        memset(big, 'v', BIG_VALUE);
        struct http_header hv[2] = {{"x-big", big, 5, BIG_VALUE}, {"x-big", big, 5, BIG_VALUE}};
        struct http_headers hs = {.v = hv, .n = 2, .cap = 2};
        run_hand_built(m, &hs);
    }
    url_map_free(m);
    free(big);
}

/* ---- threads: one compiled map, several matching threads ------------------------ */

#define N_THREADS 4

struct thread_arg {
    const struct url_map *m;
    int mismatches;
};

static void *match_thread(void *p)
{
    struct thread_arg *arg = p;
    size_t n = sizeof(route_cases) / sizeof(route_cases[0]);
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < n; i++) {
            struct http_header hv[MAX_TEST_HEADERS];
            struct http_headers hs;
            struct url_map_request req;
            struct url_map_result res;
            req_init(&req, &route_cases[i], &hs, hv);
            url_map_match(arg->m, &req, 0, &res);
            if (strcmp(result_name(&res), route_cases[i].want) != 0)
                arg->mismatches++;
        }
    }
    return NULL;
}

static void test_threads(void)
{
    struct config *cfg = load_yaml(&routes_config);
    struct url_map *m = cfg ? url_map_compile(find_map(cfg, "routes")) : NULL;
    struct thread_arg args[N_THREADS];
    pthread_t th[N_THREADS];
    int started = 0, mismatches = 0;
    TEST_CASE("threads");
    CHECK(m != NULL);
    for (int i = 0; m && i < N_THREADS; i++) {
        args[i] = (struct thread_arg){.m = m, .mismatches = 0};
        if (pthread_create(&th[i], NULL, match_thread, &args[i]) == 0)
            started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        mismatches += args[i].mismatches;
    }
    CHECK(!m || started == N_THREADS);
    CHECK(mismatches == 0);
    url_map_free(m);
    config_unref(cfg);
}

/* ---- suite -------------------------------------------------------------------------- */

void test_urlmap_suite(void)
{
    RUN_MAP(hosts_config, "hosts", host_cases);
    RUN_MAP(hosts_config, "star", star_cases);
    RUN_MAP(paths_config, "paths", path_cases);
    RUN_MAP(routes_config, "routes", route_cases);
    test_splits();
    test_normalize();
    test_redirects();
    test_matched_redirect();
    test_hand_built();
    test_threads();
    test_current = NULL;
}
