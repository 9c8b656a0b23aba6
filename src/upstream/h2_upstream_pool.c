/*
 * h2_upstream_pool.c — the per-worker pools of the HTTP/2 upstream codec.
 *
 * A pool is one endpoint address with one transport setup (protocol, and
 * for TLS: ca_file, verify, sni); it lists its connections. An attempt
 * takes the first connection that accepts new streams (no GOAWAY received)
 * and has a free slot below the backend's SETTINGS_MAX_CONCURRENT_STREAMS,
 * else it opens one more (admitted by upstream_request.conn_enter). See
 * h2_upstream.c for connections and the codec as a whole.
 */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/h2_upstream-int.h"
#include "upstream/tls_client.h"
#include "core/errors.h"

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* TLS: the name the connections were verified for (tls_client_name) is part of the key. */
static bool pool_matches(const struct pool *p, const struct cfg_backend_service *svc,
                         const struct cfg_addr *a, const char *name)
{
    if (p->len != a->len || memcmp(&p->ss, &a->ss, a->len) != 0 || p->protocol != svc->protocol)
        return false;
    if (svc->protocol != CFG_BACKEND_HTTP2)
        return true;
    return p->verify == svc->tls.verify && str_eq(p->ca_file, svc->tls.ca_file) &&
           str_eq(p->name, name);
}

static void pool_free(struct pool *p)
{
    free(p->ca_file);
    free(p->name);
    free(p);
}

static struct pool *pool_get(struct h2_pools *ps, const struct cfg_backend_service *svc,
                             const struct cfg_endpoint *ep)
{
    const struct cfg_addr *a = &ep->address;
    char name[256];
    tls_client_name(svc, ep, name, sizeof name);
    for (struct sy_link *l = ps->pools.next; l != &ps->pools; l = l->next) {
        struct pool *p = SY_CONTAINER_OF(l, struct pool, link);
        if (pool_matches(p, svc, a, name))
            return p;
    }
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(&p->ss, &a->ss, a->len);
    p->len = a->len;
    p->protocol = svc->protocol;
    if (svc->protocol == CFG_BACKEND_HTTP2) {
        p->verify = svc->tls.verify;
        p->ca_file = svc->tls.ca_file ? strdup(svc->tls.ca_file) : NULL;
        p->name = strdup(name);
        if ((svc->tls.ca_file && !p->ca_file) || !p->name) {
            pool_free(p);
            return NULL;
        }
    }
    sy_list_init(&p->conns);
    sy_list_insert_head(&ps->pools, &p->link);
    return p;
}

void h2_pool_unlink(struct h2_conn *c)
{
    struct pool *p = c->pool;
    if (!p)
        return;
    sy_list_unlink(&c->pool_link);
    c->pool = NULL;
    if (!sy_list_empty(&p->conns))
        return;
    sy_list_unlink(&p->link);
    pool_free(p);
}

/*
 * Streams a connection may carry at once. Before its SETTINGS arrive, what
 * the backend announced on an earlier connection: a burst of new attempts
 * then spreads over new connections instead of piling onto one (where the
 * backend would refuse the excess, or nghttp2 would queue it).
 */
static unsigned conn_stream_limit(struct h2_conn *c)
{
    uint32_t max =
        nghttp2_session_get_remote_settings(c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (!c->got_settings && c->pool && c->pool->peer_max_streams)
        max = c->pool->peer_max_streams;
    return max < H2U_MAX_STREAMS ? max : H2U_MAX_STREAMS;
}

static struct h2_conn *pool_pick(struct pool *p)
{
    for (struct sy_link *l = p->conns.next; l != &p->conns; l = l->next) {
        struct h2_conn *c = SY_CONTAINER_OF(l, struct h2_conn, pool_link);
        if ((c->state != H2U_READY && c->state != H2U_CONNECTING) || c->retiring)
            continue;
        if (nghttp2_session_check_request_allowed(c->session) &&
            c->n_streams < conn_stream_limit(c))
            return c;
    }
    return NULL;
}

struct h2_pools *h2_pools_new(struct worker *w)
{
    struct h2_pools *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->w = w;
    sy_list_init(&ps->pools);
    sy_list_init(&ps->all);
    ps->tls = tls_client_cache_new();
    if (!ps->tls || h2_setup_init(&ps->setup, &h2_upstream_session) != 0) {
        h2_pools_free(ps);
        return NULL;
    }
    return ps;
}

void h2_pools_close_idle(struct h2_pools *ps)
{
    for (struct sy_link *l = ps->all.next, *next; l != &ps->all; l = next) {
        next = l->next;
        struct h2_conn *c = SY_CONTAINER_OF(l, struct h2_conn, all_link);
        if (c->state == H2U_CLOSED)
            continue;
        if (c->n_streams == 0) {
            h2_conn_fail(c, UPSTREAM_RESET); /* nobody to tell */
            continue;
        }
        h2_conn_retire(c);
    }
}

void h2_pools_free(struct h2_pools *ps)
{
    if (!ps)
        return;
    ps->closing = true;
    for (struct sy_link *l; (l = sy_list_first(&ps->all));) {
        struct h2_conn *c = SY_CONTAINER_OF(l, struct h2_conn, all_link);
        h2_conn_fail(c, UPSTREAM_RESET);
        h2_conn_reap_now(c);
    }
    for (struct sy_link *l; (l = sy_list_first(&ps->pools));) {
        sy_list_unlink(l);
        pool_free(SY_CONTAINER_OF(l, struct pool, link));
    }
    tls_client_cache_free(ps->tls);
    h2_setup_fini(&ps->setup);
    free(ps);
}

int h2_attempt_start(struct h2_pools *ps, const struct upstream_request *r,
                     struct upstream_attempt *out)
{
    if (ps->closing)
        return SY_EIO;
    struct pool *p = pool_get(ps, r->svc, r->ep);
    if (!p)
        return SY_ENOMEM;
    struct h2_conn *c = pool_pick(p);
    bool fresh = false;
    if (!c) {
        /* circuit_breakers.max_connections */
        void *token = r->conn_enter(r->conn_arg);
        if (!token)
            return SY_ELIMIT;
        c = h2_conn_new(ps, p, r);
        if (!c) {
            r->conn_leave(token);
            return SY_EIO;
        }
        c->conn_token = token;
        c->conn_leave = r->conn_leave;
        fresh = true;
    }
    int rc = h2_stream_start(c, r, out);
    if (rc != 0 && fresh)
        h2_conn_fail(c, UPSTREAM_CONNECT_FAILED); /* no stream: nobody is told */
    return rc;
}
