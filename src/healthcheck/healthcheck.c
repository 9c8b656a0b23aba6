/*
 * healthcheck.c — the process's health checker (healthcheck.h): probe
 * targets and their schedules, rise/fall hysteresis, and publishing each
 * endpoint's verdict into the shared endpoint_state (backend.h).
 *
 * Verdicts. A target (health check × address) has no verdict until its
 * first probe ends; that first result decides at once (one success:
 * healthy, one failure: unhealthy). After that it takes
 * unhealthy_threshold consecutive failures to become unhealthy and
 * healthy_threshold consecutive successes to become healthy again.
 *
 * An endpoint is healthy when every health check of its service that has a
 * verdict says healthy; while none has one it keeps its state (a new
 * endpoint starts healthy: "unknown counts as healthy"). A service without
 * health checks has all its endpoints healthy. Transitions are logged:
 *
 *   health: backend_service=api endpoint=10.0.0.7:8080 healthy->unhealthy
 *           (hc-http: HTTP 503; 2 consecutive failures)
 *
 * A passing probe of a healthy endpoint also ends an outlier ejection at
 * once (Envoy's successful_active_health_check_uneject_host): an endpoint
 * ejected while it was down comes back as soon as a check says it serves
 * again, not when its ejection time is up (backend_endpoint_uneject).
 *
 * Scheduling. Each target probes every check_interval, jittered uniformly
 * by ±10% and counted from the start of the previous probe (a probe longer
 * than the interval is followed at once by the next). A new target's first
 * probe starts within a tenth of its interval (at most 100 ms), so a fresh
 * process or a reload learns the truth quickly.
 */
#include "healthcheck/healthcheck.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "runtime.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/timer.h"
#include "core/worker.h"
#include "healthcheck/hc-int.h"

static uint64_t hc_rand(struct health_checker *hc)
{
    return sy_rand_next(&hc->rng);
}

struct health_checker *health_checker_new(struct event_base *base)
{
    struct health_checker *hc = calloc(1, sizeof *hc);
    if (!hc)
        return NULL;
    hc->base = base;
    hc->rng = (sy_now_us() ^ ((uint64_t)getpid() << 32)) | 1;
    return hc;
}

/* ---- targets ------------------------------------------------------------------------------- */

static void target_free(struct hc_target *t)
{
    hc_probe_cancel(t->probe);
    if (t->timer)
        event_free(t->timer);
    free(t->check_name);
    free(t->request_path);
    free(t->host_cfg);
    free(t->response);
    free(t->grpc_service_name);
    free(t->addr_text);
    free(t->authority);
    free(t->sni);
    free(t);
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool target_is(const struct hc_target *t, const struct cfg_health_check *h,
                      const struct cfg_endpoint *ep, bool tls)
{
    return t->type == h->type && t->port == h->port && t->tls == tls &&
           same_str(t->check_name, h->name) && same_str(t->request_path, h->request_path) &&
           same_str(t->host_cfg, h->host) && same_str(t->response, h->response) &&
           same_str(t->grpc_service_name, h->grpc_service_name) &&
           same_str(t->addr_text, ep->address.text);
}

/* The host of "host:port", "[v6]:port", "[v6]", "v6" or "host" (brackets kept), into out. */
static void host_of(const char *s, char *out, size_t cap)
{
    const char *end;
    if (s[0] == '[' && (end = strchr(s, ']')))
        end++;
    else if ((end = strchr(s, ':')) && strchr(end + 1, ':'))
        end = s + strlen(s); /* a bare IPv6 address */
    else if (!end)
        end = s + strlen(s);
    snprintf(out, cap, "%.*s", (int)(end - s), s);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    char tmp[256];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        snprintf(tmp, sizeof tmp, "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(tmp, sizeof tmp, "%s", host);
    return inet_pton(AF_INET, tmp, buf) == 1 || inet_pton(AF_INET6, tmp, buf) == 1;
}

/* Address, Host / :authority and SNI of a target. false on allocation failure. */
static bool target_derive(struct hc_target *t, const struct cfg_endpoint *ep)
{
    char host[256], auth[300], sni[256];
    /* A discovered address is named by its DNS name (Host, :authority, SNI). */
    host_of(ep->origin ? ep->origin : ep->address.text, host, sizeof host);
    memcpy(&t->ss, &ep->address.ss, sizeof t->ss);
    t->len = ep->address.len;
    uint16_t port = 0;
    if (t->ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&t->ss;
        if (t->port)
            a->sin_port = htons((uint16_t)t->port);
        port = ntohs(a->sin_port);
    } else if (t->ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t->ss;
        if (t->port)
            a->sin6_port = htons((uint16_t)t->port);
        port = ntohs(a->sin6_port);
    }
    if (t->host_cfg[0])
        snprintf(auth, sizeof auth, "%s", t->host_cfg);
    else
        snprintf(auth, sizeof auth, "%s:%u", host, port);
    t->authority = strdup(auth);
    host_of(t->host_cfg[0] ? t->host_cfg : host, sni, sizeof sni);
    if (sni[0] && !is_ip_literal(sni) && !(t->sni = strdup(sni)))
        return false;
    return t->authority != NULL;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static void schedule(struct hc_target *t, uint64_t delay_ms)
{
    sy_timer_arm_ms(t->timer, delay_ms);
}

static struct hc_target *target_new(struct health_checker *hc, const struct cfg_health_check *h,
                                    const struct cfg_endpoint *ep, bool tls)
{
    struct hc_target *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->hc = hc;
    t->type = h->type;
    t->tls = tls;
    t->port = h->port;
    t->check_name = strdup(h->name);
    t->request_path = strdup(h->request_path ? h->request_path : "/");
    t->host_cfg = strdup(h->host ? h->host : "");
    t->response = strdup(h->response ? h->response : "");
    t->grpc_service_name = strdup(h->grpc_service_name ? h->grpc_service_name : "");
    t->addr_text = strdup(ep->address.text);
    t->timer = evtimer_new(hc->base, on_timer, t);
    if (!t->check_name || !t->request_path || !t->host_cfg || !t->response ||
        !t->grpc_service_name || !t->addr_text || !t->timer || !target_derive(t, ep)) {
        target_free(t);
        return NULL;
    }
    t->next = hc->targets;
    hc->targets = t;
    return t;
}

/*
 * The target for (h, ep) of service b, existing or new; marked as in use.
 * NULL on ENOMEM. GRPC checks use TLS when the service speaks TLS (HTTPS,
 * HTTP2) and h2c otherwise; the other types say which they use.
 */
static struct hc_target *target_get(struct health_checker *hc, const struct cfg_health_check *h,
                                    const struct cfg_backend_service *b,
                                    const struct cfg_endpoint *ep)
{
    bool tls = h->type == CFG_HC_GRPC &&
               (b->protocol == CFG_BACKEND_HTTPS || b->protocol == CFG_BACKEND_HTTP2);
    struct hc_target *t = hc->targets;
    while (t && !target_is(t, h, ep, tls))
        t = t->next;
    bool fresh = !t;
    if (fresh && !(t = target_new(hc, h, ep, tls)))
        return NULL;
    t->mark = true;
    t->interval_ms = h->check_interval_ms ? h->check_interval_ms : 5000;
    t->timeout_ms = h->timeout_ms ? h->timeout_ms : 5000;
    t->healthy_threshold = h->healthy_threshold ? h->healthy_threshold : 1;
    t->unhealthy_threshold = h->unhealthy_threshold ? h->unhealthy_threshold : 1;
    if (fresh) {
        uint64_t spread = (t->interval_ms < 1000 ? t->interval_ms : 1000) / 10;
        schedule(t, hc_rand(hc) % (spread + 1));
    }
    return t;
}

/* ---- endpoint verdicts ----------------------------------------------------------------------- */

static const char *state_name(bool known, bool healthy)
{
    return !healthy ? "unhealthy" : known ? "healthy" : "unknown";
}

/*
 * Recompute one endpoint from its targets and publish it; log a change.
 * `cause`: the target whose verdict just changed (for the log), or NULL.
 */
static void endpoint_update(struct hc_endpoint *ep, const struct hc_target *cause)
{
    struct endpoint_state *e = ep->state;
    bool was_healthy = __atomic_load_n(&e->healthy, __ATOMIC_RELAXED);
    bool was_known = __atomic_load_n(&e->health_known, __ATOMIC_RELAXED);
    bool any_known = false, ok = true;
    const struct hc_target *failing = NULL;
    for (size_t i = 0; i < ep->n; i++) {
        const struct hc_target *t = ep->targets[i];
        if (!t->known)
            continue;
        any_known = true;
        if (!t->healthy) {
            ok = false;
            if (!failing || t == cause)
                failing = t;
        }
    }
    bool healthy = ep->n == 0 ? true : any_known ? ok : was_healthy;
    bool known = ep->n > 0 && any_known;
    __atomic_store_n(&e->healthy, healthy, __ATOMIC_RELAXED);
    __atomic_store_n(&e->health_known, known, __ATOMIC_RELAXED);
    if (healthy != was_healthy) /* switchyard_endpoint_health_transitions_total */
        __atomic_add_fetch(&e->health_transitions, 1, __ATOMIC_RELAXED);
    const char *from = state_name(was_known, was_healthy), *to = state_name(known, healthy);
    if (strcmp(from, to) == 0)
        return;
    __atomic_store_n(&e->health_changed_ms, sy_now_ms(), __ATOMIC_RELAXED);
    char why[HC_REASON_MAX + 96];
    if (!healthy && failing)
        snprintf(why, sizeof why, "%s: %s; %u consecutive failure%s", failing->check_name,
                 failing->reason, failing->failures, failing->failures == 1 ? "" : "s");
    else if (ep->n == 0)
        snprintf(why, sizeof why, "no health checks");
    else if (cause && !was_known)
        snprintf(why, sizeof why, "%s: first check passed", cause->check_name);
    else if (cause)
        snprintf(why, sizeof why, "%s: %u consecutive success%s", cause->check_name,
                 cause->successes, cause->successes == 1 ? "" : "es");
    else
        snprintf(why, sizeof why, "health checks changed");
    if (healthy)
        log_info("health: backend_service=%s endpoint=%s %s->%s (%s)", e->service, e->address, from,
                 to, why);
    else
        log_warn("health: backend_service=%s endpoint=%s %s->%s (%s)", e->service, e->address, from,
                 to, why);
}

/* Endpoints probed by t: publish their new verdicts. */
static void publish(struct health_checker *hc, const struct hc_target *t)
{
    for (size_t i = 0; i < hc->n_eps; i++)
        for (size_t j = 0; j < hc->eps[i].n; j++)
            if (hc->eps[i].targets[j] == t) {
                endpoint_update(&hc->eps[i], t);
                break;
            }
}

/* t passed and says healthy: its endpoints that are healthy on every check come back from an
 * outlier ejection now. */
static void uneject_passing(struct health_checker *hc, const struct hc_target *t)
{
    char why[160];
    snprintf(why, sizeof why, "%s: health check passed", t->check_name);
    for (size_t i = 0; i < hc->n_eps; i++)
        for (size_t j = 0; j < hc->eps[i].n; j++)
            if (hc->eps[i].targets[j] == t) {
                struct endpoint_state *e = hc->eps[i].state;
                if (__atomic_load_n(&e->healthy, __ATOMIC_RELAXED))
                    backend_endpoint_uneject(e, why);
                break;
            }
}

void hc_probe_finished(struct hc_target *t, bool pass, const char *reason)
{
    struct health_checker *hc = t->hc;
    bool was_known = t->known, was_healthy = t->healthy;
    if (pass) {
        t->successes++;
        t->failures = 0;
    } else {
        t->failures++;
        t->successes = 0;
        snprintf(t->reason, sizeof t->reason, "%s", reason);
    }
    if (!t->known) {
        t->known = true;
        t->healthy = pass;
    } else if (t->healthy && !pass && t->failures >= t->unhealthy_threshold) {
        t->healthy = false;
    } else if (!t->healthy && pass && t->successes >= t->healthy_threshold) {
        t->healthy = true;
    }
    log_debug("health: check=%s address=%s %s%s%s", t->check_name, t->addr_text,
              pass ? "passed" : "failed: ", pass ? "" : reason, "");
    if (!was_known || was_healthy != t->healthy)
        publish(hc, t);
    if (pass && t->healthy)
        uneject_passing(hc, t);
    /* Next probe: interval ±10%, counted from this probe's start. */
    uint64_t iv = t->interval_ms, span = iv / 5;
    uint64_t next = iv - iv / 10 + (span ? hc_rand(hc) % (span + 1) : 0);
    uint64_t spent = sy_now_ms() - t->last_start_ms;
    schedule(t, next > spent ? next - spent : 0);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct hc_target *t = arg;
    if (t->probe)
        return;
    t->last_start_ms = sy_now_ms();
    if (hc_probe_start(t) != 0)
        hc_probe_finished(t, false, "cannot start a probe (out of memory or sockets)");
}

/* ---- update and free ------------------------------------------------------------------------- */

static void endpoints_free(struct hc_endpoint *eps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(eps[i].targets);
    free(eps);
}

/* The endpoint list of rt with their targets. NULL on allocation failure. */
static struct hc_endpoint *endpoints_build(struct health_checker *hc, struct runtime *rt,
                                           size_t *count)
{
    const struct config *cfg = rt->cfg;
    size_t total = 0, k = 0;
    for (size_t i = 0; i < cfg->n_backend_services; i++)
        total += backend_endpoint_count(runtime_service(rt, &cfg->backend_services[i]));
    struct hc_endpoint *eps = calloc(total + 1, sizeof *eps);
    if (!eps)
        return NULL;
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *b = &cfg->backend_services[i];
        struct service_rt *s = runtime_service(rt, b);
        for (size_t j = 0; j < backend_endpoint_count(s); j++, k++) {
            struct hc_endpoint *ep = &eps[k];
            ep->state = backend_endpoint(s, j);
            ep->targets = calloc(b->n_health_checks + 1, sizeof *ep->targets);
            if (!ep->targets)
                goto fail;
            for (size_t h = 0; h < b->n_health_checks; h++) {
                ep->targets[h] = target_get(hc, b->health_checks[h], b, backend_endpoint_cfg(s, j));
                if (!ep->targets[h])
                    goto fail;
                ep->n = h + 1;
            }
        }
    }
    *count = total;
    return eps;
fail:
    endpoints_free(eps, total);
    return NULL;
}

void health_checker_update(struct health_checker *hc, struct runtime *rt)
{
    if (!hc || !rt)
        return;
    runtime_ref(rt);
    for (struct hc_target *t = hc->targets; t; t = t->next)
        t->mark = false;
    size_t n = 0;
    struct hc_endpoint *eps = endpoints_build(hc, rt, &n);
    if (!eps) {
        /* Keep probing the old set; the new endpoints keep their current state. */
        log_error("health: out of memory applying config version %s", rt->cfg->version);
        runtime_unref(rt);
        for (struct hc_target *t = hc->targets; t; t = t->next)
            t->mark = true;
        return;
    }
    for (struct hc_target **pp = &hc->targets; *pp;) {
        struct hc_target *t = *pp;
        if (t->mark) {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        target_free(t);
    }
    endpoints_free(hc->eps, hc->n_eps);
    hc->eps = eps;
    hc->n_eps = n;
    runtime_unref(hc->rt);
    hc->rt = rt;
    for (size_t i = 0; i < n; i++)
        endpoint_update(&eps[i], NULL);
    backend_services_publish(rt->services, rt->cfg->n_backend_services);
}

void health_checker_free(struct health_checker *hc)
{
    if (!hc)
        return;
    while (hc->targets) {
        struct hc_target *t = hc->targets;
        hc->targets = t->next;
        target_free(t);
    }
    endpoints_free(hc->eps, hc->n_eps);
    runtime_unref(hc->rt);
    if (hc->tls)
        SSL_CTX_free(hc->tls);
    free(hc);
}
