/* bev_flush.c — see bev_flush.h. */
#include "core/bev_flush.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define TLS_COALESCE_MAX (64 * 1024)

size_t sy_bev_flush(struct bufferevent *bev, bool tls)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (tls) {
        /* OpenSSL writes one record (and one syscall) per chunk it is handed:
         * make what this loop turn queued one chunk, up to a few records. */
        size_t len = evbuffer_get_length(out);
        if (len > 1)
            evbuffer_pullup(out, len < TLS_COALESCE_MAX ? (ssize_t)len : TLS_COALESCE_MAX);
        bufferevent_enable(bev, EV_WRITE);
        return len;
    }
    if (evbuffer_get_length(out) > 0) {
        /* A bufferevent freezes the front of its output; its own write
         * callback thaws it the same way around each write. */
        evbuffer_unfreeze(out, 1);
        evbuffer_write(out, bufferevent_getfd(bev)); /* -1 (EAGAIN, errors): see below */
        evbuffer_freeze(out, 1);
    }
    size_t left = evbuffer_get_length(out);
    if (left)
        bufferevent_enable(bev, EV_WRITE);
    else
        bufferevent_disable(bev, EV_WRITE);
    return left;
}

void sy_bev_written(struct bufferevent *bev, bool tls)
{
    if (!tls && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE);
}
