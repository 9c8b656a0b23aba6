/*
 * config_yaml.c — the YAML access layer: libyaml's document (a node tree in
 * which every node keeps its start mark), ${ENV} expansion of scalar values,
 * and typed getters that report "FILE:LINE:COL: path: message" errors.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config/config_loader.h"
#include "core/parse.h"

/* Longest ${NAME} accepted, and longest expanded scalar. */
#define ENV_NAME_MAX 128
#define EXPANDED_MAX (1024u * 1024)

struct cfg_mark ymark(const yaml_node_t *n)
{
    struct cfg_mark m = {1, 1};

    if (n) {
        m.line = (int)n->start_mark.line + 1;
        m.col = (int)n->start_mark.column + 1;
    }
    return m;
}

static struct cfg_mark mark_of(yaml_mark_t ym)
{
    struct cfg_mark m = {(int)ym.line + 1, (int)ym.column + 1};
    return m;
}

/* ---- parsing ------------------------------------------------------------ */

/* Line and column (1-based) of byte `off` in the input, for reader errors. */
static struct cfg_mark offset_mark(const char *yaml, size_t len, size_t off)
{
    struct cfg_mark m = {1, 1};

    for (size_t i = 0; i < off && i < len; i++) {
        if (yaml[i] == '\n') {
            m.line++;
            m.col = 1;
        } else {
            m.col++;
        }
    }
    return m;
}

static void report_parser_error(struct cfg_loader *ld, const yaml_parser_t *p, const char *yaml,
                                size_t len)
{
    const char *problem = p->problem ? p->problem : "unknown error";

    switch (p->error) {
    case YAML_MEMORY_ERROR: ld->oom = true; return;
    case YAML_READER_ERROR:
        cfg_error(ld, offset_mark(yaml, len, p->problem_offset), NULL, "YAML error: %s", problem);
        return;
    default: break;
    }
    if (p->context)
        cfg_error(ld, mark_of(p->problem_mark), NULL, "YAML syntax error: %s (%s at %d:%d)",
                  problem, p->context, (int)p->context_mark.line + 1,
                  (int)p->context_mark.column + 1);
    else
        cfg_error(ld, mark_of(p->problem_mark), NULL, "YAML syntax error: %s", problem);
}

/* Refuses a second document in the stream (it would be silently ignored). */
static void check_single_document(struct cfg_loader *ld, yaml_parser_t *p, const char *yaml,
                                  size_t len)
{
    yaml_document_t extra;
    yaml_node_t *root;

    if (!yaml_parser_load(p, &extra)) {
        report_parser_error(ld, p, yaml, len);
        return;
    }
    root = yaml_document_get_root_node(&extra);
    if (root)
        cfg_error(ld, ymark(root), NULL, "only one YAML document is allowed");
    yaml_document_delete(&extra);
}

int cfg_yaml_parse(struct cfg_loader *ld, const char *yaml, size_t len)
{
    yaml_parser_t p;
    yaml_document_t *doc;

    doc = malloc(sizeof(*doc));
    if (!doc) {
        ld->oom = true;
        return -1;
    }
    if (!yaml_parser_initialize(&p)) {
        free(doc);
        ld->oom = true;
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&p, doc)) {
        report_parser_error(ld, &p, yaml, len);
        yaml_parser_delete(&p);
        free(doc);
        return -1;
    }
    ld->doc = doc;
    if (yaml_document_get_root_node(doc))
        check_single_document(ld, &p, yaml, len);
    yaml_parser_delete(&p);
    return 0;
}

/* ---- nodes -------------------------------------------------------------- */

/* A plain scalar that YAML reads as null: empty, "~" or "null". */
bool ynull(const yaml_node_t *n)
{
    const char *v;

    if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)n->data.scalar.value;
    return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

const char *ytype_name(const yaml_node_t *n)
{
    if (!n)
        return "nothing";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a sequence";
    case YAML_SCALAR_NODE: return ynull(n) ? "null" : "a scalar";
    default: return "nothing";
    }
}

size_t yseq_len(const yaml_node_t *seq)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return 0;
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *yseq_item(struct cfg_loader *ld, const yaml_node_t *seq, size_t i)
{
    if (i >= yseq_len(seq))
        return NULL;
    return yaml_document_get_node(ld->doc, seq->data.sequence.items.start[i]);
}

/* The pair whose key is the scalar `key`; NULL when absent. */
static yaml_node_pair_t *find_pair(struct cfg_loader *ld, const yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *pair;

    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return pair;
    }
    return NULL;
}

yaml_node_t *yfind(struct cfg_loader *ld, const yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *pair = find_pair(ld, map, key);
    return pair ? yaml_document_get_node(ld->doc, pair->value) : NULL;
}

yaml_node_t *yfind_key(struct cfg_loader *ld, const yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *pair = find_pair(ld, map, key);
    return pair ? yaml_document_get_node(ld->doc, pair->key) : NULL;
}

/* Levenshtein distance of two short strings (capped inputs), for hints. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[65], cur[65];

    if (la > 64 || lb > 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(size_t) * (lb + 1));
    }
    return prev[lb];
}

static void report_unknown_key(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *k,
                               const char *const *keys)
{
    const char *key = (const char *)k->data.scalar.value, *hint = NULL;

    for (size_t i = 0; keys[i]; i++) {
        if (strlen(key) > 2 && edit_distance(key, keys[i]) <= 2) {
            hint = keys[i];
            break;
        }
    }
    if (hint)
        cfg_error(ld, ymark(k), at, "unknown %skey '%s' (did you mean '%s'?)",
                  at ? "" : "top-level ", key, hint);
    else
        cfg_error(ld, ymark(k), at, "unknown %skey '%s'", at ? "" : "top-level ", key);
}

/* Reports `k` when an earlier key of the mapping has the same text. */
static void check_dup_key(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                          const yaml_node_pair_t *pair, const yaml_node_t *k)
{
    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
        yaml_node_t *kq = yaml_document_get_node(ld->doc, q->key);
        if (kq && kq->type == YAML_SCALAR_NODE &&
            strcmp((const char *)kq->data.scalar.value, (const char *)k->data.scalar.value) == 0) {
            struct cfg_mark first = ymark(kq);
            cfg_error(ld, ymark(k), at, "duplicate key '%s' (first at %d:%d)",
                      (const char *)k->data.scalar.value, first.line, first.col);
            return;
        }
    }
}

bool ymap_check(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *node,
                const char *const *keys)
{
    if (!node)
        return false;
    if (node->type != YAML_MAPPING_NODE) {
        cfg_error(ld, ymark(node), at, "expected a mapping, got %s", ytype_name(node));
        return false;
    }
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        size_t i;
        if (!k || k->type != YAML_SCALAR_NODE) {
            cfg_error(ld, ymark(k), at, "a key must be a string, got %s", ytype_name(k));
            continue;
        }
        for (i = 0; keys[i]; i++) {
            if (strcmp((const char *)k->data.scalar.value, keys[i]) == 0)
                break;
        }
        if (!keys[i])
            report_unknown_key(ld, at, k, keys);
        check_dup_key(ld, at, node, pair, k);
    }
    return true;
}

yaml_node_t *ychild_map(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *parent,
                        const char *const *keys)
{
    yaml_node_t *v = yfind(ld, parent, sub->key);

    if (!v || ynull(v))
        return NULL;
    return ymap_check(ld, sub, v, keys) ? v : NULL;
}

yaml_node_t *ychild_seq(struct cfg_loader *ld, const struct ypath *sub, const yaml_node_t *parent)
{
    yaml_node_t *v = yfind(ld, parent, sub->key);

    if (!v || ynull(v))
        return NULL;
    if (v->type != YAML_SEQUENCE_NODE) {
        cfg_error(ld, ymark(v), sub, "expected a sequence, got %s", ytype_name(v));
        return NULL;
    }
    return v;
}

void ymissing(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key)
{
    cfg_error(ld, ymark(map), at, "missing required key '%s'", key);
}

/* ---- ${ENV} expansion ----------------------------------------------------- */

/* A growable output buffer for expansion (malloc; capped at EXPANDED_MAX). */
struct sbuf {
    char *p;
    size_t len, cap;
    bool too_long; /* past EXPANDED_MAX: a config error */
    bool oom;      /* realloc failed: the load fails with "out of memory" */
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->too_long || b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > EXPANDED_MAX) {
            b->too_long = true;
            return;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > ENV_NAME_MAX || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    }
    return true;
}

/*
 * Expands one "${NAME}" / "${NAME:-default}" starting at `p` ("${"), with
 * `end` at its "}". Shell semantics: the default applies when NAME is unset
 * or empty. Returns 0 or -1 after reporting.
 */
static int expand_one(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                      const char *p, const char *end, struct sbuf *b)
{
    const char *body = p + 2, *dflt = strstr(body, ":-");
    char name[ENV_NAME_MAX + 1];
    size_t nlen;
    const char *val;

    if (dflt && dflt > end)
        dflt = NULL;
    nlen = (size_t)((dflt ? dflt : end) - body);
    if (!env_name_ok(body, nlen)) {
        cfg_error(ld, ymark(n), at, "bad environment variable reference '%.*s'", (int)(end - p + 1),
                  p);
        return -1;
    }
    memcpy(name, body, nlen);
    name[nlen] = '\0';
    val = getenv(name);
    if (val && (*val || !dflt))
        sbuf_add(b, val, strlen(val));
    else if (dflt)
        sbuf_add(b, dflt + 2, (size_t)(end - dflt - 2));
    else {
        cfg_error(ld, ymark(n), at, "environment variable '%s' is not set (use ${%s:-default})",
                  name, name);
        return -1;
    }
    return 0;
}

/* Expands every ${...} of `in`; *out is `in` itself or scratch memory. */
static int expand_env(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                      const char *in, const char **out)
{
    struct sbuf b = {NULL, 0, 0, false, false};
    const char *p = in;
    int rc = 0;

    if (!strstr(in, "${")) {
        *out = in;
        return 0;
    }
    while (*p && rc == 0) {
        const char *dollar = strstr(p, "${"), *end;
        if (!dollar) {
            sbuf_add(&b, p, strlen(p));
            break;
        }
        sbuf_add(&b, p, (size_t)(dollar - p));
        end = strchr(dollar + 2, '}');
        if (!end) {
            cfg_error(ld, ymark(n), at, "unterminated '${' in '%s'", in);
            rc = -1;
            break;
        }
        rc = expand_one(ld, at, n, dollar, end, &b);
        p = end + 1;
    }
    if (rc == 0 && b.oom) {
        ld->oom = true;
        rc = -1;
    } else if (rc == 0 && b.too_long) {
        cfg_error(ld, ymark(n), at, "expanded value is too long");
        rc = -1;
    }
    if (rc == 0) {
        *out = cfg_scratch_strdup(ld, b.p ? b.p : "");
        rc = *out ? 0 : -1;
    }
    free(b.p);
    return rc;
}

/* ---- scalar conversions ------------------------------------------------------ */

int ynode_scalar(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                 const char *what, const char **out)
{
    const char *v;

    if (!n || n->type != YAML_SCALAR_NODE) {
        cfg_error(ld, ymark(n), at, "expected %s, got %s", what, ytype_name(n));
        return -1;
    }
    v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length) {
        cfg_error(ld, ymark(n), at, "value contains a NUL byte");
        return -1;
    }
    if (ynull(n)) {
        *out = "";
        return 0;
    }
    return expand_env(ld, at, n, v, out);
}

int ynode_str(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **out)
{
    const char *s;

    if (ynode_scalar(ld, at, n, "a string", &s) != 0)
        return -1;
    *out = cfg_strdup(ld, s);
    return *out ? 0 : -1;
}

int ynode_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **out)
{
    const char *s;

    if (ynode_scalar(ld, at, n, "a string", &s) != 0)
        return -1;
    if (!*s) {
        cfg_error(ld, ymark(n), at, "must not be empty");
        return -1;
    }
    *out = cfg_strdup(ld, s);
    return *out ? 0 : -1;
}

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

int ynode_header_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                      bool allow_pseudo, char **out)
{
    const char *s;
    char *low;
    size_t i = 0;

    if (ynode_scalar(ld, at, n, "a header name", &s) != 0)
        return -1;
    if (allow_pseudo && s[0] == ':')
        i = 1;
    if (!s[i])
        goto bad;
    for (; s[i]; i++) {
        if (!is_tchar((unsigned char)s[i]))
            goto bad;
    }
    low = cfg_strdup(ld, s);
    if (!low)
        return -1;
    for (i = 0; low[i]; i++)
        low[i] = (char)tolower((unsigned char)low[i]);
    *out = low;
    return 0;
bad:
    cfg_error(ld, ymark(n), at, "bad header name '%s'", s);
    return -1;
}

int ynode_cidr(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
               struct cfg_cidr *out)
{
    const char *s;

    if (ynode_scalar(ld, at, n, "a CIDR", &s) != 0)
        return -1;
    if (sy_parse_cidr(s, &out->family, out->addr, &out->prefix) != 0) {
        cfg_error(ld, ymark(n), at, "bad CIDR '%s' (expected e.g. 10.0.0.0/8 or ::/0)", s);
        return -1;
    }
    return 0;
}

int ynode_enum(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
               const char *const *names, int *out)
{
    char list[256];
    size_t len = 0;
    const char *s;

    if (ynode_scalar(ld, at, n, "a string", &s) != 0)
        return -1;
    for (int i = 0; names[i]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    list[0] = '\0';
    for (int i = 0; names[i] && len < sizeof(list); i++) {
        int w = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", names[i]);
        if (w > 0)
            len += (size_t)w;
    }
    cfg_error(ld, ymark(n), at, "bad value '%s' (expected one of: %s)", s, list);
    return -1;
}

/*
 * Compiles a PCRE2 pattern anchored at both ends (full-match semantics, as
 * GCP's RE2 matches), then JIT-compiles it (a JIT failure just means the
 * interpreter runs it). The code is owned by the snapshot.
 */
int ynode_regex(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n, char **src,
                void **code)
{
    const char *s;
    pcre2_code *re;
    int errcode;
    PCRE2_SIZE erroff;
    PCRE2_UCHAR msg[256];

    if (ynode_scalar(ld, at, n, "a regular expression", &s) != 0)
        return -1;
    re = pcre2_compile((PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                       &errcode, &erroff, NULL);
    if (!re) {
        if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", errcode);
        cfg_error(ld, ymark(n), at, "bad regex '%s': %s at offset %zu", s, (char *)msg,
                  (size_t)erroff);
        return -1;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    cfg_register_regex(ld, re);
    if (ld->oom)
        return -1;
    *src = cfg_strdup(ld, s);
    if (!*src)
        return -1;
    *code = re;
    return 0;
}

/* ---- numbers ---------------------------------------------------------------- */

/* "-?[0-9]+(.[0-9]+)?" to a finite double. */
static bool parse_decimal(const char *s, double *out)
{
    const char *p = s + (s[0] == '-');
    char *end;
    double v;

    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p)
        return false;
    v = strtod(s, &end);
    if (*end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static int node_i64(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *n,
                    int64_t min, int64_t max, int64_t *out)
{
    const char *s;
    int64_t v;

    if (ynode_scalar(ld, at, n, "an integer", &s) != 0)
        return -1;
    if (sy_parse_dec_i64(s, strlen(s), &v) != 0) { /* "-?[0-9]+", no overflow */
        cfg_error(ld, ymark(n), at, "expected an integer, got '%s'", s);
        return -1;
    }
    if (v < min || v > max) {
        cfg_error(ld, ymark(n), at, "value %lld out of range %lld..%lld", (long long)v,
                  (long long)min, (long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- getters ----------------------------------------------------------------- */

int yget_str(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             char **out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_str(ld, &sub, v, out) == 0 ? 1 : -1;
}

int yget_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, char **out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_name(ld, &sub, v, out) == 0 ? 1 : -1;
}

int yget_header_name(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                     const char *key, bool allow_pseudo, char **out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_header_name(ld, &sub, v, allow_pseudo, out) == 0 ? 1 : -1;
}

int yget_header_value(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                      const char *key, char **out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    char *s;

    if (!v)
        return 0;
    if (ynode_str(ld, &sub, v, &s) != 0)
        return -1;
    if (strpbrk(s, "\r\n")) {
        cfg_error(ld, ymark(v), &sub, "header value must not contain CR or LF");
        return -1;
    }
    *out = s;
    return 1;
}

int yget_bool(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, bool *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    const char *s;

    if (!v)
        return 0;
    if (ynode_scalar(ld, &sub, v, "true or false", &s) != 0)
        return -1;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
        *out = true;
        return 1;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
        *out = false;
        return 1;
    }
    cfg_error(ld, ymark(v), &sub, "expected true or false, got '%s'", s);
    return -1;
}

int yget_i64(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             int64_t min, int64_t max, int64_t *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return node_i64(ld, &sub, v, min, max, out) == 0 ? 1 : -1;
}

int yget_u32(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map, const char *key,
             uint32_t min, uint32_t max, uint32_t *out)
{
    int64_t v;
    int rc = yget_i64(ld, at, map, key, min, max, &v);

    if (rc == 1)
        *out = (uint32_t)v;
    return rc;
}

int yget_double(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                const char *key, double min, double max, double *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    const char *s;
    double d;

    if (!v)
        return 0;
    if (ynode_scalar(ld, &sub, v, "a number", &s) != 0)
        return -1;
    if (!parse_decimal(s, &d)) {
        cfg_error(ld, ymark(v), &sub, "expected a number, got '%s'", s);
        return -1;
    }
    if (d < min || d > max) {
        cfg_error(ld, ymark(v), &sub, "value %s out of range %g..%g", s, min, max);
        return -1;
    }
    *out = d;
    return 1;
}

int yget_duration(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                  const char *key, uint64_t *out_ms)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    const char *s;
    uint64_t ms;

    if (!v)
        return 0;
    if (ynode_scalar(ld, &sub, v, "a duration", &s) != 0)
        return -1;
    if (sy_parse_duration_ms(s, &ms) != 0) {
        cfg_error(ld, ymark(v), &sub,
                  "bad duration '%s' (expected a number and a unit: ms, s, m or h, "
                  "e.g. 250ms, 1.5s, 5m)",
                  s);
        return -1;
    }
    *out_ms = ms;
    return 1;
}

int yget_size(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    const char *s;
    uint64_t b;

    if (!v)
        return 0;
    if (ynode_scalar(ld, &sub, v, "a size", &s) != 0)
        return -1;
    if (sy_parse_size(s, &b) != 0) {
        cfg_error(ld, ymark(v), &sub, "bad size '%s' (expected e.g. 512, 64KiB, 1MiB)", s);
        return -1;
    }
    if (b < min || b > max) {
        cfg_error(ld, ymark(v), &sub, "size %s out of range %llu..%llu bytes", s,
                  (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = b;
    return 1;
}

int yget_enum(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, const char *const *names, int *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_enum(ld, &sub, v, names, out) == 0 ? 1 : -1;
}

int yget_addr(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
              const char *key, struct cfg_addr *out)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};
    const char *s;

    if (!v)
        return 0;
    if (ynode_scalar(ld, &sub, v, "an address", &s) != 0)
        return -1;
    if (sy_parse_addr(s, &out->ss, &out->len) != 0) {
        cfg_error(ld, ymark(v), &sub,
                  "bad address '%s' (expected host:port or [v6]:port, port 0..65535)", s);
        return -1;
    }
    out->text = cfg_strdup(ld, s);
    return out->text ? 1 : -1;
}

int yget_regex(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
               const char *key, char **src, void **code)
{
    yaml_node_t *v = yfind(ld, map, key);
    struct ypath sub = {at, key, 0};

    if (!v)
        return 0;
    return ynode_regex(ld, &sub, v, src, code) == 0 ? 1 : -1;
}

/* Shared body of the string-list getters. */
static int get_list(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                    const char *key, bool headers, char ***out, size_t *n)
{
    struct ypath sub = {at, key, 0};
    yaml_node_t *seq = ychild_seq(ld, &sub, map);
    size_t len = yseq_len(seq);
    char **items;
    int rc = 1;

    if (!seq)
        return yfind(ld, map, key) && !ynull(yfind(ld, map, key)) ? -1 : 0;
    items = cfg_calloc_array(ld, len, sizeof(*items));
    if (len && !items)
        return -1;
    for (size_t i = 0; i < len; i++) {
        struct ypath item = {&sub, NULL, i};
        yaml_node_t *v = yseq_item(ld, seq, i);
        int r = headers ? ynode_header_name(ld, &item, v, false, &items[i])
                        : ynode_str(ld, &item, v, &items[i]);
        if (r != 0)
            rc = -1;
    }
    if (rc == 1) {
        *out = items;
        *n = len;
    }
    return rc;
}

int yget_str_list(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                  const char *key, char ***out, size_t *n)
{
    return get_list(ld, at, map, key, false, out, n);
}

int yget_header_list(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *map,
                     const char *key, char ***out, size_t *n)
{
    return get_list(ld, at, map, key, true, out, n);
}
