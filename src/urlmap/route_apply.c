/*
 * route_apply.c — what a match does to a request head: path normalization
 * before matching, then header actions, path_prefix_rewrite and
 * host_rewrite after it (docs/configuration.md, rules N, A and M). Pure
 * functions over a head and an arena, shared by the router
 * (src/exchange/request_prep.c) and `switchyard explain` / `diff`
 * (src/tools/), so both rewrite a request the same way.
 */
#include <string.h>

#include "core/arena.h"
#include "core/errors.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

int url_map_request_prepare(struct http_request_head *r, struct arena *a, struct url_map_request *m)
{
    const char *q = memchr(r->path, '?', r->path_len);
    size_t plen = q ? (size_t)(q - r->path) : r->path_len;
    size_t qlen = q ? r->path_len - plen - 1 : 0;
    char *norm = arena_alloc(a, r->path_len + 2);
    size_t nlen = 0;
    if (!norm)
        return SY_ENOMEM;
    if (url_path_normalize(r->path, plen, norm, plen + 1, &nlen, true) != 0)
        return SY_EINVAL;
    /* Rebuild "normalized?query" in place; the query bytes are untouched. */
    if (q) {
        char *full = arena_alloc(a, nlen + 1 + qlen + 1);
        if (!full)
            return SY_ENOMEM;
        memcpy(full, norm, nlen);
        full[nlen] = '?';
        memcpy(full + nlen + 1, q + 1, qlen);
        full[nlen + 1 + qlen] = '\0';
        norm = full;
    } else {
        norm[nlen] = '\0';
    }
    r->path = norm;
    r->path_len = (uint32_t)(nlen + (q ? 1 + qlen : 0));
    memset(m, 0, sizeof *m);
    m->method = r->method;
    m->method_len = r->method_len;
    m->scheme = r->scheme;
    m->scheme_len = r->scheme_len;
    m->authority = r->authority;
    m->authority_len = r->authority ? r->authority_len : 0;
    m->path = norm;
    m->path_len = nlen;
    m->query = q ? norm + nlen + 1 : NULL;
    m->query_len = qlen;
    m->headers = &r->headers;
    return 0;
}

/* One level's add/remove lists applied to a header list. */
static int apply_header_lists(struct http_headers *h, struct arena *a,
                              const struct cfg_header_add *add, size_t n_add, char *const *rm,
                              size_t n_rm)
{
    for (size_t i = 0; i < n_rm; i++)
        http_headers_remove(h, rm[i], strlen(rm[i]));
    for (size_t i = 0; i < n_add; i++) {
        size_t nl = strlen(add[i].name);
        if (add[i].replace)
            http_headers_remove(h, add[i].name, nl);
        if (http_headers_add(h, a, add[i].name, nl, add[i].value, strlen(add[i].value)) != 0)
            return SY_ENOMEM;
    }
    return 0;
}

/* path_prefix_rewrite: replace the matched prefix, keep the rest and the query. */
static int rewrite_path(struct http_request_head *r, struct arena *a,
                        const struct url_map_request *m, const char *prefix, size_t matched)
{
    if (matched > m->path_len)
        matched = m->path_len;
    size_t plen = strlen(prefix);
    size_t rest = r->path_len - matched;
    char *p = arena_alloc(a, plen + rest + 2);
    if (!p)
        return SY_ENOMEM;
    memcpy(p, prefix, plen);
    size_t n = plen;
    const char *tail = r->path + matched;
    /* "/api/" -> "/" with path "/api/x" gives "/x", never "//x". */
    if (n > 0 && p[n - 1] == '/' && rest > 0 && tail[0] == '/') {
        tail++;
        rest--;
    }
    memcpy(p + n, tail, rest);
    n += rest;
    if (n == 0 || p[0] != '/') {
        memmove(p + 1, p, n);
        p[0] = '/';
        n++;
    }
    p[n] = '\0';
    r->path = p;
    r->path_len = (uint32_t)n;
    return 0;
}

int url_map_apply_request(const struct url_map_result *res, const struct url_map_request *m,
                          struct http_request_head *r, struct arena *a)
{
    /* GCP's order: weighted backend, route rule, path matcher, url map. */
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *ha = res->header_actions[i];
        if (apply_header_lists(&r->headers, a, ha->request_headers_to_add,
                               ha->n_request_headers_to_add, ha->request_headers_to_remove,
                               ha->n_request_headers_to_remove) != 0)
            return SY_ENOMEM;
    }
    const struct cfg_url_rewrite *rw = &res->action->url_rewrite;
    if (rw->path_prefix_rewrite &&
        rewrite_path(r, a, m, rw->path_prefix_rewrite, res->matched_prefix_len) != 0)
        return SY_ENOMEM;
    if (rw->host_rewrite) {
        r->authority = rw->host_rewrite;
        r->authority_len = (uint32_t)strlen(rw->host_rewrite);
    }
    return 0;
}

int url_map_apply_response(const struct url_map_result *res, struct http_headers *h,
                           struct arena *a)
{
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *ha = res->header_actions[i];
        if (apply_header_lists(h, a, ha->response_headers_to_add, ha->n_response_headers_to_add,
                               ha->response_headers_to_remove,
                               ha->n_response_headers_to_remove) != 0)
            return SY_ENOMEM;
    }
    return 0;
}
