/*
 * urlmap-int.h — private to src/urlmap/: the compiled url map that
 * urlmap_compile.c builds and urlmap_match.c reads, its string tables
 * (urlmap_strtab.c) and its regexes (urlmap_regex.c). Other modules use
 * urlmap.h only.
 *
 * Implementation: exact hosts and wildcard suffixes live in open-addressing
 * hash tables hashed from the right, so one pass over the host from its end
 * yields the exact host and the longest matching suffix; path rules in two
 * tables, "/x/\*" prefixes looked up at each "/" in one left-to-right pass.
 * Route rules keep their priority order but are filed by the key every path
 * they can match has (first segment, the same ignoring case, or whole
 * path), so a match walks its path's three buckets merged with the rules
 * that can match anything (see route_index_build in urlmap_compile.c). A
 * regex_match's literal
 * start is compared before the regex runs. Regexes are the loader's when it
 * compiled them with PCRE2_ANCHORED | PCRE2_ENDANCHORED, else recompiled
 * here so, with the loader's options; both JIT-compiled when possible.
 * Matching allocates nothing: each thread keeps one pcre2_match_data and one
 * buffer for joined header values.
 */
#ifndef SY_URLMAP_INT_H
#define SY_URLMAP_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "urlmap/urlmap.h"

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

struct um_strtab_slot {
    const char *key; /* NULL = empty slot */
    uint32_t len;
    uint32_t hash;
    const void *val;
};

/* Open addressing, linear probing, at most half full. */
struct um_strtab {
    struct um_strtab_slot *slots;
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
    struct um_strtab exact;  /* path rules: "/a" → cfg_path_rule */
    struct um_strtab prefix; /* path rules: "/a/" (from "/a/\*") → cfg_path_rule */
    size_t max_prefix_len;
    struct um_route_rule *rrs;          /* cfg->n_route_rules entries */
    struct um_strtab index[RKEY_KINDS]; /* key → struct um_route_bucket (not RKEY_NONE) */
    struct um_route_bucket generic;
};

struct url_map {
    const struct cfg_url_map *cfg;
    struct um_path_matcher *pms; /* one per cfg->path_matchers entry */
    struct um_strtab hosts;      /* exact hosts → um_path_matcher, hashed from the right */
    struct um_strtab suffixes;   /* "*<suffix>" keyed by <suffix>, hashed from the right */
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

static inline bool eq_icase(const char *a, const char *b, size_t n)
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
static inline uint32_t hash_fwd(const char *s, size_t n, bool icase)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, icase ? ascii_lower((unsigned char)s[i]) : (unsigned char)s[i]);
    return h;
}

/* FNV-1a from the last byte to the first, case-folded (host suffixes). */
static inline uint32_t hash_rev_icase(const char *s, size_t n)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = n; i-- > 0;)
        h = fnv_step(h, ascii_lower((unsigned char)s[i]));
    return h;
}

static inline const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* ---- string tables (urlmap_strtab.c) ------------------------------------ */

static inline bool um_strtab_slot_is(const struct um_strtab *t, const struct um_strtab_slot *s,
                                     const char *key, size_t len, uint32_t hash)
{
    if (s->hash != hash || s->len != len)
        return false;
    return str_eq(s->key, key, len, t->icase);
}

/* The slot of key[0..len), whose hash (as the table's keys were hashed) is
 * `hash`, or NULL. Inline: the matcher's hot path. */
static inline const struct um_strtab_slot *
um_strtab_find(const struct um_strtab *t, const char *key, size_t len, uint32_t hash)
{
    if (t->n == 0)
        return NULL;
    for (uint32_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        const struct um_strtab_slot *s = &t->slots[i];
        if (!s->key)
            return NULL;
        if (um_strtab_slot_is(t, s, key, len, hash))
            return s;
    }
}

/* The value stored under key[0..len) (see um_strtab_find), or NULL. */
static inline const void *um_strtab_get(const struct um_strtab *t, const char *key, size_t len,
                                        uint32_t hash)
{
    const struct um_strtab_slot *s = um_strtab_find(t, key, len, hash);
    return s ? s->val : NULL;
}

/*
 * An empty table with room for `max_entries` keys, its slots owned by `m`;
 * `icase`: keys compare ASCII case-insensitively. 0 or SY_ENOMEM.
 */
int um_strtab_init(struct url_map *m, struct um_strtab *t, size_t max_entries, bool icase);

/*
 * Store `val` under key[0..len) (not copied: it must outlive the table)
 * unless the key is there already: the first pattern listed wins. Never
 * fails: um_strtab_init made room for every key.
 */
void um_strtab_put(struct um_strtab *t, const char *key, size_t len, uint32_t hash,
                   const void *val);

/* ---- regexes (urlmap_regex.c) ------------------------------------------- */

/*
 * The regex for pattern `src`: the loader's compiled `loaded` (may be NULL)
 * when it is anchored at both ends, else a copy compiled with the loader's
 * options plus both anchors, JIT-compiled when possible; owned by `m`.
 * NULL on failure (allocation, or a hand-built pattern that does not compile).
 */
const struct um_regex *um_regex_compile(struct url_map *m, const char *src, const void *loaded);

/*
 * Does `re` (NULL: no) match all of s[0..n)? Allocates only on a thread's
 * first call: its match data, freed when the thread exits.
 */
bool um_regex_full(const struct um_regex *re, const char *s, size_t n);

/*
 * How many leading bytes of `src` (the pattern `re` was compiled from, past
 * any "^" and "(?i)") are a literal every match starts with; 0 when unsure.
 * `icase`: the pattern began with "(?i)".
 */
size_t um_regex_literal_prefix(const char *src, const struct um_regex *re, bool icase);

/* ---- compile-time allocation (urlmap_compile.c) ------------------------- */

/* A zeroed block of n * size bytes owned by `m`, freed by url_map_free.
 * NULL on failure. */
void *um_calloc(struct url_map *m, size_t n, size_t size);

/* ---- hosts ------------------------------------------------------------- */

/* Length of the host part of a pattern or authority: without ":port" and
 * without one trailing ".". Bracketed IPv6 keeps its brackets. */
static inline size_t host_part_len(const char *a, size_t n)
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

#endif
