/*
 * upstream.h — per-worker upstream connection pools and attempt start.
 * An attempt sends ex->req's head at once (queued until connected) and then
 * carries the body and response through the exchange_on_* callbacks.
 */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include "config/config-t.h"
#include "exchange/exchange.h"

struct worker;
struct upstream_pools;

/* Per-worker pools; freed (every connection closed) by upstream_pools_free. */
struct upstream_pools *upstream_pools_new(struct worker *w);
void upstream_pools_free(struct upstream_pools *p);

/* Close idle connections (drain); active ones close when their exchange ends. */
void upstream_pools_close_idle(struct upstream_pools *p);

/*
 * Start an attempt for `ex` against endpoint `ep` of `svc`. On success sets
 * ex->up and ex->att and returns 0; errors come later through
 * exchange_on_upstream_error. Returns SY_ENOMEM, SY_EIO when no socket
 * could be made, or SY_ELIMIT when a new connection was needed and the
 * service's circuit_breakers.max_connections is reached; then no callback
 * will follow.
 */
int upstream_attempt_start(struct worker *w, const struct cfg_backend_service *svc,
                           const struct cfg_endpoint *ep, struct exchange *ex);

#endif
