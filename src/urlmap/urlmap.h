/*
 * urlmap.h — a url_map compiled into a matcher.
 *
 * url_map_compile() turns one validated cfg_url_map into an immutable
 * matcher (host table, per-path-matcher rule tables). url_map_match() is a
 * pure function: no I/O, no allocation, safe to call from any thread.
 * Semantics are GCP's URL map (hostRules, pathMatchers, pathRules,
 * routeRules); docs/configuration.md states them rule by rule.
 */
#ifndef SY_URLMAP_H
#define SY_URLMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config-t.h"
#include "http/http-t.h"

struct url_map;

/* What the matcher looks at. Strings need not be NUL-terminated. */
struct url_map_request {
    const char *method;
    size_t method_len;
    const char *scheme; /* "http" | "https" */
    size_t scheme_len;
    const char *authority; /* Host / :authority as received (port allowed), may be NULL */
    size_t authority_len;
    const char *path; /* normalized path (url_path_normalize), no query */
    size_t path_len;
    const char *query; /* after '?', without it; NULL if none */
    size_t query_len;
    const struct http_headers *headers; /* names lower-case */
};

/* At most this many header actions apply to one request. */
#define URL_MAP_MAX_HEADER_ACTIONS 4

struct url_map_result {
    const struct cfg_route_action *action; /* never NULL after a match */
    /* The backend service chosen (the split resolved with `rand`);
     * NULL when the action is a redirect. */
    const struct cfg_backend_service *service;
    /* Header actions to apply, in the order to apply them (most specific
     * first: weighted backend, route rule, path matcher, url map). */
    const struct cfg_header_action *header_actions[URL_MAP_MAX_HEADER_ACTIONS];
    size_t n_header_actions;
    /* For url_rewrite.path_prefix_rewrite and url_redirect.prefix_redirect:
     * how many leading bytes of the path the rule matched and the rewrite
     * replaces: the prefix_match's length, the length of "/x/" for a path
     * rule "/x/\*", the whole path for full_path_match, regex_match and an
     * exact path rule; 0 for a match rule without a path condition and
     * for default actions. */
    size_t matched_prefix_len;
};

/*
 * Compile `um` (which must outlive the result). Returns NULL on allocation
 * failure only; everything else was validated by the config loader (a
 * hand-built url map whose regex does not compile also gives NULL).
 * Matching semantics, rule by rule: the comment atop src/urlmap/urlmap_match.c.
 */
struct url_map *url_map_compile(const struct cfg_url_map *um);
void url_map_free(struct url_map *m);

/*
 * Match a request. `rand` is a uniformly random 32-bit value used to pick
 * among weighted_backend_services. Always fills `out` (falls back to the
 * url map's default) and returns 0.
 */
int url_map_match(const struct url_map *m, const struct url_map_request *req, uint32_t rand,
                  struct url_map_result *out);

/* ---- tracing: why a request matched (switchyard explain and diff) -------- */

/* How the authority chose a path matcher (rules H1..H4). */
enum url_map_host_how {
    URL_MAP_HOST_NONE = 0,   /* H4: no host rule matched: the url map's default action */
    URL_MAP_HOST_EXACT_PORT, /* H1: a pattern with ":port", equal to the whole authority */
    URL_MAP_HOST_EXACT,      /* H1: an exact host */
    URL_MAP_HOST_WILDCARD,   /* H2: the longest matching "*<suffix>" */
    URL_MAP_HOST_ANY,        /* H3: "*" */
};

/* The first condition of a match rule that did not hold (rule R). */
enum url_map_cond {
    URL_MAP_COND_NONE = 0, /* every condition held */
    URL_MAP_COND_PATH,     /* R1: prefix_match, full_path_match or regex_match */
    URL_MAP_COND_HEADER,   /* R2: header_matches[cond_index] */
    URL_MAP_COND_QUERY,    /* R3: query_parameter_matches[cond_index] */
};

/* Why a path rule's pattern was or was not chosen (rule P). */
enum url_map_pattern_state {
    URL_MAP_PATTERN_CHOSEN = 0, /* the pattern that decided */
    URL_MAP_PATTERN_NO_MATCH,   /* the path is not this pattern / not under it */
    URL_MAP_PATTERN_OUTRANKED,  /* matches, but an exact path or a longer prefix won */
    URL_MAP_PATTERN_SHADOWED,   /* the same pattern is listed earlier: that one is used */
};

enum url_map_trace_kind {
    URL_MAP_TRACE_HOST,         /* host_how, host_pattern, path_matcher */
    URL_MAP_TRACE_MATCH_RULE,   /* route_rule_index, match_rule_index, cond, cond_index, matched */
    URL_MAP_TRACE_ROUTE_RULE,   /* route_rule_index, matched, skipped_by_index */
    URL_MAP_TRACE_PATH_PATTERN, /* path_rule_index, path_pattern, pattern_state */
    URL_MAP_TRACE_DEFAULT,      /* the default action of path_matcher (NULL: the url map's) */
    URL_MAP_TRACE_SPLIT,        /* split_index: the weighted backend service picked */
};

/*
 * One decision of the matcher, reported as it is made. Events come in this
 * order: HOST; then, for a path matcher with route rules, for each route rule
 * in priority order up to the one that matched (or all), its MATCH_RULE
 * events then its ROUTE_RULE event; for one with path rules, a PATH_PATTERN
 * event for every pattern of every path rule, in config order; DEFAULT when
 * a default action is taken; SPLIT when the action is a weighted split.
 * Pointers are into the config and live as long as it.
 */
struct url_map_trace_event {
    enum url_map_trace_kind kind;
    /* the path matcher concerned (HOST: the chosen one); NULL = none / the url map */
    const struct cfg_path_matcher *path_matcher;
    enum url_map_host_how host_how;
    /* HOST: the configured pattern that matched ("*" for ANY), NULL for NONE */
    const char *host_pattern;
    size_t route_rule_index; /* MATCH_RULE, ROUTE_RULE: index in path_matcher->route_rules */
    size_t match_rule_index; /* MATCH_RULE: index in the route rule's match_rules */
    enum url_map_cond cond;  /* MATCH_RULE: the first condition that failed */
    size_t cond_index;       /* MATCH_RULE: which header or query match */
    bool matched;            /* MATCH_RULE, ROUTE_RULE */
    /* MATCH_RULE, ROUTE_RULE: the route index passed this rule over because
     * no path it can match has this path's first segment (or is this path):
     * it is reported, and its match rules evaluated, for the trace only. */
    bool skipped_by_index;
    size_t path_rule_index;                   /* PATH_PATTERN: index in path_matcher->path_rules */
    const char *path_pattern;                 /* PATH_PATTERN: the pattern as configured */
    enum url_map_pattern_state pattern_state; /* PATH_PATTERN */
    size_t split_index; /* SPLIT: index in action->weighted_backend_services */
};

struct url_map_trace {
    /* Called once per event, synchronously, from inside url_map_match_traced. */
    void (*on_event)(void *ctx, const struct url_map_trace_event *ev);
    void *ctx;
};

/*
 * url_map_match(), reporting each decision to `trace` as the matcher makes it
 * (NULL: none; url_map_match is this with NULL). The result is the same
 * with or without a trace. Rules skipped by the route index are evaluated
 * for the trace only, so a trace costs more than a match.
 */
int url_map_match_traced(const struct url_map *m, const struct url_map_request *req, uint32_t rand,
                         struct url_map_result *out, const struct url_map_trace *trace);

/*
 * Normalize a request path for matching and forwarding (RFC 3986 rules as
 * docs/configuration.md lists): decode percent-escapes of unreserved
 * characters, upper-case the hex of the escapes kept, resolve "." and ".."
 * segments, merge repeated slashes when `merge_slashes`. %2F and %5C stay
 * encoded (never separators). `in` is the path only (no query).
 * Writes at most `cap` bytes to `out` (never more than in_len is needed;
 * `out` may be `in` for in-place use, else they must not overlap) and sets
 * *out_len; `out` is not NUL-terminated. Returns 0, SY_EINVAL when the path
 * does not start with "/" or holds a bad escape (the caller answers 400),
 * or SY_ERANGE when `cap` is too small. Rules: src/urlmap/path_normalize.c.
 */
int url_path_normalize(const char *in, size_t in_len, char *out, size_t cap, size_t *out_len,
                       bool merge_slashes);

/*
 * Build the Location for a url_redirect into `out` (NUL-terminated).
 * Returns the length, SY_ERANGE if `cap` is too small, or SY_EINVAL if the
 * result would hold a control character, space or DEL (from the request).
 * prefix_redirect replaces `matched_prefix_len` leading bytes of the path;
 * pass url_map_result.matched_prefix_len. Rules: src/urlmap/redirect.c.
 */
int url_map_redirect_location2(const struct cfg_url_redirect *r, const struct url_map_request *req,
                               size_t matched_prefix_len, char *out, size_t cap);

/* ---- applying a match to a request head (route_apply.c) ------------------ */

struct arena;

/*
 * Split r->path (the request target: the path and an optional "?query"),
 * normalize the path (url_path_normalize, merging slashes), rebuild r->path
 * as "normalized?query" (the query bytes untouched) in `a`, and fill `m`
 * for the matcher from `r` (pointers into r's strings). 0, SY_EINVAL (a path
 * that does not normalize: the proxy answers 400) or SY_ENOMEM (no room
 * left in `a`).
 */
int url_map_request_prepare(struct http_request_head *r, struct arena *a,
                            struct url_map_request *m);

/*
 * Apply the request side of a match to `r`, which url_map_request_prepare
 * filled `m` from: the request header actions in the order res lists them,
 * then url_rewrite.path_prefix_rewrite (replacing res->matched_prefix_len
 * leading bytes of the path; a "/" following the prefix's own final "/" is
 * dropped; the query is kept), then url_rewrite.host_rewrite. Allocates from
 * `a`. 0 or SY_ENOMEM.
 */
int url_map_apply_request(const struct url_map_result *res, const struct url_map_request *m,
                          struct http_request_head *r, struct arena *a);

/* The response side of the match's header actions, applied to `h`. 0 or SY_ENOMEM. */
int url_map_apply_response(const struct url_map_result *res, struct http_headers *h,
                           struct arena *a);

/* url_map_redirect_location2() with matched_prefix_len 0: a prefix_redirect
 * is then put in front of the whole path. Prefer the former. */
int url_map_redirect_location(const struct cfg_url_redirect *r, const struct url_map_request *req,
                              char *out, size_t cap);

#endif
