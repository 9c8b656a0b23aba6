/*
 * defer.h — work a worker runs later in the same loop turn, through one
 * libevent event for all of it.
 *
 * Connections and exchanges put work off to later in the loop turn: the
 * one optimistic write after all the reads of the turn (bev_flush.h), the
 * next pipelined request, the free that must wait until none of their
 * callbacks is on the stack. With an event each, every such step cost an
 * event_active and a dispatch by libevent, four to six per HTTP/1.1
 * request. On the worker's queue a step costs a list insertion, and the
 * queue's event is activated once per batch.
 *
 * Order is as libevent's for events made active in a callback: first
 * queued, first run, after the events already active when the batch was
 * started; work queued while a batch runs goes into the next batch, later
 * in the same loop turn.
 *
 * One thread: a queue and its items belong to one worker.
 */
#ifndef SY_DEFER_H
#define SY_DEFER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>

#include "core/list.h"

struct sy_defer;
typedef void (*sy_defer_fn)(struct sy_defer *d);

/* One step of deferred work, embedded in its owner (SY_CONTAINER_OF). */
struct sy_defer {
    struct sy_link link; /* on the queue while scheduled */
    sy_defer_fn fn;
};

struct sy_defer_queue {
    struct event ev;
    struct sy_link items;
};

int sy_defer_queue_init(struct sy_defer_queue *q, struct event_base *base);
/* Drop what is still scheduled (the owners are gone) and the event. */
void sy_defer_queue_free(struct sy_defer_queue *q);

static inline void sy_defer_init(struct sy_defer *d, sy_defer_fn fn)
{
    d->link.next = d->link.prev = NULL;
    d->fn = fn;
}

static inline bool sy_defer_scheduled(const struct sy_defer *d)
{
    return sy_link_is_linked(&d->link);
}

/* Run d->fn later in this loop turn, once however often this is called before. */
static inline void sy_defer(struct sy_defer_queue *q, struct sy_defer *d)
{
    if (sy_link_is_linked(&d->link))
        return;
    bool was_empty = sy_list_empty(&q->items);
    sy_list_insert_tail(&q->items, &d->link);
    if (was_empty)
        event_active(&q->ev, EV_TIMEOUT, 1);
}

/* Unschedule (no effect when it is not scheduled). */
static inline void sy_defer_cancel(struct sy_defer *d)
{
    sy_list_unlink(&d->link);
}

#endif
