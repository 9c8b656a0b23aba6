/* mem_cache.c — see mem_cache.h. */
#include "core/mem_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A cached block is poisoned past its link: a use after free still reports. */
#define KEPT_POISON(h)                                                                             \
    ASAN_POISON_MEMORY_REGION((char *)((h) + 1) + sizeof(void *), (h)->size - sizeof(void *))
#define KEPT_UNPOISON(h) ASAN_UNPOISON_MEMORY_REGION((h) + 1, (h)->size)
#else
#define KEPT_POISON(h)   ((void)0)
#define KEPT_UNPOISON(h) ((void)0)
#endif

/* Every block starts with this header (16 bytes keep malloc's alignment). */
struct mem_head {
    size_t size_class; /* 0..MEM_CACHE_CLASSES-1, or MEM_CACHE_CLASSES for a big block */
    size_t size;       /* usable bytes */
};

/* Free blocks kept per class: more of the small ones, which are the common ones. */
/* Sized for a few hundred streams in flight on a worker (each holds several
 * blocks), so a burst of them is served from the lists: at most about
 * 1.5 MiB kept per worker. */
static const unsigned class_cap[MEM_CACHE_CLASSES] = {2048, 2048, 1024, 1024, 128, 64};

static size_t class_of(size_t size)
{
    size_t c = 0, cap = 64;
    while (cap < size && c < MEM_CACHE_CLASSES) {
        cap <<= 1;
        c++;
    }
    return c;
}

void *mem_cache_malloc(size_t size, void *user)
{
    struct mem_cache *mc = user;
    size_t c = class_of(size);
    struct mem_head *h;
    if (c < MEM_CACHE_CLASSES && mc->free[c]) {
        h = mc->free[c];
        mc->free[c] = *(void **)(h + 1);
        mc->n[c]--;
        KEPT_UNPOISON(h);
        return h + 1;
    }
    size_t usable = c < MEM_CACHE_CLASSES ? (size_t)64 << c : size;
    h = malloc(sizeof *h + usable);
    if (!h)
        return NULL;
    h->size_class = c;
    h->size = usable;
    return h + 1;
}

void mem_cache_free(void *ptr, void *user)
{
    struct mem_cache *mc = user;
    if (!ptr)
        return;
    struct mem_head *h = (struct mem_head *)ptr - 1;
    size_t c = h->size_class;
    if (c >= MEM_CACHE_CLASSES || mc->n[c] >= class_cap[c]) {
        free(h);
        return;
    }
    *(void **)ptr = mc->free[c];
    mc->free[c] = h;
    mc->n[c]++;
    KEPT_POISON(h);
}

void *mem_cache_calloc(size_t nmemb, size_t size, void *user)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    void *p = mem_cache_malloc(nmemb * size, user);
    if (p)
        memset(p, 0, nmemb * size);
    return p;
}

void *mem_cache_realloc(void *ptr, size_t size, void *user)
{
    if (!ptr)
        return mem_cache_malloc(size, user);
    struct mem_head *h = (struct mem_head *)ptr - 1;
    if (size <= h->size)
        return ptr;
    void *n = mem_cache_malloc(size, user);
    if (!n)
        return NULL;
    memcpy(n, ptr, h->size);
    mem_cache_free(ptr, user);
    return n;
}

void mem_cache_drain(struct mem_cache *mc)
{
    for (size_t c = 0; c < MEM_CACHE_CLASSES; c++) {
        struct mem_head *h = mc->free[c];
        while (h) {
            struct mem_head *next = *(void **)(h + 1);
            KEPT_UNPOISON(h);
            free(h);
            h = next;
        }
        mc->free[c] = NULL;
        mc->n[c] = 0;
    }
}
