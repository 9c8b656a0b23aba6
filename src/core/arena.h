/*
 * arena.h — a bump allocator for one exchange (or one connection's head).
 * Allocations are freed all at once by arena_free(). The first block is
 * embedded so that a small exchange makes a single malloc; further blocks are
 * added on demand up to `limit` bytes in total (then allocation fails, which
 * callers turn into 431/400/500 as appropriate).
 */
#ifndef SY_ARENA_H
#define SY_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head; /* current block (newest first) */
    size_t used_total;        /* bytes handed out, for the limit */
    size_t limit;             /* cap on used_total */
};

/* Initialise an empty arena that will hand out at most `limit` bytes. */
void arena_init(struct arena *a, size_t limit);

/*
 * Same, with a first block carved from caller-owned memory `buf` of `size`
 * bytes (aligned like malloc's): small exchanges then make no allocation of
 * their own. The caller frees `buf`, after arena_free.
 */
void arena_init_buf(struct arena *a, size_t limit, void *buf, size_t size);

/* Allocate `n` bytes aligned to 16; NULL when over the limit or out of memory. */
void *arena_alloc(struct arena *a, size_t n);

/* Copy `n` bytes into the arena, NUL-terminated; NULL on failure. */
char *arena_strndup(struct arena *a, const char *s, size_t n);

/* Release every block; the arena may be reused after arena_init. */
void arena_free(struct arena *a);

#endif
