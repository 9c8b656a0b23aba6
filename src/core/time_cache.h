/*
 * time_cache.h — wall-clock timestamps formatted once and reused: the access
 * log's ISO 8601 time and the Date header of local replies. A cache belongs
 * to one thread (a worker's exchange state); formatting with gmtime_r runs
 * once per second, the milliseconds are patched in place when they change,
 * and a call within the same millisecond costs one clock_gettime (vDSO).
 */
#ifndef SY_TIME_CACHE_H
#define SY_TIME_CACHE_H

#include <stdint.h>

struct sy_time_cache {
    int64_t sec;        /* the second `iso` and `http_date` show; -1 = nothing yet */
    long ms;            /* the millisecond `iso` shows */
    char iso[64];       /* "2026-11-22T01:00:42.927Z" */
    char http_date[64]; /* "Sun, 22 Nov 2026 01:00:42 GMT" (RFC 9110 IMF-fixdate) */
};

void sy_time_cache_init(struct sy_time_cache *c);

/* Now, as "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC): points into the cache. */
const char *sy_time_iso(struct sy_time_cache *c);

/* Now, as an HTTP Date value: points into the cache. */
const char *sy_time_http_date(struct sy_time_cache *c);

#endif
