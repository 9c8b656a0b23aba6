/*
 * urlmap_compile.c — compile a cfg_url_map into the matcher urlmap_match.c
 * runs: host tables, per-path-matcher path-rule tables, compiled route rules
 * (header, query and path conditions, regexes) and the route index that
 * files each route rule under the one path key it can match. Everything
 * allocated here hangs off the url map's one list (um_calloc) and is freed
 * by url_map_free. Layout: urlmap-int.h; semantics: urlmap_match.c.
 */
#include "urlmap/urlmap-int.h"

#include <stdlib.h>

#include "core/errors.h"
#include "core/strlit.h"

/* A zeroed block owned by `m`, freed by url_map_free. NULL on failure. */
void *um_calloc(struct url_map *m, size_t n, size_t size)
{
    if (size && n > (SIZE_MAX - sizeof(struct um_mem)) / size)
        return NULL;
    struct um_mem *b = calloc(1, sizeof(*b) + n * size);
    if (!b)
        return NULL;
    b->u.h.next = m->mem;
    m->mem = b;
    return b + 1;
}

/* ---- compile: route rules -------------------------------------------------- */

static enum hdr_source hdr_source_of(const char *name)
{
    if (strcmp(name, ":method") == 0)
        return HDR_SRC_METHOD;
    if (strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0)
        return HDR_SRC_AUTHORITY;
    if (strcmp(name, ":scheme") == 0)
        return HDR_SRC_SCHEME;
    if (strcmp(name, ":path") == 0)
        return HDR_SRC_PATH;
    return HDR_SRC_HEADER;
}

static int hdr_match_compile(struct url_map *m, struct um_hdr_match *hm,
                             const struct cfg_header_match *c)
{
    hm->cfg = c;
    hm->name = str_or_empty(c->header_name);
    hm->name_len = strlen(hm->name);
    hm->src = hdr_source_of(hm->name);
    hm->value = str_or_empty(c->value);
    hm->value_len = strlen(hm->value);
    if (c->kind == CFG_HDR_REGEX && !(hm->re = um_regex_compile(m, c->value, c->regex)))
        return SY_ENOMEM;
    return 0;
}

static int query_match_compile(struct url_map *m, struct um_query_match *qm,
                               const struct cfg_query_match *c)
{
    qm->cfg = c;
    qm->name_len = strlen(str_or_empty(c->name));
    qm->value = str_or_empty(c->value);
    qm->value_len = strlen(qm->value);
    if (c->kind == CFG_QUERY_REGEX && !(qm->re = um_regex_compile(m, c->value, c->regex)))
        return SY_ENOMEM;
    return 0;
}

static int match_rule_compile(struct url_map *m, struct um_match_rule *mr,
                              const struct cfg_match_rule *c)
{
    mr->cfg = c;
    mr->kind = c->path_kind;
    mr->ignore_case = c->ignore_case;
    mr->n_hdrs = (uint32_t)c->n_header_matches;
    mr->n_queries = (uint32_t)c->n_query_parameter_matches;
    mr->path = str_or_empty(c->path);
    mr->path_len = strlen(mr->path);
    if (c->path_kind == CFG_PATH_REGEX &&
        !(mr->path_re = um_regex_compile(m, c->path, c->path_regex)))
        return SY_ENOMEM;
    mr->hdrs = um_calloc(m, c->n_header_matches, sizeof(*mr->hdrs));
    mr->queries = um_calloc(m, c->n_query_parameter_matches, sizeof(*mr->queries));
    if (!mr->hdrs || !mr->queries)
        return SY_ENOMEM;
    for (size_t i = 0; i < c->n_header_matches; i++) {
        if (hdr_match_compile(m, &mr->hdrs[i], &c->header_matches[i]) != 0)
            return SY_ENOMEM;
    }
    for (size_t i = 0; i < c->n_query_parameter_matches; i++) {
        if (query_match_compile(m, &mr->queries[i], &c->query_parameter_matches[i]) != 0)
            return SY_ENOMEM;
    }
    return 0;
}

static int route_rules_compile(struct url_map *m, struct um_path_matcher *pm)
{
    const struct cfg_path_matcher *c = pm->cfg;
    pm->rrs = um_calloc(m, c->n_route_rules, sizeof(*pm->rrs));
    if (!pm->rrs)
        return SY_ENOMEM;
    for (size_t i = 0; i < c->n_route_rules; i++) {
        const struct cfg_route_rule *rc = &c->route_rules[i];
        struct um_route_rule *rr = &pm->rrs[i];
        rr->cfg = rc;
        rr->n_mrs = rc->n_match_rules;
        rr->mrs = um_calloc(m, rc->n_match_rules, sizeof(*rr->mrs));
        if (!rr->mrs)
            return SY_ENOMEM;
        for (size_t j = 0; j < rc->n_match_rules; j++) {
            if (match_rule_compile(m, &rr->mrs[j], &rc->match_rules[j]) != 0)
                return SY_ENOMEM;
        }
    }
    return 0;
}

/* ---- compile: route index ---------------------------------------------------- */

/*
 * The key of a path: its first segment with both slashes ("/api/" for
 * "/api/v1/x"), or the whole path when it has no second "/". Returns the
 * key's length.
 */
static size_t path_key_len(const char *p, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (p[i] == '/')
            return i + 1;
    }
    return n;
}
/* A key under which a rule can be filed (see enum route_key_kind). */
struct route_key {
    enum route_key_kind kind;
    const char *s;
    size_t n;
};

/*
 * The literal a path must start with for this match rule to hold, and
 * how: *icase (ASCII case-insensitively), *full (the path equals it).
 * Returns its length, 0 when there is none.
 */
static size_t match_rule_literal(const struct um_match_rule *mr, const char **lit, bool *icase,
                                 bool *full)
{
    const char *p = mr->path;
    *lit = p;
    *icase = mr->cfg->ignore_case;
    *full = false;
    switch (mr->cfg->path_kind) {
    case CFG_PATH_PREFIX: return mr->path_len;
    case CFG_PATH_FULL: *full = true; return mr->path_len;
    case CFG_PATH_REGEX:
        p += p[0] == '^'; /* redundant: compiled anchored anyway */
        *icase = strncmp(p, SY_STRLIT("(?i)")) == 0;
        p += *icase ? SY_STRLEN("(?i)") : 0;
        *lit = p;
        return um_regex_literal_prefix(p, mr->path_re, *icase);
    default: return 0;
    }
}

static struct route_key match_rule_key(const struct um_match_rule *mr)
{
    const char *lit;
    bool icase, full;
    size_t n = match_rule_literal(mr, &lit, &icase, &full);
    struct route_key none = {RKEY_NONE, NULL, 0};
    if (n == 0 || lit[0] != '/')
        return none;
    if (full && !icase)
        return (struct route_key){RKEY_FULL, lit, n};
    /* A prefix without the path's second "/" does not fix the first
     * segment: "/api" also matches "/apis/x". */
    if (!full && !memchr(lit + 1, '/', n - 1))
        return none;
    return (struct route_key){icase ? RKEY_ISEG : RKEY_SEG, lit, path_key_len(lit, n)};
}

/* The first-segment form of a key (a full path has one too). */
static struct route_key key_as_segment(struct route_key k)
{
    if (k.kind == RKEY_FULL)
        return (struct route_key){RKEY_SEG, k.s, path_key_len(k.s, k.n)};
    return k;
}

/*
 * The one key that covers both: equal full paths stay full; otherwise
 * their first segments, case-sensitive if both are and they are equal,
 * case-insensitive if they are equal ignoring case; else none.
 */
static struct route_key key_join(struct route_key a, struct route_key b)
{
    struct route_key none = {RKEY_NONE, NULL, 0};
    if (a.kind == RKEY_NONE || b.kind == RKEY_NONE)
        return none;
    if (a.kind == RKEY_FULL && b.kind == RKEY_FULL && a.n == b.n && memcmp(a.s, b.s, a.n) == 0)
        return a;
    a = key_as_segment(a);
    b = key_as_segment(b);
    if (a.n != b.n || !eq_icase(a.s, b.s, a.n))
        return none;
    if (a.kind == RKEY_SEG && b.kind == RKEY_SEG && memcmp(a.s, b.s, a.n) == 0)
        return a;
    a.kind = RKEY_ISEG;
    return a;
}

/* Every match rule of a route rule must share the key. */
static struct route_key route_rule_key(const struct um_route_rule *rr)
{
    struct route_key k = {RKEY_NONE, NULL, 0};
    for (size_t j = 0; j < rr->cfg->n_match_rules; j++) {
        struct route_key mk = match_rule_key(&rr->mrs[j]);
        k = j == 0 ? mk : key_join(k, mk);
        if (k.kind == RKEY_NONE)
            break;
    }
    return k;
}

/* The bucket for key `k`, created on first use. NULL on failure. */
static struct um_route_bucket *bucket_for(struct url_map *m, struct um_path_matcher *pm,
                                          struct route_key k)
{
    struct um_strtab *t = &pm->index[k.kind];
    uint32_t h = hash_fwd(k.s, k.n, t->icase);
    struct um_route_bucket *b = (struct um_route_bucket *)um_strtab_get(t, k.s, k.n, h);
    if (!b && (b = um_calloc(m, 1, sizeof(*b))))
        um_strtab_put(t, k.s, k.n, h, b);
    return b;
}

/*
 * Index route rules by the key every path they can match has (first
 * segment, first segment ignoring case, or whole path), so a match walks
 * only the rules of its path's three keys merged with the generic ones, in
 * priority order. Keys come from prefix_match, full_path_match and the
 * literal start of regex_match.
 */
static int route_index_build(struct url_map *m, struct um_path_matcher *pm)
{
    uint32_t n = (uint32_t)pm->cfg->n_route_rules;
    for (int kind = RKEY_SEG; kind < RKEY_KINDS; kind++) {
        if (um_strtab_init(m, &pm->index[kind], n, kind == RKEY_ISEG) != 0)
            return SY_ENOMEM;
    }
    /* Pass 0 sizes each bucket, pass 1 fills it in rule order. */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            struct route_key k = route_rule_key(&pm->rrs[i]);
            struct um_route_bucket *b = k.kind == RKEY_NONE ? &pm->generic : bucket_for(m, pm, k);
            if (!b)
                return SY_ENOMEM;
            if (pass == 0) {
                b->cap++;
                continue;
            }
            if (!b->idx && !(b->idx = um_calloc(m, b->cap, sizeof(*b->idx))))
                return SY_ENOMEM;
            b->idx[b->n++] = i;
        }
    }
    return 0;
}

/* ---- compile: path rules, path matchers, hosts ----------------------------- */

static int path_rules_compile(struct url_map *m, struct um_path_matcher *pm)
{
    const struct cfg_path_matcher *c = pm->cfg;
    size_t total = 0;
    for (size_t i = 0; i < c->n_path_rules; i++)
        total += c->path_rules[i].n_paths;
    if (um_strtab_init(m, &pm->exact, total, false) != 0 ||
        um_strtab_init(m, &pm->prefix, total, false) != 0)
        return SY_ENOMEM;
    for (size_t i = 0; i < c->n_path_rules; i++) {
        const struct cfg_path_rule *pr = &c->path_rules[i];
        for (size_t j = 0; j < pr->n_paths; j++) {
            const char *p = str_or_empty(pr->paths[j]);
            size_t n = strlen(p);
            if (n >= 2 && p[n - 1] == '*' && p[n - 2] == '/') {
                um_strtab_put(&pm->prefix, p, n - 1, hash_fwd(p, n - 1, false), pr);
                if (n - 1 > pm->max_prefix_len)
                    pm->max_prefix_len = n - 1;
            } else {
                um_strtab_put(&pm->exact, p, n, hash_fwd(p, n, false), pr);
            }
        }
    }
    return 0;
}

/* The literal each path regex starts with, a cheap test run before it. */
static void regex_literals_init(struct um_path_matcher *pm)
{
    for (size_t i = 0; i < pm->cfg->n_route_rules; i++) {
        const struct um_route_rule *rr = &pm->rrs[i];
        for (size_t j = 0; j < rr->cfg->n_match_rules; j++) {
            struct um_match_rule *mr = &rr->mrs[j];
            bool full;
            if (mr->cfg->path_kind == CFG_PATH_REGEX)
                mr->lit_len = match_rule_literal(mr, &mr->lit, &mr->lit_icase, &full);
        }
    }
}

static int path_matcher_compile(struct url_map *m, struct um_path_matcher *pm,
                                const struct cfg_path_matcher *c)
{
    pm->cfg = c;
    if (c->n_route_rules == 0)
        return path_rules_compile(m, pm);
    if (route_rules_compile(m, pm) != 0)
        return SY_ENOMEM;
    regex_literals_init(pm);
    return route_index_build(m, pm);
}

/* The compiled path matcher a host rule names, or NULL. */
static const struct um_path_matcher *host_rule_target(const struct url_map *m,
                                                      const struct cfg_host_rule *hr)
{
    const struct cfg_url_map *um = m->cfg;
    for (size_t i = 0; i < um->n_path_matchers; i++) {
        if (hr->path_matcher == &um->path_matchers[i])
            return &m->pms[i];
    }
    for (size_t i = 0; i < um->n_path_matchers; i++) {
        const char *name = um->path_matchers[i].name;
        if (hr->path_matcher_name && name && strcmp(name, hr->path_matcher_name) == 0)
            return &m->pms[i];
    }
    return NULL;
}

static void host_pattern_add(struct url_map *m, const char *h, const struct um_path_matcher *pm)
{
    size_t n = strlen(h);
    if (n == 1 && h[0] == '*') {
        if (!m->any_host)
            m->any_host = pm;
    } else if (h[0] == '*') {
        const char *suffix = h + 1;
        size_t sl = n - 1 - (n > 2 && h[n - 1] == '.'); /* the host loses its final "." too */
        unsigned char first = ascii_lower((unsigned char)suffix[0]);
        um_strtab_put(&m->suffixes, suffix, sl, hash_rev_icase(suffix, sl), pm);
        m->suffix_first[first >> 3] |= (uint8_t)(1u << (first & 7));
        if (sl > m->max_suffix_len)
            m->max_suffix_len = sl;
    } else {
        const char *rb = h[0] == '[' ? strchr(h, ']') : NULL;
        size_t hl = host_part_len(h, n);
        if (h[0] == '[' ? (rb && rb[1] == ':') : strchr(h, ':') != NULL) {
            m->hosts_with_port = true;
            hl = n; /* matched against the whole authority (rule H1) */
        }
        um_strtab_put(&m->hosts, h, hl, hash_rev_icase(h, hl), pm);
    }
}

static int hosts_compile(struct url_map *m)
{
    const struct cfg_url_map *um = m->cfg;
    size_t total = 0;
    for (size_t i = 0; i < um->n_host_rules; i++)
        total += um->host_rules[i].n_hosts;
    if (um_strtab_init(m, &m->hosts, total, true) != 0 ||
        um_strtab_init(m, &m->suffixes, total, true) != 0)
        return SY_ENOMEM;
    for (size_t i = 0; i < um->n_host_rules; i++) {
        const struct cfg_host_rule *hr = &um->host_rules[i];
        const struct um_path_matcher *pm = host_rule_target(m, hr);
        for (size_t j = 0; pm && j < hr->n_hosts; j++) {
            if (hr->hosts[j] && hr->hosts[j][0])
                host_pattern_add(m, hr->hosts[j], pm);
        }
    }
    return 0;
}

struct url_map *url_map_compile(const struct cfg_url_map *um)
{
    struct url_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cfg = um;
    m->pms = um_calloc(m, um->n_path_matchers, sizeof(*m->pms));
    if (!m->pms)
        goto fail;
    for (size_t i = 0; i < um->n_path_matchers; i++) {
        if (path_matcher_compile(m, &m->pms[i], &um->path_matchers[i]) != 0)
            goto fail;
    }
    if (hosts_compile(m) != 0)
        goto fail;
    return m;
fail:
    url_map_free(m);
    return NULL;
}

void url_map_free(struct url_map *m)
{
    if (!m)
        return;
    struct um_mem *b = m->mem;
    while (b) {
        struct um_mem *next = b->u.h.next;
        if (b->u.h.re)
            pcre2_code_free(b->u.h.re);
        free(b);
        b = next;
    }
    free(m);
}
