/*
 * outlier.c — passive outlier detection from attempt outcomes
 * (backend_release), with GCP's / Envoy's consecutive-error detectors.
 *
 * Per endpoint, shared by every worker (atomics in endpoint_state):
 *   consecutive_errors           any 5xx or gateway failure in a row
 *   consecutive_gateway_failure  502/503/504, connect failure, reset, timeout in a row
 * A success (< 500) resets both; a non-gateway 5xx resets the second; a
 * cancelled attempt counts for nothing. When a counter reaches its
 * threshold (0 = detector off) the endpoint is ejected with probability
 * enforcing_* percent, unless that would make more than max_ejection_percent
 * of the service's endpoints ejected at once; either way both counters
 * start again. Ejection is immediate (not deferred to the next interval)
 * and lasts base_ejection_time × the ejection multiplier (capped at
 * max(base_ejection_time, 300s), as Envoy's max_ejection_time). The
 * multiplier goes up by one per ejection and down by one per `interval`
 * spent un-ejected since the last ejection ended. An ejected endpoint comes
 * back lazily: backend_pick compares ejected_until_ms with the clock; or at
 * once when an active health check passes (backend_endpoint_uneject).
 */
#include "backend/backend-int.h"
#include "core/log.h"
#include "core/worker.h"

#define MAX_EJECTION_MS (300u * 1000)

static void reset_counters(struct endpoint_state *e)
{
    if (__atomic_load_n(&e->consecutive_errors, __ATOMIC_RELAXED))
        __atomic_store_n(&e->consecutive_errors, 0, __ATOMIC_RELAXED);
    if (__atomic_load_n(&e->consecutive_gateway_failure, __ATOMIC_RELAXED))
        __atomic_store_n(&e->consecutive_gateway_failure, 0, __ATOMIC_RELAXED);
}

static size_t ejected_count(const struct service_rt *s, uint64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += __atomic_load_n(&s->eps[i]->ejected_until_ms, __ATOMIC_RELAXED) > now;
    return k;
}

/* The multiplier for a new ejection: the last one, decayed by the quiet intervals since. */
static unsigned next_multiplier(const struct endpoint_state *e, uint64_t prev_until, uint64_t now,
                                uint64_t interval)
{
    unsigned k = __atomic_load_n(&e->ejections, __ATOMIC_RELAXED);
    if (prev_until && now > prev_until && interval) {
        uint64_t quiet = (now - prev_until) / interval;
        k = quiet >= k ? 0 : k - (unsigned)quiet;
    }
    return k + 1;
}

static void try_eject(struct service_rt *s, size_t idx, uint64_t now, uint64_t rnd,
                      uint32_t enforcing, const char *detector, unsigned count)
{
    const struct cfg_backend_service *c = s->cfg;
    struct endpoint_state *e = s->eps[idx];
    uint64_t prev = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
    reset_counters(e);
    if (prev > now || rnd % 100 >= enforcing)
        return;
    if ((ejected_count(s, now) + 1) * 100 >
        (size_t)c->outlier_detection.max_ejection_percent * s->n) {
        log_info("outlier: backend_service=%s endpoint=%s not ejected (%s: %u in a row): "
                 "max_ejection_percent %u reached",
                 c->name, e->address, detector, count, c->outlier_detection.max_ejection_percent);
        return;
    }
    unsigned k = next_multiplier(e, prev, now, c->outlier_detection.interval_ms);
    uint64_t base = c->outlier_detection.base_ejection_time_ms;
    uint64_t cap = base > MAX_EJECTION_MS ? base : MAX_EJECTION_MS;
    uint64_t ms = base * k > cap ? cap : base * k;
    if (!__atomic_compare_exchange_n(&e->ejected_until_ms, &prev, now + ms, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return; /* another worker ejected it just now */
    __atomic_store_n(&e->ejections, k, __ATOMIC_RELAXED);
    __atomic_add_fetch(&e->ejections_total, 1, __ATOMIC_RELAXED);
    log_warn("outlier: backend_service=%s endpoint=%s ejected for %llums (%s: %u in a row, "
             "multiplier %u)",
             c->name, e->address, (unsigned long long)ms, detector, count, k);
}

void outlier_on_result(struct service_rt *s, size_t idx, enum attempt_outcome o, uint64_t now,
                       uint64_t rnd)
{
    const struct cfg_backend_service *c = s->cfg;
    struct endpoint_state *e = s->eps[idx];
    unsigned errs, gw;
    switch (o) {
    case ATTEMPT_OK: reset_counters(e); return;
    case ATTEMPT_CANCELLED: return;
    case ATTEMPT_5XX:
        errs = __atomic_add_fetch(&e->consecutive_errors, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(&e->consecutive_gateway_failure, __ATOMIC_RELAXED))
            __atomic_store_n(&e->consecutive_gateway_failure, 0, __ATOMIC_RELAXED);
        if (c->outlier_detection.consecutive_errors &&
            errs == c->outlier_detection.consecutive_errors)
            try_eject(s, idx, now, rnd, c->outlier_detection.enforcing_consecutive_errors,
                      "consecutive_errors", errs);
        return;
    case ATTEMPT_GATEWAY_FAILURE:
        errs = __atomic_add_fetch(&e->consecutive_errors, 1, __ATOMIC_RELAXED);
        gw = __atomic_add_fetch(&e->consecutive_gateway_failure, 1, __ATOMIC_RELAXED);
        if (c->outlier_detection.consecutive_gateway_failure &&
            gw == c->outlier_detection.consecutive_gateway_failure)
            try_eject(s, idx, now, rnd, c->outlier_detection.enforcing_consecutive_gateway_failure,
                      "consecutive_gateway_failure", gw);
        else if (c->outlier_detection.consecutive_errors &&
                 errs == c->outlier_detection.consecutive_errors)
            try_eject(s, idx, now, rnd, c->outlier_detection.enforcing_consecutive_errors,
                      "consecutive_errors", errs);
        return;
    }
}

bool backend_endpoint_uneject(struct endpoint_state *e, const char *why)
{
    uint64_t now = sy_now_ms();
    uint64_t until = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
    /* The end of the ejection moves to now: the multiplier decays from here. */
    while (until > now)
        if (__atomic_compare_exchange_n(&e->ejected_until_ms, &until, now, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            reset_counters(e);
            log_info("outlier: backend_service=%s endpoint=%s unejected %llums early (%s)",
                     e->service, e->address, (unsigned long long)(until - now), why);
            return true;
        }
    return false;
}
