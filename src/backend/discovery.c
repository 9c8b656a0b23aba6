/*
 * discovery.c — DNS service discovery (discovery.h): one entry per DNS name
 * of the config, its last good address set, its refresh timer and the
 * query in flight, over a c-ares channel driven by the main thread's
 * libevent loop.
 *
 * Queries. A name is asked for A records (V4_ONLY), AAAA records
 * (V6_ONLY), or AAAA and then, when that gives no address but the name
 * exists, A (AUTO, as Envoy's AUTO), through ares_search (the search list
 * and ndots of /etc/resolv.conf apply). One query per name at a time.
 * Answers come over UDP with EDNS0 (1280 bytes); a truncated one is asked
 * again over TCP, so a headless Service with hundreds of pods resolves
 * whole (at most DNS_MAX_ADDRESSES addresses per name are kept).
 *
 * Lifetimes. c-ares runs every callback synchronously, also when a channel
 * is destroyed (ARES_EDESTRUCTION), so each query is freed in its
 * callback. A query outlives its name when a reload forgets the name, and
 * its channel when the dns block changes: it looks at its name only if it
 * still has one.
 *
 * Publishing. Several names may change in one loop turn; the `changed`
 * callback runs once after them, from a zero-delay event.
 */
#include "backend/discovery.h"

#include <ares.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/timer.h"
#include "core/worker.h"

/* A TTL-driven refresh never comes sooner than this. */
#define DNS_MIN_TTL_REFRESH_MS 1000
/* Addresses kept per name; records past it are ignored. */
#define DNS_MAX_ADDRESSES 1024
/* Query types (RFC 1035, RFC 3596) and class IN. */
#define DNS_CLASS_IN  1
#define DNS_TYPE_A    1
#define DNS_TYPE_AAAA 28

enum dns_result { DNS_R_SUCCESS, DNS_R_EMPTY, DNS_R_FAILURE, DNS_R_NXDOMAIN, DNS_R_N };
static const char *const result_names[DNS_R_N] = {"success", "empty", "failure", "nxdomain"};

struct dns_name;

/* One query in flight. */
struct dns_query {
    struct sy_link link;   /* discovery.queries */
    struct dns_name *name; /* NULL once the name was forgotten or the channel replaced */
    bool v6;               /* AAAA (else A) */
};

struct dns_name {
    struct sy_link link; /* discovery.names */
    struct discovery *d;
    char *service; /* backend service name */
    char *text;    /* "name:port" as configured */
    char *host;
    uint16_t port;
    enum cfg_dns_family family;
    uint64_t refresh_ms;
    bool respect_ttl;
    bool nxdomain_clear;

    struct sockaddr_storage *addrs; /* the last good set, sorted, port set */
    size_t n;
    bool answered;       /* a first answer (of any kind) came */
    uint64_t expires_ms; /* the last good answer's TTL ends (sy_now_ms clock) */
    enum dns_result last;
    struct event *timer; /* the next refresh */
    struct dns_query *q; /* in flight, or NULL */
    bool asking_a;       /* AUTO: AAAA gave nothing, A is asked now */
    uint64_t counts[DNS_R_N];
    bool mark; /* discovery_update: still in the config */
};

/* A socket c-ares wants watched. */
struct dns_sock {
    struct sy_link link; /* resolver.socks */
    ares_socket_t fd;
    struct event *ev;
};

/* A c-ares channel on the main loop. */
struct resolver {
    struct discovery *d;
    ares_channel ch;
    struct event *timer; /* ares_timeout: retransmissions and query timeouts */
    struct sy_link socks;
};

struct discovery {
    struct event_base *base;
    struct resolver *dns; /* NULL while the config has no DNS name */
    char *dns_key;        /* the dns block it was made from, as text */
    bool ares_init;       /* ares_library_init done */
    discovery_changed_fn changed;
    void *ctx;
    struct event *publish_ev;
    struct sy_link names;
    struct sy_link queries;
};

/* ---- addresses ------------------------------------------------------------------------------ */

static int cmp_addr(const void *a, const void *b)
{
    const struct sockaddr_storage *x = a, *y = b;
    if (x->ss_family != y->ss_family)
        return x->ss_family < y->ss_family ? -1 : 1;
    if (x->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)x)->sin_addr,
                      &((const struct sockaddr_in *)y)->sin_addr, sizeof(struct in_addr));
    return memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr,
                  &((const struct sockaddr_in6 *)y)->sin6_addr, sizeof(struct in6_addr));
}

/*
 * The records of an answer (`abuf`: A, or AAAA when v6) as sorted socket
 * addresses with `port`, duplicates dropped; their count in *n and the
 * smallest TTL in *ttl. Returns the array; NULL with *n 0 when the answer
 * has no address, NULL with *n 1 when it does not parse (or on ENOMEM).
 */
static struct sockaddr_storage *answer_addrs(const unsigned char *abuf, int alen, bool v6,
                                             uint16_t port, size_t *n, int *ttl)
{
    struct ares_addrttl *a4 = NULL;
    struct ares_addr6ttl *a6 = NULL;
    struct sockaddr_storage *v = NULL;
    int count = DNS_MAX_ADDRESSES, rc;
    *n = 1;
    *ttl = 0;
    if (v6) {
        a6 = calloc(DNS_MAX_ADDRESSES, sizeof *a6);
        rc = a6 ? ares_parse_aaaa_reply(abuf, alen, NULL, a6, &count) : ARES_ENOMEM;
    } else {
        a4 = calloc(DNS_MAX_ADDRESSES, sizeof *a4);
        rc = a4 ? ares_parse_a_reply(abuf, alen, NULL, a4, &count) : ARES_ENOMEM;
    }
    if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && count <= 0)) {
        *n = 0;
        goto out;
    }
    if (rc != ARES_SUCCESS || !(v = calloc((size_t)count, sizeof *v)))
        goto out;
    for (int i = 0; i < count; i++) {
        int t = v6 ? a6[i].ttl : a4[i].ttl;
        if (i == 0 || t < *ttl)
            *ttl = t;
        if (v6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&v[i];
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(port);
            memcpy(&sin6->sin6_addr, &a6[i].ip6addr, sizeof sin6->sin6_addr);
        } else {
            struct sockaddr_in *sin = (struct sockaddr_in *)&v[i];
            sin->sin_family = AF_INET;
            sin->sin_port = htons(port);
            sin->sin_addr = a4[i].ipaddr;
        }
    }
    qsort(v, (size_t)count, sizeof *v, cmp_addr);
    size_t k = 0;
    for (size_t i = 0; i < (size_t)count; i++)
        if (k == 0 || cmp_addr(&v[k - 1], &v[i]) != 0)
            v[k++] = v[i];
    *n = k;
out:
    free(a4);
    free(a6);
    return v;
}

static bool same_set(const struct sockaddr_storage *a, size_t na, const struct sockaddr_storage *b,
                     size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (cmp_addr(&a[i], &b[i]) != 0)
            return false;
    return true;
}

/* "10.0.0.1, 10.0.0.2" (at most the first 8) for a log line. */
static void addrs_text(const struct sockaddr_storage *v, size_t n, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && i < 8 && off < cap; i++) {
        char ip[INET6_ADDRSTRLEN];
        const void *src = v[i].ss_family == AF_INET
                              ? (const void *)&((const struct sockaddr_in *)&v[i])->sin_addr
                              : (const void *)&((const struct sockaddr_in6 *)&v[i])->sin6_addr;
        inet_ntop(v[i].ss_family, src, ip, sizeof ip);
        int w = snprintf(out + off, cap - off, "%s%s", i ? ", " : "", ip);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (n > 8 && off < cap)
        snprintf(out + off, cap - off, ", ... (%zu in all)", n);
}

/* ---- queries --------------------------------------------------------------------------------- */

static void ask(struct dns_name *nm, bool v6);
static void resolver_rearm(struct resolver *r);

static void publish_soon(struct discovery *d)
{
    event_active(d->publish_ev, EV_TIMEOUT, 1);
}

static void schedule(struct dns_name *nm, uint64_t ms)
{
    sy_timer_arm_ms(nm->timer, ms);
}

/* Apply the outcome of one resolution of nm. */
static void settle(struct dns_name *nm, enum dns_result r, struct sockaddr_storage *addrs, size_t n,
                   int ttl)
{
    uint64_t now = sy_now_ms();
    bool changed = false;
    nm->counts[r]++;
    nm->answered = true;
    if (r == DNS_R_SUCCESS) {
        nm->expires_ms = now + (uint64_t)(ttl > 0 ? ttl : 0) * 1000;
        if (!same_set(nm->addrs, nm->n, addrs, n)) {
            char list[512];
            addrs_text(addrs, n, list, sizeof list);
            log_info("dns: backend_service=%s name=%s: %zu address%s (%s)", nm->service, nm->text,
                     n, n == 1 ? "" : "es", list);
            free(nm->addrs);
            nm->addrs = addrs;
            nm->n = n;
            addrs = NULL;
            changed = true;
        } else if (nm->last != DNS_R_SUCCESS) {
            log_info("dns: backend_service=%s name=%s: answering again, %zu address%s", nm->service,
                     nm->text, n, n == 1 ? "" : "es");
        }
    } else if (r == DNS_R_NXDOMAIN && nm->nxdomain_clear && nm->n && now >= nm->expires_ms) {
        log_warn("dns: backend_service=%s name=%s: NXDOMAIN after the TTL, %zu address%s removed "
                 "(dns_nxdomain: CLEAR)",
                 nm->service, nm->text, nm->n, nm->n == 1 ? "" : "es");
        free(nm->addrs);
        nm->addrs = NULL;
        nm->n = 0;
        changed = true;
    } else if (r != nm->last) {
        log_warn("dns: backend_service=%s name=%s: %s; keeping the last %zu address%s", nm->service,
                 nm->text,
                 r == DNS_R_EMPTY      ? "empty answer"
                 : r == DNS_R_NXDOMAIN ? "NXDOMAIN"
                                       : "resolution failed",
                 nm->n, nm->n == 1 ? "" : "es");
    }
    free(addrs);
    nm->last = r;
    uint64_t next = nm->refresh_ms;
    if (r == DNS_R_SUCCESS && nm->respect_ttl) {
        next = (uint64_t)(ttl > 0 ? ttl : 0) * 1000;
        if (next < DNS_MIN_TTL_REFRESH_MS)
            next = DNS_MIN_TTL_REFRESH_MS;
    }
    schedule(nm, next);
    if (changed)
        publish_soon(nm->d);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns_name *nm = q->name;
    bool v6 = q->v6;
    sy_list_unlink(&q->link);
    free(q);
    if (!nm || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        return; /* forgotten, or its channel was replaced (then the name is asked again) */
    nm->q = NULL;
    size_t n = 0;
    int ttl = 0;
    struct sockaddr_storage *v = NULL;
    if (status == ARES_SUCCESS && (v = answer_addrs(abuf, alen, v6, nm->port, &n, &ttl))) {
        nm->asking_a = false;
        settle(nm, DNS_R_SUCCESS, v, n, ttl);
        return;
    }
    if (status == ARES_SUCCESS && n) {
        nm->asking_a = false; /* an answer that does not parse */
        settle(nm, DNS_R_FAILURE, NULL, 0, 0);
        return;
    }
    if (nm->family == CFG_DNS_AUTO && v6 && status != ARES_ENOTFOUND) {
        nm->asking_a = true; /* no IPv6 address: ask for IPv4 */
        ask(nm, false);
        return;
    }
    nm->asking_a = false;
    enum dns_result r = status == ARES_SUCCESS || status == ARES_ENODATA ? DNS_R_EMPTY
                        : status == ARES_ENOTFOUND                       ? DNS_R_NXDOMAIN
                                                                         : DNS_R_FAILURE;
    settle(nm, r, NULL, 0, 0);
}

static void ask(struct dns_name *nm, bool v6)
{
    struct discovery *d = nm->d;
    struct dns_query *q = d->dns ? calloc(1, sizeof *q) : NULL;
    if (!q) {
        nm->asking_a = false;
        settle(nm, DNS_R_FAILURE, NULL, 0, 0);
        return;
    }
    q->name = nm;
    q->v6 = v6;
    sy_list_insert_tail(&d->queries, &q->link);
    nm->q = q;
    struct resolver *r = d->dns;
    /* The callback may run before ares_search returns (a bad name, say). */
    ares_search(r->ch, nm->host, DNS_CLASS_IN, v6 ? DNS_TYPE_AAAA : DNS_TYPE_A, on_answer, q);
    resolver_rearm(r);
}

static void start_query(struct dns_name *nm)
{
    if (nm->q)
        return;
    ask(nm, nm->family != CFG_DNS_V4_ONLY);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    start_query(arg);
}

static void on_publish(evutil_socket_t fd, short what, void *arg)
{
    struct discovery *d = arg;
    d->changed(d->ctx);
}

/* ---- names ------------------------------------------------------------------------------------
 */

static void name_free(struct dns_name *nm)
{
    if (nm->q)
        nm->q->name = NULL; /* it finishes on its own */
    if (nm->timer)
        event_free(nm->timer);
    sy_list_unlink(&nm->link);
    free(nm->addrs);
    free(nm->service);
    free(nm->text);
    free(nm->host);
    free(nm);
}

static struct dns_name *find(const struct discovery *d, const char *service, const char *text,
                             enum cfg_dns_family family)
{
    for (struct sy_link *l = d->names.next; l != &d->names; l = l->next) {
        struct dns_name *nm = SY_CONTAINER_OF(l, struct dns_name, link);
        if (nm->family == family && !strcmp(nm->service, service) && !strcmp(nm->text, text))
            return nm;
    }
    return NULL;
}

static struct dns_name *name_new(struct discovery *d, const struct cfg_backend_service *s,
                                 const struct cfg_endpoint *ep)
{
    struct dns_name *nm = calloc(1, sizeof *nm);
    if (!nm)
        return NULL;
    nm->d = d;
    sy_list_init(&nm->link);
    nm->service = strdup(s->name);
    nm->text = strdup(ep->address.text);
    nm->host = strdup(ep->dns_name);
    nm->timer = evtimer_new(d->base, on_timer, nm);
    if (!nm->service || !nm->text || !nm->host || !nm->timer) {
        name_free(nm);
        return NULL;
    }
    nm->port = ep->port;
    nm->family = s->dns_lookup_family;
    nm->last = DNS_R_SUCCESS;
    sy_list_insert_tail(&d->names, &nm->link);
    return nm;
}

/* ---- the resolver ------------------------------------------------------------------------------
 */

static void resolver_rearm(struct resolver *r)
{
    struct timeval tv, *tvp = ares_timeout(r->ch, NULL, &tv);
    if (tvp)
        event_add(r->timer, tvp);
    else
        event_del(r->timer);
}

static void on_resolver_timer(evutil_socket_t fd, short what, void *arg)
{
    struct resolver *r = arg;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resolver_rearm(r);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct resolver *r = arg;
    ares_process_fd(r->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    resolver_rearm(r);
}

static void sock_free(struct dns_sock *s)
{
    sy_list_unlink(&s->link);
    if (s->ev)
        event_free(s->ev);
    free(s);
}

/* c-ares opens, closes, or changes its interest in one of its sockets. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct resolver *r = data;
    struct dns_sock *s = NULL;
    for (struct sy_link *l = r->socks.next; l != &r->socks && !s; l = l->next)
        if (SY_CONTAINER_OF(l, struct dns_sock, link)->fd == fd)
            s = SY_CONTAINER_OF(l, struct dns_sock, link);
    if (!readable && !writable) {
        if (s)
            sock_free(s);
        return;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) {
            log_error("dns: out of memory watching a resolver socket");
            return;
        }
        s->fd = fd;
        sy_list_insert_tail(&r->socks, &s->link);
    }
    if (s->ev)
        event_free(s->ev);
    short what = (short)(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    s->ev = event_new(r->d->base, fd, what, on_sock, r);
    if (!s->ev || event_add(s->ev, NULL) != 0)
        log_error("dns: cannot watch a resolver socket");
}

static void resolver_free(struct resolver *r)
{
    if (!r)
        return;
    if (r->ch)
        ares_destroy(r->ch); /* every query's callback runs now (ARES_EDESTRUCTION) */
    while (r->socks.next != &r->socks)
        sock_free(SY_CONTAINER_OF(r->socks.next, struct dns_sock, link));
    if (r->timer)
        event_free(r->timer);
    free(r);
}

/*
 * The dns block as text: "IP:port,[v6]:port" for ares_set_servers_ports_csv
 * (with_settings false), or that plus timeout and attempts, to tell whether
 * a reload changed the block. NULL on ENOMEM.
 */
static char *dns_text(const struct config *cfg, bool with_settings)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < cfg->dns.n_resolvers; i++)
        fprintf(f, "%s%s", i ? "," : "", cfg->dns.resolvers[i].text);
    if (with_settings)
        fprintf(f, " %llu/%u", (unsigned long long)cfg->dns.timeout_ms, cfg->dns.attempts);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static struct resolver *resolver_new(struct discovery *d, const struct config *cfg)
{
    struct resolver *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->d = d;
    sy_list_init(&r->socks);
    r->timer = evtimer_new(d->base, on_resolver_timer, r);
    struct ares_options o = {
        .flags = ARES_FLAG_EDNS, /* 1280-byte UDP answers; TCP when truncated */
        .timeout = (int)cfg->dns.timeout_ms,
        .tries = (int)cfg->dns.attempts,
        .sock_state_cb = on_sock_state,
        .sock_state_cb_data = r,
    };
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
    int rc = r->timer ? ares_init_options(&r->ch, &o, mask) : ARES_ENOMEM;
    if (rc != ARES_SUCCESS) {
        log_error("dns: cannot start a resolver: %s", ares_strerror(rc));
        r->ch = NULL;
        resolver_free(r);
        return NULL;
    }
    if (cfg->dns.n_resolvers) {
        char *csv = dns_text(cfg, false);
        rc = csv ? ares_set_servers_ports_csv(r->ch, csv) : ARES_ENOMEM;
        free(csv);
        if (rc != ARES_SUCCESS) {
            log_error("dns: cannot use the resolvers: %s", ares_strerror(rc));
            resolver_free(r);
            return NULL;
        }
    }
    return r;
}

/* Use a channel for `cfg`'s dns block; names in flight are asked again through it. */
static int resolver_update(struct discovery *d, const struct config *cfg, bool *restart)
{
    char *key = dns_text(cfg, true);
    if (!key)
        return SY_ENOMEM;
    if (d->dns && d->dns_key && !strcmp(key, d->dns_key)) {
        free(key);
        return 0;
    }
    struct resolver *r = resolver_new(d, cfg);
    if (!r) {
        free(key);
        return SY_EINVAL;
    }
    for (struct sy_link *l = d->queries.next; l != &d->queries; l = l->next) {
        struct dns_query *q = SY_CONTAINER_OF(l, struct dns_query, link);
        if (q->name) {
            q->name->q = NULL;
            q->name->asking_a = false;
            q->name = NULL;
        }
    }
    resolver_free(d->dns);
    d->dns = r;
    free(d->dns_key);
    d->dns_key = key;
    *restart = true;
    return 0;
}

/* ---- API
 * ------------------------------------------------------------------------------------------ */

struct discovery *discovery_new(struct event_base *base, discovery_changed_fn changed, void *ctx)
{
    struct discovery *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->base = base;
    d->changed = changed;
    d->ctx = ctx;
    sy_list_init(&d->names);
    sy_list_init(&d->queries);
    d->ares_init = ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS;
    d->publish_ev = event_new(base, -1, 0, on_publish, d);
    if (!d->ares_init || !d->publish_ev) {
        discovery_free(d);
        return NULL;
    }
    return d;
}

static bool has_dns_names(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *s = &cfg->backend_services[i];
        for (size_t j = 0; s->discovery == CFG_DISCOVERY_DNS && j < s->n_endpoints; j++)
            if (s->endpoints[j].dns_name)
                return true;
    }
    return false;
}

int discovery_update(struct discovery *d, const struct config *cfg)
{
    bool restart = false;
    if (has_dns_names(cfg)) {
        int rc = resolver_update(d, cfg, &restart);
        if (rc)
            return rc;
    }
    for (struct sy_link *l = d->names.next; l != &d->names; l = l->next)
        SY_CONTAINER_OF(l, struct dns_name, link)->mark = false;
    int rc = 0;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *s = &cfg->backend_services[i];
        for (size_t j = 0; s->discovery == CFG_DISCOVERY_DNS && j < s->n_endpoints; j++) {
            const struct cfg_endpoint *ep = &s->endpoints[j];
            if (!ep->dns_name)
                continue;
            struct dns_name *nm = find(d, s->name, ep->address.text, s->dns_lookup_family);
            bool fresh = !nm;
            if (fresh && !(nm = name_new(d, s, ep))) {
                rc = SY_ENOMEM;
                continue;
            }
            bool retimed = !fresh && (nm->refresh_ms != s->dns_refresh_rate_ms ||
                                      nm->respect_ttl != s->respect_dns_ttl);
            nm->mark = true;
            nm->refresh_ms = s->dns_refresh_rate_ms;
            nm->respect_ttl = s->respect_dns_ttl;
            nm->nxdomain_clear = s->dns_nxdomain_clear;
            if (fresh || (retimed && !nm->q)) {
                event_del(nm->timer); /* a new schedule starts with a query now */
                start_query(nm);
            }
        }
    }
    for (struct sy_link *l = d->names.next, *next; l != &d->names; l = next) {
        next = l->next;
        struct dns_name *nm = SY_CONTAINER_OF(l, struct dns_name, link);
        if (!nm->mark)
            name_free(nm);
        else if (restart && !nm->q) {
            event_del(nm->timer);
            start_query(nm);
        }
    }
    return rc;
}

size_t discovery_addresses(const struct discovery *d, const struct cfg_backend_service *s,
                           const struct cfg_endpoint *ep, const struct sockaddr_storage **out)
{
    const struct dns_name *nm = d ? find(d, s->name, ep->address.text, s->dns_lookup_family) : NULL;
    *out = nm ? nm->addrs : NULL;
    return nm ? nm->n : 0;
}

bool discovery_ready(const struct discovery *d)
{
    for (struct sy_link *l = d->names.next; l != &d->names; l = l->next)
        if (!SY_CONTAINER_OF(l, struct dns_name, link)->answered)
            return false;
    return true;
}

void discovery_write_metrics(const struct discovery *d, FILE *out)
{
    fprintf(out, "# HELP switchyard_dns_resolutions_total DNS resolutions of discovery: DNS "
                 "names, by result (success, empty, failure, nxdomain).\n"
                 "# TYPE switchyard_dns_resolutions_total counter\n");
    for (struct sy_link *l = d->names.next; l != &d->names; l = l->next) {
        const struct dns_name *nm = SY_CONTAINER_OF(l, struct dns_name, link);
        for (int r = 0; r < DNS_R_N; r++)
            fprintf(out,
                    "switchyard_dns_resolutions_total{backend_service=\"%s\",name=\"%s\","
                    "result=\"%s\"} %llu\n",
                    nm->service, nm->text, result_names[r], (unsigned long long)nm->counts[r]);
    }
    fprintf(out, "# HELP switchyard_dns_addresses Addresses a discovery: DNS name resolves to "
                 "now (its last good answer).\n# TYPE switchyard_dns_addresses gauge\n");
    for (struct sy_link *l = d->names.next; l != &d->names; l = l->next) {
        const struct dns_name *nm = SY_CONTAINER_OF(l, struct dns_name, link);
        fprintf(out, "switchyard_dns_addresses{backend_service=\"%s\",name=\"%s\"} %zu\n",
                nm->service, nm->text, nm->n);
    }
}

void discovery_free(struct discovery *d)
{
    if (!d)
        return;
    while (d->names.next != &d->names)
        name_free(SY_CONTAINER_OF(d->names.next, struct dns_name, link));
    resolver_free(d->dns); /* the queries' callbacks run now and free them */
    event_free(d->publish_ev);
    if (d->ares_init)
        ares_library_cleanup();
    free(d->dns_key);
    free(d);
}
