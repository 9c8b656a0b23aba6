/*
 * explain.c — `switchyard explain`: where one request goes, and why.
 *
 * The request is routed by tool_request_route (the proxy's own steps and
 * matcher); the trace of the matcher (url_map_match_traced) gives every
 * decision as it was made: the host rule, each route rule considered in
 * priority order with the first condition that failed, or each path rule
 * pattern. This file only collects those events and prints them, as text
 * or as one JSON object (the schema is in docs/tools.md).
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "exchange/retry.h"
#include "http/headers.h"
#include "tools/tools-int.h"
#include "tools/tools.h"

#define EXPLAIN_ARENA_LIMIT (64u * 1024 * 1024)
#define SHOWN_VALUE_MAX     200 /* bytes of a request value quoted in a reason */

struct explain_opts {
    const char *config;
    const char *method;
    const char *client_ip;
    const char *listener;
    const char *url;
    const char *headers[TOOL_MAX_HEADERS];
    size_t n_headers;
    bool json;
};

/* The trace, kept in the order the matcher reported it. */
struct event_list {
    struct url_map_trace_event *v;
    size_t n, cap;
    bool oom;
};

struct explain {
    const struct explain_opts *o;
    const struct tool_config *tc;
    struct tool_request rq;
    struct tool_route r;
    struct event_list ev;
    struct http_headers resp; /* the response headers the route's header actions add */
    struct arena *a;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: switchyard explain -c FILE [-X METHOD] [-H 'name: value']...\n"
               "                          [--client-ip IP] [--listener NAME] [--json] URL\n"
               "Where the proxy would send URL, and why. Exit status: 0 routed to a backend\n"
               "service, 3 redirect, 4 bad request (400), 5 other local reply (404 no route),\n"
               "1 usage or config error. See docs/tools.md.\n");
}

static void on_event(void *ctx, const struct url_map_trace_event *e)
{
    struct event_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct url_map_trace_event *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *e;
}

/* ---- words ------------------------------------------------------------------- */

static const char *hdr_kind_name(enum cfg_header_match_kind k)
{
    switch (k) {
    case CFG_HDR_EXACT: return "exact_match";
    case CFG_HDR_PREFIX: return "prefix_match";
    case CFG_HDR_SUFFIX: return "suffix_match";
    case CFG_HDR_REGEX: return "regex_match";
    case CFG_HDR_PRESENT: return "present_match";
    case CFG_HDR_RANGE: return "range_match";
    default: return "?";
    }
}

static const char *query_kind_name(enum cfg_query_match_kind k)
{
    switch (k) {
    case CFG_QUERY_PRESENT: return "present_match";
    case CFG_QUERY_EXACT: return "exact_match";
    case CFG_QUERY_REGEX: return "regex_match";
    default: return "?";
    }
}

static const char *path_kind_name(enum cfg_path_match_kind k)
{
    switch (k) {
    case CFG_PATH_PREFIX: return "prefix_match";
    case CFG_PATH_FULL: return "full_path_match";
    case CFG_PATH_REGEX: return "regex_match";
    default: return "none";
    }
}

static const char *cond_name(enum url_map_cond c)
{
    switch (c) {
    case URL_MAP_COND_PATH: return "path";
    case URL_MAP_COND_HEADER: return "header";
    case URL_MAP_COND_QUERY: return "query";
    default: return "none";
    }
}

static const char *pattern_state_name(enum url_map_pattern_state s)
{
    switch (s) {
    case URL_MAP_PATTERN_CHOSEN: return "chosen";
    case URL_MAP_PATTERN_OUTRANKED: return "outranked";
    case URL_MAP_PATTERN_SHADOWED: return "shadowed";
    default: return "no_match";
    }
}

static const char *listener_how_text(enum tool_listener_how h)
{
    switch (h) {
    case TOOL_LISTENER_NAMED: return "named by --listener";
    case TOOL_LISTENER_PORT_SCHEME: return "its port and scheme fit the URL";
    case TOOL_LISTENER_PORT: return "its port fits the URL (not its scheme)";
    case TOOL_LISTENER_SCHEME: return "no listener on the URL's port; the first of its scheme";
    default: return "no listener fits the URL's port or scheme; the first listener";
    }
}

static const char *listener_how_name(enum tool_listener_how h)
{
    switch (h) {
    case TOOL_LISTENER_NAMED: return "named";
    case TOOL_LISTENER_PORT_SCHEME: return "port_and_scheme";
    case TOOL_LISTENER_PORT: return "port";
    case TOOL_LISTENER_SCHEME: return "scheme";
    default: return "first";
    }
}

static const char *host_how_text(enum url_map_host_how h)
{
    switch (h) {
    case URL_MAP_HOST_EXACT_PORT: return "exact host with port (H1)";
    case URL_MAP_HOST_EXACT: return "exact host (H1)";
    case URL_MAP_HOST_WILDCARD: return "longest matching wildcard (H2)";
    case URL_MAP_HOST_ANY: return "\"*\" matches every host (H3)";
    default: return "no host rule matched (H4)";
    }
}

/* A duration in ms as the config writes it. */
static const char *duration(uint64_t ms, char *buf, size_t cap)
{
    if (ms % 1000)
        snprintf(buf, cap, "%llums", (unsigned long long)ms);
    else
        snprintf(buf, cap, "%llus", (unsigned long long)(ms / 1000));
    return buf;
}

/* ---- reasons ------------------------------------------------------------------ */

/* A request value as shown in a reason: quoted, cut, or "absent". */
static void shown(char *buf, size_t cap, const char *v, size_t n, bool present)
{
    if (!present) {
        snprintf(buf, cap, "none");
        return;
    }
    int cut = n > SHOWN_VALUE_MAX ? SHOWN_VALUE_MAX : (int)n;
    snprintf(buf, cap, "\"%.*s\"%s", cut, v, (size_t)cut < n ? "..." : "");
}

/* The request's value of a header_match's header (joined with "," as R2 says). */
static void header_seen(const struct tool_route *r, const char *name, char *buf, size_t cap)
{
    const struct url_map_request *m = &r->mreq;
    if (strcmp(name, ":method") == 0) {
        shown(buf, cap, m->method, m->method_len, true);
    } else if (strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0) {
        shown(buf, cap, m->authority, m->authority_len, m->authority != NULL);
    } else if (strcmp(name, ":scheme") == 0) {
        shown(buf, cap, m->scheme, m->scheme_len, m->scheme != NULL);
    } else if (strcmp(name, ":path") == 0) {
        char tmp[SHOWN_VALUE_MAX + 2];
        snprintf(tmp, sizeof tmp, "%.*s%s%.*s", (int)m->path_len, m->path, m->query ? "?" : "",
                 (int)m->query_len, m->query ? m->query : "");
        shown(buf, cap, tmp, strlen(tmp), true);
    } else {
        /* Several fields joined with ",", as rule R2 matches them; cut for display
         * (one byte over SHOWN_VALUE_MAX makes shown() add "..."). */
        char joined[SHOWN_VALUE_MAX + 2] = "";
        bool found = false;
        for (uint32_t i = 0; i < m->headers->n; i++) {
            const struct http_header *h = &m->headers->v[i];
            if (h->name_len != strlen(name) || strncasecmp(h->name, name, h->name_len) != 0)
                continue;
            size_t n = strlen(joined);
            snprintf(joined + n, sizeof joined - n, "%s%.*s", found ? "," : "", (int)h->value_len,
                     h->value);
            found = true;
        }
        shown(buf, cap, joined, strlen(joined), found);
    }
}

/* The raw value of the first query parameter named `name` (display only). */
static void query_seen(const struct tool_route *r, const char *name, char *buf, size_t cap)
{
    const char *q = r->mreq.query;
    size_t qn = r->mreq.query_len, nn = strlen(name);
    for (size_t i = 0; q && i <= qn;) {
        const char *amp = memchr(q + i, '&', qn - i);
        size_t end = amp ? (size_t)(amp - q) : qn;
        const char *eq = memchr(q + i, '=', end - i);
        size_t kend = eq ? (size_t)(eq - q) : end;
        if (kend - i == nn && memcmp(q + i, name, nn) == 0) {
            shown(buf, cap, eq ? eq + 1 : q + end, eq ? end - kend - 1 : 0, true);
            return;
        }
        i = end + 1;
    }
    shown(buf, cap, NULL, 0, false);
}

/* Why match rule j of route rule i failed, as one line of text. */
static void match_rule_reason(const struct explain *x, const struct url_map_trace_event *e,
                              char *buf, size_t cap)
{
    const struct cfg_route_rule *rr = &e->path_matcher->route_rules[e->route_rule_index];
    const struct cfg_match_rule *mr = &rr->match_rules[e->match_rule_index];
    char seen[SHOWN_VALUE_MAX + 16];
    if (e->cond == URL_MAP_COND_NONE) {
        snprintf(buf, cap, "every condition holds");
    } else if (e->cond == URL_MAP_COND_PATH) {
        shown(seen, sizeof seen, x->r.mreq.path, x->r.mreq.path_len, true);
        snprintf(buf, cap, "path %s \"%s\"%s: got %s", path_kind_name(mr->path_kind),
                 mr->path ? mr->path : "", mr->ignore_case ? " (ignore_case)" : "", seen);
    } else if (e->cond == URL_MAP_COND_HEADER) {
        const struct cfg_header_match *h = &mr->header_matches[e->cond_index];
        char want[SHOWN_VALUE_MAX + 64];
        if (h->kind == CFG_HDR_PRESENT)
            snprintf(want, sizeof want, "%s", h->present ? "true" : "false");
        else if (h->kind == CFG_HDR_RANGE)
            snprintf(want, sizeof want, "[%lld, %lld)", (long long)h->range_start,
                     (long long)h->range_end);
        else
            snprintf(want, sizeof want, "\"%s\"", h->value ? h->value : "");
        header_seen(&x->r, h->header_name, seen, sizeof seen);
        snprintf(buf, cap, "header %s %s %s%s: got %s", h->header_name, hdr_kind_name(h->kind),
                 want, h->invert_match ? " (invert_match)" : "", seen);
    } else {
        const struct cfg_query_match *q = &mr->query_parameter_matches[e->cond_index];
        char want[SHOWN_VALUE_MAX + 16];
        if (q->kind == CFG_QUERY_PRESENT)
            snprintf(want, sizeof want, "%s", q->present ? "true" : "false");
        else
            snprintf(want, sizeof want, "\"%s\"", q->value ? q->value : "");
        query_seen(&x->r, q->name, seen, sizeof seen);
        snprintf(buf, cap, "query parameter %s %s %s: got %s", q->name, query_kind_name(q->kind),
                 want, seen);
    }
}

/* ---- the action --------------------------------------------------------------- */

static const char *header_action_level(const struct explain *x, const struct cfg_header_action *ha,
                                       const char **name)
{
    const struct url_map_result *res = &x->r.res;
    const struct cfg_route_action *a = res->action;
    *name = NULL;
    for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
        if (ha == &a->weighted_backend_services[i].header_action) {
            *name = a->weighted_backend_services[i].backend_service_name;
            return "weighted_backend_service";
        }
    }
    const struct cfg_path_matcher *pm = x->r.path_matcher;
    if (pm && x->r.route_rule_index >= 0 &&
        ha == &pm->route_rules[x->r.route_rule_index].header_action)
        return "route_rule";
    if (pm && ha == &pm->header_action) {
        *name = pm->name;
        return "path_matcher";
    }
    *name = x->r.url_map->name;
    return "url_map";
}

/* The effective timeout of service `s` under the route, and where it comes from. */
static uint64_t timeout_of(const struct explain *x, const struct cfg_backend_service *s,
                           const char **from)
{
    const struct cfg_route_action *a = x->r.res.action;
    uint64_t t = route_timeout_ms(a, s, &x->r.head.headers);
    uint64_t plain = a->timeout_set ? a->timeout_ms : s->timeout_ms;
    *from = t != plain ? "grpc-timeout" : a->timeout_set ? "route" : "backend_service";
    return t;
}

static void retry_conditions_text(uint32_t bits, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < 32; i++) {
        if (!(bits & (1u << i)))
            continue;
        int k = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", retry_condition_name(1u << i));
        if (k < 0 || (size_t)k >= cap - n)
            break;
        n += (size_t)k;
    }
}

/* ---- text output --------------------------------------------------------------------- */

/* The first of the MATCH_RULE events just before ROUTE_RULE event i (i when none). */
static size_t match_rules_start(const struct explain *x, size_t i)
{
    size_t k = i;
    while (k > 0 && x->ev.v[k - 1].kind == URL_MAP_TRACE_MATCH_RULE &&
           x->ev.v[k - 1].route_rule_index == x->ev.v[i].route_rule_index)
        k--;
    return k;
}

static void text_route_rules(const struct explain *x, FILE *f)
{
    const struct cfg_path_matcher *pm = x->r.path_matcher;
    char at[512], reason[1024];
    size_t seen = 0;
    fprintf(f, "route rules  path matcher %s, in priority order (the first match wins):\n",
            pm->name);
    for (size_t i = 0; i < x->ev.n; i++) {
        const struct url_map_trace_event *e = &x->ev.v[i];
        if (e->kind != URL_MAP_TRACE_ROUTE_RULE)
            continue;
        const struct cfg_route_rule *rr = &pm->route_rules[e->route_rule_index];
        const char *verdict = e->matched            ? "MATCH"
                              : e->skipped_by_index ? "no match (skipped by the route index)"
                                                    : "no match";
        seen++;
        fprintf(f, "  priority %lld  %s  %s\n", (long long)rr->priority, verdict,
                tool_config_at(x->tc->cfg, rr->mark, at, sizeof at));
        if (rr->n_match_rules == 0)
            fprintf(f, "      no match rules: every request matches\n");
        for (size_t k = match_rules_start(x, i); k < i; k++) {
            match_rule_reason(x, &x->ev.v[k], reason, sizeof reason);
            fprintf(f, "      match rule %zu: %s\n", x->ev.v[k].match_rule_index + 1, reason);
        }
    }
    if (x->r.route_rule_index >= 0 && seen < pm->n_route_rules)
        fprintf(f, "  (%zu later rule%s not considered)\n", pm->n_route_rules - seen,
                pm->n_route_rules - seen == 1 ? "" : "s");
}

static void text_path_rules(const struct explain *x, FILE *f)
{
    const struct cfg_path_matcher *pm = x->r.path_matcher;
    static const char *const words[] = {
        [URL_MAP_PATTERN_CHOSEN] = "CHOSEN",
        [URL_MAP_PATTERN_NO_MATCH] = "no match",
        [URL_MAP_PATTERN_OUTRANKED] = "matches, but an exact path or a longer prefix wins",
        [URL_MAP_PATTERN_SHADOWED] = "matches, but the same pattern is listed earlier",
    };
    char at[512];
    fprintf(f, "path rules   path matcher %s (an exact path beats the longest \"/x/*\"):\n",
            pm->name);
    for (size_t i = 0; i < x->ev.n; i++) {
        const struct url_map_trace_event *e = &x->ev.v[i];
        if (e->kind != URL_MAP_TRACE_PATH_PATTERN)
            continue;
        tool_config_at(x->tc->cfg, pm->path_rules[e->path_rule_index].mark, at, sizeof at);
        fprintf(f, "  %-24s %s  %s\n", e->path_pattern, words[e->pattern_state], at);
    }
}

static void text_header_list(FILE *f, const char *indent, const struct http_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        fprintf(f, "%s%.*s: %.*s\n", indent, (int)h->v[i].name_len, h->v[i].name,
                (int)h->v[i].value_len, h->v[i].value);
    if (!h->n)
        fprintf(f, "%s(none)\n", indent);
}

static void text_adds(FILE *f, const char *what, const struct cfg_header_add *add, size_t n,
                      char *const *rm, size_t n_rm)
{
    for (size_t i = 0; i < n_rm; i++)
        fprintf(f, "      %s remove %s\n", what, rm[i]);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "      %s add    %s: %s%s\n", what, add[i].name, add[i].value,
                add[i].replace ? " (replace)" : "");
}

static void text_header_actions(const struct explain *x, FILE *f)
{
    const struct url_map_result *res = &x->r.res;
    if (!res->n_header_actions) {
        fprintf(f, "header actions  none\n");
        return;
    }
    /* An answer from the proxy (a redirect) gets the response side only. */
    bool forwarded = x->r.outcome == TOOL_ROUTED;
    fprintf(f, "header actions  applied in this order%s:\n",
            forwarded ? "" : " (the response side only: nothing goes upstream)");
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *ha = res->header_actions[i];
        const char *name;
        const char *level = header_action_level(x, ha, &name);
        fprintf(f, "    %s%s%s\n", level, name ? " " : "", name ? name : "");
        if (forwarded)
            text_adds(f, "request ", ha->request_headers_to_add, ha->n_request_headers_to_add,
                      ha->request_headers_to_remove, ha->n_request_headers_to_remove);
        text_adds(f, "response", ha->response_headers_to_add, ha->n_response_headers_to_add,
                  ha->response_headers_to_remove, ha->n_response_headers_to_remove);
    }
}

static void text_policies(const struct explain *x, FILE *f)
{
    const struct cfg_route_action *a = x->r.res.action;
    const char *from;
    char d[32], d2[32], conds[256];
    uint64_t t = timeout_of(x, x->r.res.service, &from);
    fprintf(f, "timeout      %s (%s)\n", t ? duration(t, d, sizeof d) : "none (0s: no limit)",
            !strcmp(from, "route")             ? "the route's timeout"
            : !strcmp(from, "backend_service") ? "the backend service's timeout"
                                               : "the request's grpc-timeout, shorter");
    struct retry_policy p;
    retry_policy_from_route(a, &p);
    retry_conditions_text(p.conditions, conds, sizeof conds);
    fprintf(f, "retry        %s: retry_conditions [%s], num_retries %u, per_try_timeout %s%s\n",
            a->retry_policy.set ? "retry_policy" : "no retry_policy (the default)", conds,
            p.num_retries,
            p.per_try_timeout_ms ? duration(p.per_try_timeout_ms, d, sizeof d)
                                 : "the route timeout",
            p.allow_body ? "" : "; requests with a body are not retried");
    const struct cfg_fault_policy *fp = &a->fault_injection_policy;
    if (!a->fault_set || (!fp->delay_set && !fp->abort_set)) {
        fprintf(f, "faults       none\n");
    } else {
        fprintf(f, "faults      ");
        if (fp->delay_set)
            fprintf(f, " delay %s for %g%% of requests;",
                    duration(fp->fixed_delay_ms, d2, sizeof d2), fp->delay_percentage);
        if (fp->abort_set && fp->grpc_status >= 0 && fp->http_status == 0)
            fprintf(f, " abort with grpc-status %d for %g%% of requests", fp->grpc_status,
                    fp->abort_percentage);
        else if (fp->abort_set)
            fprintf(f, " abort with %d for %g%% of requests", fp->http_status,
                    fp->abort_percentage);
        fprintf(f, "\n");
    }
    if (a->request_mirror_policy)
        fprintf(f, "mirror       %s, %g%% of requests\n",
                a->request_mirror_policy->backend_service_name,
                a->request_mirror_policy->mirror_percent);
    if (a->cors_policy && !a->cors_policy->disabled)
        fprintf(f, "cors         cors_policy set: allowed preflights are answered by the proxy\n");
}

static void text_action(const struct explain *x, FILE *f)
{
    const struct tool_route *r = &x->r;
    const struct cfg_route_action *a = r->res.action;
    char d[32];
    if (r->outcome == TOOL_REDIRECT) {
        fprintf(f, "action       redirect %d\n  Location   %s\n", r->status, r->location);
        return;
    }
    if (r->outcome == TOOL_LOCAL_REPLY) {
        fprintf(f, "action       local reply %d: %s\n", r->status, r->why);
        return;
    }
    if (a->n_weighted_backend_services) {
        fprintf(f, "action       weighted split (each request picks by weight):\n");
        for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
            const struct cfg_weighted_backend_service *w = &a->weighted_backend_services[i];
            const char *from;
            uint64_t t = timeout_of(x, w->backend_service, &from);
            fprintf(f, "    %-24s weight %-5u %5.1f%%  timeout %s%s\n", w->backend_service_name,
                    w->weight, a->total_weight ? 100.0 * w->weight / a->total_weight : 0.0,
                    t ? duration(t, d, sizeof d) : "none",
                    w->backend_service == r->res.service ? "  <- shown below" : "");
        }
    } else {
        fprintf(f, "action       backend service %s\n", r->res.service->name);
    }
    bool pr = a->url_rewrite.path_prefix_rewrite, hr = a->url_rewrite.host_rewrite;
    fprintf(f, "upstream     %.*s %.*s\n", (int)r->head.method_len, r->head.method,
            (int)r->up_path_len, r->up_path);
    fprintf(f, "  host       %.*s%s\n", (int)r->up_authority_len,
            r->up_authority ? r->up_authority : "", hr ? "  (host_rewrite)" : "  (kept)");
    if (pr)
        fprintf(f, "  path       path_prefix_rewrite \"%s\" replaced the first %zu bytes\n",
                a->url_rewrite.path_prefix_rewrite, r->res.matched_prefix_len);
    else
        fprintf(f, "  path       kept (no path_prefix_rewrite)\n");
    fprintf(f, "  request headers sent upstream (after forwarding headers and header actions):\n");
    text_header_list(f, "    ", &r->head.headers);
}

static void text_print(const struct explain *x, FILE *f)
{
    const struct tool_route *r = &x->r;
    char at[512];
    fprintf(f, "request      %.*s %s\n", (int)x->rq.method_len, x->rq.method, x->o->url);
    if (r->listener)
        fprintf(f, "listener     %s  %s %s  (%s)\n", r->listener->name, r->listener->address.text,
                tool_listener_protocol_name(r->listener->protocol),
                listener_how_text(r->listener_how));
    if (r->outcome == TOOL_BAD_REQUEST) {
        fprintf(f, "outcome      400 bad request: %s\n", r->why);
        return;
    }
    tool_config_at(x->tc->cfg, r->url_map->mark, at, sizeof at);
    fprintf(f, "url map      %s  %s\n", r->url_map->name, at);
    size_t raw = strcspn(x->rq.target, "?");
    bool same = raw == r->mreq.path_len && !memcmp(r->mreq.path, x->rq.target, raw);
    fprintf(f, "path         %.*s  (%s%.*s)\n", (int)r->mreq.path_len, r->mreq.path,
            same ? "already normalized" : "normalized from ", same ? 0 : (int)raw, x->rq.target);
    if (r->mreq.query)
        fprintf(f, "query        %.*s\n", (int)r->mreq.query_len, r->mreq.query);
    fprintf(f, "authority    %.*s\n", (int)r->mreq.authority_len,
            r->mreq.authority ? r->mreq.authority : "(none)");
    if (r->host_rule) {
        tool_config_at(x->tc->cfg, r->host_rule->mark, at, sizeof at);
        fprintf(f, "host rule    #%zu \"%s\": %s -> path matcher %s  %s\n", r->host_rule_index + 1,
                r->host_pattern, host_how_text(r->host_how), r->path_matcher->name, at);
    } else {
        fprintf(f, "host rule    none: %s -> the url map's default action\n",
                host_how_text(r->host_how));
    }
    if (r->path_matcher && r->path_matcher->n_route_rules)
        text_route_rules(x, f);
    else if (r->path_matcher && r->path_matcher->n_path_rules)
        text_path_rules(x, f);
    if (r->route_rule_index >= 0)
        fprintf(f, "decision     route rule priority %lld\n",
                (long long)r->path_matcher->route_rules[r->route_rule_index].priority);
    else if (r->path_rule_index >= 0)
        fprintf(f, "decision     path rule \"%s\"\n", r->path_pattern);
    else
        fprintf(f, "decision     the %s's default action\n",
                r->path_matcher ? "path matcher" : "url map");
    text_action(x, f);
    text_header_actions(x, f);
    if (x->resp.n) {
        fprintf(f, "  response headers the header actions add:\n");
        text_header_list(f, "    ", &x->resp);
    }
    if (r->outcome == TOOL_ROUTED)
        text_policies(x, f);
}

/* ---- JSON output ----------------------------------------------------------------------- */

static void json_headers(struct json_out *j, const char *key, const struct http_headers *h)
{
    json_out_begin_array(j, key);
    for (uint32_t i = 0; i < h->n; i++) {
        json_out_begin_array(j, NULL);
        json_out_str(j, NULL, h->v[i].name, h->v[i].name_len);
        json_out_str(j, NULL, h->v[i].value, h->v[i].value_len);
        json_out_end(j, false);
    }
    json_out_end(j, false);
}

static void json_adds(struct json_out *j, const char *key, const struct cfg_header_add *add,
                      size_t n)
{
    json_out_begin_array(j, key);
    for (size_t i = 0; i < n; i++) {
        json_out_begin_object(j, NULL);
        json_out_cstr(j, "header_name", add[i].name);
        json_out_cstr(j, "header_value", add[i].value);
        json_out_bool(j, "replace", add[i].replace);
        json_out_end(j, true);
    }
    json_out_end(j, false);
}

static void json_names(struct json_out *j, const char *key, char *const *v, size_t n)
{
    json_out_begin_array(j, key);
    for (size_t i = 0; i < n; i++)
        json_out_cstr(j, NULL, v[i]);
    json_out_end(j, false);
}

static void json_route_rules(const struct explain *x, struct json_out *j)
{
    const struct cfg_path_matcher *pm = x->r.path_matcher;
    char at[512], reason[1024];
    json_out_begin_array(j, "route_rules");
    for (size_t i = 0; i < x->ev.n; i++) {
        const struct url_map_trace_event *e = &x->ev.v[i];
        if (e->kind != URL_MAP_TRACE_ROUTE_RULE)
            continue;
        const struct cfg_route_rule *rr = &pm->route_rules[e->route_rule_index];
        json_out_begin_object(j, NULL);
        json_out_u64(j, "index", e->route_rule_index);
        json_out_i64(j, "priority", rr->priority);
        json_out_cstr(j, "at", tool_config_at(x->tc->cfg, rr->mark, at, sizeof at));
        json_out_bool(j, "matched", e->matched);
        json_out_bool(j, "skipped_by_index", e->skipped_by_index);
        json_out_begin_array(j, "match_rules");
        for (size_t k = match_rules_start(x, i); k < i; k++) {
            const struct url_map_trace_event *m = &x->ev.v[k];
            match_rule_reason(x, m, reason, sizeof reason);
            json_out_begin_object(j, NULL);
            json_out_u64(j, "index", m->match_rule_index);
            json_out_bool(j, "matched", m->matched);
            json_out_cstr(j, "failed", m->matched ? NULL : cond_name(m->cond));
            if (m->cond == URL_MAP_COND_HEADER || m->cond == URL_MAP_COND_QUERY)
                json_out_u64(j, "condition_index", m->cond_index);
            json_out_cstr(j, "reason", reason);
            json_out_end(j, true);
        }
        json_out_end(j, false);
        json_out_end(j, true);
    }
    json_out_end(j, false);
}

static void json_path_rules(const struct explain *x, struct json_out *j)
{
    json_out_begin_array(j, "path_rules");
    for (size_t i = 0; i < x->ev.n; i++) {
        const struct url_map_trace_event *e = &x->ev.v[i];
        if (e->kind != URL_MAP_TRACE_PATH_PATTERN)
            continue;
        json_out_begin_object(j, NULL);
        json_out_u64(j, "index", e->path_rule_index);
        json_out_cstr(j, "pattern", e->path_pattern);
        json_out_cstr(j, "state", pattern_state_name(e->pattern_state));
        json_out_end(j, true);
    }
    json_out_end(j, false);
}

static void json_action(const struct explain *x, struct json_out *j)
{
    const struct tool_route *r = &x->r;
    const struct cfg_route_action *a = r->res.action;
    const char *from;
    json_out_begin_object(j, "action");
    if (r->outcome == TOOL_REDIRECT || (a->url_redirect && r->outcome == TOOL_LOCAL_REPLY)) {
        json_out_cstr(j, "kind", "redirect");
        json_out_begin_object(j, "redirect");
        json_out_i64(j, "status", r->status);
        json_out_cstr(j, "location", r->outcome == TOOL_REDIRECT ? r->location : NULL);
        json_out_end(j, true);
    } else if (a->n_weighted_backend_services) {
        json_out_cstr(j, "kind", "weighted_split");
        json_out_cstr(j, "pick", r->res.service ? r->res.service->name : NULL);
        json_out_begin_array(j, "weighted_backend_services");
        for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
            const struct cfg_weighted_backend_service *w = &a->weighted_backend_services[i];
            json_out_begin_object(j, NULL);
            json_out_cstr(j, "backend_service", w->backend_service_name);
            json_out_u64(j, "weight", w->weight);
            json_out_double(j, "percent",
                            a->total_weight ? 100.0 * w->weight / a->total_weight : 0);
            json_out_u64(j, "timeout_ms", timeout_of(x, w->backend_service, &from));
            json_out_end(j, true);
        }
        json_out_end(j, false);
    } else {
        json_out_cstr(j, "kind", "service");
    }
    json_out_cstr(j, "service", r->res.service ? r->res.service->name : NULL);
    json_out_end(j, true);
}

static void json_header_actions(const struct explain *x, struct json_out *j)
{
    const struct url_map_result *res = &x->r.res;
    json_out_begin_array(j, "header_actions");
    for (size_t i = 0; i < res->n_header_actions; i++) {
        const struct cfg_header_action *ha = res->header_actions[i];
        const char *name;
        json_out_begin_object(j, NULL);
        json_out_cstr(j, "level", header_action_level(x, ha, &name));
        json_out_cstr(j, "name", name);
        json_adds(j, "request_headers_to_add", ha->request_headers_to_add,
                  ha->n_request_headers_to_add);
        json_names(j, "request_headers_to_remove", ha->request_headers_to_remove,
                   ha->n_request_headers_to_remove);
        json_adds(j, "response_headers_to_add", ha->response_headers_to_add,
                  ha->n_response_headers_to_add);
        json_names(j, "response_headers_to_remove", ha->response_headers_to_remove,
                   ha->n_response_headers_to_remove);
        json_out_end(j, true);
    }
    json_out_end(j, false);
}

static void json_policies(const struct explain *x, struct json_out *j)
{
    const struct cfg_route_action *a = x->r.res.action;
    const char *from;
    uint64_t t = timeout_of(x, x->r.res.service, &from);
    json_out_u64(j, "timeout_ms", t);
    json_out_cstr(j, "timeout_from", from);
    struct retry_policy p;
    retry_policy_from_route(a, &p);
    json_out_begin_object(j, "retry_policy");
    json_out_bool(j, "configured", a->retry_policy.set);
    json_out_begin_array(j, "retry_conditions");
    for (unsigned i = 0; i < 32; i++)
        if (p.conditions & (1u << i))
            json_out_cstr(j, NULL, retry_condition_name(1u << i));
    json_out_end(j, false);
    json_out_u64(j, "num_retries", p.num_retries);
    json_out_u64(j, "per_try_timeout_ms", p.per_try_timeout_ms);
    json_out_bool(j, "retries_requests_with_body", p.allow_body);
    json_out_end(j, true);
    const struct cfg_fault_policy *fp = &a->fault_injection_policy;
    if (!a->fault_set || (!fp->delay_set && !fp->abort_set)) {
        json_out_null(j, "fault_injection");
    } else {
        json_out_begin_object(j, "fault_injection");
        if (fp->delay_set) {
            json_out_begin_object(j, "delay");
            json_out_u64(j, "fixed_delay_ms", fp->fixed_delay_ms);
            json_out_double(j, "percentage", fp->delay_percentage);
            json_out_end(j, true);
        } else {
            json_out_null(j, "delay");
        }
        if (fp->abort_set) {
            json_out_begin_object(j, "abort");
            if (fp->http_status)
                json_out_i64(j, "http_status", fp->http_status);
            else
                json_out_null(j, "http_status");
            if (fp->grpc_status >= 0)
                json_out_i64(j, "grpc_status", fp->grpc_status);
            else
                json_out_null(j, "grpc_status");
            json_out_double(j, "percentage", fp->abort_percentage);
            json_out_end(j, true);
        } else {
            json_out_null(j, "abort");
        }
        json_out_end(j, true);
    }
    if (a->request_mirror_policy) {
        json_out_begin_object(j, "request_mirror_policy");
        json_out_cstr(j, "backend_service", a->request_mirror_policy->backend_service_name);
        json_out_double(j, "mirror_percent", a->request_mirror_policy->mirror_percent);
        json_out_end(j, true);
    } else {
        json_out_null(j, "request_mirror_policy");
    }
    json_out_bool(j, "cors_policy", a->cors_policy && !a->cors_policy->disabled);
}

static const char *outcome_name(enum tool_outcome o)
{
    switch (o) {
    case TOOL_ROUTED: return "routed";
    case TOOL_REDIRECT: return "redirect";
    case TOOL_BAD_REQUEST: return "bad_request";
    case TOOL_NO_LISTENER: return "no_listener";
    default: return "local_reply";
    }
}

static void json_request(const struct explain *x, struct json_out *j)
{
    const struct tool_route *r = &x->r;
    json_out_begin_object(j, "request");
    json_out_str(j, "method", x->rq.method, x->rq.method_len);
    json_out_cstr(j, "url", x->o->url);
    json_out_cstr(j, "scheme", r->head.scheme);
    if (x->rq.authority)
        json_out_str(j, "authority", x->rq.authority, x->rq.authority_len);
    else
        json_out_null(j, "authority");
    json_out_str(j, "target", x->rq.target, x->rq.target_len);
    if (r->outcome != TOOL_BAD_REQUEST) {
        json_out_str(j, "path", r->mreq.path, r->mreq.path_len);
        if (r->mreq.query)
            json_out_str(j, "query", r->mreq.query, r->mreq.query_len);
        else
            json_out_null(j, "query");
    }
    json_headers(j, "headers", &x->rq.headers);
    json_out_end(j, true);
}

static void json_matching(const struct explain *x, struct json_out *j)
{
    const struct tool_route *r = &x->r;
    char at[512];
    json_out_begin_object(j, "url_map");
    json_out_cstr(j, "name", r->url_map->name);
    json_out_cstr(j, "at", tool_config_at(x->tc->cfg, r->url_map->mark, at, sizeof at));
    json_out_end(j, true);
    if (r->host_rule) {
        json_out_begin_object(j, "host_rule");
        json_out_u64(j, "index", r->host_rule_index);
        json_out_cstr(j, "pattern", r->host_pattern);
        json_out_cstr(j, "how", tool_host_how_name(r->host_how));
        json_names(j, "hosts", r->host_rule->hosts, r->host_rule->n_hosts);
        json_out_cstr(j, "at", tool_config_at(x->tc->cfg, r->host_rule->mark, at, sizeof at));
        json_out_end(j, true);
    } else {
        json_out_null(j, "host_rule");
    }
    json_out_cstr(j, "path_matcher", r->path_matcher ? r->path_matcher->name : NULL);
    if (r->path_matcher && r->path_matcher->n_route_rules)
        json_route_rules(x, j);
    else if (r->path_matcher && r->path_matcher->n_path_rules)
        json_path_rules(x, j);
    json_out_begin_object(j, "decision");
    if (r->route_rule_index >= 0) {
        json_out_cstr(j, "kind", "route_rule");
        json_out_u64(j, "index", (uint64_t)r->route_rule_index);
        json_out_i64(j, "priority", r->path_matcher->route_rules[r->route_rule_index].priority);
    } else if (r->path_rule_index >= 0) {
        json_out_cstr(j, "kind", "path_rule");
        json_out_u64(j, "index", (uint64_t)r->path_rule_index);
        json_out_cstr(j, "pattern", r->path_pattern);
    } else {
        json_out_cstr(j, "kind", r->path_matcher ? "path_matcher_default" : "url_map_default");
    }
    json_out_end(j, true);
}

static void json_print(const struct explain *x, FILE *f, int exit_code)
{
    const struct tool_route *r = &x->r;
    struct json_out j;
    json_out_init(&j, f);
    json_out_begin_object(&j, NULL);
    json_out_cstr(&j, "outcome", outcome_name(r->outcome));
    json_out_i64(&j, "exit_code", exit_code);
    if (r->outcome != TOOL_ROUTED && r->outcome != TOOL_REDIRECT) {
        json_out_i64(&j, "status", r->status);
        json_out_cstr(&j, "reason", r->why);
    }
    json_request(x, &j);
    json_out_begin_object(&j, "listener");
    json_out_cstr(&j, "name", r->listener->name);
    json_out_cstr(&j, "address", r->listener->address.text);
    json_out_cstr(&j, "protocol", tool_listener_protocol_name(r->listener->protocol));
    json_out_cstr(&j, "chosen_by", listener_how_name(r->listener_how));
    json_out_end(&j, true);
    if (r->outcome != TOOL_BAD_REQUEST) {
        json_matching(x, &j);
        json_action(x, &j);
    }
    if (r->outcome == TOOL_ROUTED) {
        json_out_begin_object(&j, "upstream");
        json_out_str(&j, "method", r->head.method, r->head.method_len);
        json_out_str(&j, "authority", r->up_authority, r->up_authority_len);
        json_out_str(&j, "path", r->up_path, r->up_path_len);
        json_out_bool(&j, "host_rewritten", r->res.action->url_rewrite.host_rewrite != NULL);
        json_out_bool(&j, "path_rewritten", r->res.action->url_rewrite.path_prefix_rewrite != NULL);
        json_headers(&j, "headers", &r->head.headers);
        json_out_end(&j, true);
    }
    if (r->outcome != TOOL_BAD_REQUEST) {
        json_header_actions(x, &j);
        json_headers(&j, "response_headers_added", &x->resp);
    }
    if (r->outcome == TOOL_ROUTED)
        json_policies(x, &j);
    json_out_end(&j, true);
    fputc('\n', f);
}

/* ---- command ------------------------------------------------------------------------------ */

static int parse_args(int argc, char **argv, struct explain_opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},   {"method", required_argument, NULL, 'X'},
        {"header", required_argument, NULL, 'H'},   {"client-ip", required_argument, NULL, 'C'},
        {"listener", required_argument, NULL, 'L'}, {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:X:H:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config = optarg; break;
        case 'X': o->method = optarg; break;
        case 'C': o->client_ip = optarg; break;
        case 'L': o->listener = optarg; break;
        case 'J': o->json = true; break;
        case 'H':
            if (o->n_headers == TOOL_MAX_HEADERS) {
                fprintf(stderr, "switchyard explain: at most %d -H\n", TOOL_MAX_HEADERS);
                return -1;
            }
            o->headers[o->n_headers++] = optarg;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc - 1 || !o->config) {
        fprintf(stderr, "switchyard explain: %s\n",
                !o->config ? "-c FILE is required" : "exactly one URL is required");
        usage(stderr);
        return -1;
    }
    o->url = argv[optind];
    return 0;
}

/* The request from the options. 0, or -1 after saying why. */
static int build_request(struct explain *x, struct sockaddr_storage *client)
{
    const struct explain_opts *o = x->o;
    const char *why = NULL;
    if (tool_request_init(&x->rq, x->a) != 0)
        return -1;
    if (o->method) {
        if (!http_is_token(o->method, strlen(o->method))) {
            fprintf(stderr, "switchyard explain: bad method '%s'\n", o->method);
            return -1;
        }
        x->rq.method = o->method;
        x->rq.method_len = strlen(o->method);
    }
    if (tool_request_set_url(&x->rq, x->a, o->url, strlen(o->url), &why) != 0) {
        fprintf(stderr, "switchyard explain: bad URL '%s': %s\n", o->url,
                why ? why : "out of memory");
        return -1;
    }
    for (size_t i = 0; i < o->n_headers; i++) {
        if (tool_request_add_header(&x->rq, x->a, o->headers[i], strlen(o->headers[i]), &why) !=
            0) {
            fprintf(stderr, "switchyard explain: bad header '%s': %s\n", o->headers[i],
                    why ? why : "out of memory");
            return -1;
        }
    }
    x->rq.listener = o->listener;
    const char *ip = o->client_ip ? o->client_ip : "127.0.0.1";
    memset(client, 0, sizeof *client);
    struct sockaddr_in *v4 = (struct sockaddr_in *)client;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)client;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
    } else {
        fprintf(stderr, "switchyard explain: --client-ip wants an IPv4 or IPv6 address\n");
        return -1;
    }
    return 0;
}

static int exit_code_of(enum tool_outcome o)
{
    switch (o) {
    case TOOL_ROUTED: return EXPLAIN_ROUTED;
    case TOOL_REDIRECT: return EXPLAIN_REDIRECT;
    case TOOL_BAD_REQUEST: return EXPLAIN_BAD_REQUEST;
    case TOOL_LOCAL_REPLY: return EXPLAIN_NO_ROUTE;
    default: return EXPLAIN_ERROR;
    }
}

/* Route, then print. The exit status. */
static int explain_run(struct explain *x)
{
    struct sockaddr_storage client;
    if (build_request(x, &client) != 0)
        return EXPLAIN_ERROR;
    struct url_map_trace trace = {.on_event = on_event, .ctx = &x->ev};
    struct tool_route_opts ro = {.forwarding = true, .client_addr = &client, .trace = &trace};
    if (tool_request_route(x->tc, &x->rq, x->a, &ro, &x->r) != 0 || x->ev.oom ||
        http_headers_init(&x->resp, x->a, 8) != 0) {
        fprintf(stderr, "switchyard explain: out of memory (the request is too large)\n");
        return EXPLAIN_ERROR;
    }
    if (x->r.outcome == TOOL_NO_LISTENER) {
        fprintf(stderr, "switchyard explain: %s%s%s\n", x->r.why, x->o->listener ? ": " : "",
                x->o->listener ? x->o->listener : "");
        return EXPLAIN_ERROR;
    }
    if (x->r.outcome != TOOL_BAD_REQUEST &&
        url_map_apply_response(&x->r.res, &x->resp, x->a) != 0) {
        fprintf(stderr, "switchyard explain: out of memory\n");
        return EXPLAIN_ERROR;
    }
    int rc = exit_code_of(x->r.outcome);
    if (x->o->json)
        json_print(x, stdout, rc);
    else
        text_print(x, stdout);
    return rc;
}

int tools_explain_main(int argc, char **argv)
{
    struct explain_opts o = {0};
    if (parse_args(argc, argv, &o) != 0)
        return EXPLAIN_ERROR;
    struct tool_config tc;
    if (tool_config_load(o.config, &tc, stderr) != 0)
        return EXPLAIN_ERROR;
    struct arena a;
    arena_init(&a, EXPLAIN_ARENA_LIMIT);
    struct explain x = {.o = &o, .tc = &tc, .a = &a};
    int rc = explain_run(&x);
    free(x.ev.v);
    arena_free(&a);
    tool_config_free(&tc);
    return rc;
}
