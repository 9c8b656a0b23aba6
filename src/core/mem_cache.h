/*
 * mem_cache.h — a small-object cache for one thread, shaped for
 * nghttp2_mem. nghttp2 allocates and frees several small objects per
 * stream (frames, header copies, stream state); on a busy worker those
 * malloc/free pairs cost more than the HTTP/2 framing itself. Blocks up to
 * MEM_CACHE_MAX bytes are kept on per-size-class free lists, each capped,
 * so memory stays bounded; larger blocks go straight to malloc.
 *
 * Not thread-safe: one cache per worker, used only on its thread.
 */
#ifndef SY_MEM_CACHE_H
#define SY_MEM_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#define MEM_CACHE_CLASSES 6 /* 64, 128, 256, 512, 1024, 2048 bytes */
#define MEM_CACHE_MAX     2048

/*
 * Page blocks: requests from MEM_PAGE to MEM_PAGE_CLASSES pages are served
 * page-aligned from arenas of MEM_ARENA_BYTES the cache maps itself, with no
 * header, so that an idle owner can give their pages back to the system
 * (mem_cache_release) and get zero pages on the next touch. nghttp2's
 * per-session stream map (4 KiB) and frame buffer (16 KiB) are such blocks:
 * an idle HTTP/2 connection need not keep them resident.
 */
#define MEM_PAGE         4096
#define MEM_PAGE_CLASSES 8 /* 1..8 pages */
#define MEM_ARENA_PAGES  512
#define MEM_ARENA_BYTES  ((size_t)MEM_ARENA_PAGES * MEM_PAGE) /* 2 MiB, aligned to its size */

struct mem_arena {
    char *base;
    unsigned char pages[MEM_ARENA_PAGES]; /* at a block's first page: its page count */
};

struct mem_cache {
    void *free[MEM_CACHE_CLASSES]; /* singly linked through the block */
    unsigned n[MEM_CACHE_CLASSES];
    struct {
        void **v; /* free page blocks of k+1 pages (a stack: not linked through
                   * the blocks, whose pages may have been given back) */
        size_t n, cap;
    } page_free[MEM_PAGE_CLASSES];
    struct mem_arena **arenas; /* the newest last */
    size_t n_arenas, cap_arenas;
    size_t next_page; /* the newest arena's first page never handed out */
};

/* The nghttp2-style entry points; `user` is the struct mem_cache. */
void *mem_cache_malloc(size_t size, void *user);
void mem_cache_free(void *ptr, void *user);
void *mem_cache_calloc(size_t nmemb, size_t size, void *user);
void *mem_cache_realloc(void *ptr, size_t size, void *user);

/* Release every cached block and unmap the arenas (the cache itself is the
 * caller's; every page block must have been freed). */
void mem_cache_drain(struct mem_cache *mc);

/* The bytes of the page block at `ptr`, or 0 when it is not one of `mc`'s. */
size_t mem_cache_page_block(const struct mem_cache *mc, const void *ptr);

/*
 * Give pages of the page block at `ptr` back to the system while its owner
 * is idle: all of them when its contents are dead (`dead`), otherwise the
 * pages that hold only zero bytes (they read the same afterwards). Either
 * way the block stays allocated; a released page reads as zeros and
 * becomes resident again when written. Returns the bytes released.
 */
size_t mem_cache_release(const struct mem_cache *mc, void *ptr, bool dead);

#endif
