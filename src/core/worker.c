/* worker.c — see worker.h. */
#include "core/worker.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/errors.h"
#include "core/log.h"

static void on_cmd(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    unsigned cmds = __atomic_exchange_n(&w->_cmds, 0u, __ATOMIC_ACQ_REL);
    if (cmds && w->on_cmd)
        w->on_cmd(w, cmds);
}

int worker_init(struct worker *w, int id, worker_cmd_fn cmd_fn)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->on_cmd = cmd_fn;
    if (getrandom(&w->rng, sizeof w->rng, 0) != sizeof w->rng || w->rng == 0)
        w->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(id + 1) ^ sy_now_us();
    struct event_config *ec = event_config_new();
    if (!ec)
        return SY_ENOMEM;
    /* The loop runs on one thread only; the lock is for event_active from main. */
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base)
        return SY_ENOMEM;
    w->cmd_ev = event_new(w->base, -1, 0, on_cmd, w);
    if (!w->cmd_ev) {
        event_base_free(w->base);
        w->base = NULL;
        return SY_ENOMEM;
    }
    return 0;
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
    __atomic_fetch_or(&w->_cmds, cmds, __ATOMIC_ACQ_REL);
    event_active(w->cmd_ev, EV_READ, 0);
}

void worker_join(struct worker *w) { pthread_join(w->thread, NULL); }

void worker_destroy(struct worker *w)
{
    if (w->cmd_ev)
        event_free(w->cmd_ev);
    if (w->base)
        event_base_free(w->base);
    w->cmd_ev = NULL;
    w->base = NULL;
}

uint64_t worker_rand(struct worker *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t sy_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t sy_now_ms(void) { return sy_now_us() / 1000u; }

void sy_uuid4(struct worker *w, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    uint64_t r1 = worker_rand(w), r2 = worker_rand(w);
    memcpy(b, &r1, 8);
    memcpy(b + 8, &r2, 8);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[b[i] >> 4];
        out[j++] = hex[b[i] & 15];
    }
    out[j] = '\0';
}
