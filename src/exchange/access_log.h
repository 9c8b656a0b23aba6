/*
 * access_log.h — one line per exchange, written with a single write(2) on the
 * worker's access-log fd when the exchange finishes (JSON or text).
 */
#ifndef SY_ACCESS_LOG_H
#define SY_ACCESS_LOG_H

#include "exchange/exchange.h"

/* Write the entry for `ex` (no-op when the log is off). */
void access_log_write(const struct exchange *ex);

/* "UT,UF" style list of ex->flags into `out` ("-" when none). */
void access_log_flags(unsigned flags, char *out, size_t cap);

#endif
