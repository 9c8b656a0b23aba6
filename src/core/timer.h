/*
 * timer.h — milliseconds to libevent timers, written once.
 */
#ifndef SY_TIMER_H
#define SY_TIMER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>

/* `ms` as a struct timeval. */
static inline struct timeval sy_tv_ms(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* (Re)arm `ev` to fire in `ms` milliseconds. event_add's result: 0 or -1. */
static inline int sy_timer_arm_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = sy_tv_ms(ms);
    return event_add(ev, &tv);
}

/*
 * event_del for an event that is often not pending (a timer that did not
 * run, a deferred callback already run): the flags say so without the call.
 */
static inline void sy_event_del(struct event *ev)
{
    if (ev->ev_evcallback.evcb_flags &
        (EVLIST_TIMEOUT | EVLIST_INSERTED | EVLIST_ACTIVE | EVLIST_ACTIVE_LATER))
        event_del(ev);
}

/*
 * A deadline: a timer that costs no libevent call to re-arm for a later time
 * or to cancel, for the per-request timeouts (the route and stream-idle
 * timeouts of an exchange, a connection's keep-alive and idle timeouts).
 * The event stays pending across those: arming only records the new due
 * time unless it comes before the pending expiry, and cancelling only clears
 * it. At expiry the event finds out whether it is still wanted, re-adds
 * itself for what remains, or runs the callback. So a deadline re-armed
 * once per request, on a connection or a recycled exchange block, makes an
 * event_add once per timeout period, not twice per request.
 *
 * A cancelled deadline may still be pending: sy_deadline_del before the
 * memory holding it is freed.
 */
struct sy_deadline {
    struct event ev;
    event_callback_fn cb; /* run with (-1, EV_TIMEOUT, arg) when due */
    void *arg;
    uint64_t due_ms;   /* sy_now_us() / 1000 at which cb is due; 0 = not armed */
    uint64_t fires_ms; /* when ev is set to expire; 0 = ev not pending */
};

void sy_deadline_assign(struct sy_deadline *d, struct event_base *base, event_callback_fn cb,
                        void *arg);
/* Run the callback in `ms` milliseconds (0: on the next loop turn), replacing
 * any earlier arming. event_add's result: 0 or -1. */
int sy_deadline_arm(struct sy_deadline *d, uint64_t ms);
/* Do not run the callback (the event may stay pending). */
static inline void sy_deadline_cancel(struct sy_deadline *d)
{
    d->due_ms = 0;
}
static inline bool sy_deadline_armed(const struct sy_deadline *d)
{
    return d->due_ms != 0;
}
/* Cancel, and take the event out of the loop (before freeing `d`). */
void sy_deadline_del(struct sy_deadline *d);

#endif
