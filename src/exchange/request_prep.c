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
    int rc = url_map_request_prepare(&ex->req, &ex->arena, m);
    if (rc == 0) { /* url_rewrite may change req: the log shows the client's */
        ex->client_path = ex->req.path;
        ex->client_path_len = ex->req.path_len;
        ex->client_authority = ex->req.authority;
        ex->client_authority_len = ex->req.authority_len;
    }
    return rc;
}

static bool peer_trusted(const struct cfg_listener *l, const struct sockaddr_storage *client)
{
    for (size_t i = 0; i < l->n_xff_trusted_cidrs; i++) {
        const struct cfg_cidr *c = &l->xff_trusted_cidrs[i];
        if (sy_cidr_contains(c->family, c->addr, c->prefix, (const struct sockaddr *)client))
            return true;
    }
    return false;
}

/*
 * X-Forwarded-For: the incoming value(s) (joined, when the peer is trusted),
 * then the client IP, then the listener's own IP (GCP's two appended values).
 */
static int set_forwarded_for(struct http_headers *h, struct arena *a, const struct cfg_listener *l,
                             const struct sockaddr_storage *client_addr,
                             const struct sockaddr_storage *local_addr)
{
    char client[INET6_ADDRSTRLEN], local[INET6_ADDRSTRLEN];
    sy_sockaddr_ip(client_addr, client, sizeof client);
    sy_sockaddr_ip(local_addr, local, sizeof local);
    size_t cap = strlen(client) + strlen(local) + 8;
    bool keep = peer_trusted(l, client_addr);
    for (uint32_t i = 0; keep && i < h->n; i++)
        if (h->v[i].name_len == SY_STRLEN("x-forwarded-for") &&
            memcmp(h->v[i].name, SY_STRLIT("x-forwarded-for")) == 0)
            cap += h->v[i].value_len + 2;
    char *v = arena_alloc(a, cap);
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
    return http_headers_add(h, a, SY_STRLIT("x-forwarded-for"), v, n);
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

int request_set_forwarded(struct http_headers *h, struct arena *a, const struct cfg_listener *l,
                          const struct sockaddr_storage *client_addr,
                          const struct sockaddr_storage *local_addr, bool tls)
{
    if (set_forwarded_for(h, a, l, client_addr, local_addr) != 0)
        return SY_ENOMEM;
    http_headers_remove(h, SY_STRLIT("x-forwarded-proto"));
    const char *proto = tls ? "https" : "http";
    return http_headers_add(h, a, SY_STRLIT("x-forwarded-proto"), proto, strlen(proto));
}

static int set_forwarding_headers(struct exchange *ex)
{
    if (request_set_forwarded(&ex->req.headers, &ex->arena, ex->listener, &ex->client_addr,
                              &ex->local_addr, ex->tls) != 0)
        return SY_ENOMEM;
    return set_request_id(ex);
}

int request_apply_route(struct exchange *ex, const struct url_map_request *m,
                        const struct url_map_result *res)
{
    if (set_forwarding_headers(ex) != 0)
        return SY_ENOMEM;
    return url_map_apply_request(res, m, &ex->req, &ex->arena);
}

int response_apply_route(struct exchange *ex, struct http_response_head *h,
                         const struct url_map_result *res)
{
    if (url_map_apply_response(res, &h->headers, &ex->arena) != 0)
        return SY_ENOMEM;
    return cors_on_response(ex, res, h);
}
