/*
 * config.h — load, validate and share configuration snapshots.
 *
 * config_load() reads a YAML file (libyaml), expands ${NAME} and
 * ${NAME:-default} in scalar values, validates everything SPEC.md lists
 * (unknown keys, wrong types, missing required keys, duplicate names,
 * dangling references, bad durations/sizes/addresses/regexes, out-of-range
 * values) and either returns a complete immutable snapshot or collects every
 * error it found as "FILE:LINE:COL: message" (1-based line and column).
 */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include <stdio.h>

#include "config-t.h"

/* Collected load errors. Owned by the caller; release with config_errors_free. */
struct config_errors {
    char **msgs; /* each "FILE:LINE:COL: message" */
    size_t n;
    size_t cap;
};

/*
 * Load and validate `path`. Returns a snapshot with refcount 1, or NULL when
 * the file cannot be read or has any error; then `errs` holds at least one
 * message (an unreadable file is reported as "FILE: reason").
 */
struct config *config_load(const char *path, struct config_errors *errs);

/* Same, from a buffer; `name` is used in messages. For tests. */
struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs);

/* Print each error on its own line. */
void config_errors_print(const struct config_errors *errs, FILE *out);
void config_errors_free(struct config_errors *errs);

/* Reference counting (atomic; any thread). config_unref(NULL) is a no-op. */
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Lookups by name; NULL when absent. */
struct cfg_backend_service *config_find_backend_service(const struct config *cfg, const char *name);
struct cfg_listener *config_find_listener(const struct config *cfg, const char *name);

/*
 * Write the effective config (after defaults) as JSON to `out`, for the
 * admin API's GET /config.
 */
void config_write_json(const struct config *cfg, FILE *out);

#endif
