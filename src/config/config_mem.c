/*
 * config_mem.c — the loader's memory (snapshot and scratch block lists), its
 * error collection and the config_errors API.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "config/config_loader.h"
#include "core/grow.h"

/* Allocates a zeroed block of `size` bytes linked on *head; NULL on OOM. */
static void *block_alloc(struct cfg_loader *ld, struct cfg_mem_block **head, size_t size)
{
    struct cfg_mem_block *b;

    if (size > SIZE_MAX - sizeof(*b)) {
        ld->oom = true;
        return NULL;
    }
    b = calloc(1, sizeof(*b) + size);
    if (!b) {
        ld->oom = true;
        return NULL;
    }
    b->next = *head;
    *head = b;
    return b->data;
}

/* Snapshot memory, zeroed; freed by the last config_unref. NULL on OOM. */
void *cfg_alloc(struct cfg_loader *ld, size_t size)
{
    return block_alloc(ld, &ld->mem, size);
}

/* A zeroed snapshot array of n items; NULL when n == 0 or on OOM. */
void *cfg_calloc_array(struct cfg_loader *ld, size_t n, size_t size)
{
    if (n == 0)
        return NULL;
    if (size && n > SIZE_MAX / size) {
        ld->oom = true;
        return NULL;
    }
    return cfg_alloc(ld, n * size);
}

/* Copies `s` into snapshot memory; NULL on OOM (or when s is NULL). */
char *cfg_strdup(struct cfg_loader *ld, const char *s)
{
    size_t n;
    char *p;

    if (!s)
        return NULL;
    n = strlen(s);
    p = cfg_alloc(ld, n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/* Scratch memory, zeroed; freed when the load ends. NULL on OOM. */
void *cfg_scratch_alloc(struct cfg_loader *ld, size_t size)
{
    return block_alloc(ld, &ld->scratch, size);
}

char *cfg_scratch_strdup(struct cfg_loader *ld, const char *s)
{
    size_t n = strlen(s);
    char *p = cfg_scratch_alloc(ld, n + 1);

    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/*
 * Makes the snapshot own a compiled pcre2_code. When the registration itself
 * cannot be allocated the code is freed at once (the load fails with OOM).
 */
void cfg_register_regex(struct cfg_loader *ld, void *code)
{
    struct cfg_mem_block *b = calloc(1, sizeof(*b));

    if (!b) {
        pcre2_code_free(code);
        ld->oom = true;
        return;
    }
    b->regex = code;
    b->next = ld->mem;
    ld->mem = b;
}

/* Frees a block list and the regexes registered on it. */
void cfg_mem_free(struct cfg_mem_block *head)
{
    while (head) {
        struct cfg_mem_block *next = head->next;
        if (head->regex)
            pcre2_code_free(head->regex);
        free(head);
        head = next;
    }
}

/* Appends the path of `at` to buf[*len..cap), truncating silently. */
static void ypath_append(const struct ypath *at, char *buf, size_t cap, size_t *len)
{
    int n;

    if (!at)
        return;
    ypath_append(at->up, buf, cap, len);
    if (*len >= cap)
        return;
    if (at->key)
        n = snprintf(buf + *len, cap - *len, "%s%s", *len ? "." : "", at->key);
    else
        n = snprintf(buf + *len, cap - *len, "[%zu]", at->idx);
    if (n > 0)
        *len += (size_t)n;
    if (*len >= cap)
        *len = cap - 1;
}

char *ypath_str(struct cfg_loader *ld, const struct ypath *at)
{
    char buf[CFG_MAX_MSG / 2];
    size_t len = 0;

    buf[0] = '\0';
    ypath_append(at, buf, sizeof(buf), &len);
    return cfg_scratch_strdup(ld, buf);
}

/* Adds one formatted message to the collection (position for sorting). */
static void push_error(struct cfg_loader *ld, int line, int col, const char *msg)
{
    struct cfg_err *e;

    if (ld->n_errs >= CFG_MAX_ERRORS) {
        ld->too_many = true;
        return;
    }
    e = sy_grow(ld->errs, &ld->cap_errs, ld->n_errs, sizeof *e, 8);
    if (!e) {
        ld->oom = true;
        return;
    }
    ld->errs = e;
    e = &ld->errs[ld->n_errs];
    e->msg = strdup(msg);
    if (!e->msg) {
        ld->oom = true;
        return;
    }
    e->line = line;
    e->col = col;
    e->seq = ld->n_errs++;
}

static void verror_where(struct cfg_loader *ld, struct cfg_mark mark, const char *where,
                         const char *fmt, va_list ap)
{
    char text[CFG_MAX_MSG], msg[CFG_MAX_MSG + 64];

    vsnprintf(text, sizeof(text), fmt, ap);
    if (where && *where)
        snprintf(msg, sizeof(msg), "%s:%d:%d: %s: %s", ld->file, mark.line, mark.col, where, text);
    else
        snprintf(msg, sizeof(msg), "%s:%d:%d: %s", ld->file, mark.line, mark.col, text);
    push_error(ld, mark.line, mark.col, msg);
}

void cfg_error_where(struct cfg_loader *ld, struct cfg_mark mark, const char *where,
                     const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror_where(ld, mark, where, fmt, ap);
    va_end(ap);
}

void cfg_error(struct cfg_loader *ld, struct cfg_mark mark, const struct ypath *at, const char *fmt,
               ...)
{
    char where[CFG_MAX_MSG / 2];
    size_t len = 0;
    va_list ap;

    where[0] = '\0';
    ypath_append(at, where, sizeof(where), &len);
    va_start(ap, fmt);
    verror_where(ld, mark, where, fmt, ap);
    va_end(ap);
}

void cfg_error_file(struct cfg_loader *ld, const char *fmt, ...)
{
    char text[CFG_MAX_MSG], msg[CFG_MAX_MSG + 64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof(msg), "%s: %s", ld->file, text);
    push_error(ld, 0, 0, msg);
}

static int err_cmp(const void *a, const void *b)
{
    const struct cfg_err *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Appends one message to `out`, taking ownership of `msg` (freed on OOM). */
static void errors_push(struct config_errors *out, char *msg)
{
    char **m = sy_grow(out->msgs, &out->cap, out->n, sizeof *m, 8);
    if (!m) {
        free(msg);
        return;
    }
    out->msgs = m;
    out->msgs[out->n++] = msg;
}

void cfg_errors_append(struct config_errors *out, const char *msg)
{
    char *m;

    if (!out)
        return;
    m = strdup(msg);
    if (m)
        errors_push(out, m);
}

void cfg_errors_flush(struct cfg_loader *ld, struct config_errors *out)
{
    char tail[CFG_MAX_MSG];

    if (ld->n_errs)
        qsort(ld->errs, ld->n_errs, sizeof(*ld->errs), err_cmp);
    for (size_t i = 0; i < ld->n_errs; i++) {
        if (out)
            errors_push(out, ld->errs[i].msg);
        else
            free(ld->errs[i].msg);
    }
    free(ld->errs);
    ld->errs = NULL;
    ld->n_errs = ld->cap_errs = 0;
    if (!out)
        return;
    tail[0] = '\0';
    if (ld->oom)
        snprintf(tail, sizeof(tail), "%s: out of memory", ld->file);
    else if (ld->too_many)
        snprintf(tail, sizeof(tail), "%s: too many errors, stopped after %d", ld->file,
                 CFG_MAX_ERRORS);
    if (tail[0])
        cfg_errors_append(out, tail);
}

void cfg_add_ref(struct cfg_loader *ld, const struct ypath *at, const yaml_node_t *node,
                 enum cfg_ref_kind kind, const char *name, void *slot,
                 const struct cfg_url_map *scope)
{
    struct cfg_ref *r;

    if (!name)
        return;
    r = sy_grow(ld->refs, &ld->cap_refs, ld->n_refs, sizeof *r, 16);
    if (!r) {
        ld->oom = true;
        return;
    }
    ld->refs = r;
    r = &ld->refs[ld->n_refs];
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->name = name;
    r->mark = ymark(node);
    r->where = ypath_str(ld, at);
    r->scope = scope;
    switch (kind) {
    case CFG_REF_URL_MAP: r->slot.url_map = slot; break;
    case CFG_REF_BACKEND_SERVICE: r->slot.backend_service = slot; break;
    case CFG_REF_HEALTH_CHECK: r->slot.health_check = slot; break;
    case CFG_REF_PATH_MATCHER: r->slot.path_matcher = slot; break;
    }
    if (r->where)
        ld->n_refs++;
}

/* ---- public: struct config_errors ----------------------------------------- */

void config_errors_print(const struct config_errors *errs, FILE *out)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        fprintf(out, "%s\n", errs->msgs[i]);
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = errs->cap = 0;
}
