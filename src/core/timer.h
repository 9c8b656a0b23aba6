/*
 * timer.h — milliseconds to libevent timers, written once.
 */
#ifndef SY_TIMER_H
#define SY_TIMER_H

#include <event2/event.h>
#include <event2/event_struct.h>
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

#endif
