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

#include <stddef.h>

#define MEM_CACHE_CLASSES 6 /* 64, 128, 256, 512, 1024, 2048 bytes */
#define MEM_CACHE_MAX     2048

struct mem_cache {
    void *free[MEM_CACHE_CLASSES]; /* singly linked through the block */
    unsigned n[MEM_CACHE_CLASSES];
};

/* The nghttp2-style entry points; `user` is the struct mem_cache. */
void *mem_cache_malloc(size_t size, void *user);
void mem_cache_free(void *ptr, void *user);
void *mem_cache_calloc(size_t nmemb, size_t size, void *user);
void *mem_cache_realloc(void *ptr, size_t size, void *user);

/* Release every cached block (the cache itself is the caller's). */
void mem_cache_drain(struct mem_cache *mc);

#endif
