/*
 * breakers.c — circuit breakers of a backend service (circuit_breakers) and
 * the load figures the admin API shows.
 *
 * max_requests, max_pending_requests and max_retries are atomic counters in
 * the service's runtime (service_rt): a reload starts them at zero for the
 * exchanges of the new config while the old config's exchanges count in the
 * old one, so for a moment up to twice the limit can be in flight.
 * max_connections counts open upstream connections per endpoint in the
 * registry (connections outlive reloads) and compares their sum over the
 * service's endpoints with the limit; concurrent connects on several workers
 * may overshoot it by at most one per worker.
 */
#include "backend/backend-int.h"

/* Take a slot under `max`; false when full. */
static bool slot_enter(unsigned *ctr, uint32_t max)
{
    unsigned v = __atomic_load_n(ctr, __ATOMIC_RELAXED);
    while (v < max)
        if (__atomic_compare_exchange_n(ctr, &v, v + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return true;
    return false;
}

static void slot_leave(unsigned *ctr)
{
    unsigned v = __atomic_load_n(ctr, __ATOMIC_RELAXED);
    while (v > 0)
        if (__atomic_compare_exchange_n(ctr, &v, v - 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return;
}

bool backend_cb_request_enter(struct service_rt *s)
{
    return slot_enter(&s->cb_requests, s->cfg->circuit_breakers.max_requests);
}

void backend_cb_request_leave(struct service_rt *s)
{
    slot_leave(&s->cb_requests);
}

bool backend_cb_retry_enter(struct service_rt *s)
{
    return slot_enter(&s->cb_retries, s->cfg->circuit_breakers.max_retries);
}

void backend_cb_retry_leave(struct service_rt *s)
{
    slot_leave(&s->cb_retries);
}

bool backend_cb_pending_enter(struct service_rt *s)
{
    return slot_enter(&s->cb_pending, s->cfg->circuit_breakers.max_pending_requests);
}

void backend_cb_pending_leave(struct service_rt *s)
{
    slot_leave(&s->cb_pending);
}

static unsigned service_connections(const struct service_rt *s)
{
    unsigned k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += __atomic_load_n(&s->eps[i]->connections, __ATOMIC_RELAXED);
    return k;
}

struct endpoint_state *backend_cb_connection_enter(struct service_rt *s, int idx)
{
    if (idx < 0 || (size_t)idx >= s->n ||
        service_connections(s) >= s->cfg->circuit_breakers.max_connections)
        return NULL;
    struct endpoint_state *e = s->eps[idx];
    /* The runtime holds a reference: taking another needs no registry lock. */
    __atomic_add_fetch(&e->refcount, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&e->connections, 1, __ATOMIC_RELAXED);
    return e;
}

void backend_cb_connection_leave(struct endpoint_state *e)
{
    if (!e)
        return;
    slot_leave(&e->connections);
    backend_endpoint_unref(e);
}

void backend_service_load(const struct service_rt *s, struct backend_service_load *out)
{
    out->requests = __atomic_load_n(&s->cb_requests, __ATOMIC_RELAXED);
    out->pending = __atomic_load_n(&s->cb_pending, __ATOMIC_RELAXED);
    out->retries = __atomic_load_n(&s->cb_retries, __ATOMIC_RELAXED);
    out->connections = service_connections(s);
    out->active = 0;
    for (size_t i = 0; i < s->n; i++)
        out->active += __atomic_load_n(&s->eps[i]->active, __ATOMIC_RELAXED);
}
