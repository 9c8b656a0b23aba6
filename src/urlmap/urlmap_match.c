/*
 * urlmap_match.c — match a request against a compiled url map
 * (url_map_match): hosts, path rules, route rules, weighted splits.
 *
 * Matching semantics (GCP URL maps; docs/configuration.md copies this block;
 * "\*" below is a plain "*": a C comment cannot hold slash-star)
 * ---------------------------------------------------------------------------
 * H. Host rules. The request authority (Host / :authority) is matched
 *    case-insensitively with any ":port" removed ("[v6]:port" keeps the
 *    brackets: "[::1]:8080" is matched as "[::1]") and one trailing "." removed
 *    ("example.com." is "example.com"). In order:
 *    H1. an exact host ("api.internal"). A pattern that itself carries a
 *        port ("api.internal:8080") is compared with the whole authority
 *        instead, before the port-less lookup;
 *    H2. a wildcard "*<suffix>" ("*.example.com", "*-dev.example.com"): the
 *        "*" stands for at least one character, so "*.example.com" matches
 *        "a.example.com" and "a.b.example.com" but not "example.com".
 *        Among matching wildcards the longest suffix wins. A wildcard is
 *        compared with the host without its port, so it carries none;
 *    H3. "*", which matches every host, a missing authority included;
 *    H4. nothing matched: the url map's default action.
 *    When two host rules list the same pattern the first one listed wins.
 * P. Path rules (a path matcher with path_rules). The normalized path
 *    (no query) is compared case-sensitively: an exact path ("/video")
 *    beats every "/x/\*" pattern; among "/x/\*" patterns the longest "/x/"
 *    prefix wins. "/video/\*" matches "/video/" and "/video/a", not "/video";
 *    "/\*" matches every path. No match: the path matcher's default action.
 * R. Route rules (a path matcher with route_rules, sorted by priority, lowest
 *    first). The first route rule with any matching match rule wins; its
 *    match rules are tried in order, and a rule without match rules
 *    matches every request. Inside one match rule every condition must
 *    hold:
 *    R1. path: prefix_match (the path starts with it), full_path_match (the
 *        path equals it), both ASCII case-insensitive when ignore_case;
 *        regex_match must match the whole path (anchored at both ends;
 *        ignore_case does not apply to it, use "(?i)"). No path condition
 *        matches every path.
 *    R2. header_matches: the value is the header's value; a header that
 *        occurs several times is matched against its values joined with ","
 *        (Envoy). ":method", ":authority" (also "host"), ":scheme" and
 *        ":path" (path plus "?query" when there is one) read the request
 *        line. Kinds: exact_match, prefix_match, suffix_match (case-
 *        sensitive), regex_match (whole value), present_match (true: the
 *        header exists, false: it does not), range_match (the value is a
 *        base-10 signed 64-bit integer, optional "-", nothing else, with
 *        start <= value < end). A header that is absent makes every kind
 *        false except present_match; then invert_match negates the result
 *        (so an inverted exact_match holds when the header is absent).
 *        A joined value longer than URL_MAP_JOIN_CAP (64 KiB) counts as
 *        present with a value that matches nothing.
 *    R3. query_parameter_matches: the query is split on "&", each part on
 *        its first "="; the first parameter whose raw (not percent-decoded)
 *        name equals `name` is used, and its raw value ("" when there is no
 *        "="). present_match: true = the parameter exists (with or without
 *        a value), false = it does not; exact_match compares the raw value;
 *        regex_match must match the whole raw value.
 *    No route rule matches: the path matcher's default action.
 * S. Weighted splits: r = rand % total weight; the entries are walked in
 *    order with cumulative weights and the first whose cumulative weight
 *    exceeds r is chosen, so weight-0 entries are never picked.
 * A. Header actions are listed most specific first: the chosen weighted
 *    backend service's, the route rule's, the path matcher's, the url map's;
 *    an empty header_action (no adds, no removes) is skipped.
 * M. matched_prefix_len (what url_rewrite.path_prefix_rewrite and
 *    url_redirect.prefix_redirect replace): prefix_match → the prefix's
 *    length; full_path_match and regex_match → the whole path (Envoy
 *    replaces the whole matched path); a "/x/\*" path rule → the length of
 *    "/x/" (the pattern without its "*"); an exact path rule → the whole
 *    path; a match rule without a path condition and every default action
 *    → 0.
 *
 * The compiled layout (hash tables, route index) is described in
 * urlmap-int.h and built by urlmap_compile.c; regexes are urlmap_regex.c's.
 * Matching allocates nothing: regexes use per-thread match data, and joined
 * header values go to one per-thread buffer (tls_join).
 *
 * Tracing (url_map_match_traced, for `switchyard explain` and `diff`): the
 * same code reports each decision through the trace's callback as it makes
 * it. On the request path the trace is NULL: each hook is one predictable
 * test and the hooks themselves are cold, out-of-line functions.
 */
#include "urlmap/urlmap-int.h"

#include "core/parse.h"

/* Cap on a header value joined from several occurrences (rule R2). */
#define URL_MAP_JOIN_CAP (64 * 1024)

/* Joined header values and ":path" with its query (rule R2). */
static _Thread_local char tls_join[URL_MAP_JOIN_CAP];

/* ---- match: hosts and path rules ------------------------------------------- */

/* ---- trace (url_map_match_traced; `t` is NULL on the request path) ----------- */

/* The trace hooks are cold: kept out of line, out of the request path's way. */

static __attribute__((cold)) void trace_emit(const struct url_map_trace *t,
                                             struct url_map_trace_event *ev)
{
    t->on_event(t->ctx, ev);
}

/* Rules H1..H4 decided: slot `s` of m->hosts or m->suffixes (NULL: none). */
static __attribute__((cold)) void trace_host(const struct url_map *m, const struct url_map_trace *t,
                                             const struct um_strtab_slot *s,
                                             const struct um_path_matcher *pm)
{
    const struct um_strtab *sfx = &m->suffixes;
    bool wild = s && sfx->n && s >= sfx->slots && s <= sfx->slots + sfx->mask;
    struct url_map_trace_event ev = {.kind = URL_MAP_TRACE_HOST,
                                     .path_matcher = pm ? pm->cfg : NULL};
    if (s) {
        /* Keys point into the configured patterns; a suffix is "*" + key. */
        bool with_port = !wild && host_part_len(s->key, s->len) != s->len;
        ev.host_how = with_port ? URL_MAP_HOST_EXACT_PORT
                      : wild    ? URL_MAP_HOST_WILDCARD
                                : URL_MAP_HOST_EXACT;
        ev.host_pattern = wild ? s->key - 1 : s->key;
    } else if (pm) {
        ev.host_how = URL_MAP_HOST_ANY;
        ev.host_pattern = "*";
    }
    trace_emit(t, &ev);
}

/* ---- match: hosts and path rules ------------------------------------------- */

/*
 * Rules H1 and H2 in one pass over the host from its end: the running hash
 * is the reverse hash of each suffix (the whole host at the end), so each
 * position where a wildcard suffix can start costs one probe. Returns the
 * exact host's slot, else the longest suffix's, else NULL.
 */
static const struct um_strtab_slot *host_lookup(const struct url_map *m, const char *h, size_t n)
{
    uint32_t hash = FNV_OFFSET;
    const struct um_strtab_slot *best = NULL;
    for (size_t i = n; i-- > 0;) {
        unsigned char c = ascii_lower((unsigned char)h[i]);
        hash = fnv_step(hash, c);
        if (i == 0 || n - i > m->max_suffix_len || !(m->suffix_first[c >> 3] & (1u << (c & 7))))
            continue; /* "*" needs a byte; no suffix this long or starting so */
        const struct um_strtab_slot *v = um_strtab_find(&m->suffixes, h + i, n - i, hash);
        if (v)
            best = v;
    }
    const struct um_strtab_slot *exact = um_strtab_find(&m->hosts, h, n, hash);
    return exact ? exact : best;
}

/* The path matcher for this authority, or NULL for the url map default. */
static const struct um_path_matcher *host_find(const struct url_map *m, const char *a, size_t n,
                                               const struct url_map_trace *t)
{
    const struct um_strtab_slot *s = NULL;
    if (!a)
        n = 0;
    if (n && m->hosts_with_port)
        s = um_strtab_find(&m->hosts, a, n, hash_rev_icase(a, n));
    if (!s && n)
        s = host_lookup(m, a, host_part_len(a, n));
    const struct um_path_matcher *pm = s ? s->val : m->any_host;
    if (t)
        trace_host(m, t, s, pm);
    return pm;
}

/* Rule P: exact path, else the longest "/x/\*" prefix, else NULL. */
static const struct cfg_path_rule *path_rules_find(const struct um_path_matcher *pm, const char *p,
                                                   size_t n, size_t *prefix_len)
{
    const struct cfg_path_rule *pr = um_strtab_get(&pm->exact, p, n, hash_fwd(p, n, false));
    if (pr) {
        *prefix_len = n;
        return pr;
    }
    if (pm->prefix.n == 0)
        return NULL;
    uint32_t h = FNV_OFFSET;
    for (size_t i = 0; i < n && i < pm->max_prefix_len; i++) {
        h = fnv_step(h, (unsigned char)p[i]);
        if (p[i] != '/')
            continue;
        const struct cfg_path_rule *hit = um_strtab_get(&pm->prefix, p, i + 1, h);
        if (hit) {
            pr = hit;
            *prefix_len = i + 1;
        }
    }
    return pr;
}

/* ---- match: conditions --------------------------------------------------------- */

enum hdr_state {
    HDR_ABSENT = 0,
    HDR_FOUND,   /* *v, *vn hold the value */
    HDR_TOO_LONG /* present, joined value over URL_MAP_JOIN_CAP */
};

static enum hdr_state opt_value(const char *s, size_t sn, const char **v, size_t *vn)
{
    if (!s)
        return HDR_ABSENT;
    *v = s;
    *vn = sn;
    return HDR_FOUND;
}

/* ":path": the path, plus "?query" when the request has one. */
static enum hdr_state path_value(const struct url_map_request *req, const char **v, size_t *vn)
{
    size_t pn = req->path ? req->path_len : 0;
    if (!req->query)
        return opt_value(str_or_empty(req->path), pn, v, vn);
    if (pn + 1 + req->query_len > sizeof(tls_join))
        return HDR_TOO_LONG;
    if (pn)
        memcpy(tls_join, req->path, pn);
    tls_join[pn] = '?';
    if (req->query_len)
        memcpy(tls_join + pn + 1, req->query, req->query_len);
    *v = tls_join;
    *vn = pn + 1 + req->query_len;
    return HDR_FOUND;
}

static bool join_append(size_t *used, const char *s, size_t n, bool comma)
{
    if (*used + comma + n > sizeof(tls_join))
        return false;
    if (comma)
        tls_join[(*used)++] = ',';
    if (n)
        memcpy(tls_join + *used, s, n);
    *used += n;
    return true;
}

/* A regular header's value; several occurrences are joined with ",". */
static enum hdr_state header_value(const struct http_headers *hs, const char *name, size_t nlen,
                                   const char **v, size_t *vn)
{
    const struct http_header *first = NULL;
    size_t used = 0;
    bool joined = false;
    for (uint32_t i = 0; hs && i < hs->n; i++) {
        const struct http_header *h = &hs->v[i];
        if (h->name_len != nlen || !eq_icase(h->name, name, nlen))
            continue;
        if (!first) {
            first = h;
            continue;
        }
        if (!joined && !join_append(&used, first->value, first->value_len, false))
            return HDR_TOO_LONG;
        joined = true;
        if (!join_append(&used, h->value, h->value_len, true))
            return HDR_TOO_LONG;
    }
    if (!first)
        return HDR_ABSENT;
    *v = joined ? tls_join : first->value;
    *vn = joined ? used : first->value_len;
    return HDR_FOUND;
}

static enum hdr_state hdr_lookup(const struct um_hdr_match *hm, const struct url_map_request *req,
                                 const char **v, size_t *vn)
{
    switch (hm->src) {
    case HDR_SRC_METHOD: return opt_value(req->method, req->method_len, v, vn);
    case HDR_SRC_AUTHORITY: return opt_value(req->authority, req->authority_len, v, vn);
    case HDR_SRC_SCHEME: return opt_value(req->scheme, req->scheme_len, v, vn);
    case HDR_SRC_PATH: return path_value(req, v, vn);
    default: return header_value(req->headers, hm->name, hm->name_len, v, vn);
    }
}

static bool hdr_value_matches(const struct um_hdr_match *hm, const char *v, size_t n)
{
    const struct cfg_header_match *c = hm->cfg;
    size_t vl = hm->value_len;
    int64_t x;
    switch (c->kind) {
    case CFG_HDR_EXACT: return n == vl && bytes_eq(v, hm->value, n);
    case CFG_HDR_PREFIX: return n >= vl && bytes_eq(v, hm->value, vl);
    case CFG_HDR_SUFFIX: return n >= vl && bytes_eq(v + n - vl, hm->value, vl);
    case CFG_HDR_REGEX: return um_regex_full(hm->re, v, n);
    case CFG_HDR_RANGE:
        return sy_parse_dec_i64(v, n, &x) == 0 && c->range_start <= x && x < c->range_end;
    default: return false;
    }
}

static bool header_cond(const struct um_hdr_match *hm, const struct url_map_request *req)
{
    const char *v = NULL;
    size_t n = 0;
    enum hdr_state st = hdr_lookup(hm, req, &v, &n);
    bool ok;
    if (hm->cfg->kind == CFG_HDR_PRESENT)
        ok = (st != HDR_ABSENT) == hm->cfg->present;
    else
        ok = st == HDR_FOUND && hdr_value_matches(hm, v, n);
    return ok != hm->cfg->invert_match;
}

/* The first parameter named name[0..nn) in the raw query (rule R3). */
static bool query_find(const char *q, size_t qn, const char *name, size_t nn, const char **v,
                       size_t *vn)
{
    size_t i = 0;
    while (q && i < qn) {
        const char *amp = memchr(q + i, '&', qn - i);
        size_t end = amp ? (size_t)(amp - q) : qn;
        const char *eq = memchr(q + i, '=', end - i);
        size_t kend = eq ? (size_t)(eq - q) : end;
        if (kend - i == nn && bytes_eq(q + i, name, nn)) {
            *v = eq ? eq + 1 : q + end;
            *vn = eq ? end - kend - 1 : 0;
            return true;
        }
        i = end + 1;
    }
    return false;
}

static bool query_cond(const struct um_query_match *qm, const struct url_map_request *req)
{
    const struct cfg_query_match *c = qm->cfg;
    const char *v = NULL;
    size_t n = 0;
    bool found =
        query_find(req->query, req->query_len, str_or_empty(c->name), qm->name_len, &v, &n);
    switch (c->kind) {
    case CFG_QUERY_PRESENT: return found == c->present;
    case CFG_QUERY_EXACT: return found && n == qm->value_len && bytes_eq(v, qm->value, n);
    case CFG_QUERY_REGEX: return found && um_regex_full(qm->re, v, n);
    default: return false;
    }
}

/* Rule R1; sets *prefix_len per rule M. */
static bool path_cond(const struct um_match_rule *mr, const char *p, size_t n, size_t *prefix_len)
{
    size_t l = mr->path_len;
    switch (mr->kind) {
    case CFG_PATH_PREFIX: *prefix_len = l; return n >= l && str_eq(p, mr->path, l, mr->ignore_case);
    case CFG_PATH_FULL: *prefix_len = n; return n == l && str_eq(p, mr->path, l, mr->ignore_case);
    case CFG_PATH_REGEX:
        *prefix_len = n;
        if (n < mr->lit_len || !str_eq(p, mr->lit, mr->lit_len, mr->lit_icase))
            return false;
        return um_regex_full(mr->path_re, p, n);
    default: *prefix_len = 0; return true;
    }
}

/* A failed condition as match_rule_check reports it: kind on top, index below. */
#define COND_SHIFT 28

static inline uint32_t cond_fail(enum url_map_cond kind, uint32_t i)
{
    return (uint32_t)kind << COND_SHIFT | i;
}

/* 0 when every condition of `mr` holds, else the first that failed (cond_fail). */
static uint32_t match_rule_check(const struct um_match_rule *mr, const struct url_map_request *req,
                                 size_t *prefix_len)
{
    if (!path_cond(mr, str_or_empty(req->path), req->path ? req->path_len : 0, prefix_len))
        return cond_fail(URL_MAP_COND_PATH, 0);
    for (uint32_t i = 0; i < mr->n_hdrs; i++) {
        if (!header_cond(&mr->hdrs[i], req))
            return cond_fail(URL_MAP_COND_HEADER, i);
    }
    for (uint32_t i = 0; i < mr->n_queries; i++) {
        if (!query_cond(&mr->queries[i], req))
            return cond_fail(URL_MAP_COND_QUERY, i);
    }
    return 0;
}

static __attribute__((cold)) void trace_match_rule(const struct url_map_trace *t,
                                                   const struct um_path_matcher *pm, uint32_t i,
                                                   size_t j, uint32_t fail, bool skipped)
{
    struct url_map_trace_event ev = {
        .kind = URL_MAP_TRACE_MATCH_RULE,
        .path_matcher = pm->cfg,
        .route_rule_index = i,
        .match_rule_index = j,
        .cond = (enum url_map_cond)(fail >> COND_SHIFT),
        .cond_index = fail & ((1u << COND_SHIFT) - 1),
        .matched = fail == 0,
        .skipped_by_index = skipped,
    };
    trace_emit(t, &ev);
}

static __attribute__((cold)) void trace_route_rule(const struct url_map_trace *t,
                                                   const struct um_path_matcher *pm, uint32_t i,
                                                   bool ok, bool skipped)
{
    struct url_map_trace_event ev = {
        .kind = URL_MAP_TRACE_ROUTE_RULE,
        .path_matcher = pm->cfg,
        .route_rule_index = i,
        .matched = ok && !skipped,
        .skipped_by_index = skipped,
    };
    trace_emit(t, &ev);
}

/*
 * Does route rule `i` match? Its match rules are tried in order; one that
 * holds decides. `skipped`: the trace evaluates a rule the route index
 * passed over (reported, never chosen).
 */
static bool route_rule_ok(const struct um_path_matcher *pm, uint32_t i,
                          const struct url_map_request *req, size_t *prefix_len,
                          const struct url_map_trace *t, bool skipped)
{
    const struct um_route_rule *rr = &pm->rrs[i];
    bool ok = rr->n_mrs == 0; /* no match rules: every request (as the loader reads it) */
    *prefix_len = 0;
    for (size_t j = 0; !ok && j < rr->n_mrs; j++) {
        uint32_t fail = match_rule_check(&rr->mrs[j], req, prefix_len);
        if (t)
            trace_match_rule(t, pm, i, j, fail, skipped);
        ok = fail == 0;
    }
    if (t)
        trace_route_rule(t, pm, i, ok, skipped);
    return ok;
}

/* The bucket of `t` for key p[0..n) with hash `h`, or NULL. */
static const struct um_route_bucket *bucket_find(const struct um_strtab *t, const char *p, size_t n,
                                                 uint32_t h)
{
    return t->n ? um_strtab_get(t, p, n, h) : NULL;
}

/* A path's keys (enum route_key_kind) and their hashes, in one pass. */
struct path_keys {
    size_t seg_len;
    uint32_t seg, iseg, full;
};

static void path_keys_hash(const char *p, size_t n, struct path_keys *k)
{
    uint32_t h = FNV_OFFSET, hi = FNV_OFFSET;
    size_t i = 0;
    for (; i < n; i++) {
        h = fnv_step(h, (unsigned char)p[i]);
        hi = fnv_step(hi, ascii_lower((unsigned char)p[i]));
        if (i > 0 && p[i] == '/') {
            i++;
            break;
        }
    }
    k->seg_len = i;
    k->seg = h;
    k->iseg = hi;
    for (; i < n; i++)
        h = fnv_step(h, (unsigned char)p[i]);
    k->full = h;
}

/*
 * Rule R: the first route rule in priority order that matches, or NULL.
 * Walks the buckets of the path's keys merged with the generic list. With
 * a trace, the rules the index passes over are evaluated too, in their
 * place in priority order, and reported as skipped (never chosen); one
 * call site of route_rule_ok keeps the request path's code as it was.
 */
static const struct cfg_route_rule *route_rules_find(const struct um_path_matcher *pm,
                                                     const struct url_map_request *req,
                                                     size_t *prefix_len,
                                                     const struct url_map_trace *t)
{
    const char *p = str_or_empty(req->path);
    size_t n = req->path ? req->path_len : 0;
    struct path_keys keys;
    path_keys_hash(p, n, &keys);
    const struct um_route_bucket *lists[RKEY_KINDS] = {
        [RKEY_NONE] = &pm->generic,
        [RKEY_SEG] = bucket_find(&pm->index[RKEY_SEG], p, keys.seg_len, keys.seg),
        [RKEY_ISEG] = bucket_find(&pm->index[RKEY_ISEG], p, keys.seg_len, keys.iseg),
        [RKEY_FULL] = bucket_find(&pm->index[RKEY_FULL], p, n, keys.full),
    };
    uint32_t pos[RKEY_KINDS] = {0};
    uint32_t next = 0; /* trace: every rule below it was reported */
    size_t unused;
    for (;;) {
        int best = -1;
        for (int k = 0; k < RKEY_KINDS; k++) {
            const struct um_route_bucket *b = lists[k];
            if (b && pos[k] < b->n && (best < 0 || b->idx[pos[k]] < lists[best]->idx[pos[best]]))
                best = k;
        }
        uint32_t i = best < 0 ? (uint32_t)pm->cfg->n_route_rules : lists[best]->idx[pos[best]];
        bool skipped = t && next < i;
        if (skipped)
            i = next;
        else if (best < 0)
            return NULL;
        else
            pos[best]++;
        next = i + 1;
        if (route_rule_ok(pm, i, req, skipped ? &unused : prefix_len, t, skipped) && !skipped)
            return pm->rrs[i].cfg;
    }
}

/*
 * Trace, rule P: every pattern of every path rule, in config order, and why
 * it was or was not the one `chosen` (NULL: none) by path_rules_find.
 */
static __attribute__((cold)) void trace_path_patterns(const struct um_path_matcher *pm,
                                                      const char *p, size_t n,
                                                      const struct cfg_path_rule *chosen,
                                                      size_t chosen_len,
                                                      const struct url_map_trace *t)
{
    bool chosen_exact = chosen && um_strtab_get(&pm->exact, p, n, hash_fwd(p, n, false));
    for (size_t i = 0; i < pm->cfg->n_path_rules; i++) {
        const struct cfg_path_rule *pr = &pm->cfg->path_rules[i];
        for (size_t j = 0; j < pr->n_paths; j++) {
            const char *pat = str_or_empty(pr->paths[j]);
            size_t pl = strlen(pat);
            bool prefix = pl >= 2 && pat[pl - 1] == '*' && pat[pl - 2] == '/';
            size_t kl = prefix ? pl - 1 : pl;
            bool hit = prefix ? n >= kl && bytes_eq(p, pat, kl) : n == kl && bytes_eq(p, pat, kl);
            const struct um_strtab *tab = prefix ? &pm->prefix : &pm->exact;
            bool first = um_strtab_get(tab, pat, kl, hash_fwd(pat, kl, false)) == pr;
            struct url_map_trace_event ev = {
                .kind = URL_MAP_TRACE_PATH_PATTERN,
                .path_matcher = pm->cfg,
                .path_rule_index = i,
                .path_pattern = pat,
                .pattern_state = URL_MAP_PATTERN_NO_MATCH,
            };
            if (hit && !first)
                ev.pattern_state = URL_MAP_PATTERN_SHADOWED;
            else if (hit && pr == chosen &&
                     (prefix ? !chosen_exact && kl == chosen_len : chosen_exact))
                ev.pattern_state = URL_MAP_PATTERN_CHOSEN;
            else if (hit)
                ev.pattern_state = URL_MAP_PATTERN_OUTRANKED;
            trace_emit(t, &ev);
        }
    }
}

/* ---- match: result ----------------------------------------------------------------- */

/* Rule S. NULL only for a split whose weights are all 0. */
static const struct cfg_weighted_backend_service *split_pick(const struct cfg_route_action *a,
                                                             uint32_t rand)
{
    uint64_t total = 0;
    for (size_t i = 0; i < a->n_weighted_backend_services; i++)
        total += a->weighted_backend_services[i].weight;
    if (total == 0)
        return NULL;
    uint64_t r = rand % total, cum = 0;
    for (size_t i = 0; i < a->n_weighted_backend_services; i++) {
        cum += a->weighted_backend_services[i].weight;
        if (r < cum)
            return &a->weighted_backend_services[i];
    }
    return NULL;
}

static inline void header_action_add(struct url_map_result *out, const struct cfg_header_action *ha)
{
    if (!ha || (ha->n_request_headers_to_add == 0 && ha->n_request_headers_to_remove == 0 &&
                ha->n_response_headers_to_add == 0 && ha->n_response_headers_to_remove == 0))
        return;
    if (out->n_header_actions < URL_MAP_MAX_HEADER_ACTIONS)
        out->header_actions[out->n_header_actions++] = ha;
}

/* Fill `out` for action `a`, chosen under route rule `rr` (may be NULL) of
 * path matcher `pm` (NULL for the url map's default). */
static void result_fill(const struct url_map *m, const struct um_path_matcher *pm,
                        const struct cfg_route_rule *rr, const struct cfg_route_action *a,
                        uint32_t rand, struct url_map_result *out, const struct url_map_trace *t)
{
    const struct cfg_weighted_backend_service *w = NULL;
    out->action = a;
    if (a->url_redirect) {
        out->service = NULL;
    } else if (a->n_weighted_backend_services) {
        w = split_pick(a, rand);
        out->service = w ? w->backend_service : NULL;
        if (t && w) {
            struct url_map_trace_event ev = {
                .kind = URL_MAP_TRACE_SPLIT,
                .path_matcher = pm ? pm->cfg : NULL,
                .split_index = (size_t)(w - a->weighted_backend_services),
            };
            trace_emit(t, &ev);
        }
    } else {
        out->service = a->service;
    }
    header_action_add(out, w ? &w->header_action : NULL);
    header_action_add(out, rr ? &rr->header_action : NULL);
    header_action_add(out, pm ? &pm->cfg->header_action : NULL);
    header_action_add(out, &m->cfg->header_action);
}

/*
 * url_map_match is this with t == NULL: on the request path each trace
 * hook costs one predictable test (and a tail jump to get here).
 */
int url_map_match_traced(const struct url_map *m, const struct url_map_request *req, uint32_t rand,
                         struct url_map_result *out, const struct url_map_trace *t)
{
    memset(out, 0, sizeof(*out));
    const struct um_path_matcher *pm = host_find(m, req->authority, req->authority_len, t);
    const struct cfg_route_rule *rr = NULL;
    const struct cfg_route_action *a = NULL;
    size_t plen = 0;
    if (pm && pm->cfg->n_route_rules) {
        rr = route_rules_find(pm, req, &plen, t);
        a = rr ? &rr->action : NULL;
    } else if (pm && pm->cfg->n_path_rules) {
        const char *p = str_or_empty(req->path);
        size_t n = req->path ? req->path_len : 0;
        const struct cfg_path_rule *pr = path_rules_find(pm, p, n, &plen);
        if (t)
            trace_path_patterns(pm, p, n, pr, plen, t);
        a = pr ? &pr->action : NULL;
    }
    if (!a) {
        /* No rule matched: the path matcher's default, or the url map's (rule M: 0). */
        a = pm ? &pm->cfg->default_action : &m->cfg->default_action;
        plen = 0;
        if (t) {
            struct url_map_trace_event ev = {.kind = URL_MAP_TRACE_DEFAULT,
                                             .path_matcher = pm ? pm->cfg : NULL};
            trace_emit(t, &ev);
        }
    }
    result_fill(m, pm, rr, a, rand, out, t);
    out->matched_prefix_len = plen;
    return 0;
}

int url_map_match(const struct url_map *m, const struct url_map_request *req, uint32_t rand,
                  struct url_map_result *out)
{
    return url_map_match_traced(m, req, rand, out, NULL);
}
