/* worker.c — see worker.h. */
#include "core/worker.h"

#include "core/rand.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"

static void on_cmd(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n); /* reset the eventfd counter */
    (void)r;
    unsigned cmds = __atomic_exchange_n(&w->_cmds, 0u, __ATOMIC_ACQ_REL);
    if (cmds && w->on_cmd)
        w->on_cmd(w, cmds);
}

int worker_init(struct worker *w, int id, worker_cmd_fn cmd_fn)
{
    memset(w, 0, sizeof *w);
    w->cmd_fd = -1;
    w->id = id;
    w->on_cmd = cmd_fn;
    if (getrandom(&w->rng, sizeof w->rng, 0) != sizeof w->rng || w->rng == 0)
        w->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(id + 1) ^ sy_now_us();
    struct event_config *ec = event_config_new();
    if (!ec)
        return SY_ENOMEM;
    /* Only this worker's thread touches its base: no locks on the request
     * path. The main thread reaches it through an eventfd (worker_post).
     * The changelist folds an add and a delete of the same event within
     * one loop turn into nothing instead of two epoll_ctl calls. Timers
     * stay on libevent's coarse clock (EVENT_BASE_FLAG_PRECISE_TIMER would
     * make it reprogram a timerfd, a system call, whenever the next expiry
     * changes); on it a timer can fire up to a clock tick (4 ms) early, so
     * the request timers are deadlines (timer.h), which check the precise
     * clock and wait for the rest: a 500 ms fault delay or timeout never
     * comes out shorter than configured. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    w->cmd_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->base || w->cmd_fd < 0)
        goto fail;
    if (sy_defer_queue_init(&w->defer, w->base) != 0)
        goto fail;
    w->cmd_ev = event_new(w->base, w->cmd_fd, EV_READ | EV_PERSIST, on_cmd, w);
    if (!w->cmd_ev || event_add(w->cmd_ev, NULL) != 0)
        goto fail;
    return 0;
fail:
    if (w->cmd_ev)
        event_free(w->cmd_ev);
    if (w->base)
        event_base_free(w->base);
    if (w->cmd_fd >= 0)
        close(w->cmd_fd);
    w->cmd_ev = NULL;
    w->base = NULL;
    w->cmd_fd = -1;
    return SY_ENOMEM;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "sy-worker-%d", w->id);
    pthread_setname_np(pthread_self(), name);
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return SY_EIO;
    return 0;
}

void worker_post(struct worker *w, unsigned cmds)
{
    uint64_t one = 1;
    __atomic_fetch_or(&w->_cmds, cmds, __ATOMIC_ACQ_REL);
    ssize_t r = write(w->cmd_fd, &one, sizeof one);
    (void)r; /* EAGAIN means a wakeup is pending already */
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

void worker_destroy(struct worker *w)
{
    mem_cache_drain(&w->h2_mem); /* every session of this worker is gone by now */
    if (w->cmd_ev)
        event_free(w->cmd_ev);
    if (w->cmd_fd >= 0)
        close(w->cmd_fd);
    w->cmd_fd = -1;
    if (w->base) {
        sy_defer_queue_free(&w->defer);
        event_base_free(w->base);
    }
    w->cmd_ev = NULL;
    w->base = NULL;
}

uint64_t worker_rand(struct worker *w)
{
    return sy_rand_next(&w->rng);
}

uint64_t sy_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t sy_now_ms(void)
{
    /* Coarse is enough for timeouts and activity stamps, and cheaper. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * The 8 nibbles of `x` as 8 lowercase hex digits, all at once: each nibble
 * spread into a byte of its own, then '0' added, plus 'a' - '0' - 10 where
 * the nibble is 10 or more. (Digit order follows the bytes' order in
 * memory: any fixed order will do for random digits.)
 */
static void hex8(char *out, uint32_t x)
{
    uint64_t v = x;
    v = ((v & 0xffff0000u) << 16) | (v & 0xffffu);
    v = ((v & 0x0000ff000000ff00ull) << 8) | (v & 0x000000ff000000ffull);
    v = ((v & 0x00f000f000f000f0ull) << 4) | (v & 0x000f000f000f000full);
    uint64_t ten_up = ((v + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    v += 0x3030303030303030ull + ten_up * (uint64_t)('a' - '0' - 10);
    memcpy(out, &v, 8);
}

void sy_uuid4(struct worker *w, char out[37])
{
    uint64_t r1 = worker_rand(w), r2 = worker_rand(w);
    char d[32];
    hex8(d, (uint32_t)r1);
    hex8(d + 8, (uint32_t)(r1 >> 32));
    hex8(d + 16, (uint32_t)r2);
    hex8(d + 24, (uint32_t)(r2 >> 32));
    d[12] = '4';                    /* version 4 */
    d[16] = "89ab"[(r2 >> 62) & 3]; /* variant 10xx */
    memcpy(out, d, 8);
    out[8] = '-';
    memcpy(out + 9, d + 8, 4);
    out[13] = '-';
    memcpy(out + 14, d + 12, 4);
    out[18] = '-';
    memcpy(out + 19, d + 16, 4);
    out[23] = '-';
    memcpy(out + 24, d + 20, 12);
    out[36] = '\0';
}

void sy_random_hex(struct worker *w, char *out, size_t n)
{
    uint64_t nonzero = 0;
    do {
        for (size_t i = 0; i < n; i += 16) {
            uint64_t r = worker_rand(w);
            char d[16];
            nonzero |= r;
            hex8(d, (uint32_t)r);
            hex8(d + 8, (uint32_t)(r >> 32));
            memcpy(out + i, d, n - i < 16 ? n - i : 16);
        }
        out[n] = '\0';
    } while (!nonzero);
}

bool worker_chance(struct worker *w, double pct)
{
    if (pct >= 100.0)
        return true;
    if (pct <= 0.0)
        return false;
    return (double)(worker_rand(w) % 1000000u) < pct * 10000.0;
}
