/*
 * tool_route.c — configs, requests and routing for `switchyard explain` and
 * `diff` (tools-int.h). Routing runs the proxy's own functions in the
 * router's order (router_start in src/exchange/router.c): nothing here
 * decides a route by itself.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/parse.h"
#include "core/strlit.h"
#include "exchange/request_prep.h"
#include "http/headers.h"
#include "tools/tools-int.h"

/* ---- configs ---------------------------------------------------------------- */

int tool_config_load(const char *path, struct tool_config *tc, FILE *err)
{
    struct config_errors errs = {0};
    memset(tc, 0, sizeof *tc);
    tc->cfg = config_load(path, &errs);
    if (!tc->cfg) {
        config_errors_print(&errs, err);
        config_errors_free(&errs);
        return -1;
    }
    config_errors_free(&errs);
    tc->maps = calloc(tc->cfg->n_url_maps + 1, sizeof *tc->maps);
    for (size_t i = 0; tc->maps && i < tc->cfg->n_url_maps; i++) {
        tc->maps[i] = url_map_compile(&tc->cfg->url_maps[i]);
        if (!tc->maps[i]) {
            fprintf(err, "%s: url map %s: out of memory\n", path, tc->cfg->url_maps[i].name);
            tool_config_free(tc);
            return -1;
        }
    }
    if (!tc->maps) {
        fprintf(err, "%s: out of memory\n", path);
        tool_config_free(tc);
        return -1;
    }
    return 0;
}

void tool_config_free(struct tool_config *tc)
{
    for (size_t i = 0; tc->maps && tc->cfg && i < tc->cfg->n_url_maps; i++)
        url_map_free(tc->maps[i]);
    free(tc->maps);
    config_unref(tc->cfg);
    memset(tc, 0, sizeof *tc);
}

const char *tool_config_at(const struct config *cfg, struct cfg_mark mark, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%d:%d", cfg->path ? cfg->path : "-", mark.line, mark.col);
    return buf;
}

static const struct url_map *compiled_map(const struct tool_config *tc,
                                          const struct cfg_url_map *um)
{
    for (size_t i = 0; i < tc->cfg->n_url_maps; i++) {
        if (&tc->cfg->url_maps[i] == um)
            return tc->maps[i];
    }
    return NULL;
}

/* ---- requests --------------------------------------------------------------- */

int tool_request_init(struct tool_request *rq, struct arena *a)
{
    memset(rq, 0, sizeof *rq);
    rq->method = "GET";
    rq->method_len = SY_STRLEN("GET");
    return http_headers_init(&rq->headers, a, 16);
}

/* The port of an authority ("h:8080", "[::1]:443"); `dflt` when it has none. */
static uint16_t authority_port(const char *a, size_t n, uint16_t dflt)
{
    const char *end = a + n;
    const char *p = a;
    if (n && a[0] == '[') {
        p = memchr(a, ']', n);
        if (!p)
            return dflt;
    }
    const char *colon = memchr(p, ':', (size_t)(end - p));
    uint64_t v;
    if (!colon || sy_parse_dec(colon + 1, (size_t)(end - colon - 1), 65535, &v) != 0)
        return dflt;
    return (uint16_t)v;
}

int tool_request_set_url(struct tool_request *rq, struct arena *a, const char *url, size_t len,
                         const char **why)
{
    const char *hash = memchr(url, '#', len);
    if (hash)
        len = (size_t)(hash - url); /* a client never sends the fragment */
    const char *rest = url;
    size_t rest_len = len;
    if (!len || url[0] != '/') {
        bool https = len > 8 && strncasecmp(url, "https://", 8) == 0;
        size_t skip = https ? 8 : len > 7 && strncasecmp(url, "http://", 7) == 0 ? 7 : 0;
        const char *auth = url + skip;
        size_t al = 0;
        while (skip + al < len && auth[al] != '/' && auth[al] != '?')
            al++;
        if (!skip || !http_authority_is_valid(auth, al)) {
            *why = skip ? "its host[:port] is not valid" : "not an http:// or https:// URL";
            return SY_EINVAL;
        }
        rq->scheme = https ? "https" : "http";
        rq->authority = arena_strndup(a, auth, al);
        rq->authority_len = al;
        rq->port = authority_port(auth, al, https ? 443 : 80);
        rest = auth + al;
        rest_len = len - skip - al;
        if (!rq->authority)
            return SY_ENOMEM;
    }
    /* "http://h" and "http://h?q" ask for "/" and "/?q". The target's bytes
     * are checked when routed: the proxy answers a bad one with 400. */
    bool slash = rest_len == 0 || rest[0] != '/';
    char *target = arena_alloc(a, rest_len + 2);
    if (!target)
        return SY_ENOMEM;
    target[0] = '/';
    memcpy(target + slash, rest, rest_len);
    target[rest_len + slash] = '\0';
    rq->target = target;
    rq->target_len = rest_len + slash;
    return 0;
}

int tool_request_add_header(struct tool_request *rq, struct arena *a, const char *line, size_t len,
                            const char **why)
{
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line || !http_is_token(line, (size_t)(colon - line))) {
        *why = "a header must be 'name: value' with a token for a name";
        return SY_EINVAL;
    }
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    size_t vl = (size_t)(end - v);
    if (!http_is_field_value(v, vl)) {
        *why = "a header value cannot hold control characters";
        return SY_EINVAL;
    }
    char *name = arena_strndup(a, line, nl);
    char *value = arena_strndup(a, v, vl);
    if (!name || !value)
        return SY_ENOMEM;
    http_lower(name, nl);
    if (nl == SY_STRLEN("host") && memcmp(name, SY_STRLIT("host")) == 0) {
        if (!rq->authority) { /* an absolute URL's authority wins (RFC 9112 3.2.2) */
            rq->authority = value;
            rq->authority_len = vl;
        }
        return 0;
    }
    if (rq->headers.n >= TOOL_MAX_HEADERS) {
        *why = "too many header fields";
        return SY_ELIMIT;
    }
    return http_headers_add(&rq->headers, a, name, nl, value, vl);
}

/* ---- routing -------------------------------------------------------------------------- */

const char *tool_listener_protocol_name(enum cfg_listener_protocol p)
{
    switch (p) {
    case CFG_LISTENER_HTTPS: return "HTTPS";
    case CFG_LISTENER_H2C: return "H2C";
    default: return "HTTP";
    }
}

const char *tool_host_how_name(enum url_map_host_how h)
{
    switch (h) {
    case URL_MAP_HOST_EXACT_PORT: return "exact_with_port";
    case URL_MAP_HOST_EXACT: return "exact";
    case URL_MAP_HOST_WILDCARD: return "wildcard";
    case URL_MAP_HOST_ANY: return "any";
    default: return "none";
    }
}

static uint16_t listener_port(const struct cfg_listener *l)
{
    const struct sockaddr_storage *ss = &l->address.ss;
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static bool listener_scheme_fits(const struct cfg_listener *l, const char *scheme)
{
    bool https = scheme && strcmp(scheme, "https") == 0;
    return https == (l->protocol == CFG_LISTENER_HTTPS);
}

/* The listener a request arrives on (enum tool_listener_how), or NULL. */
static const struct cfg_listener *listener_choose(const struct config *cfg,
                                                  const struct tool_request *rq,
                                                  enum tool_listener_how *how)
{
    if (rq->listener) {
        *how = TOOL_LISTENER_NAMED;
        for (size_t i = 0; i < cfg->n_listeners; i++)
            if (strcmp(cfg->listeners[i].name, rq->listener) == 0)
                return &cfg->listeners[i];
        return NULL;
    }
    const struct cfg_listener *port = NULL, *scheme = NULL;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        bool p = rq->port && listener_port(l) == rq->port;
        bool s = listener_scheme_fits(l, rq->scheme ? rq->scheme : "http");
        if (p && s) {
            *how = TOOL_LISTENER_PORT_SCHEME;
            return l;
        }
        if (p && !port)
            port = l;
        if (s && !scheme)
            scheme = l;
    }
    *how = port ? TOOL_LISTENER_PORT : scheme ? TOOL_LISTENER_SCHEME : TOOL_LISTENER_FIRST;
    return port ? port : scheme ? scheme : cfg->n_listeners ? &cfg->listeners[0] : NULL;
}

/* Records the decisions it needs and passes every event on. */
struct route_tracer {
    struct tool_route *out;
    const struct url_map_trace *next;
};

static void on_trace_event(void *ctx, const struct url_map_trace_event *ev)
{
    struct route_tracer *rt = ctx;
    struct tool_route *r = rt->out;
    switch (ev->kind) {
    case URL_MAP_TRACE_HOST:
        r->host_how = ev->host_how;
        r->host_pattern = ev->host_pattern;
        r->path_matcher = ev->path_matcher;
        break;
    case URL_MAP_TRACE_ROUTE_RULE:
        if (ev->matched)
            r->route_rule_index = (long)ev->route_rule_index;
        break;
    case URL_MAP_TRACE_PATH_PATTERN:
        if (ev->pattern_state == URL_MAP_PATTERN_CHOSEN) {
            r->path_rule_index = (long)ev->path_rule_index;
            r->path_pattern = ev->path_pattern;
        }
        break;
    default: break;
    }
    if (rt->next)
        rt->next->on_event(rt->next->ctx, ev);
}

/*
 * The host rule a traced pattern came from: the first listing that very
 * string ("*": the first listing "*" for the chosen path matcher).
 */
static void host_rule_find(const struct cfg_url_map *um, struct tool_route *r)
{
    for (size_t i = 0; r->host_pattern && i < um->n_host_rules; i++) {
        const struct cfg_host_rule *hr = &um->host_rules[i];
        for (size_t j = 0; j < hr->n_hosts; j++) {
            bool same = r->host_how == URL_MAP_HOST_ANY
                            ? strcmp(hr->hosts[j], "*") == 0 && hr->path_matcher == r->path_matcher
                            : hr->hosts[j] == r->host_pattern;
            if (same) {
                r->host_rule = hr;
                r->host_rule_index = i;
                return;
            }
        }
    }
}

/* X-Forwarded-For/-Proto and X-Request-Id, as request_apply_route adds them. */
static int add_forwarding(struct tool_route *r, struct arena *a,
                          const struct sockaddr_storage *client)
{
    struct http_headers *h = &r->head.headers;
    bool tls = r->listener->protocol == CFG_LISTENER_HTTPS;
    if (request_set_forwarded(h, a, r->listener, client, &r->listener->address.ss, tls) != 0)
        return SY_ENOMEM;
    const struct http_header *id = http_headers_get(h, SY_STRLIT("x-request-id"));
    const char *v = "(generated per request)";
    size_t vl = strlen(v);
    if (id && request_id_valid(id->value, id->value_len)) {
        v = id->value;
        vl = id->value_len;
    }
    http_headers_remove(h, SY_STRLIT("x-request-id"));
    return http_headers_add(h, a, SY_STRLIT("x-request-id"), v, vl);
}

/* A copy of rq's header list that the route may change. */
static int head_init(struct http_request_head *h, const struct tool_request *rq, const char *scheme,
                     struct arena *a)
{
    memset(h, 0, sizeof *h);
    h->method = rq->method;
    h->method_len = (uint32_t)rq->method_len;
    h->scheme = scheme;
    h->scheme_len = (uint32_t)strlen(scheme);
    h->authority = rq->authority;
    h->authority_len = (uint32_t)rq->authority_len;
    h->path = rq->target;
    h->path_len = (uint32_t)rq->target_len;
    h->version = HTTP_11;
    h->content_length = -1;
    if (http_headers_init(&h->headers, a, rq->headers.n + 8) != 0)
        return SY_ENOMEM;
    for (uint32_t i = 0; i < rq->headers.n; i++) {
        const struct http_header *f = &rq->headers.v[i];
        if (http_headers_add(&h->headers, a, f->name, f->name_len, f->value, f->value_len) != 0)
            return SY_ENOMEM;
    }
    return 0;
}

/* The route's effect on a request that reaches a backend service. */
static int route_forward(struct tool_route *r, struct arena *a, const struct tool_route_opts *o)
{
    if (o->forwarding && add_forwarding(r, a, o->client_addr) != 0)
        return SY_ENOMEM;
    /* url_map_apply_request rewrites head.path; the matcher's view stays in mreq. */
    if (url_map_apply_request(&r->res, &r->mreq, &r->head, a) != 0)
        return SY_ENOMEM;
    r->up_authority = r->head.authority;
    r->up_authority_len = r->head.authority_len;
    r->up_path = r->head.path;
    r->up_path_len = r->head.path_len;
    return 0;
}

int tool_request_route(const struct tool_config *tc, const struct tool_request *rq, struct arena *a,
                       const struct tool_route_opts *o, struct tool_route *r)
{
    memset(r, 0, sizeof *r);
    r->route_rule_index = r->path_rule_index = -1;
    r->listener = listener_choose(tc->cfg, rq, &r->listener_how);
    if (!r->listener) {
        r->outcome = TOOL_NO_LISTENER;
        r->why = rq->listener ? "no listener of that name" : "the config has no listener";
        return 0;
    }
    r->url_map = r->listener->url_map;
    const struct url_map *m = compiled_map(tc, r->url_map);
    const char *scheme = rq->scheme;
    if (!scheme)
        scheme = r->listener->protocol == CFG_LISTENER_HTTPS ? "https" : "http";
    if (!m || head_init(&r->head, rq, scheme, a) != 0)
        return SY_ENOMEM;
    if (!http_path_is_valid(r->head.path, r->head.path_len)) {
        r->outcome = TOOL_BAD_REQUEST;
        r->status = 400;
        r->why = "not a valid request target";
        return 0;
    }
    int rc = url_map_request_prepare(&r->head, a, &r->mreq);
    if (rc == SY_EINVAL) {
        r->outcome = TOOL_BAD_REQUEST;
        r->status = 400;
        r->why = "the path does not normalize (a bad percent-escape)";
        return 0;
    }
    if (rc != 0)
        return rc;
    struct route_tracer tracer = {.out = r, .next = o->trace};
    struct url_map_trace trace = {.on_event = on_trace_event, .ctx = &tracer};
    url_map_match_traced(m, &r->mreq, o->rand, &r->res, &trace);
    host_rule_find(r->url_map, r);
    const struct cfg_url_redirect *redir = r->res.action->url_redirect;
    if (redir) {
        int n = url_map_redirect_location2(redir, &r->mreq, r->res.matched_prefix_len, r->location,
                                           sizeof r->location);
        r->outcome = n < 0 ? TOOL_LOCAL_REPLY : TOOL_REDIRECT;
        r->status = n < 0 ? 500 : redir->redirect_response_code;
        r->why = n < 0 ? "the redirect's Location is too long or holds a control character" : NULL;
        return 0;
    }
    if (!r->res.service) {
        r->outcome = TOOL_LOCAL_REPLY;
        r->status = 404;
        r->why = "no route: no backend service";
        return 0;
    }
    r->outcome = TOOL_ROUTED;
    return route_forward(r, a, o);
}
