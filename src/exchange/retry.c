/* retry.c — see retry.h. */
#include "exchange/retry.h"

#include <string.h>

#include "core/parse.h"
#include "core/strlit.h"
#include "http/headers.h"
#include "http/grpc.h"

void retry_policy_from_route(const struct cfg_route_action *a, struct retry_policy *out)
{
    const struct cfg_retry_policy *p = &a->retry_policy;
    if (p->set) {
        out->conditions = p->retry_conditions;
        out->num_retries = p->num_retries;
        out->per_try_timeout_ms = p->per_try_timeout_ms;
        out->allow_body = true;
        return;
    }
    out->conditions = CFG_RETRY_GATEWAY_ERROR;
    out->num_retries = 1;
    out->per_try_timeout_ms = 0;
    out->allow_body = false;
}

uint64_t route_timeout_ms(const struct cfg_route_action *a, const struct cfg_backend_service *s,
                          const struct http_headers *h)
{
    uint64_t t = a->timeout_set ? a->timeout_ms : s->timeout_ms;
    const struct http_header *g = h ? http_headers_get(h, SY_STRLIT("grpc-timeout")) : NULL;
    uint64_t gt;
    char buf[32];
    if (g && g->value_len < sizeof buf) {
        memcpy(buf, g->value, g->value_len);
        buf[g->value_len] = '\0';
        if (sy_parse_grpc_timeout_ms(buf, &gt) == 0 && (t == 0 || gt < t))
            t = gt ? gt : 1;
    }
    return t;
}

static uint32_t grpc_conditions(int grpc_status)
{
    switch (grpc_status) {
    case GRPC_CANCELLED: return CFG_RETRY_CANCELLED;
    case GRPC_DEADLINE_EXCEEDED: return CFG_RETRY_DEADLINE_EXCEEDED;
    case GRPC_RESOURCE_EXHAUSTED: return CFG_RETRY_RESOURCE_EXHAUSTED;
    case GRPC_INTERNAL: return CFG_RETRY_INTERNAL;
    case GRPC_UNAVAILABLE: return CFG_RETRY_UNAVAILABLE;
    default: return 0;
    }
}

uint32_t retry_conditions_met(const struct attempt_report *r)
{
    switch (r->result) {
    case RESULT_RESPONSE: {
        uint32_t c = 0;
        if (r->status >= 500 && r->status <= 599)
            c |= CFG_RETRY_5XX;
        if (r->status == 502 || r->status == 503 || r->status == 504)
            c |= CFG_RETRY_GATEWAY_ERROR;
        if (r->status == 409)
            c |= CFG_RETRY_RETRIABLE_4XX;
        if (r->grpc_status >= 0)
            c |= grpc_conditions(r->grpc_status);
        return c;
    }
    case RESULT_CONNECT_FAILURE:
        return CFG_RETRY_5XX | CFG_RETRY_GATEWAY_ERROR | CFG_RETRY_CONNECT_FAILURE;
    case RESULT_REFUSED_STREAM:
        return CFG_RETRY_5XX | CFG_RETRY_GATEWAY_ERROR | CFG_RETRY_REFUSED_STREAM;
    case RESULT_RESET:
    case RESULT_PROTOCOL_ERROR:
    case RESULT_PER_TRY_TIMEOUT: return CFG_RETRY_5XX | CFG_RETRY_GATEWAY_ERROR;
    }
    return 0;
}

const char *retry_condition_name(uint32_t bits)
{
    static const char *const names[] = {
        "5xx",       "gateway-error",     "connect-failure", "retriable-4xx",      "refused-stream",
        "cancelled", "deadline-exceeded", "internal",        "resource-exhausted", "unavailable",
    };
    /* The most specific name first, so the log says why precisely. */
    static const int order[] = {2, 4, 3, 5, 6, 7, 8, 9, 1, 0};
    for (unsigned k = 0; k < sizeof order / sizeof order[0]; k++)
        if (bits & (1u << order[k]))
            return names[order[k]];
    return "none";
}

uint64_t retry_backoff_ms(unsigned n, uint64_t base_ms, uint64_t max_ms, uint64_t rand)
{
    uint64_t ceiling = base_ms;
    for (unsigned i = 1; i < n && ceiling < max_ms; i++)
        ceiling *= 2;
    if (ceiling > max_ms)
        ceiling = max_ms;
    return ceiling ? rand % (ceiling + 1) : 0;
}

int retry_local_status(enum attempt_result r)
{
    switch (r) {
    case RESULT_CONNECT_FAILURE:
    case RESULT_REFUSED_STREAM: return 503;
    case RESULT_PER_TRY_TIMEOUT: return 504;
    case RESULT_RESET:
    case RESULT_PROTOCOL_ERROR:
    case RESULT_RESPONSE: return 502;
    }
    return 502;
}

bool retry_method_idempotent(const char *method, size_t len)
{
    static const struct {
        const char *s;
        size_t n;
    } idempotent[] = {
        {SY_STRLIT("GET")},   {SY_STRLIT("HEAD")}, {SY_STRLIT("OPTIONS")},
        {SY_STRLIT("TRACE")}, {SY_STRLIT("PUT")},  {SY_STRLIT("DELETE")},
    };
    for (size_t i = 0; method && i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (len == idempotent[i].n && memcmp(method, idempotent[i].s, len) == 0)
            return true;
    return false;
}

bool retry_stale_resend(bool stale, const char *method, size_t len, bool replayable,
                        unsigned resends_done)
{
    return stale && replayable && resends_done == 0 && retry_method_idempotent(method, len);
}
