/* h2_upstream.c — HTTP/2 to backends (h2 over TLS with ALPN, and h2c). */
#include <stdlib.h>

#include "backend/upstream-int.h"
#include "core/errors.h"

struct h2_pools {
    struct worker *w;
};

struct h2_pools *h2_pools_new(struct worker *w)
{
    struct h2_pools *p = calloc(1, sizeof *p);
    if (p)
        p->w = w;
    return p;
}

void h2_pools_close_idle(struct h2_pools *ps) { (void)ps; }

void h2_pools_free(struct h2_pools *ps) { free(ps); }

int h2_attempt_start(struct h2_pools *ps, const struct cfg_backend_service *svc,
                     const struct cfg_endpoint *ep, struct exchange *ex)
{
    return SY_EINVAL;
}
