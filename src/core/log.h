/*
 * log.h — process logs on stderr ("2026-11-22T01:02:03.456Z warn worker 1: ...").
 * The level is set once at startup, before any thread starts.
 * The access log (one line per exchange) is separate: see access_log.h.
 */
#ifndef SY_LOG_H
#define SY_LOG_H

enum sy_log_level { SY_LOG_DEBUG = 0, SY_LOG_INFO, SY_LOG_WARN, SY_LOG_ERROR };

void sy_log_set_level(enum sy_log_level level);
enum sy_log_level sy_log_get_level(void);
/* Parse "debug|info|warn|error"; returns 0 or SY_EINVAL. */
int sy_log_parse_level(const char *s, enum sy_log_level *out);

void sy_log(enum sy_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (sy_log_get_level() <= SY_LOG_DEBUG)                                                    \
            sy_log(SY_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define log_info(...)  sy_log(SY_LOG_INFO, __VA_ARGS__)
#define log_warn(...)  sy_log(SY_LOG_WARN, __VA_ARGS__)
#define log_error(...) sy_log(SY_LOG_ERROR, __VA_ARGS__)

#endif
