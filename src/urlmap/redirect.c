/*
 * redirect.c — the Location of a url_redirect (GCP urlRedirect).
 *
 * Rules (docs/configuration.md copies them):
 *  D1. Scheme: "https" when https_redirect, else the request's scheme
 *      ("http" when the request has none).
 *  D2. Host: host_redirect, else the request authority as received (port
 *      included). When https_redirect changes the scheme and the authority
 *      is kept, a ":80" port is dropped (Envoy). With neither a host_redirect
 *      nor an authority the Location is a path-only reference ("/new?q").
 *  D3. Path: path_redirect replaces the whole path; prefix_redirect replaces
 *      the first matched_prefix_len bytes (url_map_result's; rule M in
 *      urlmap_match.c), and a "/" that would follow its own final "/" is dropped
 *      (as path_prefix_rewrite does); otherwise the request path is kept.
 *  D4. Query: a "?" inside path_redirect brings its own query, which
 *      replaces the request's; otherwise "?" and the request query follow
 *      unless strip_query or the query is empty.
 *  D5. A Location holding a control character, space or DEL is refused
 *      (SY_EINVAL) so no request byte can split the response header.
 */
#include <string.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "urlmap/urlmap.h"

/* A bounded writer: `err` sticks at SY_ERANGE once out of room. */
struct loc_buf {
    char *p;
    size_t cap; /* room for bytes and the final NUL */
    size_t len;
    int err;
};

static void put(struct loc_buf *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (n >= b->cap - b->len) {
        b->err = SY_ERANGE;
        return;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_str(struct loc_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Rules D1 and D2. */
static void put_origin(struct loc_buf *b, const struct cfg_url_redirect *r,
                       const struct url_map_request *req)
{
    const char *host = r->host_redirect;
    size_t host_len = host ? strlen(host) : 0;
    const size_t port80 = SY_STRLEN(":80");
    bool was_https = req->scheme && req->scheme_len == SY_STRLEN("https") &&
                     memcmp(req->scheme, SY_STRLIT("https")) == 0;
    if (!host && req->authority && req->authority_len) {
        host = req->authority;
        host_len = req->authority_len;
        if (r->https_redirect && !was_https && host_len > port80 &&
            memcmp(host + host_len - port80, SY_STRLIT(":80")) == 0)
            host_len -= port80;
    }
    if (!host || host_len == 0)
        return;
    if (r->https_redirect)
        put_str(b, "https");
    else if (req->scheme && req->scheme_len)
        put(b, req->scheme, req->scheme_len);
    else
        put_str(b, "http");
    put_str(b, "://");
    put(b, host, host_len);
}

/* Rules D3 and D4. */
static void put_path_query(struct loc_buf *b, const struct cfg_url_redirect *r,
                           const struct url_map_request *req, size_t matched_prefix_len)
{
    const char *path = req->path ? req->path : "";
    size_t path_len = req->path ? req->path_len : 0;
    bool own_query = false;
    if (r->path_redirect) {
        put_str(b, r->path_redirect);
        own_query = strchr(r->path_redirect, '?') != NULL;
    } else if (r->prefix_redirect) {
        size_t skip = matched_prefix_len < path_len ? matched_prefix_len : path_len;
        size_t pl = strlen(r->prefix_redirect);
        put(b, r->prefix_redirect, pl);
        if (pl && r->prefix_redirect[pl - 1] == '/' && skip < path_len && path[skip] == '/')
            skip++; /* "/new/" for "/old" in "/old/x": "/new/x", not "/new//x" */
        put(b, path + skip, path_len - skip);
    } else {
        put(b, path, path_len);
    }
    if (!own_query && !r->strip_query && req->query && req->query_len) {
        put(b, SY_STRLIT("?"));
        put(b, req->query, req->query_len);
    }
}

int url_map_redirect_location2(const struct cfg_url_redirect *r, const struct url_map_request *req,
                               size_t matched_prefix_len, char *out, size_t cap)
{
    if (cap == 0)
        return SY_ERANGE;
    struct loc_buf b = {.p = out, .cap = cap < INT32_MAX ? cap : INT32_MAX, .len = 0, .err = 0};
    put_origin(&b, r, req);
    put_path_query(&b, r, req, matched_prefix_len);
    if (b.err) {
        out[0] = '\0';
        return b.err;
    }
    for (size_t i = 0; i < b.len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c <= 0x20 || c == 0x7f) {
            out[0] = '\0';
            return SY_EINVAL;
        }
    }
    out[b.len] = '\0';
    return (int)b.len;
}

int url_map_redirect_location(const struct cfg_url_redirect *r, const struct url_map_request *req,
                              char *out, size_t cap)
{
    return url_map_redirect_location2(r, req, 0, out, cap);
}
