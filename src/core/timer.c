/* timer.c — deadlines; see timer.h. */
#include "core/timer.h"

#include "core/worker.h" /* sy_now_us */

/* The precise clock, not libevent's coarse one (worker.c), which may expire
 * a timer up to a tick early: a deadline never runs before it is due. */
static uint64_t now_ms(void)
{
    return sy_now_us() / 1000u;
}

static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
    struct sy_deadline *d = arg;
    d->fires_ms = 0;
    if (!d->due_ms)
        return; /* cancelled since it was armed */
    uint64_t now = now_ms();
    if (now < d->due_ms) {
        /* Re-armed for later while pending: wait for the rest. */
        uint64_t rest = d->due_ms - now;
        struct timeval tv = sy_tv_ms(rest);
        if (event_add(&d->ev, &tv) == 0) {
            d->fires_ms = d->due_ms;
            return;
        }
    }
    d->due_ms = 0;
    d->cb(fd, what, d->arg);
}

void sy_deadline_assign(struct sy_deadline *d, struct event_base *base, event_callback_fn cb,
                        void *arg)
{
    evtimer_assign(&d->ev, base, on_expiry, d);
    d->cb = cb;
    d->arg = arg;
    d->due_ms = 0;
    d->fires_ms = 0;
}

int sy_deadline_arm(struct sy_deadline *d, uint64_t ms)
{
    uint64_t due = now_ms() + ms;
    if (due == 0)
        due = 1; /* 0 means "not armed" */
    d->due_ms = due;
    if (d->fires_ms && d->fires_ms <= due)
        return 0; /* pending, and expires no later than wanted: on_expiry re-adds */
    struct timeval tv = sy_tv_ms(ms);
    if (event_add(&d->ev, &tv) != 0) {
        d->due_ms = 0;
        return -1;
    }
    d->fires_ms = due;
    return 0;
}

void sy_deadline_del(struct sy_deadline *d)
{
    d->due_ms = 0;
    d->fires_ms = 0;
    sy_event_del(&d->ev);
}
