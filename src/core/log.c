/* log.c — stderr logging with a timestamp and level; one write(2) per line. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"

/* Written once at startup, read by every thread afterwards. */
static enum sy_log_level log_level = SY_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sy_log_set_level(enum sy_log_level level)
{
    log_level = level;
}

enum sy_log_level sy_log_get_level(void)
{
    return log_level;
}

int sy_log_parse_level(const char *s, enum sy_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum sy_log_level)i;
            return 0;
        }
    }
    return SY_EINVAL;
}

void sy_log(enum sy_log_level level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write per line keeps lines whole across threads. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
