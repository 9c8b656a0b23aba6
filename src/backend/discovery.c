/*
 * discovery.c — DNS service discovery (discovery.h): one entry per DNS name
 * of the config, its last good address set, its refresh timer and the
 * query in flight.
 *
 * Queries. A name is asked for A records (V4_ONLY), AAAA records
 * (V6_ONLY), or AAAA and then, when that gives no address (but the name
 * exists), A (AUTO, as Envoy's AUTO). One query per name at a time. A
 * query outlives its name when a reload forgets the name, and its
 * resolver when the dns block changes: evdns runs every callback (with
 * DNS_ERR_SHUTDOWN for a freed resolver), so each query frees itself in
 * its callback and only looks at its name if it still has one.
 *
 * Publishing. Several names may change in one loop turn; the `changed`
 * callback runs once after them, from a zero-delay event.
 */
#include "backend/discovery.h"

#include <arpa/inet.h>
#include <event2/dns.h>
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

enum dns_result { DNS_R_SUCCESS, DNS_R_EMPTY, DNS_R_FAILURE, DNS_R_NXDOMAIN, DNS_R_N };
static const char *const result_names[DNS_R_N] = {"success", "empty", "failure", "nxdomain"};

struct dns_name;

/* One evdns request in flight. */
struct dns_query {
    struct sy_link link;   /* discovery.queries */
    struct dns_name *name; /* NULL once the name was forgotten or the resolver replaced */
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

struct discovery {
    struct event_base *base;
    struct evdns_base *dns; /* NULL while the config has no DNS name */
    char *dns_key;          /* the dns block it was made from, as text */
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

/* The records of an answer as sorted socket addresses with `port`, duplicates dropped. */
static struct sockaddr_storage *answer_addrs(char type, int count, const void *addresses,
                                             uint16_t port, size_t *n)
{
    struct sockaddr_storage *v = calloc((size_t)count, sizeof *v);
    if (!v)
        return NULL;
    for (int i = 0; i < count; i++) {
        if (type == DNS_IPv4_A) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&v[i];
            sin->sin_family = AF_INET;
            sin->sin_port = htons(port);
            memcpy(&sin->sin_addr, (const char *)addresses + 4 * (size_t)i, 4);
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&v[i];
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(port);
            memcpy(&sin6->sin6_addr, (const char *)addresses + 16 * (size_t)i, 16);
        }
    }
    qsort(v, (size_t)count, sizeof *v, cmp_addr);
    size_t k = 0;
    for (size_t i = 0; i < (size_t)count; i++)
        if (k == 0 || cmp_addr(&v[k - 1], &v[i]) != 0)
            v[k++] = v[i];
    *n = k;
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

static void on_answer(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct dns_query *q = arg;
    struct dns_name *nm = q->name;
    sy_list_unlink(&q->link);
    free(q);
    if (!nm)
        return; /* forgotten, or asked through a resolver since replaced */
    nm->q = NULL;
    if (result == DNS_ERR_NONE && count > 0 && (type == DNS_IPv4_A || type == DNS_IPv6_AAAA)) {
        size_t n = 0;
        struct sockaddr_storage *v = answer_addrs(type, count, addresses, nm->port, &n);
        nm->asking_a = false;
        if (v) {
            settle(nm, DNS_R_SUCCESS, v, n, ttl);
            return;
        }
        log_error("dns: backend_service=%s name=%s: out of memory", nm->service, nm->text);
        settle(nm, DNS_R_FAILURE, NULL, 0, 0);
        return;
    }
    if (nm->family == CFG_DNS_AUTO && !nm->asking_a && result != DNS_ERR_NOTEXIST) {
        nm->asking_a = true; /* no IPv6 address: ask for IPv4 */
        ask(nm, false);
        return;
    }
    nm->asking_a = false;
    enum dns_result r = result == DNS_ERR_NONE || result == DNS_ERR_NODATA ? DNS_R_EMPTY
                        : result == DNS_ERR_NOTEXIST                       ? DNS_R_NXDOMAIN
                                                                           : DNS_R_FAILURE;
    settle(nm, r, NULL, 0, 0);
}

static void ask(struct dns_name *nm, bool v6)
{
    struct discovery *d = nm->d;
    struct dns_query *q = calloc(1, sizeof *q);
    struct evdns_request *req = NULL;
    if (q && d->dns) {
        q->name = nm;
        sy_list_insert_tail(&d->queries, &q->link);
        nm->q = q;
        req = v6 ? evdns_base_resolve_ipv6(d->dns, nm->host, 0, on_answer, q)
                 : evdns_base_resolve_ipv4(d->dns, nm->host, 0, on_answer, q);
        if (req)
            return;
        sy_list_unlink(&q->link);
        nm->q = NULL;
    }
    free(q);
    nm->asking_a = false;
    settle(nm, DNS_R_FAILURE, NULL, 0, 0);
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

/* The dns block as text, to tell whether a reload changed it. NULL on ENOMEM. */
static char *dns_key(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fprintf(f, "%llu/%u", (unsigned long long)cfg->dns.timeout_ms, cfg->dns.attempts);
    for (size_t i = 0; i < cfg->dns.n_resolvers; i++)
        fprintf(f, " %s", cfg->dns.resolvers[i].text);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static struct evdns_base *resolver_new(struct event_base *base, const struct config *cfg)
{
    int flags = EVDNS_BASE_DISABLE_WHEN_INACTIVE;
    if (!cfg->dns.n_resolvers)
        flags |= EVDNS_BASE_INITIALIZE_NAMESERVERS; /* /etc/resolv.conf */
    struct evdns_base *dns = evdns_base_new(base, flags);
    if (!dns)
        return NULL;
    for (size_t i = 0; i < cfg->dns.n_resolvers; i++) {
        const struct cfg_addr *a = &cfg->dns.resolvers[i];
        if (evdns_base_nameserver_sockaddr_add(dns, (const struct sockaddr *)&a->ss, a->len, 0)) {
            log_error("dns: cannot use resolver %s", a->text);
            evdns_base_free(dns, 0);
            return NULL;
        }
    }
    char timeout[32], attempts[16];
    snprintf(timeout, sizeof timeout, "%.3f", (double)cfg->dns.timeout_ms / 1000.0);
    snprintf(attempts, sizeof attempts, "%u", cfg->dns.attempts);
    /* Names are matched as written (no 0x20 case randomization). */
    if (evdns_base_set_option(dns, "timeout:", timeout) ||
        evdns_base_set_option(dns, "attempts:", attempts) ||
        evdns_base_set_option(dns, "randomize-case:", "0")) {
        evdns_base_free(dns, 0);
        return NULL;
    }
    return dns;
}

/* Use a resolver for `cfg`'s dns block; names in flight are asked again through it. */
static int resolver_update(struct discovery *d, const struct config *cfg, bool *restart)
{
    char *key = dns_key(cfg);
    if (!key)
        return SY_ENOMEM;
    if (d->dns && d->dns_key && !strcmp(key, d->dns_key)) {
        free(key);
        return 0;
    }
    struct evdns_base *dns = resolver_new(d->base, cfg);
    if (!dns) {
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
    if (d->dns)
        evdns_base_free(d->dns, 1); /* each query's callback runs (DNS_ERR_SHUTDOWN) */
    d->dns = dns;
    free(d->dns_key);
    d->dns_key = key;
    *restart = true;
    return 0;
}

/* ---- API
 * ------------------------------------------------------------------------------------------ */

/* evdns's own messages ("nameserver ... has failed", "... is back up") in our log. */
static void on_evdns_log(int is_warn, const char *msg)
{
    if (is_warn)
        log_warn("dns: %s", msg);
    else
        log_debug("dns: %s", msg);
}

struct discovery *discovery_new(struct event_base *base, discovery_changed_fn changed, void *ctx)
{
    evdns_set_log_fn(on_evdns_log);
    struct discovery *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->base = base;
    d->changed = changed;
    d->ctx = ctx;
    sy_list_init(&d->names);
    sy_list_init(&d->queries);
    d->publish_ev = event_new(base, -1, 0, on_publish, d);
    if (!d->publish_ev) {
        free(d);
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
            nm->mark = true;
            nm->refresh_ms = s->dns_refresh_rate_ms;
            nm->respect_ttl = s->respect_dns_ttl;
            nm->nxdomain_clear = s->dns_nxdomain_clear;
            if (fresh)
                start_query(nm);
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
    if (d->dns)
        evdns_base_free(d->dns, 0); /* no callbacks: the queries are freed below */
    while (d->queries.next != &d->queries) {
        struct dns_query *q = SY_CONTAINER_OF(d->queries.next, struct dns_query, link);
        sy_list_unlink(&q->link);
        free(q);
    }
    event_free(d->publish_ev);
    free(d->dns_key);
    free(d);
}
