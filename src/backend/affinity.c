/*
 * affinity.c — session affinity: the request's hash key for the service's
 * session_affinity, and the affinity cookie.
 *
 *   CLIENT_IP         XXH64 of the client's IP address bytes (no port; an
 *                     IPv4-mapped IPv6 address counts as the IPv4 one).
 *   HEADER_FIELD      XXH64 of the first value of consistent_hash.http_header_name
 *                     ("host" or ":authority" mean the request's authority).
 *   HTTP_COOKIE       the cookie consistent_hash.http_cookie.name: its value
 *                     hashed; when absent and a ttl is set, the response sets
 *                     it, naming the endpoint that answered (as Envoy does).
 *   GENERATED_COOKIE  the same cookie, always set by the proxy: its value is
 *                     the opaque id of the endpoint that answered, and a
 *                     request carrying it goes to that endpoint while it can
 *                     serve (else by the id's hash to another, and the
 *                     response re-pins the client with a new cookie).
 *
 * An endpoint's id is 16 hex digits of XXH64("<service>\n<address>"): stable
 * across reloads and workers, and it does not reveal the address. A cookie
 * value of exactly 16 hex digits is taken as an id (its hash is the id
 * itself), so backend_pick can send it straight to its endpoint.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend-int.h"
#include "core/errors.h"
#include "core/strlit.h"
#include "http/headers.h"

int affinity_build(struct service_rt *s)
{
    s->ep_ids = calloc(s->n + 1, sizeof *s->ep_ids);
    if (!s->ep_ids)
        return SY_ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        char key[512];
        int n = snprintf(key, sizeof key, "%s\n%s", s->cfg->name, s->ep[i].address.text);
        s->ep_ids[i] = lb_hash64(key, n < (int)sizeof key ? (size_t)n : sizeof key - 1, 0);
    }
    return 0;
}

int affinity_endpoint_of_id(const struct service_rt *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->ep_ids[i] == id)
            return (int)i;
    return -1;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Find `name` in one Cookie header value ("a=1; b=2"). */
static bool cookie_in(const char *v, size_t len, const char *name, size_t name_len,
                      const char **val, size_t *val_len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(v[i]) || v[i] == ';'))
            i++;
        size_t start = i;
        while (i < len && v[i] != ';')
            i++;
        const char *pair = v + start, *eq = memchr(pair, '=', i - start);
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - pair);
        while (nlen && is_ows(pair[nlen - 1]))
            nlen--;
        if (nlen != name_len || memcmp(pair, name, name_len) != 0)
            continue;
        const char *s = eq + 1, *e = v + i;
        while (s < e && is_ows(*s))
            s++;
        while (e > s && is_ows(e[-1]))
            e--;
        if (e - s >= 2 && *s == '"' && e[-1] == '"') { /* cookie-value may be quoted */
            s++;
            e--;
        }
        *val = s;
        *val_len = (size_t)(e - s);
        return true;
    }
    return false;
}

bool affinity_cookie_value(const struct http_headers *h, const char *name, const char **val,
                           size_t *len)
{
    size_t name_len = strlen(name);
    for (uint32_t i = 0; i < h->n; i++) /* HTTP/2 may split cookies over several fields */
        if (h->v[i].name_len == SY_STRLEN("cookie") &&
            memcmp(h->v[i].name, SY_STRLIT("cookie")) == 0 &&
            cookie_in(h->v[i].value, h->v[i].value_len, name, name_len, val, len))
            return true;
    return false;
}

/* Exactly 16 hex digits → the id. */
static bool parse_id(const char *v, size_t len, uint64_t *out)
{
    uint64_t x = 0;
    if (len != 16)
        return false;
    for (size_t i = 0; i < 16; i++) {
        char c = v[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d > 15)
            return false;
        x = x << 4 | d;
    }
    *out = x;
    return true;
}

static bool client_ip_hash(const struct sockaddr_storage *ss, uint64_t *hash)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        *hash = lb_hash64(&a->sin_addr, 4, 0);
        return true;
    }
    if (ss->ss_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        *hash = memcmp(b, mapped, 12) == 0 ? lb_hash64(b + 12, 4, 0) : lb_hash64(b, 16, 0);
        return true;
    }
    return false;
}

static bool header_hash(const struct cfg_backend_service *c, const struct http_request_head *req,
                        uint64_t *hash)
{
    const char *name = c->consistent_hash.http_header_name;
    if (!name)
        return false;
    if (strcmp(name, "host") == 0 || strcmp(name, ":authority") == 0) {
        if (!req->authority)
            return false;
        *hash = lb_hash64(req->authority, req->authority_len, 0);
        return true;
    }
    const struct http_header *h = http_headers_get(&req->headers, name, strlen(name));
    if (!h)
        return false;
    *hash = lb_hash64(h->value, h->value_len, 0);
    return true;
}

bool backend_request_hash(const struct service_rt *s, const struct http_request_head *req,
                          const struct sockaddr_storage *client, uint64_t *hash)
{
    const struct cfg_backend_service *c = s->cfg;
    const char *v;
    size_t len;
    switch (c->session_affinity) {
    case CFG_AFFINITY_CLIENT_IP: return client_ip_hash(client, hash);
    case CFG_AFFINITY_HEADER_FIELD: return header_hash(c, req, hash);
    case CFG_AFFINITY_HTTP_COOKIE:
    case CFG_AFFINITY_GENERATED_COOKIE:
        if (!affinity_cookie_value(&req->headers, c->consistent_hash.cookie_name, &v, &len))
            return false;
        if (!parse_id(v, len, hash))
            *hash = lb_hash64(v, len, 0);
        return true;
    case CFG_AFFINITY_NONE: break;
    }
    return false;
}

int backend_affinity_cookie(const struct service_rt *s, const struct http_request_head *req,
                            int idx, char *out, size_t cap)
{
    const struct cfg_backend_service *c = s->cfg;
    const char *v;
    size_t len;
    uint64_t id;
    if (idx < 0 || (size_t)idx >= s->n || cap == 0 ||
        (c->session_affinity != CFG_AFFINITY_HTTP_COOKIE &&
         c->session_affinity != CFG_AFFINITY_GENERATED_COOKIE))
        return 0;
    bool present = affinity_cookie_value(&req->headers, c->consistent_hash.cookie_name, &v, &len);
    if (c->session_affinity == CFG_AFFINITY_HTTP_COOKIE) {
        if (present || c->consistent_hash.cookie_ttl_ms == 0)
            return 0; /* the application's cookie, or none to generate */
    } else if (c->session_affinity == CFG_AFFINITY_GENERATED_COOKIE) {
        if (present && parse_id(v, len, &id) && id == s->ep_ids[idx])
            return 0; /* already pinned to this endpoint */
    } else {
        return 0;
    }
    uint64_t ttl = c->consistent_hash.cookie_ttl_ms;
    char age[48] = "";
    if (ttl)
        snprintf(age, sizeof age, "; Max-Age=%llu", (unsigned long long)((ttl + 999) / 1000));
    int n = snprintf(out, cap, "%s=%016llx; Path=%s%s; HttpOnly", c->consistent_hash.cookie_name,
                     (unsigned long long)s->ep_ids[idx], c->consistent_hash.cookie_path, age);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
        return 0;
    }
    return n;
}
