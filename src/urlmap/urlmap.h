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

/* url_map_redirect_location2() with matched_prefix_len 0: a prefix_redirect
 * is then put in front of the whole path. Prefer the former. */
int url_map_redirect_location(const struct cfg_url_redirect *r, const struct url_map_request *req,
                              char *out, size_t cap);

#endif
