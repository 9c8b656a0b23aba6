/*
 * admin.h — the admin listener (admin.address; never a client listener),
 * served on the main thread with libevent's evhttp:
 *   GET  /ready     200 serving, 503 draining
 *   GET  /metrics   Prometheus text format
 *   GET  /backends  JSON: services, endpoints, health, ejection, active requests
 *   GET  /config    JSON: active config version and the effective config
 *   GET  /shadow    JSON: shadow compare counts per route and the recent mismatches
 *   GET  /          HTML status page (self-contained; refreshes from /status.json)
 *   GET  /status.json  JSON: config version and reloads, listeners, services, endpoints,
 *                   rates and latency over the last minute (docs/operations.md)
 *   POST /reload    reload the config file: 200 + version, or 400 + errors
 *   POST /drain     start a graceful drain
 */
#ifndef SY_ADMIN_H
#define SY_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct event_base;
struct admin;
struct runtime;
struct cfg_addr;

/* What the admin endpoints need from the process (main.c). */
struct admin_hooks {
    void *ctx;
    bool (*draining)(void *ctx);
    /* A reference to the current runtime; the caller unrefs it. */
    struct runtime *(*current)(void *ctx);
    /* Reload; 0 on success, else writes the errors (one per line) to `errs`. */
    int (*reload)(void *ctx, FILE *errs);
    void (*drain)(void *ctx);
    /* Extra metrics written after the counters (gauges the process knows). */
    void (*metrics)(void *ctx, FILE *out);
    /* DNS names still wait for their first answer: /ready says 503 "resolving". */
    bool (*resolving)(void *ctx);
};

/* Listen on `addr`; NULL with a reason in err when it cannot. */
struct admin *admin_start(struct event_base *base, const struct cfg_addr *addr,
                          const struct admin_hooks *hooks, char *err, size_t errlen);
void admin_stop(struct admin *a);

/*
 * A reload was tried (main.c): the status page's reload history. `version`:
 * the config version served after it; `reason`: why it was refused, NULL
 * when ok. NULL a (no admin listener): nothing.
 */
void admin_note_reload(struct admin *a, const char *version, bool ok, const char *reason);

#endif
