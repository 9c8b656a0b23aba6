/*
 * urlmap.c — compile a cfg_url_map into a matcher, and match requests.
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
 * Implementation: exact hosts and wildcard suffixes live in open-addressing
 * hash tables hashed from the right, so one pass over the host from its end
 * yields the exact host and the longest matching suffix; path rules in two
 * tables, "/x/\*" prefixes looked up at each "/" in one left-to-right pass.
 * Route rules keep their priority order but are filed by the key every path
 * they can match has (first segment, the same ignoring case, or whole
 * path), so a match walks its path's three buckets merged with the rules
 * that can match anything (see route_index_build). A regex_match's literal
 * start is compared before the regex runs. Regexes are the loader's when it
 * compiled them with PCRE2_ANCHORED | PCRE2_ENDANCHORED, else recompiled
 * here so, with the loader's options; both JIT-compiled when possible.
 * Matching allocates nothing: each thread keeps one pcre2_match_data and one
 * buffer for joined header values.
 */
#include "urlmap/urlmap.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

/* Cap on a header value joined from several occurrences (rule R2). */
#define URL_MAP_JOIN_CAP (64 * 1024)

/* ---- allocation: every compile-time object is on one list ------------- */

struct um_mem {
    union {
        struct {
            struct um_mem *next;
            pcre2_code *re; /* owned regex, or NULL */
        } h;
        max_align_t _align;
    } u;
};

/* ---- hash tables -------------------------------------------------------- */

#define FNV_OFFSET 2166136261u
#define FNV_PRIME  16777619u

struct strtab_slot {
    const char *key; /* NULL = empty slot */
    uint32_t len;
    uint32_t hash;
    const void *val;
};

/* Open addressing, linear probing, at most half full. */
struct strtab {
    struct strtab_slot *slots;
    uint32_t mask;
    uint32_t n;
    bool icase; /* keys compare ASCII case-insensitively */
};

/* ---- compiled rules ----------------------------------------------------- */

/* Where a header_match reads its value (rule R2). */
enum hdr_source {
    HDR_SRC_HEADER = 0,
    HDR_SRC_METHOD,
    HDR_SRC_AUTHORITY,
    HDR_SRC_SCHEME,
    HDR_SRC_PATH,
};

/* A regex compiled anchored at both ends. */
struct um_regex {
    pcre2_code *code;
    bool jit; /* JIT compiled: matched with pcre2_jit_match */
};

struct um_hdr_match {
    const struct cfg_header_match *cfg;
    enum hdr_source src;
    const char *name; /* cfg->header_name */
    size_t name_len;
    const char *value; /* cfg->value, "" when NULL */
    size_t value_len;
    const struct um_regex *re; /* REGEX */
};

struct um_query_match {
    const struct cfg_query_match *cfg;
    size_t name_len;
    const char *value;
    size_t value_len;
    const struct um_regex *re; /* REGEX */
};

/* Fields used on every match are copied out of cfg to save a load. */
struct um_match_rule {
    const struct cfg_match_rule *cfg;
    enum cfg_path_match_kind kind; /* cfg->path_kind */
    bool ignore_case;              /* cfg->ignore_case */
    uint32_t n_hdrs, n_queries;
    const char *path; /* cfg->path, "" when NULL */
    size_t path_len;
    const struct um_regex *path_re; /* CFG_PATH_REGEX */
    /* CFG_PATH_REGEX: the literal every match starts with, checked before
     * running the regex (see match_rule_literal); lit_len 0 = none. */
    const char *lit;
    size_t lit_len;
    bool lit_icase;
    struct um_hdr_match *hdrs;
    struct um_query_match *queries;
};

struct um_route_rule {
    const struct cfg_route_rule *cfg;
    struct um_match_rule *mrs;
    size_t n_mrs; /* cfg->n_match_rules */
};

/*
 * Route index (see route_index_build). A route rule is filed under the one
 * key every path it can match has, or on the generic list.
 */
enum route_key_kind {
    RKEY_NONE = 0, /* may match any path: the generic list */
    RKEY_SEG,      /* the path's first segment, "/api/" for "/api/v1/x" */
    RKEY_ISEG,     /* the same, compared ASCII case-insensitively */
    RKEY_FULL,     /* the whole path */
    RKEY_KINDS
};

/* Rule indices in priority order. */
struct um_route_bucket {
    uint32_t *idx;
    uint32_t n;
    uint32_t cap; /* compile time: entries idx has room for */
};

struct um_path_matcher {
    const struct cfg_path_matcher *cfg;
    struct strtab exact;  /* path rules: "/a" → cfg_path_rule */
    struct strtab prefix; /* path rules: "/a/" (from "/a/\*") → cfg_path_rule */
    size_t max_prefix_len;
    struct um_route_rule *rrs;       /* cfg->n_route_rules entries */
    struct strtab index[RKEY_KINDS]; /* key → struct um_route_bucket (not RKEY_NONE) */
    struct um_route_bucket generic;
};

struct url_map {
    const struct cfg_url_map *cfg;
    struct um_path_matcher *pms; /* one per cfg->path_matchers entry */
    struct strtab hosts;         /* exact hosts → um_path_matcher, hashed from the right */
    struct strtab suffixes;      /* "*<suffix>" keyed by <suffix>, hashed from the right */
    size_t max_suffix_len;
    uint8_t suffix_first[32];               /* bit set: first bytes (lower-case) of the suffixes */
    bool hosts_with_port;                   /* some exact pattern has ":port" */
    const struct um_path_matcher *any_host; /* "*" */
    struct um_mem *mem;
};

/* ---- small helpers -------------------------------------------------------- */

static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool eq_icase(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    }
    return true;
}

/* memcmp() == 0 without a call: the strings compared here are short. */
static inline bool bytes_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return false;
    }
    return true;
}

static inline bool str_eq(const char *a, const char *b, size_t n, bool icase)
{
    return icase ? eq_icase(a, b, n) : bytes_eq(a, b, n);
}

static inline uint32_t fnv_step(uint32_t h, unsigned char c)
{
    return (h ^ c) * FNV_PRIME;
}

/* FNV-1a left to right; `icase` folds ASCII upper case first. */
static uint32_t hash_fwd(const char *s, size_t n, bool icase)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, icase ? ascii_lower((unsigned char)s[i]) : (unsigned char)s[i]);
    return h;
}

/* FNV-1a from the last byte to the first, case-folded (host suffixes). */
static uint32_t hash_rev_icase(const char *s, size_t n)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = n; i-- > 0;)
        h = fnv_step(h, ascii_lower((unsigned char)s[i]));
    return h;
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* A zeroed block owned by `m`, freed by url_map_free. NULL on failure. */
static void *um_calloc(struct url_map *m, size_t n, size_t size)
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

/* ---- hash table ------------------------------------------------------------ */

static int strtab_init(struct url_map *m, struct strtab *t, size_t max_entries, bool icase)
{
    t->icase = icase;
    t->n = 0;
    if (max_entries == 0)
        return 0;
    if (max_entries > (UINT32_MAX >> 2))
        return SY_ENOMEM;
    uint32_t cap = 8;
    while (cap < max_entries * 2)
        cap <<= 1;
    t->slots = um_calloc(m, cap, sizeof(*t->slots));
    if (!t->slots)
        return SY_ENOMEM;
    t->mask = cap - 1;
    return 0;
}

static bool slot_is(const struct strtab *t, const struct strtab_slot *s, const char *key,
                    size_t len, uint32_t hash)
{
    if (s->hash != hash || s->len != len)
        return false;
    return str_eq(s->key, key, len, t->icase);
}

static const void *strtab_get(const struct strtab *t, const char *key, size_t len, uint32_t hash)
{
    if (t->n == 0)
        return NULL;
    for (uint32_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        const struct strtab_slot *s = &t->slots[i];
        if (!s->key)
            return NULL;
        if (slot_is(t, s, key, len, hash))
            return s->val;
    }
}

/* Insert unless present (the first pattern listed wins). Room was sized by
 * strtab_init. */
static void strtab_put(struct strtab *t, const char *key, size_t len, uint32_t hash,
                       const void *val)
{
    uint32_t i = hash & t->mask;
    for (;; i = (i + 1) & t->mask) {
        struct strtab_slot *s = &t->slots[i];
        if (!s->key)
            break;
        if (slot_is(t, s, key, len, hash))
            return;
    }
    t->slots[i] = (struct strtab_slot){.key = key, .len = (uint32_t)len, .hash = hash, .val = val};
    t->n++;
}

/* ---- per-thread match state -------------------------------------------------- */

/*
 * The key exists only to free a thread's match data when the thread exits;
 * it is set once and never changes, so it is not shared mutable state.
 */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;
static _Thread_local pcre2_match_data *tls_md;
static _Thread_local char tls_join[URL_MAP_JOIN_CAP];

static void on_thread_exit(void *md)
{
    pcre2_match_data_free(md);
}

static void md_key_init(void)
{
    md_key_ok = pthread_key_create(&md_key, on_thread_exit) == 0;
}

/* This thread's match data (created on its first regex match), or NULL. */
static pcre2_match_data *thread_match_data(void)
{
    if (tls_md)
        return tls_md;
    pthread_once(&md_once, md_key_init);
    tls_md = pcre2_match_data_create(1, NULL);
    if (tls_md && md_key_ok)
        (void)pthread_setspecific(md_key, tls_md);
    return tls_md;
}

/* Does `re` match all of s[0..n)? */
static bool regex_full(const struct um_regex *re, const char *s, size_t n)
{
    pcre2_match_data *md = thread_match_data();
    if (!md || !re)
        return false;
    PCRE2_SPTR subject = (PCRE2_SPTR)(s ? s : "");
    /* pcre2_jit_match skips pcre2_match's checks: no match options are
     * used, and regex_wrap allows it only where invalid UTF-8 is safe. */
    int rc = re->jit ? pcre2_jit_match(re->code, subject, n, 0, 0, md, NULL)
                     : pcre2_match(re->code, subject, n, 0, 0, md, NULL);
    if (rc < 0)
        return false;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    return ov[0] == 0 && ov[1] == n;
}

/* Wrap `code` (owned: freed by url_map_free) for regex_full. */
static const struct um_regex *regex_wrap(struct url_map *m, pcre2_code *code, bool owned)
{
    struct um_mem *b = calloc(1, sizeof(*b) + sizeof(struct um_regex));
    if (!b) {
        if (owned)
            pcre2_code_free(code);
        return NULL;
    }
    b->u.h.re = owned ? code : NULL;
    b->u.h.next = m->mem;
    m->mem = b;
    struct um_regex *r = (struct um_regex *)(b + 1);
    uint32_t opts = 0;
    size_t jit_size = 0;
    r->code = code;
    (void)pcre2_pattern_info(code, PCRE2_INFO_ARGOPTIONS, &opts);
    (void)pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &jit_size);
    /* pcre2_jit_match does not check UTF-8: only safe when the pattern
     * tolerates invalid UTF. Without JIT the interpreter runs. */
    r->jit = jit_size > 0 && (!(opts & PCRE2_UTF) || (opts & PCRE2_MATCH_INVALID_UTF));
    return r;
}

/*
 * The regex for `src`: the loader's compiled `loaded` when it is anchored
 * at both ends, else a copy compiled here with the loader's options plus
 * both anchors, and JIT. NULL on failure.
 */
static const struct um_regex *regex_compile(struct url_map *m, const char *src, const void *loaded)
{
    const uint32_t anchors = PCRE2_ANCHORED | PCRE2_ENDANCHORED;
    uint32_t opts = 0;
    if (loaded && pcre2_pattern_info(loaded, PCRE2_INFO_ARGOPTIONS, &opts) != 0)
        opts = 0;
    if (loaded && (opts & anchors) == anchors)
        return regex_wrap(m, (pcre2_code *)loaded, false);
    opts |= anchors;
    if (opts & PCRE2_UTF)
        opts |= PCRE2_MATCH_INVALID_UTF; /* bad UTF-8 in a request: no match, no error */
    int err;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)str_or_empty(src), PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);
    if (!re)
        return NULL;
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return regex_wrap(m, re, true);
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
    if (c->kind == CFG_HDR_REGEX && !(hm->re = regex_compile(m, c->value, c->regex)))
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
    if (c->kind == CFG_QUERY_REGEX && !(qm->re = regex_compile(m, c->value, c->regex)))
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
    if (c->path_kind == CFG_PATH_REGEX && !(mr->path_re = regex_compile(m, c->path, c->path_regex)))
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

/*
 * How many leading bytes of `src` (a regex compiled as `re`) are a literal
 * every match starts with. Conservative: 0 for any "|" or any option but
 * the anchors (and UTF when case-sensitive); stops at the first
 * metacharacter and gives back the character a quantifier follows ("ab*"
 * may match "a").
 */
static size_t regex_literal_prefix(const char *src, const struct um_regex *re, bool icase)
{
    uint32_t opts = 0, ok = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NO_UTF_CHECK;
    if (!icase)
        ok |= PCRE2_UTF | PCRE2_MATCH_INVALID_UTF; /* caseless UTF folds "K" to U+212A */
    (void)pcre2_pattern_info(re->code, PCRE2_INFO_ARGOPTIONS, &opts);
    if ((opts & ~ok) || strchr(src, '|'))
        return 0;
    size_t i = 0;
    while (src[i] && !strchr("\\^$.|?*+()[]{}#", src[i]))
        i++;
    if (i > 0 && src[i] && strchr("?*{", src[i])) {
        i--;
        while (i > 0 && ((unsigned char)src[i] & 0xC0) == 0x80)
            i--; /* back to the start of a UTF-8 character */
    }
    return i;
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
        *icase = strncmp(p, "(?i)", 4) == 0;
        p += *icase ? 4 : 0;
        *lit = p;
        return regex_literal_prefix(p, mr->path_re, *icase);
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
    struct strtab *t = &pm->index[k.kind];
    uint32_t h = hash_fwd(k.s, k.n, t->icase);
    struct um_route_bucket *b = (struct um_route_bucket *)strtab_get(t, k.s, k.n, h);
    if (!b && (b = um_calloc(m, 1, sizeof(*b))))
        strtab_put(t, k.s, k.n, h, b);
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
        if (strtab_init(m, &pm->index[kind], n, kind == RKEY_ISEG) != 0)
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
    if (strtab_init(m, &pm->exact, total, false) != 0 ||
        strtab_init(m, &pm->prefix, total, false) != 0)
        return SY_ENOMEM;
    for (size_t i = 0; i < c->n_path_rules; i++) {
        const struct cfg_path_rule *pr = &c->path_rules[i];
        for (size_t j = 0; j < pr->n_paths; j++) {
            const char *p = str_or_empty(pr->paths[j]);
            size_t n = strlen(p);
            if (n >= 2 && p[n - 1] == '*' && p[n - 2] == '/') {
                strtab_put(&pm->prefix, p, n - 1, hash_fwd(p, n - 1, false), pr);
                if (n - 1 > pm->max_prefix_len)
                    pm->max_prefix_len = n - 1;
            } else {
                strtab_put(&pm->exact, p, n, hash_fwd(p, n, false), pr);
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

/* Length of the host part of a pattern or authority: without ":port" and
 * without one trailing ".". Bracketed IPv6 keeps its brackets. */
static size_t host_part_len(const char *a, size_t n)
{
    size_t end = n;
    if (n && a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        end = rb ? (size_t)(rb - a) + 1 : n;
    } else {
        const char *colon = memchr(a, ':', n);
        if (colon)
            end = (size_t)(colon - a);
    }
    if (end > 1 && a[end - 1] == '.')
        end--;
    return end;
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
        strtab_put(&m->suffixes, suffix, sl, hash_rev_icase(suffix, sl), pm);
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
        strtab_put(&m->hosts, h, hl, hash_rev_icase(h, hl), pm);
    }
}

static int hosts_compile(struct url_map *m)
{
    const struct cfg_url_map *um = m->cfg;
    size_t total = 0;
    for (size_t i = 0; i < um->n_host_rules; i++)
        total += um->host_rules[i].n_hosts;
    if (strtab_init(m, &m->hosts, total, true) != 0 ||
        strtab_init(m, &m->suffixes, total, true) != 0)
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

/* ---- match: hosts and path rules ------------------------------------------- */

/*
 * Rules H1 and H2 in one pass over the host from its end: the running hash
 * is the reverse hash of each suffix (the whole host at the end), so each
 * position where a wildcard suffix can start costs one probe. Returns the
 * exact host's path matcher, else the longest suffix's, else NULL.
 */
static const void *host_lookup(const struct url_map *m, const char *h, size_t n)
{
    uint32_t hash = FNV_OFFSET;
    const void *best = NULL;
    for (size_t i = n; i-- > 0;) {
        unsigned char c = ascii_lower((unsigned char)h[i]);
        hash = fnv_step(hash, c);
        if (i == 0 || n - i > m->max_suffix_len || !(m->suffix_first[c >> 3] & (1u << (c & 7))))
            continue; /* "*" needs a byte; no suffix this long or starting so */
        const void *v = strtab_get(&m->suffixes, h + i, n - i, hash);
        if (v)
            best = v;
    }
    const void *exact = strtab_get(&m->hosts, h, n, hash);
    return exact ? exact : best;
}

/* The path matcher for this authority, or NULL for the url map default. */
static const struct um_path_matcher *host_find(const struct url_map *m, const char *a, size_t n)
{
    const void *pm = NULL;
    if (!a)
        n = 0;
    if (n && m->hosts_with_port)
        pm = strtab_get(&m->hosts, a, n, hash_rev_icase(a, n));
    if (!pm && n)
        pm = host_lookup(m, a, host_part_len(a, n));
    return pm ? pm : m->any_host;
}

/* Rule P: exact path, else the longest "/x/\*" prefix, else NULL. */
static const struct cfg_path_rule *path_rules_find(const struct um_path_matcher *pm, const char *p,
                                                   size_t n, size_t *prefix_len)
{
    const struct cfg_path_rule *pr = strtab_get(&pm->exact, p, n, hash_fwd(p, n, false));
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
        const struct cfg_path_rule *hit = strtab_get(&pm->prefix, p, i + 1, h);
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

/* A whole base-10 signed 64-bit integer ("-" allowed, nothing else). */
static bool parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = n > 0 && s[0] == '-';
    i += neg;
    if (i == n)
        return false;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
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
    case CFG_HDR_REGEX: return regex_full(hm->re, v, n);
    case CFG_HDR_RANGE: return parse_int64(v, n, &x) && c->range_start <= x && x < c->range_end;
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
    case CFG_QUERY_REGEX: return found && regex_full(qm->re, v, n);
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
        return regex_full(mr->path_re, p, n);
    default: *prefix_len = 0; return true;
    }
}

static bool match_rule_ok(const struct um_match_rule *mr, const struct url_map_request *req,
                          size_t *prefix_len)
{
    if (!path_cond(mr, str_or_empty(req->path), req->path ? req->path_len : 0, prefix_len))
        return false;
    for (uint32_t i = 0; i < mr->n_hdrs; i++) {
        if (!header_cond(&mr->hdrs[i], req))
            return false;
    }
    for (uint32_t i = 0; i < mr->n_queries; i++) {
        if (!query_cond(&mr->queries[i], req))
            return false;
    }
    return true;
}

static bool route_rule_ok(const struct um_route_rule *rr, const struct url_map_request *req,
                          size_t *prefix_len)
{
    *prefix_len = 0;
    if (rr->n_mrs == 0)
        return true; /* no match rules: every request (as the loader reads it) */
    for (size_t j = 0; j < rr->n_mrs; j++) {
        if (match_rule_ok(&rr->mrs[j], req, prefix_len))
            return true;
    }
    return false;
}

/* The bucket of `t` for key p[0..n) with hash `h`, or NULL. */
static const struct um_route_bucket *bucket_find(const struct strtab *t, const char *p, size_t n,
                                                 uint32_t h)
{
    return t->n ? strtab_get(t, p, n, h) : NULL;
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
 * Walks the buckets of the path's keys merged with the generic list.
 */
static const struct cfg_route_rule *route_rules_find(const struct um_path_matcher *pm,
                                                     const struct url_map_request *req,
                                                     size_t *prefix_len)
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
    for (;;) {
        int best = -1;
        for (int k = 0; k < RKEY_KINDS; k++) {
            const struct um_route_bucket *b = lists[k];
            if (b && pos[k] < b->n && (best < 0 || b->idx[pos[k]] < lists[best]->idx[pos[best]]))
                best = k;
        }
        if (best < 0)
            return NULL;
        const struct um_route_rule *rr = &pm->rrs[lists[best]->idx[pos[best]++]];
        if (route_rule_ok(rr, req, prefix_len))
            return rr->cfg;
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

static void header_action_add(struct url_map_result *out, const struct cfg_header_action *ha)
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
                        uint32_t rand, struct url_map_result *out)
{
    const struct cfg_weighted_backend_service *w = NULL;
    out->action = a;
    if (a->url_redirect) {
        out->service = NULL;
    } else if (a->n_weighted_backend_services) {
        w = split_pick(a, rand);
        out->service = w ? w->backend_service : NULL;
    } else {
        out->service = a->service;
    }
    header_action_add(out, w ? &w->header_action : NULL);
    header_action_add(out, rr ? &rr->header_action : NULL);
    header_action_add(out, pm ? &pm->cfg->header_action : NULL);
    header_action_add(out, &m->cfg->header_action);
}

int url_map_match(const struct url_map *m, const struct url_map_request *req, uint32_t rand,
                  struct url_map_result *out)
{
    memset(out, 0, sizeof(*out));
    const struct um_path_matcher *pm = host_find(m, req->authority, req->authority_len);
    if (!pm) {
        result_fill(m, NULL, NULL, &m->cfg->default_action, rand, out);
        return 0;
    }
    size_t plen = 0;
    if (pm->cfg->n_route_rules) {
        const struct cfg_route_rule *rr = route_rules_find(pm, req, &plen);
        if (rr) {
            result_fill(m, pm, rr, &rr->action, rand, out);
            out->matched_prefix_len = plen;
            return 0;
        }
    } else if (pm->cfg->n_path_rules) {
        const struct cfg_path_rule *pr =
            path_rules_find(pm, str_or_empty(req->path), req->path ? req->path_len : 0, &plen);
        if (pr) {
            result_fill(m, pm, NULL, &pr->action, rand, out);
            out->matched_prefix_len = plen;
            return 0;
        }
    }
    result_fill(m, pm, NULL, &pm->cfg->default_action, rand, out);
    return 0;
}
