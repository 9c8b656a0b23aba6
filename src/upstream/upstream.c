/* upstream.c — dispatch an attempt to the codec of the backend's protocol. */
#include <stdlib.h>

#include "upstream/upstream-int.h"
#include "core/errors.h"
#include "core/worker.h"

struct upstream_pools *upstream_pools_new(struct worker *w)
{
    struct upstream_pools *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->w = w;
    p->h1 = h1_pools_new(w);
    p->h2 = h2_pools_new(w);
    if (!p->h1 || !p->h2) {
        upstream_pools_free(p);
        return NULL;
    }
    return p;
}

void upstream_pools_close_idle(struct upstream_pools *p)
{
    h1_pools_close_idle(p->h1);
    h2_pools_close_idle(p->h2);
}

void upstream_pools_free(struct upstream_pools *p)
{
    if (!p)
        return;
    if (p->h1)
        h1_pools_free(p->h1);
    if (p->h2)
        h2_pools_free(p->h2);
    free(p);
}

const char *upstream_error_str(enum upstream_error e)
{
    switch (e) {
    case UPSTREAM_CONNECT_FAILED: return "connect_failed";
    case UPSTREAM_RESET: return "reset";
    case UPSTREAM_PROTOCOL: return "protocol_error";
    case UPSTREAM_REFUSED_STREAM: return "refused_stream";
    }
    return "unknown";
}

int upstream_attempt_start(struct upstream_pools *p, const struct upstream_request *r,
                           struct upstream_attempt *out)
{
    switch (r->svc->protocol) {
    case CFG_BACKEND_HTTP2:
    case CFG_BACKEND_H2C: return h2_attempt_start(p->h2, r, out);
    case CFG_BACKEND_HTTP:
    case CFG_BACKEND_HTTPS: return h1_attempt_start(p->h1, r, out);
    }
    return SY_EINVAL;
}
