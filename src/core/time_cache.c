/* time_cache.c — see time_cache.h. */
#include "core/time_cache.h"

#include <stdio.h>
#include <time.h>

void sy_time_cache_init(struct sy_time_cache *c)
{
    c->sec = -1;
    c->ms = -1;
    c->iso[0] = c->http_date[0] = '\0';
}

/* Bring the cache to now: a new second reformats both strings, a new millisecond patches 3 digits.
 */
static void refresh(struct sy_time_cache *c)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ms = ts.tv_nsec / 1000000;
    if ((int64_t)ts.tv_sec != c->sec) {
        struct tm tm;
        time_t t = ts.tv_sec;
        gmtime_r(&t, &tm);
        snprintf(c->iso, sizeof c->iso, "%04d-%02d-%02dT%02d:%02d:%02d.000Z", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        snprintf(c->http_date, sizeof c->http_date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        c->sec = (int64_t)ts.tv_sec;
        c->ms = -1;
    }
    if (ms != c->ms) {
        c->iso[20] = (char)('0' + ms / 100);
        c->iso[21] = (char)('0' + ms / 10 % 10);
        c->iso[22] = (char)('0' + ms % 10);
        c->ms = ms;
    }
}

const char *sy_time_iso(struct sy_time_cache *c)
{
    refresh(c);
    return c->iso;
}

const char *sy_time_http_date(struct sy_time_cache *c)
{
    refresh(c);
    return c->http_date;
}
