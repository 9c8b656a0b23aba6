/* defer.c — see defer.h. */
#include "core/defer.h"

/* Run one batch: what was queued when the event was made active. */
static void on_run(evutil_socket_t fd, short what, void *arg)
{
    struct sy_defer_queue *q = arg;
    struct sy_link batch;
    sy_list_init(&batch);
    sy_list_splice_tail(&batch, &q->items);
    for (struct sy_link *l; (l = sy_list_first(&batch));) {
        sy_list_unlink(l);
        struct sy_defer *d = SY_CONTAINER_OF(l, struct sy_defer, link);
        d->fn(d);
    }
}

int sy_defer_queue_init(struct sy_defer_queue *q, struct event_base *base)
{
    sy_list_init(&q->items);
    return event_assign(&q->ev, base, -1, 0, on_run, q);
}

void sy_defer_queue_free(struct sy_defer_queue *q)
{
    while (sy_list_first(&q->items))
        sy_list_unlink(sy_list_first(&q->items));
    event_del(&q->ev);
}
