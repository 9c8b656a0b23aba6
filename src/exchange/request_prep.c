/* request_prep.c — see request_prep.h. */
#include "exchange/request_prep.h"

#include "exchange/cors.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "config/config-t.h"
#include "core/errors.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "core/worker.h"
#include "http/headers.h"

int request_prepare_match(struct exchange *ex, struct url_map_request *m)
{
    struct http_request_head *r = &ex->req;
    const char *q = memchr(r->path, '?', r->path_len);
    size_t plen = q ? (size_t)(q - r->path) : r->path_len;
    size_t qlen = q ? r->path_len - plen - 1 : 0;
    char *norm = arena_alloc(&ex->arena, r->path_len + 2);
    size_t nlen = 0;
    if (!norm)
        return SY_ENOMEM;
    if (url_path_normalize(r->path, plen, norm, plen + 1, &nlen, true) != 0)
        return SY_EINVAL;
    /* Rebuild "normalized?query" in place; the query bytes are untouched. */
    if (q) {
        char *full = arena_alloc(&ex->arena, nlen + 1 + qlen + 1);
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

static bool peer_trusted(const struct exchange *ex)
{
    const struct cfg_listener *l = ex->listener;
    for (size_t i = 0; i < l->n_xff_trusted_cidrs; i++) {
        const struct cfg_cidr *c = &l->xff_trusted_cidrs[i];
        if (sy_cidr_contains(c->family, c->addr, c->prefix,
                             (const struct sockaddr *)&ex->client_addr))
            return true;
    }
    return false;
}

/*
 * X-Forwarded-For: the incoming value(s) (joined, when the peer is trusted),
 * then the client IP, then the listener's own IP (GCP's two appended values).
 */
static int set_forwarded_for(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    char client[INET6_ADDRSTRLEN], local[INET6_ADDRSTRLEN];
    sy_sockaddr_ip(&ex->client_addr, client, sizeof client);
    sy_sockaddr_ip(&ex->local_addr, local, sizeof local);
    size_t cap = strlen(client) + strlen(local) + 8;
    bool keep = peer_trusted(ex);
    for (uint32_t i = 0; keep && i < h->n; i++)
        if (h->v[i].name_len == SY_STRLEN("x-forwarded-for") &&
            memcmp(h->v[i].name, SY_STRLIT("x-forwarded-for")) == 0)
            cap += h->v[i].value_len + 2;
    char *v = arena_alloc(&ex->arena, cap);
    if (!v)
        return SY_ENOMEM;
    size_t n = 0;
    for (uint32_t i = 0; keep && i < h->n; i++) {
        const struct http_header *f = &h->v[i];
        if (f->name_len != SY_STRLEN("x-forwarded-for") ||
            memcmp(f->name, SY_STRLIT("x-forwarded-for")) != 0 || !f->value_len)
            continue;
        memcpy(v + n, f->value, f->value_len);
        n += f->value_len;
        memcpy(v + n, SY_STRLIT(", "));
        n += SY_STRLEN(", ");
    }
    size_t cl = strlen(client), ll = strlen(local);
    memcpy(v + n, client, cl);
    memcpy(v + n + cl, SY_STRLIT(", "));
    memcpy(v + n + cl + SY_STRLEN(", "), local, ll);
    n += cl + SY_STRLEN(", ") + ll;
    http_headers_remove(h, SY_STRLIT("x-forwarded-for"));
    return http_headers_add(h, &ex->arena, SY_STRLIT("x-forwarded-for"), v, n);
}

bool request_id_valid(const char *v, size_t len)
{
    if (len == 0 || len > EXCHANGE_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=';
        if (!ok)
            return false;
    }
    return true;
}

/*
 * X-Request-Id: the client's first one when request_id_valid(), else a new
 * UUID; either way the request goes upstream with exactly one x-request-id
 * field holding ex->request_id, the value the access log shows.
 */
static int set_request_id(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    const struct http_header *id = http_headers_get(h, SY_STRLIT("x-request-id"));
    if (id && request_id_valid(id->value, id->value_len)) {
        memcpy(ex->request_id, id->value, id->value_len);
        ex->request_id[id->value_len] = '\0';
    } else {
        sy_uuid4(ex->w, ex->request_id);
    }
    http_headers_remove(h, SY_STRLIT("x-request-id"));
    return http_headers_add(h, &ex->arena, SY_STRLIT("x-request-id"), ex->request_id,
                            strlen(ex->request_id));
}

static int set_forwarding_headers(struct exchange *ex)
{
    struct http_headers *h = &ex->req.headers;
    if (set_forwarded_for(ex) != 0)
        return SY_ENOMEM;
    http_headers_remove(h, SY_STRLIT("x-forwarded-proto"));
    const char *proto = ex->tls ? "https" : "http";
    if (http_headers_add(h, &ex->arena, SY_STRLIT("x-forwarded-proto"), proto, strlen(proto)) != 0)
        return SY_ENOMEM;
    return set_request_id(ex);
}

/* One level's add/remove lists applied to a header list. */
static int apply_header_lists(struct exchange *ex, struct http_headers *h,
                              const struct cfg_header_add *add, size_t n_add, char *const *rm,
                              size_t n_rm)
{
    for (size_t i = 0; i < n_rm; i++)
        http_headers_remove(h, rm[i], strlen(rm[i]));
    for (size_t i = 0; i < n_add; i++) {
        size_t nl = strlen(add[i].name);
        if (add[i].replace)
            http_headers_remove(h, add[i].name, nl);
        if (http_headers_add(h, &ex->arena, add[i].name, nl, add[i].value, strlen(add[i].value)) !=
            0)
            return SY_ENOMEM;
    }
    return 0;
}

/* path_prefix_rewrite: replace the matched prefix, keep the rest and the query. */
static int rewrite_path(struct exchange *ex, const struct url_map_request *m, const char *prefix,
                        size_t matched)
{
    struct http_request_head *r = &ex->req;
    if (matched > m->path_len)
        matched = m->path_len;
    size_t plen = strlen(prefix);
    size_t rest = r->path_len - matched;
    char *p = arena_alloc(&ex->arena, plen + rest + 2);
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

int request_apply_route(struct exchange *ex, const struct url_map_request *m,
                        const struct url_map_result *res)
{
    struct http_request_head *r = &ex->req;
    if (set_forwarding_headers(ex) != 0)
        return SY_ENOMEM;
    /* GCP's order: weighted backend, route rule, path matcher, url map. */
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *a = res->header_actions[i];
        if (apply_header_lists(ex, &r->headers, a->request_headers_to_add,
                               a->n_request_headers_to_add, a->request_headers_to_remove,
                               a->n_request_headers_to_remove) != 0)
            return SY_ENOMEM;
    }
    const struct cfg_url_rewrite *rw = &res->action->url_rewrite;
    if (rw->path_prefix_rewrite &&
        rewrite_path(ex, m, rw->path_prefix_rewrite, res->matched_prefix_len) != 0)
        return SY_ENOMEM;
    if (rw->host_rewrite) {
        r->authority = rw->host_rewrite;
        r->authority_len = (uint32_t)strlen(rw->host_rewrite);
    }
    return 0;
}

int response_apply_route(struct exchange *ex, struct http_response_head *h,
                         const struct url_map_result *res)
{
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *a = res->header_actions[i];
        if (apply_header_lists(ex, &h->headers, a->response_headers_to_add,
                               a->n_response_headers_to_add, a->response_headers_to_remove,
                               a->n_response_headers_to_remove) != 0)
            return SY_ENOMEM;
    }
    return cors_on_response(ex, res, h);
}
