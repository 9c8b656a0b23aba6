/*
 * access_log.h — one line per exchange, written with a single write(2) on the
 * worker's access-log fd when the exchange finishes (JSON or text). Every
 * field is escaped for its format and cut to a fixed length (access_log.c,
 * docs/operations.md), so a client cannot add fields or lines.
 */
#ifndef SY_ACCESS_LOG_H
#define SY_ACCESS_LOG_H

#include <stddef.h>

#include "exchange/exchange.h"

/* Write the entry for `ex` (no-op when the log is off). */
void access_log_write(const struct exchange *ex);

/* "UT,UF" style list of ex->flags into `out` ("-" when none). */
void access_log_flags(unsigned flags, char *out, size_t cap);

/*
 * `len` bytes of `s` as the body of a JSON string (RFC 8259): `"` and `\`
 * backslashed, bytes below 0x20 and from 0x7f up as \u00XX. Writes at most
 * `cap` bytes to `out` (no NUL), never half an escape: stops at the first
 * byte whose escape does not fit. Returns the bytes written.
 */
size_t access_log_json_escape(char *out, size_t cap, const char *s, size_t len);

/*
 * The same for a field of the text format: `"`, `\`, space, bytes below
 * 0x20 and from 0x7f up as \xHH.
 */
size_t access_log_text_escape(char *out, size_t cap, const char *s, size_t len);

#endif
