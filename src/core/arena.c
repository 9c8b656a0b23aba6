/* arena.c — see arena.h. */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_MIN 4096

struct arena_block {
    struct arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t off;  /* next free offset */
    bool heap;   /* malloc'd by the arena (false: the caller's buffer) */
    max_align_t data[];
};

struct arena_cleanup {
    struct arena_cleanup *next; /* older registration */
    arena_cleanup_fn fn;        /* NULL once run or cancelled */
    void *arg;
    bool at_free; /* arena_on_free: left alone by arena_run_cleanups */
};

void arena_init(struct arena *a, size_t limit)
{
    a->head = NULL;
    a->used_total = 0;
    a->limit = limit;
    a->limit_hit = false;
    a->cleanups = NULL;
}

void arena_init_buf(struct arena *a, size_t limit, void *buf, size_t size)
{
    arena_init(a, limit);
    if (size <= sizeof(struct arena_block) + 16)
        return;
    struct arena_block *b = buf;
    b->next = NULL;
    b->size = size - sizeof *b;
    b->off = 0;
    b->heap = false;
    a->head = b;
}

/* arena_alloc with an explicit cap on used_total. */
static void *alloc_under(struct arena *a, size_t n, size_t cap)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (a->used_total + n > cap) {
        a->limit_hit = true;
        return NULL;
    }
    struct arena_block *b = a->head;
    if (!b || b->size - b->off < n) {
        size_t size = n > ARENA_BLOCK_MIN ? n : ARENA_BLOCK_MIN;
        b = malloc(sizeof *b + size);
        if (!b)
            return NULL;
        b->size = size;
        b->off = 0;
        b->heap = true;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->off;
    b->off += n;
    a->used_total += n;
    return p;
}

void *arena_alloc(struct arena *a, size_t n)
{
    return alloc_under(a, n, a->limit);
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_grant(struct arena *a, size_t extra)
{
    /* From what is used now: cleanup records may already sit past the limit. */
    a->limit = (a->used_total > a->limit ? a->used_total : a->limit) + extra;
}

static struct arena_cleanup *add_cleanup(struct arena *a, arena_cleanup_fn fn, void *arg,
                                         bool at_free)
{
    struct arena_cleanup *c = alloc_under(a, sizeof *c, a->limit + ARENA_CLEANUP_RESERVE);
    if (!c)
        return NULL;
    c->fn = fn;
    c->arg = arg;
    c->at_free = at_free;
    c->next = a->cleanups;
    a->cleanups = c;
    return c;
}

struct arena_cleanup *arena_on_cleanup(struct arena *a, arena_cleanup_fn fn, void *arg)
{
    return add_cleanup(a, fn, arg, false);
}

struct arena_cleanup *arena_on_free(struct arena *a, arena_cleanup_fn fn, void *arg)
{
    return add_cleanup(a, fn, arg, true);
}

void arena_cleanup_run(struct arena_cleanup *c)
{
    if (!c || !c->fn)
        return;
    arena_cleanup_fn fn = c->fn;
    c->fn = NULL; /* before the call: a cleanup that reaches its own handle is a no-op */
    fn(c->arg);
}

void arena_cleanup_cancel(struct arena_cleanup *c)
{
    if (c)
        c->fn = NULL;
}

/*
 * Run the pending registrations, newest first. Records are never unlinked,
 * so walking the list is safe while cleanups run others; one a cleanup
 * registers goes on the head, before where the walk started: each further
 * pass takes those newer than the previous pass's head.
 */
static void run_pending(struct arena *a, bool at_free_too)
{
    struct arena_cleanup *stop = NULL;
    while (a->cleanups != stop) {
        struct arena_cleanup *head = a->cleanups;
        for (struct arena_cleanup *c = head; c != stop; c = c->next)
            if (at_free_too || !c->at_free)
                arena_cleanup_run(c);
        stop = head;
    }
}

void arena_run_cleanups(struct arena *a)
{
    run_pending(a, false);
}

void arena_free(struct arena *a)
{
    run_pending(a, true);
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        if (b->heap)
            free(b);
        b = next;
    }
    a->head = NULL;
    a->used_total = 0;
    a->cleanups = NULL;
}
