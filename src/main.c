/*
 * main.c — switchyard's main thread: flags, config load and reload, worker
 * threads, signals and graceful drain. Workers run the request path; this
 * thread never touches an exchange.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/discovery.h"
#include "config_watch.h"
#include "runtime.h"
#include "upstream/upstream.h"
#include "exchange/exchange.h"
#include "admin/admin.h"
#include "config/config.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/parse.h"
#include "core/stats.h"
#include "core/timer.h"
#include "core/worker.h"
#include "healthcheck/healthcheck.h"
#include "listener/listener.h"
#include "tools/tools.h"

#define SY_VERSION     "0.1.0"
#define DEFAULT_CONFIG "config/switchyard.yaml"
/* How often the resident set is read for limits.overload.memory. */
#define OVERLOAD_CHECK_MS 100

struct proxy {
    const char *config_path;
    struct event_base *base;
    struct worker *workers;
    int n_workers;
    struct runtime *rt;                /* current snapshot; the main thread's reference */
    struct backend_registry *registry; /* endpoint state across reloads */
    pthread_mutex_t rt_lock;
    struct event *drain_timer;
    struct event *done_ev;
    struct listener_set *set;  /* listening sockets, connection counts, overload state */
    struct event *overload_ev; /* samples limits.overload every OVERLOAD_CHECK_MS while set */
    int workers_done;          /* atomic */
    bool draining;
    int stop_signals; /* SIGTERM/SIGINT received: the second one ends the drain at once */
    int exit_status;  /* 0, or 128 + the signal that ended the drain early */
    int access_log_fd;
    struct stats *stats;
    struct admin *admin;
    struct health_checker *hc;       /* active health checks, on this thread's base */
    struct discovery *disc;          /* discovery: DNS names, on this thread's base */
    struct config_watch *watch;      /* --watch-config */
    struct config_watch **tls_watch; /* --watch-config: the listeners' certificate and key
                                      * files, NULL-ended; remade after each reload */
    struct event *tls_watch_ev;      /* remakes tls_watch outside the watchers' callbacks */
};

static void usage(FILE *out)
{
    fprintf(out, "usage: switchyard [-c FILE] [--workers N] [--log-level debug|info|warn|error]\n"
                 "                  [--watch-config]   reload when the config file changes\n"
                 "                                     (or a listener's TLS file)\n"
                 "       switchyard -t -c FILE     validate the config and exit 0/1\n"
                 "       switchyard explain -c FILE [-H 'name: value']... [--json] URL\n"
                 "                                 where a request goes, and why (docs/tools.md)\n"
                 "       switchyard diff OLD.yaml NEW.yaml --requests FILE [--fail-on-change]\n"
                 "                                 requests whose route two configs change\n"
                 "       switchyard --version | --help\n"
                 "default config: " DEFAULT_CONFIG "\n");
}

/* ---- workers -------------------------------------------------------------------- */

/* On the worker thread: its loop ends; tell the main thread. */
static void worker_done(struct worker *w)
{
    struct proxy *p = w->owner;
    event_base_loopexit(w->base, NULL);
    __atomic_add_fetch(&p->workers_done, 1, __ATOMIC_ACQ_REL);
    event_active(p->done_ev, EV_READ, 0);
}

static void on_listener_idle(struct worker *w)
{
    if (w->draining)
        worker_done(w);
}

static void on_worker_cmd(struct worker *w, unsigned cmds)
{
    struct proxy *p = w->owner;
    if (cmds & WORKER_CMD_SWAP) {
        pthread_mutex_lock(&p->rt_lock);
        struct runtime *rt = runtime_ref(p->rt);
        pthread_mutex_unlock(&p->rt_lock);
        struct rt_hold *h = rt_hold_new(rt);
        if (!h) {
            runtime_unref(rt); /* keep serving the old one */
        } else {
            struct rt_hold *old = w->rt_hold;
            w->rt_hold = h;
            w->runtime = rt;
            /* Listeners added, removed or moved, new TLS contexts; a removed
             * listener's connections keep `old` until they end. */
            listener_worker_sync(w->listeners, old);
            rt_hold_retire(old);
        }
        exchange_worker_on_reload(w); /* connection_draining deadlines */
    }
    if (cmds & (WORKER_CMD_SWAP | WORKER_CMD_ACCEPT))
        listener_worker_recheck(w->listeners); /* caps may have changed or freed up */
    if (cmds & WORKER_CMD_WAKE)
        exchange_worker_wake(w);
    if ((cmds & WORKER_CMD_DRAIN) && !w->draining) {
        w->draining = true;
        upstream_pools_close_idle(w->pools);
        listener_worker_drain(w->listeners); /* may call worker_done */
    }
    if (cmds & WORKER_CMD_STOP) {
        w->draining = true;
        worker_done(w);
    }
}

static int start_workers(struct proxy *p, struct listener_set *set)
{
    p->workers = calloc((size_t)p->n_workers, sizeof *p->workers);
    if (!p->workers)
        return -1;
    for (int i = 0; i < p->n_workers; i++) {
        struct worker *w = &p->workers[i];
        if (worker_init(w, i, on_worker_cmd) != 0)
            return -1;
        w->owner = p;
        w->peers = p->workers;
        w->n_peers = p->n_workers;
        w->runtime = runtime_ref(p->rt);
        w->rt_hold = rt_hold_new(w->runtime);
        if (!w->rt_hold) {
            runtime_unref(w->runtime);
            w->runtime = NULL;
            return -1;
        }
        w->access_log_fd = p->access_log_fd;
        w->stats = p->stats;
        w->pools = upstream_pools_new(w);
        w->listeners = listener_worker_new(w, set);
        if (!w->pools || !w->listeners || exchange_worker_init(w) != 0)
            return -1;
        listener_worker_on_idle(w->listeners, on_listener_idle);
    }
    for (int i = 0; i < p->n_workers; i++)
        if (worker_start(&p->workers[i]) != 0)
            return -1;
    return 0;
}

/* After the thread is joined: close what is left, run pending reaps, free. */
static void free_worker(struct worker *w)
{
    if (!w->base)
        return;
    listener_worker_free(w->listeners);
    upstream_pools_free(w->pools);
    for (int i = 0; i < 4; i++)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
    exchange_worker_free(w);
    rt_hold_retire(w->rt_hold);
    w->rt_hold = NULL;
    w->runtime = NULL;
    worker_destroy(w);
}

/* ---- reload, drain, signals -------------------------------------------------------- */

static void on_overload_check(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    listener_set_check_overload(p->set, p->rt->cfg);
}

/* Sample limits.overload while the config sets it; clear the state otherwise. */
static void overload_watch(struct proxy *p)
{
    const struct config *cfg = p->rt->cfg;
    listener_set_check_overload(p->set, cfg);
    if (!cfg->overload.memory && !cfg->overload.connections)
        event_del(p->overload_ev);
    else if (!event_pending(p->overload_ev, EV_TIMEOUT, NULL)) {
        struct timeval tv = sy_tv_ms(OVERLOAD_CHECK_MS);
        event_add(p->overload_ev, &tv);
    }
}

/*
 * Make `rt` the current runtime: new exchanges start on it, the old one
 * lives on with the exchanges that hold it.
 */
static void publish(struct proxy *p, struct runtime *rt)
{
    pthread_mutex_lock(&p->rt_lock);
    struct runtime *old = p->rt;
    p->rt = rt;
    pthread_mutex_unlock(&p->rt_lock);
    runtime_unref(old);
    /* Endpoints that left the config start draining now, before the workers
     * hear of the new runtime: SWAP arms their exchanges' drain deadlines. */
    backend_services_publish(rt->services, rt->cfg->n_backend_services);
    for (int i = 0; i < p->n_workers; i++)
        worker_post(&p->workers[i], WORKER_CMD_SWAP);
    health_checker_update(p->hc, rt);
}

/* A DNS name's address set changed: the same config with the new sets. */
static void on_discovery_changed(void *ctx)
{
    struct proxy *p = ctx;
    struct runtime *rt = runtime_new(p->rt->cfg, p->registry, p->stats, p->disc);
    if (rt && runtime_copy_listener_slots(rt, p->rt) != 0) { /* the listeners stay as they are */
        runtime_unref(rt);
        rt = NULL;
    }
    if (!rt) {
        log_error("dns: out of memory applying new addresses; keeping the previous ones");
        return;
    }
    publish(p, rt);
}

/* READY=1 (notify.h), saying what is served and why a reload was refused. */
static void notify_ready(struct proxy *p, const char *refused)
{
    char status[256];
    if (refused)
        snprintf(status, sizeof status, "reload refused: %s; serving config version %s", refused,
                 p->rt->cfg->version);
    else
        snprintf(status, sizeof status, "serving config version %s", p->rt->cfg->version);
    sy_notify_ready(status);
}

/*
 * Load the config file again and publish it to the workers. Returns 0, or
 * -1 after writing the reasons to `errs` (and the log): the old config keeps
 * serving. `if_changed`: a file whose bytes give the version already
 * served is not loaded again (--watch-config).
 */
static int reload(struct proxy *p, FILE *errs, bool if_changed)
{
    if (p->draining) { /* SIGHUP, POST /reload, --watch-config alike */
        log_warn("reload refused: draining; still serving config version %s", p->rt->cfg->version);
        if (errs)
            fprintf(errs, "reload refused: draining; still serving config version %s\n",
                    p->rt->cfg->version);
        return -1;
    }
    struct config_errors ce = {0};
    struct config *cfg = config_load(p->config_path, &ce);
    const char *why = NULL;
    if (cfg && if_changed && !strcmp(cfg->version, p->rt->cfg->version) &&
        !listener_set_tls_changed(p->set, cfg)) {
        config_unref(cfg);
        config_errors_free(&ce);
        return 0;
    }
    sy_notify_reloading();
    if (!cfg) {
        for (size_t i = 0; i < ce.n; i++) {
            log_error("%s", ce.msgs[i]);
            if (errs)
                fprintf(errs, "%s\n", ce.msgs[i]);
        }
        why = "the config has errors";
    }
    config_errors_free(&ce);
    if (!why && discovery_update(p->disc, cfg) != 0)
        why = "the dns resolvers cannot be used";
    struct runtime *rt = why ? NULL : runtime_new(cfg, p->registry, p->stats, p->disc);
    config_unref(cfg);
    if (!why && !rt)
        why = "out of memory";
    char lerr[600];
    struct listener_change *lc = why ? NULL : listener_set_prepare(p->set, rt, lerr, sizeof lerr);
    if (!why && !lc) {
        log_error("%s", lerr);
        if (errs)
            fprintf(errs, "%s\n", lerr);
        why = "a listener cannot be served as configured";
    }
    if (why) {
        runtime_unref(rt);
        log_error("reload refused: %s; still serving config version %s", why, p->rt->cfg->version);
        if (errs)
            fprintf(errs, "reload refused: %s; still serving config version %s\n", why,
                    p->rt->cfg->version);
        p->stats->reload_failures++; /* main thread only */
        admin_note_reload(p->admin, p->rt->cfg->version, false, why);
        notify_ready(p, why);
        return -1;
    }
    listener_set_commit(p->set, lc); /* the workers apply it at SWAP */
    publish(p, rt);
    overload_watch(p);
    if (p->watch)
        event_active(p->tls_watch_ev, EV_TIMEOUT, 1);
    p->stats->reloads++;
    admin_note_reload(p->admin, rt->cfg->version, true, NULL);
    log_info("config version %s loaded from %s", rt->cfg->version, p->config_path);
    notify_ready(p, NULL);
    return 0;
}

/* End the drain now: the workers close what is left (logged DRT) and stop. */
static void stop_workers(struct proxy *p)
{
    event_del(p->drain_timer);
    for (int i = 0; i < p->n_workers; i++)
        worker_post(&p->workers[i], WORKER_CMD_STOP);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    log_warn("drain timeout: closing the remaining connections");
    stop_workers(p);
}

static void start_drain(struct proxy *p)
{
    if (p->draining)
        return;
    p->draining = true;
    sy_notify_stopping();
    uint64_t ms = p->rt->cfg->drain_timeout_ms;
    log_info("draining (up to %llums)", (unsigned long long)ms);
    sy_timer_arm_ms(p->drain_timer, ms);
    for (int i = 0; i < p->n_workers; i++)
        worker_post(&p->workers[i], WORKER_CMD_DRAIN);
}

static void on_workers_done(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    if (__atomic_load_n(&p->workers_done, __ATOMIC_ACQUIRE) >= p->n_workers)
        event_base_loopexit(p->base, NULL);
}

static int open_access_log(const struct config *cfg)
{
    if (!cfg->access_log.enabled)
        return -1;
    if (strcmp(cfg->access_log.path, "-") == 0)
        return STDOUT_FILENO;
    return open(cfg->access_log.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/*
 * SIGTERM/SIGINT: the first drains (or lets a POST /drain go on); the
 * second ends the drain at once, and the exit status says so: 128 + the
 * signal's number, as a shell reports a process that signal killed.
 */
static void on_stop_signal(struct proxy *p, int sig)
{
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (++p->stop_signals == 1) {
        if (p->draining)
            log_info("%s: already draining", name);
        start_drain(p);
        return;
    }
    if (p->exit_status)
        return; /* already stopping */
    p->exit_status = 128 + sig;
    log_warn("%s during the drain: closing every connection now; exit status %d", name,
             p->exit_status);
    stop_workers(p);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct proxy *p = arg;
    switch (sig) {
    case SIGTERM:
    case SIGINT: on_stop_signal(p, (int)sig); break;
    case SIGHUP: reload(p, NULL, false); break;
    case SIGUSR1:
        if (p->access_log_fd > STDOUT_FILENO) {
            int fd = open_access_log(p->rt->cfg);
            if (fd >= 0) {
                dup2(fd, p->access_log_fd); /* workers keep writing to the same number */
                close(fd);
            }
        }
        log_info("logs reopened");
        break;
    }
}

/* ---- admin hooks ---------------------------------------------------------------------------- */

static bool hook_draining(void *ctx)
{
    return ((struct proxy *)ctx)->draining;
}

static struct runtime *hook_current(void *ctx)
{
    struct proxy *p = ctx;
    pthread_mutex_lock(&p->rt_lock);
    struct runtime *rt = runtime_ref(p->rt);
    pthread_mutex_unlock(&p->rt_lock);
    return rt;
}

static int hook_reload(void *ctx, FILE *errs)
{
    return reload(ctx, errs, false);
}

static bool hook_resolving(void *ctx)
{
    return !discovery_ready(((struct proxy *)ctx)->disc);
}

static void on_config_changed(void *ctx)
{
    reload(ctx, NULL, true);
}

/* --watch-config: watch the certificate and key files of the config served now. */
static void on_tls_watch_remake(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    for (size_t i = 0; p->tls_watch && p->tls_watch[i]; i++)
        config_watch_free(p->tls_watch[i]);
    free(p->tls_watch);
    p->tls_watch = NULL;
    char **files = listener_tls_files(p->rt->cfg);
    size_t n = 0;
    while (files && files[n])
        n++;
    p->tls_watch = calloc(n + 1, sizeof *p->tls_watch);
    for (size_t i = 0, k = 0; p->tls_watch && i < n; i++) {
        char err[256];
        p->tls_watch[k] =
            config_watch_new(p->base, files[i], on_config_changed, p, err, sizeof err);
        if (p->tls_watch[k])
            k++;
        else
            log_warn("%s; not reloading when it changes", err);
    }
    free(files);
}

static void hook_drain(void *ctx)
{
    start_drain(ctx);
}

static void hook_metrics(void *ctx, FILE *out)
{
    struct proxy *p = ctx;
    stats_write_prometheus(p->stats, out);
    const struct config *cfg = p->rt->cfg;
    unsigned ov = listener_set_overload(p->set);
    fprintf(
        out,
        "# HELP switchyard_overload 1 while new requests are refused because the process "
        "is past limits.overload (memory or connections).\n"
        "# TYPE switchyard_overload gauge\n"
        "switchyard_overload{cause=\"memory\"} %d\nswitchyard_overload{cause=\"connections\"} %d\n",
        (ov & LISTENER_OVERLOAD_MEMORY) ? 1 : 0, (ov & LISTENER_OVERLOAD_CONNECTIONS) ? 1 : 0);
    fprintf(out,
            "# HELP switchyard_config_info The active config version.\n"
            "# TYPE switchyard_config_info gauge\nswitchyard_config_info{version=\"%s\"} 1\n",
            cfg->version);
    fprintf(out, "# HELP switchyard_endpoint_healthy 1 when the endpoint passes its health "
                 "checks and is not ejected.\n# TYPE switchyard_endpoint_healthy gauge\n");
    uint64_t now = sy_now_ms();
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *s = &cfg->backend_services[i];
        struct service_rt *srt = runtime_service(p->rt, s);
        for (size_t j = 0; j < backend_endpoint_count(srt); j++) {
            const struct endpoint_state *e = backend_endpoint(srt, j);
            bool ok = __atomic_load_n(&e->healthy, __ATOMIC_RELAXED) &&
                      __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED) <= now;
            fprintf(out, "switchyard_endpoint_healthy{backend_service=\"%s\",endpoint=\"%s\"} %d\n",
                    s->name, backend_endpoint_cfg(srt, j)->address.text, ok ? 1 : 0);
        }
    }
    backend_write_endpoint_metrics(out, cfg->backend_services, p->rt->services,
                                   cfg->n_backend_services);
    stats_write_process(p->stats, out, SY_VERSION);
    discovery_write_metrics(p->disc, out);
    fprintf(out, "# HELP switchyard_dns_endpoint_info An endpoint found by DNS discovery, and "
                 "the name it came from.\n# TYPE switchyard_dns_endpoint_info gauge\n");
    for (size_t i = 0; i < cfg->n_backend_services; i++) {
        const struct cfg_backend_service *s = &cfg->backend_services[i];
        struct service_rt *srt = runtime_service(p->rt, s);
        for (size_t j = 0; j < backend_endpoint_count(srt); j++) {
            const struct cfg_endpoint *ep = backend_endpoint_cfg(srt, j);
            if (ep->origin)
                fprintf(out,
                        "switchyard_dns_endpoint_info{backend_service=\"%s\",name=\"%s\","
                        "endpoint=\"%s\"} 1\n",
                        s->name, ep->origin, ep->address.text);
        }
    }
}

static int start_admin(struct proxy *p)
{
    const struct config *cfg = p->rt->cfg;
    if (!cfg->admin.set)
        return 0;
    struct admin_hooks hooks = {
        .ctx = p,
        .draining = hook_draining,
        .current = hook_current,
        .reload = hook_reload,
        .drain = hook_drain,
        .metrics = hook_metrics,
        .resolving = hook_resolving,
    };
    char err[256];
    p->admin = admin_start(p->base, &cfg->admin.address, &hooks, err, sizeof err);
    if (!p->admin) {
        fprintf(stderr, "switchyard: %s\n", err);
        return -1;
    }
    log_info("admin on %s", cfg->admin.address.text);
    return 0;
}

/* ---- startup ------------------------------------------------------------------------------ */

struct options {
    const char *config;
    int workers;
    bool test_only;
    bool watch_config;
};

static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"log-level", required_argument, NULL, 'l'},
                                             {"version", no_argument, NULL, 'V'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"test", no_argument, NULL, 't'},
                                             {"watch-config", no_argument, NULL, 'W'},
                                             {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:tw:l:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config = optarg; break;
        case 't': o->test_only = true; break;
        case 'W': o->watch_config = true; break;
        case 'w': {
            uint64_t n;
            if (sy_parse_dec(optarg, strlen(optarg), 256, &n) != 0 || n < 1) {
                fprintf(stderr, "switchyard: --workers wants 1..256\n");
                return 1;
            }
            o->workers = (int)n;
            break;
        }
        case 'l': {
            enum sy_log_level lvl;
            if (sy_log_parse_level(optarg, &lvl) != 0) {
                fprintf(stderr, "switchyard: bad --log-level %s\n", optarg);
                return 1;
            }
            sy_log_set_level(lvl);
            break;
        }
        case 'V': /* whether Type=notify can work (docs/deploy.md) */
            printf("switchyard %s (%s)\n", SY_VERSION,
                   sy_notify_supported() ? "sd_notify" : "no sd_notify");
            exit(0);
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    return 0;
}

static struct stats *new_stats(const struct config *cfg, int n_workers)
{
    const char **names = calloc(cfg->n_listeners + 1, sizeof *names);
    if (!names)
        return NULL;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        names[i] = cfg->listeners[i].name;
    struct stats *st = stats_new(names, cfg->n_listeners, n_workers);
    free(names);
    return st;
}

static struct config *load_or_report(const char *path)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    if (!cfg)
        config_errors_print(&errs, stderr);
    config_errors_free(&errs);
    return cfg;
}

static int serve(struct proxy *p, struct listener_set *set)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    struct event *sev[4] = {0};
    int rc = 1;
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(p->base, sigs[i], on_signal, p);
        evsignal_add(sev[i], NULL);
    }
    p->drain_timer = evtimer_new(p->base, on_drain_timeout, p);
    p->done_ev = event_new(p->base, -1, 0, on_workers_done, p);
    p->overload_ev = event_new(p->base, -1, EV_PERSIST, on_overload_check, p);
    p->set = set;
    if (start_admin(p) != 0)
        goto out;
    if (start_workers(p, set) != 0) {
        fprintf(stderr, "switchyard: cannot start workers\n");
        goto out;
    }
    overload_watch(p);
    log_info("switchyard %s: config version %s, %d workers, %zu listeners", SY_VERSION,
             p->rt->cfg->version, p->n_workers, p->rt->cfg->n_listeners);
    for (size_t i = 0; i < p->rt->cfg->n_listeners; i++)
        log_info("listener %s on %s", p->rt->cfg->listeners[i].name,
                 p->rt->cfg->listeners[i].address.text);
    notify_ready(p, NULL); /* the sockets listen and every worker runs */
    event_base_dispatch(p->base);
    rc = 0;
out:
    /* Every thread ends before any worker is freed: a worker may post a
     * wake-up to another until its own loop stops. */
    for (int i = 0; p->workers && i < p->n_workers; i++) {
        if (p->workers[i].base) {
            if (rc != 0)
                worker_post(&p->workers[i], WORKER_CMD_STOP);
            if (p->workers[i].thread)
                worker_join(&p->workers[i]);
        }
    }
    for (int i = 0; p->workers && i < p->n_workers; i++)
        free_worker(&p->workers[i]);
    free(p->workers);
    admin_stop(p->admin);
    for (int i = 0; i < 4; i++)
        if (sev[i])
            event_free(sev[i]);
    event_free(p->drain_timer);
    event_free(p->done_ev);
    event_free(p->overload_ev);
    if (rc == 0 && p->exit_status)
        log_warn("drain ended by a second signal; exiting %d", p->exit_status);
    else if (rc == 0)
        log_info("drained; exiting");
    return rc ? rc : p->exit_status;
}

/*
 * -t: validate the config file, and load the TLS files it names as
 * startup would (nginx -t does too); the exit status.
 */
static int test_config(const char *path)
{
    struct config *cfg = load_or_report(path);
    int bad = cfg ? listeners_check_tls(cfg, stderr) + upstream_check_tls(cfg, stderr) : 1;
    if (!bad)
        printf("%s: ok (version %s)\n", path, cfg->version);
    config_unref(cfg);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct options o = {.config = DEFAULT_CONFIG, .workers = 0};
    if (argc > 1 && strcmp(argv[1], "explain") == 0)
        return tools_explain_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "diff") == 0)
        return tools_diff_main(argc - 1, argv + 1);
    if (parse_args(argc, argv, &o) != 0)
        return 1;
    if (o.test_only)
        return test_config(o.config);
    /* Everything starts at its sentinel; the one exit below releases what was made. */
    struct proxy p = {.config_path = o.config, .n_workers = o.workers, .access_log_fd = -1};
    struct listener_set *set = NULL;
    struct config *cfg = NULL;
    char err[512] = ""; /* why startup failed, when it did and nobody said so yet */
    int rc = 1;
    pthread_mutex_init(&p.rt_lock, NULL);
    cfg = load_or_report(o.config);
    if (!cfg)
        goto fail; /* the errors are printed */
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    if (p.n_workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_workers = n > 0 ? (int)n : 1;
    }
    p.registry = backend_registry_new();
    if (p.registry)
        backend_registry_set_workers(p.registry, (unsigned)p.n_workers);
    p.stats = new_stats(cfg, p.n_workers);
    p.base = event_base_new();
    p.disc = p.base ? discovery_new(p.base, on_discovery_changed, &p) : NULL;
    if (p.disc && discovery_update(p.disc, cfg) != 0) {
        snprintf(err, sizeof err, "dns: the resolvers cannot be used");
        goto fail;
    }
    /* DNS names have no address until their first answer (/ready says so). */
    p.rt = p.registry && p.stats && p.disc ? runtime_new(cfg, p.registry, p.stats, p.disc) : NULL;
    if (!p.rt || !(set = listener_set_new(p.n_workers, p.stats))) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    /* Binds every listener (an address in use fails startup) and loads the TLS files. */
    struct listener_change *lc = listener_set_prepare(set, p.rt, err, sizeof err);
    if (!lc)
        goto fail;
    listener_set_commit(set, lc);
    config_unref(cfg); /* the runtime holds its own reference */
    cfg = NULL;
    p.access_log_fd = open_access_log(p.rt->cfg);
    if (p.rt->cfg->access_log.enabled && p.access_log_fd < 0) {
        snprintf(err, sizeof err, "access log %s: %s", p.rt->cfg->access_log.path, strerror(errno));
        goto fail;
    }
    p.hc = health_checker_new(p.base);
    if (!p.hc) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (o.watch_config &&
        !(p.watch = config_watch_new(p.base, o.config, on_config_changed, &p, err, sizeof err)))
        goto fail;
    if (p.watch && !(p.tls_watch_ev = evtimer_new(p.base, on_tls_watch_remake, &p))) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (p.watch)
        on_tls_watch_remake(-1, 0, &p);
    health_checker_update(p.hc, p.rt);
    rc = serve(&p, set); /* reports its own failures */
fail:
    if (err[0])
        fprintf(stderr, "switchyard: %s\n", err);
    config_watch_free(p.watch);
    for (size_t i = 0; p.tls_watch && p.tls_watch[i]; i++)
        config_watch_free(p.tls_watch[i]);
    free(p.tls_watch);
    if (p.tls_watch_ev)
        event_free(p.tls_watch_ev);
    health_checker_free(p.hc);
    discovery_free(p.disc);
    listener_set_free(set);
    if (p.base)
        event_base_free(p.base);
    runtime_unref(p.rt);
    backend_registry_free(p.registry);
    stats_free(p.stats);
    config_unref(cfg);
    if (p.access_log_fd > STDOUT_FILENO)
        close(p.access_log_fd);
    pthread_mutex_destroy(&p.rt_lock);
    libevent_global_shutdown();
    return rc;
}
