/*
 * grow.h — room for one more element in an array that doubles as it grows.
 */
#ifndef SY_GROW_H
#define SY_GROW_H

#include <stddef.h>
#include <stdlib.h>

/*
 * `v` holds `n` elements of `elem` bytes in room for *cap. When it is full
 * (n == *cap), the room doubles (or becomes `first`): returns the array to
 * use from now on (`v` itself when there was room), or NULL without memory,
 * `v` and *cap left as they were.
 */
static inline void *sy_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap)
        return v;
    size_t c = *cap ? *cap * 2 : first;
    void *nv = realloc(v, c * elem);
    if (nv)
        *cap = c;
    return nv;
}

#endif
