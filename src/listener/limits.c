/*
 * limits.c — how many client connections the listeners take, and when they
 * take none (see listener.h, listener-int.h):
 *
 *   - limits.max_connections, per listener and for the process: counted in
 *     process-wide atomics (listener_set) as sessions open and close;
 *   - accept() failing for lack of descriptors or memory (EMFILE, ENFILE,
 *     ENOBUFS, ENOMEM): without a pause the listening socket stays readable
 *     and the loop spins on the error;
 *   - the overload state (limits.overload): new requests are refused while
 *     the resident set or the connection count is past its limit, until both
 *     are below 90 % of it.
 *
 * A worker pauses its own accepting sockets (evconnlistener_disable): new
 * connections wait in the kernel's backlog, and nothing polls. A socket
 * accepts again once every reason it was paused for is gone:
 *   - a cap: when a connection closes below it, on any worker; the closing
 *     worker wakes the paused ones (WORKER_CMD_ACCEPT, or directly itself).
 *     A worker that reaches a cap tells the others, which pause too;
 *   - an accept error: after a backoff (100 ms, doubling to 1 s, back to
 *     100 ms after an accept succeeds), or as soon as a connection of this
 *     worker closes and gives a descriptor back.
 * A cap is checked after each accept, so with N workers the process may
 * pass it by up to N-1 connections for an instant.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "config/config-t.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/stats.h"
#include "core/timer.h"
#include "core/worker.h"
#include "listener/listener-int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000

static const struct config *worker_cfg(const struct listener_worker *lw)
{
    return ((const struct runtime *)lw->w->runtime)->cfg;
}

/* This worker's stats shard of listener `idx`; NULL without stats. */
static struct stats_listener_shard *shard(struct listener_worker *lw, int idx)
{
    struct stats *st = lw->w->stats;
    if (!st || idx < 0 || (size_t)idx >= st->n_listeners)
        return NULL;
    return &st->listeners[idx].shards[lw->w->id];
}

static enum stats_pause_reason pause_reason(unsigned bit)
{
    switch (bit) {
    case ACCEPT_PAUSE_LISTENER_CAP: return STATS_PAUSE_LISTENER_CAP;
    case ACCEPT_PAUSE_PROCESS_CAP: return STATS_PAUSE_PROCESS_CAP;
    default: return STATS_PAUSE_ACCEPT_ERROR;
    }
}

/* ---- pausing a socket ------------------------------------------------------------ */

/*
 * Set or clear one enum accept_pause `bit` of socket k; the socket accepts
 * exactly when no bit is left. Counts the pauses and keeps the gauge.
 */
static void pause_set(struct listener_worker *lw, size_t k, unsigned bit, bool on)
{
    unsigned old = lw->paused[k];
    unsigned now = on ? old | bit : old & ~bit;
    if (now == old)
        return;
    lw->paused[k] = now;
    struct stats_listener_shard *s = shard(lw, lw->listener_idx[k]);
    if (on && s)
        stats_inc(&s->accept_pauses[pause_reason(bit)], 1);
    if (!old) {
        evconnlistener_disable(lw->evls[k]);
        if (s)
            stats_inc(&s->accept_paused, 1);
    } else if (!now) {
        evconnlistener_enable(lw->evls[k]);
        if (s)
            stats_dec(&s->accept_paused, 1);
    }
}

/* Whether any cap is set for this worker's sockets, or one of them is paused by a cap. */
static bool caps_matter(const struct listener_worker *lw, const struct config *cfg)
{
    if (cfg->limits.max_connections)
        return true;
    for (size_t k = 0; k < lw->n_evls; k++) {
        const struct cfg_listener *l = lw->evls[k] ? listener_slot_cfg(lw, (int)k) : NULL;
        if (l && (l->limits.max_connections ||
                  (lw->paused[k] & (ACCEPT_PAUSE_LISTENER_CAP | ACCEPT_PAUSE_PROCESS_CAP))))
            return true;
    }
    return false;
}

/*
 * Pause or resume this worker's sockets for the caps. The worker's flag in
 * _cap_paused is raised before the counts are read, so a close on another
 * worker either is seen in the counts or sees the flag and wakes us: no
 * wake-up is lost (both sides use sequentially consistent atomics).
 */
static void caps_check(struct listener_worker *lw)
{
    struct listener_set *set = lw->set;
    const struct config *cfg = worker_cfg(lw);
    bool *flag = &set->_cap_paused[lw->w->id];
    if (!caps_matter(lw, cfg)) /* also when the sockets are closed (drain) */
        return;
    __atomic_store_n(flag, true, __ATOMIC_SEQ_CST);
    unsigned total = __atomic_load_n(&set->_conns, __ATOMIC_SEQ_CST);
    bool process_full = cfg->limits.max_connections && total >= cfg->limits.max_connections;
    bool any = false, newly = false;
    for (size_t k = 0; k < lw->n_evls; k++) {
        int i = lw->listener_idx[k];
        const struct cfg_listener *l = lw->evls[k] ? listener_slot_cfg(lw, i) : NULL;
        if (!l)
            continue; /* no socket of this slot here */
        uint32_t cap = l->limits.max_connections;
        bool full = cap && __atomic_load_n(&set->_listener_conns[i], __ATOMIC_SEQ_CST) >= cap;
        unsigned before = lw->paused[k];
        pause_set(lw, k, ACCEPT_PAUSE_LISTENER_CAP, full);
        pause_set(lw, k, ACCEPT_PAUSE_PROCESS_CAP, process_full);
        newly = newly || (lw->paused[k] & ~before);
        any = any || full || process_full;
    }
    if (!any)
        __atomic_store_n(flag, false, __ATOMIC_SEQ_CST);
    /* The caps count every worker's connections: the others pause too (each
     * tells the rest only when it newly pauses, so this ends). */
    for (int j = 0; newly && j < set->n_workers && j < lw->w->n_peers; j++)
        if (j != lw->w->id)
            worker_post(&lw->w->peers[j], WORKER_CMD_ACCEPT);
}

/* A connection closed: every worker paused at a cap checks again. */
static void wake_cap_paused(struct listener_worker *lw)
{
    struct listener_set *set = lw->set;
    for (int j = 0; j < set->n_workers && j < lw->w->n_peers; j++) {
        if (!__atomic_load_n(&set->_cap_paused[j], __ATOMIC_SEQ_CST))
            continue;
        if (j == lw->w->id)
            caps_check(lw);
        else
            worker_post(&lw->w->peers[j], WORKER_CMD_ACCEPT);
    }
}

/* ---- accept failures -------------------------------------------------------------- */

static void error_pause_end(struct listener_worker *lw)
{
    event_del(lw->backoff_ev);
    for (size_t k = 0; k < lw->n_evls; k++)
        if (lw->evls[k])
            pause_set(lw, k, ACCEPT_PAUSE_ERROR, false);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    error_pause_end(arg); /* try again; another failure pauses longer */
}

void limits_accept_failed(struct listener_worker *lw, size_t k, int err)
{
    const struct cfg_listener *l = listener_slot_cfg(lw, lw->listener_idx[k]);
    const char *name = l ? l->name : "?";
    struct stats_listener_shard *s = shard(lw, lw->listener_idx[k]);
    if (s)
        stats_inc(&s->accept_errors, 1);
    lw->backoff_ms = lw->backoff_ms ? lw->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (lw->backoff_ms > BACKOFF_MAX_MS)
        lw->backoff_ms = BACKOFF_MAX_MS;
    if (lw->accept_trouble.errors++ == 0) {
        lw->accept_trouble.first_errno = err;
        lw->accept_trouble.since_ms = sy_now_ms();
        log_warn("worker %d: accept on listener %s: %s; not accepting for %llu ms, then "
                 "retrying (backing off up to %d ms; further failures are counted, not logged)",
                 lw->w->id, name, strerror(err), (unsigned long long)lw->backoff_ms,
                 BACKOFF_MAX_MS);
    }
    for (size_t j = 0; j < lw->n_evls; j++)
        if (lw->evls[j])
            pause_set(lw, j, ACCEPT_PAUSE_ERROR, true);
    sy_timer_arm_ms(lw->backoff_ev, lw->backoff_ms);
}

void limits_accepted(struct listener_worker *lw)
{
    lw->backoff_ms = 0;
    if (lw->accept_trouble.errors == 0)
        return;
    log_warn("worker %d: accepting again after %u failed accepts in %llu ms (first: %s)", lw->w->id,
             lw->accept_trouble.errors,
             (unsigned long long)(sy_now_ms() - lw->accept_trouble.since_ms),
             strerror(lw->accept_trouble.first_errno));
    lw->accept_trouble.errors = 0;
}

/* ---- overload ----------------------------------------------------------------------- */

/*
 * Set `bit` of the overload state when a measure `v` is past `limit` (if
 * `may_enter`); clear it once `v` is below 90 % of it (limit - limit/10 is
 * 90 % rounded up, so for whole numbers v < it exactly when v < 0.9 *
 * limit). limit 0 = off.
 */
static void overload_update(struct listener_set *set, unsigned bit, uint64_t v, uint64_t limit,
                            bool may_enter)
{
    unsigned cur = __atomic_load_n(&set->_overload, __ATOMIC_RELAXED);
    if (may_enter && limit && v > limit && !(cur & bit))
        __atomic_fetch_or(&set->_overload, bit, __ATOMIC_RELAXED);
    else if ((cur & bit) && (!limit || v < limit - limit / 10))
        __atomic_fetch_and(&set->_overload, ~bit, __ATOMIC_RELAXED);
}

/*
 * The connection measure. It may enter the state at an accept or a periodic
 * check, never at a close. A connection counts once from its accept to its
 * close, through a TLS handshake and an HTTP/1.1 to HTTP/2 hand-over. A worker may
 * act on a count another one already changed: the main thread's check
 * (every 100 ms) puts a stale state right.
 */
static void overload_conns_update(struct listener_set *set, const struct config *cfg,
                                  bool may_enter)
{
    overload_update(set, LISTENER_OVERLOAD_CONNECTIONS,
                    __atomic_load_n(&set->_conns, __ATOMIC_RELAXED), cfg->overload.connections,
                    may_enter);
}

/* Resident set size in bytes from /proc/self/statm; 0 when unknown. */
static uint64_t rss_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = memchr(buf, ' ', (size_t)n); /* "size resident shared ..." in pages */
    if (!p)
        return 0;
    p++;
    size_t len = strcspn(p, " \n");
    uint64_t pages;
    long page = sysconf(_SC_PAGESIZE);
    if (sy_parse_dec(p, len, UINT64_MAX / 65536, &pages) != 0 || page <= 0)
        return 0;
    return pages * (uint64_t)page;
}

void listener_set_check_overload(struct listener_set *set, const struct config *cfg)
{
    overload_conns_update(set, cfg, true);
    if (!cfg->overload.memory) {
        overload_update(set, LISTENER_OVERLOAD_MEMORY, 0, 0, false);
        return;
    }
    uint64_t rss = rss_bytes();
    if (rss)
        overload_update(set, LISTENER_OVERLOAD_MEMORY, rss, cfg->overload.memory, true);
}

unsigned listener_set_overload(const struct listener_set *set)
{
    return __atomic_load_n(&set->_overload, __ATOMIC_RELAXED);
}

bool listener_refuse_request(struct listener_worker *lw, int listener_idx)
{
    if (!__atomic_load_n(&lw->set->_overload, __ATOMIC_RELAXED))
        return false;
    struct stats_listener_shard *s = shard(lw, listener_idx);
    if (s)
        stats_inc(&s->overload_refused, 1);
    return true;
}

/* ---- connection counts ------------------------------------------------------------ */

static bool valid_idx(const struct listener_worker *lw, int idx)
{
    return idx >= 0 && idx < STATS_MAX_LISTENERS;
}

void limits_conn_accepted(struct listener_worker *lw, int listener_idx)
{
    struct listener_set *set = lw->set;
    struct stats *st = lw->w->stats;
    struct stats_listener_shard *s = shard(lw, listener_idx);
    lw->n_conns++;
    __atomic_add_fetch(&set->_conns, 1, __ATOMIC_SEQ_CST);
    if (valid_idx(lw, listener_idx)) {
        lw->slot_conns[listener_idx]++;
        __atomic_add_fetch(&set->_listener_conns[listener_idx], 1, __ATOMIC_SEQ_CST);
    }
    if (st)
        stats_inc(&st->workers[lw->w->id].active_connections, 1);
    if (s)
        stats_inc(&s->connections, 1);
    caps_check(lw);
    overload_conns_update(set, worker_cfg(lw), true);
}

void listener_conn_closed(struct listener_worker *lw, int listener_idx)
{
    struct listener_set *set = lw->set;
    struct stats *st = lw->w->stats;
    struct stats_listener_shard *s = shard(lw, listener_idx);
    __atomic_sub_fetch(&set->_conns, 1, __ATOMIC_SEQ_CST);
    if (valid_idx(lw, listener_idx))
        __atomic_sub_fetch(&set->_listener_conns[listener_idx], 1, __ATOMIC_SEQ_CST);
    if (st)
        stats_dec(&st->workers[lw->w->id].active_connections, 1);
    if (s)
        stats_dec(&s->connections, 1);
    overload_conns_update(set, worker_cfg(lw), false);
    if (lw->n_evls) {
        /* A descriptor came back: an accept that failed for lack of one may work now. */
        if (lw->accept_trouble.errors)
            error_pause_end(lw);
        wake_cap_paused(lw);
    }
    if (valid_idx(lw, listener_idx))
        listener_slot_conn_closed(lw, listener_idx); /* may let a removed listener's config go */
    listener_worker_release(lw);
}

void listener_worker_hold(struct listener_worker *lw)
{
    lw->n_conns++;
}

void listener_worker_release(struct listener_worker *lw)
{
    lw->n_conns--;
    if (lw->n_conns == 0 && lw->w->draining && lw->on_idle)
        lw->on_idle(lw->w);
}

void listener_worker_recheck(struct listener_worker *lw)
{
    overload_conns_update(lw->set, worker_cfg(lw), true);
    caps_check(lw);
}

/* ---- setup ---------------------------------------------------------------------------- */

int limits_worker_init(struct listener_worker *lw)
{
    lw->backoff_ev = evtimer_new(lw->w->base, on_backoff, lw);
    return lw->backoff_ev ? 0 : SY_ENOMEM;
}

void limits_sockets_closing(struct listener_worker *lw)
{
    if (lw->backoff_ev)
        event_del(lw->backoff_ev);
    for (size_t k = 0; k < lw->n_evls; k++)
        limits_socket_closing(lw, k);
    if (lw->set)
        __atomic_store_n(&lw->set->_cap_paused[lw->w->id], false, __ATOMIC_SEQ_CST);
}

void limits_socket_closing(struct listener_worker *lw, size_t k)
{
    struct stats_listener_shard *s = shard(lw, lw->listener_idx[k]);
    if (lw->paused[k] && s)
        stats_dec(&s->accept_paused, 1);
    lw->paused[k] = 0;
}

void limits_worker_fini(struct listener_worker *lw)
{
    if (lw->backoff_ev)
        event_free(lw->backoff_ev);
    lw->backoff_ev = NULL;
}
