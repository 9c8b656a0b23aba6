/*
 * urlmap_strtab.c — the url map's string tables: open addressing, linear
 * probing, at most half full, keys not copied. Built once by
 * url_map_compile (um_strtab_init, um_strtab_put), then read-only: lookups
 * are um_strtab_get, inline in urlmap-int.h for the matcher. The caller
 * hashes (FNV-1a, forwards or from the right), so one pass over a path or
 * host can probe every prefix or suffix.
 */
#include "urlmap/urlmap-int.h"

#include "core/errors.h"

int um_strtab_init(struct url_map *m, struct um_strtab *t, size_t max_entries, bool icase)
{
    t->icase = icase;
    t->n = 0;
    if (max_entries == 0)
        return 0;
    if (max_entries > (UINT32_MAX >> 2))
        return SY_ENOMEM;
    uint32_t cap = 8;
    while (cap < max_entries * 2)
        cap <<= 1;
    t->slots = um_calloc(m, cap, sizeof(*t->slots));
    if (!t->slots)
        return SY_ENOMEM;
    t->mask = cap - 1;
    return 0;
}

void um_strtab_put(struct um_strtab *t, const char *key, size_t len, uint32_t hash, const void *val)
{
    uint32_t i = hash & t->mask;
    for (;; i = (i + 1) & t->mask) {
        struct um_strtab_slot *s = &t->slots[i];
        if (!s->key)
            break;
        if (um_strtab_slot_is(t, s, key, len, hash))
            return;
    }
    t->slots[i] =
        (struct um_strtab_slot){.key = key, .len = (uint32_t)len, .hash = hash, .val = val};
    t->n++;
}
