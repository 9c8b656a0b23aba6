/*
 * fuzz_urlmap.c — libFuzzer target: path normalization, then url map
 * matching and redirect building, as the router runs them, on arbitrary
 * requests against a fixed url map that uses every kind of rule.
 *
 * Input: "METHOD\nAUTHORITY\nTARGET\nname: value\n..." (missing lines are
 * empty). TARGET is split at '?' into path and query like the codecs do.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/arena.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] =
    "listeners: [{name: l, address: '127.0.0.1:1', protocol: HTTP, url_map: m}]\n"
    "url_maps:\n"
    "  - name: m\n"
    "    default_service: a\n"
    "    host_rules:\n"
    "      - {hosts: ['example.com', '*.example.com'], path_matcher: p}\n"
    "      - {hosts: ['*'], path_matcher: q}\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: a\n"
    "        route_rules:\n"
    "          - priority: 1\n"
    "            match_rules:\n"
    "              - prefix_match: /Admin\n"
    "                ignore_case: true\n"
    "                header_matches:\n"
    "                  - {header_name: x-a, exact_match: '1'}\n"
    "                  - {header_name: x-b, range_match: {start: -5, end: 100}}\n"
    "                  - {header_name: x-c, present_match: true, invert_match: true}\n"
    "                  - {header_name: x-d, regex_match: 'v[0-9]+'}\n"
    "                  - {header_name: ':method', exact_match: POST}\n"
    "                query_parameter_matches:\n"
    "                  - {name: q, regex_match: '[a-z]*'}\n"
    "                  - {name: debug, present_match: true}\n"
    "            service: b\n"
    "          - priority: 2\n"
    "            match_rules: [{full_path_match: /exact}, {regex_match: '/r/(.*)/x'}]\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - {backend_service: a, weight: 1}\n"
    "                - {backend_service: b, weight: 3}\n"
    "              url_rewrite: {path_prefix_rewrite: /new/, host_rewrite: inner}\n"
    "          - priority: 3\n"
    "            match_rules: [{prefix_match: /old/}]\n"
    "            url_redirect: {prefix_redirect: /new/, https_redirect: true, strip_query: "
    "false}\n"
    "      - name: q\n"
    "        default_url_redirect: {host_redirect: elsewhere, path_redirect: /moved}\n"
    "        path_rules:\n"
    "          - {paths: ['/a', '/a/*', '/b/*'], service: b}\n"
    "          - {paths: ['/c'], url_redirect: {prefix_redirect: /d}}\n"
    "backend_services:\n"
    "  - {name: a, endpoints: [{address: '127.0.0.1:2'}]}\n"
    "  - {name: b, endpoints: [{address: '127.0.0.1:3'}]}\n";

static struct config *cfg;
static struct url_map *um;

static void setup(void)
{
    struct config_errors errs = {0};
    cfg = config_load_string("fuzz_urlmap.yaml", yaml, sizeof yaml - 1, &errs);
    if (!cfg) {
        config_errors_print(&errs, stderr);
        abort();
    }
    um = url_map_compile(&cfg->url_maps[0]);
    if (!um)
        abort();
}

/* The next line of [*p, end) (without its LF); advances *p. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl ? nl : end;
    *len = (size_t)(e - s);
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!um)
        setup();
    const char *p = (const char *)data, *end = p + size;
    struct url_map_request r = {.scheme = "http", .scheme_len = 4};
    size_t tlen;
    r.method = next_line(&p, end, &r.method_len);
    r.authority = next_line(&p, end, &r.authority_len);
    const char *target = next_line(&p, end, &tlen);
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (q) {
        r.query = q + 1;
        r.query_len = tlen - plen - 1;
    }

    struct arena a;
    struct http_headers h;
    arena_init(&a, 1 << 20);
    if (http_headers_init(&h, &a, 8) != 0)
        abort();
    for (unsigned n = 0; p < end && n < 100; n++) {
        size_t llen;
        const char *line = next_line(&p, end, &llen);
        const char *colon = memchr(line, ':', llen);
        if (!colon || colon == line)
            continue;
        const char *v = colon + 1;
        while (v < line + llen && *v == ' ')
            v++;
        http_headers_add(&h, &a, line, (size_t)(colon - line), v, (size_t)(line + llen - v));
    }
    r.headers = &h;

    char *norm = arena_alloc(&a, plen + 1);
    size_t nlen;
    if (norm && url_path_normalize(target, plen, norm, plen + 1, &nlen, true) == 0) {
        if (nlen > plen)
            abort(); /* normalization never grows a path */
        r.path = norm;
        r.path_len = nlen;
        struct url_map_result res;
        url_map_match(um, &r, (uint32_t)size * 2654435761u, &res);
        if (!res.action || (res.matched_prefix_len > r.path_len))
            abort();
        if (res.action->url_redirect) {
            char loc[8192];
            url_map_redirect_location2(res.action->url_redirect, &r, res.matched_prefix_len, loc,
                                       sizeof loc);
        }
    }
    arena_free(&a);
    return 0;
}
