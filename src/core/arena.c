/* arena.c — see arena.h. */
#include "core/arena.h"

#include <stdbool.h>
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

void arena_init(struct arena *a, size_t limit)
{
    a->head = NULL;
    a->used_total = 0;
    a->limit = limit;
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

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (a->used_total + n > a->limit)
        return NULL;
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

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        if (b->heap)
            free(b);
        b = next;
    }
    a->head = NULL;
    a->used_total = 0;
}
