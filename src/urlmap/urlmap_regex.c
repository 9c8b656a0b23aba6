/*
 * urlmap_regex.c — the url map's regular expressions (PCRE2, 8-bit): every
 * regex matches a whole value (anchored at both ends), is JIT-compiled when
 * possible, and is matched with per-thread match data so matching
 * allocates nothing. Also the literal a path regex starts with, which the
 * matcher compares before running the regex and the route index files the
 * rule under.
 */
#include "urlmap/urlmap-int.h"

#include <pthread.h>
#include <stdlib.h>

/* ---- per-thread match state ---------------------------------------------- */

/*
 * The key exists only to free a thread's match data when the thread exits;
 * it is set once and never changes, so it is not shared mutable state.
 */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;
static _Thread_local pcre2_match_data *tls_md;

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
bool um_regex_full(const struct um_regex *re, const char *s, size_t n)
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

/* ---- compile ------------------------------------------------------------ */

/* Wrap `code` (owned: freed by url_map_free) for um_regex_full. */
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
const struct um_regex *um_regex_compile(struct url_map *m, const char *src, const void *loaded)
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

/*
 * How many leading bytes of `src` (a regex compiled as `re`) are a literal
 * every match starts with. Conservative: 0 for any "|" or any option but
 * the anchors (and UTF when case-sensitive); stops at the first
 * metacharacter and gives back the character a quantifier follows ("ab*"
 * may match "a").
 */
size_t um_regex_literal_prefix(const char *src, const struct um_regex *re, bool icase)
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
