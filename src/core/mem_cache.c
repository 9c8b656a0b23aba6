/* mem_cache.c — see mem_cache.h. */
#include "core/mem_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/grow.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A cached block is poisoned past its link: a use after free still reports. */
#define KEPT_POISON(h)                                                                             \
    ASAN_POISON_MEMORY_REGION((char *)((h) + 1) + sizeof(void *), (h)->size - sizeof(void *))
#define KEPT_UNPOISON(h)     ASAN_UNPOISON_MEMORY_REGION((h) + 1, (h)->size)
#define PAGES_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define PAGES_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define KEPT_POISON(h)       ((void)0)
#define KEPT_UNPOISON(h)     ((void)0)
#define PAGES_POISON(p, n)   ((void)0)
#define PAGES_UNPOISON(p, n) ((void)0)
#endif

/* Free page blocks of one size kept resident; past these, a freed block's
 * pages go back to the system at once (it stays mapped, for reuse). */
#define PAGE_KEEP_RESIDENT 16

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

/* ---- page blocks ------------------------------------------------------------------ */

/* Pages of a page-block request, or 0 when `size` is not one. */
static size_t pages_of(size_t size)
{
    size_t n = (size + MEM_PAGE - 1) / MEM_PAGE;
    return size >= MEM_PAGE && n <= MEM_PAGE_CLASSES ? n : 0;
}

static struct mem_arena *arena_of(const struct mem_cache *mc, const void *ptr)
{
    if ((uintptr_t)ptr & (MEM_PAGE - 1))
        return NULL; /* every page block is page-aligned */
    uintptr_t base = (uintptr_t)ptr & ~(uintptr_t)(MEM_ARENA_BYTES - 1);
    for (size_t i = mc->n_arenas; i-- > 0;)
        if ((uintptr_t)mc->arenas[i]->base == base)
            return mc->arenas[i];
    return NULL;
}

/* A new arena, aligned to its size so that arena_of finds it by masking. */
static struct mem_arena *arena_new(struct mem_cache *mc)
{
    struct mem_arena **v = sy_grow(mc->arenas, &mc->cap_arenas, mc->n_arenas, sizeof *v, 4);
    if (!v)
        return NULL;
    mc->arenas = v;
    struct mem_arena *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    size_t len = 2 * MEM_ARENA_BYTES;
    char *m =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        free(a);
        return NULL;
    }
    uintptr_t al = ((uintptr_t)m + MEM_ARENA_BYTES - 1) & ~(uintptr_t)(MEM_ARENA_BYTES - 1);
    size_t head = al - (uintptr_t)m, tail = len - head - MEM_ARENA_BYTES;
    if (head)
        munmap(m, head);
    if (tail)
        munmap((char *)al + MEM_ARENA_BYTES, tail);
    a->base = (char *)al;
    mc->arenas[mc->n_arenas++] = a;
    mc->next_page = 0;
    return a;
}

static void *pages_alloc(struct mem_cache *mc, size_t np)
{
    if (mc->page_free[np - 1].n) {
        void *p = mc->page_free[np - 1].v[--mc->page_free[np - 1].n];
        PAGES_UNPOISON(p, np * MEM_PAGE);
        return p;
    }
    struct mem_arena *a = mc->n_arenas ? mc->arenas[mc->n_arenas - 1] : NULL;
    if (!a || mc->next_page + np > MEM_ARENA_PAGES)
        if (!(a = arena_new(mc)))
            return NULL;
    char *p = a->base + mc->next_page * MEM_PAGE;
    a->pages[mc->next_page] = (unsigned char)np;
    mc->next_page += np;
    return p;
}

static size_t block_pages(const struct mem_arena *a, const void *ptr)
{
    return a->pages[((const char *)ptr - a->base) / MEM_PAGE];
}

static void pages_free(struct mem_cache *mc, struct mem_arena *a, void *ptr)
{
    size_t np = block_pages(a, ptr);
    __typeof__(mc->page_free[0]) *fl = &mc->page_free[np - 1];
    void **v = sy_grow(fl->v, &fl->cap, fl->n, sizeof *v, 16);
    if (!v) { /* no room to keep it: its pages go back, the block is lost to reuse */
        madvise(ptr, np * MEM_PAGE, MADV_DONTNEED);
        return;
    }
    fl->v = v;
    if (fl->n >= PAGE_KEEP_RESIDENT)
        madvise(ptr, np * MEM_PAGE, MADV_DONTNEED);
    fl->v[fl->n++] = ptr;
    PAGES_POISON(ptr, np * MEM_PAGE);
}

size_t mem_cache_page_block(const struct mem_cache *mc, const void *ptr)
{
    const struct mem_arena *a = arena_of(mc, ptr);
    return a ? block_pages(a, ptr) * MEM_PAGE : 0;
}

static bool page_is_zero(const char *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t acc = 0;
    for (size_t i = 0; i < MEM_PAGE / sizeof *w; i += 8)
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
    return acc == 0;
}

size_t mem_cache_release(const struct mem_cache *mc, void *ptr, bool dead)
{
    size_t bytes = mem_cache_page_block(mc, ptr);
    if (!bytes)
        return 0;
    char *p = ptr;
    if (dead)
        return madvise(p, bytes, MADV_DONTNEED) == 0 ? bytes : 0;
    size_t released = 0;
    for (size_t off = 0; off < bytes;) {
        size_t run = 0; /* a run of zero pages: one call */
        while (off + run < bytes && page_is_zero(p + off + run))
            run += MEM_PAGE;
        if (run && madvise(p + off, run, MADV_DONTNEED) == 0)
            released += run;
        off += run ? run : MEM_PAGE;
    }
    return released;
}

/* ---- small blocks ------------------------------------------------------------------ */

void *mem_cache_malloc(size_t size, void *user)
{
    struct mem_cache *mc = user;
    size_t c = class_of(size);
    struct mem_head *h;
    if (c == MEM_CACHE_CLASSES) {
        size_t np = pages_of(size);
        if (np)
            return pages_alloc(mc, np);
    }
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
    struct mem_arena *a = arena_of(mc, ptr);
    if (a) {
        pages_free(mc, a, ptr);
        return;
    }
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
    size_t bytes = nmemb * size;
    char *p = mem_cache_malloc(bytes, user);
    if (p && pages_of(bytes)) {
        /* A page block's pages that read as zeros stay untouched (never
         * written, or given back): not resident until they are used. */
        for (size_t off = 0; off < bytes; off += MEM_PAGE)
            if (!page_is_zero(p + off))
                memset(p + off, 0, bytes - off < MEM_PAGE ? bytes - off : MEM_PAGE);
    } else if (p) {
        memset(p, 0, bytes);
    }
    return p;
}

void *mem_cache_realloc(void *ptr, size_t size, void *user)
{
    if (!ptr)
        return mem_cache_malloc(size, user);
    size_t have = mem_cache_page_block(user, ptr);
    if (!have)
        have = ((struct mem_head *)ptr - 1)->size;
    if (size <= have)
        return ptr;
    void *n = mem_cache_malloc(size, user);
    if (!n)
        return NULL;
    memcpy(n, ptr, have);
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
    for (size_t k = 0; k < MEM_PAGE_CLASSES; k++) {
        free(mc->page_free[k].v);
        mc->page_free[k].v = NULL;
        mc->page_free[k].n = mc->page_free[k].cap = 0;
    }
    for (size_t i = 0; i < mc->n_arenas; i++) {
        PAGES_UNPOISON(mc->arenas[i]->base, MEM_ARENA_BYTES);
        munmap(mc->arenas[i]->base, MEM_ARENA_BYTES);
        free(mc->arenas[i]);
    }
    free(mc->arenas);
    mc->arenas = NULL;
    mc->n_arenas = mc->cap_arenas = 0;
    mc->next_page = 0;
}
