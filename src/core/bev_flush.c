/* bev_flush.c — see bev_flush.h. */
#include "core/bev_flush.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#define TLS_COALESCE_MAX (64 * 1024)

size_t sy_bev_flush(struct bufferevent *bev, bool tls)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (tls) {
        /* OpenSSL writes one record (and one syscall) per chunk it is handed:
         * make what this loop turn queued one chunk, up to a few records. */
        size_t len = evbuffer_get_length(out);
        if (len == 0)
            return 0; /* enabling EV_WRITE would watch writability for nothing */
        if (len > 1)
            evbuffer_pullup(out, len < TLS_COALESCE_MAX ? (ssize_t)len : TLS_COALESCE_MAX);
        if (!(bev->enabled & EV_WRITE))
            bufferevent_enable(bev, EV_WRITE);
        /* Write in this loop turn rather than after epoll reports the
         * socket writable: the write event then is added and deleted in
         * the same turn, which libevent's changelist turns into no
         * epoll_ctl at all. Once the handshake is done only (before, that
         * event drives the handshake). */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (ssl && SSL_is_init_finished(ssl))
            event_active(&bev->ev_write, EV_WRITE, 1);
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
    bool watching = bev->enabled & EV_WRITE;
    if (left && !watching)
        bufferevent_enable(bev, EV_WRITE);
    else if (!left && watching)
        bufferevent_disable(bev, EV_WRITE);
    return left;
}

void sy_bev_written(struct bufferevent *bev, bool tls)
{
    if (!tls && (bev->enabled & EV_WRITE) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_disable(bev, EV_WRITE);
}

static _Thread_local char read_buf[SY_BEV_READ_MAX];

/*
 * The read cap: libevent's read high-water mark runs a callback on every
 * change of the input buffer. Here reading stops only when the input is
 * full, and a callback watches the input only until it drains below the
 * cap again.
 */
static void read_resume(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct bufferevent *bev = arg;
    if (info->n_deleted == 0 || evbuffer_get_length(in) >= bev->wm_read.high)
        return;
    evbuffer_remove_cb(in, read_resume, bev);
    if ((bev->enabled & EV_READ) && !event_pending(&bev->ev_read, EV_READ, NULL))
        event_add(&bev->ev_read, evutil_timerisset(&bev->timeout_read) ? &bev->timeout_read : NULL);
}

static bool read_suspend(struct bufferevent *bev)
{
    event_del(&bev->ev_read);
    evbuffer_remove_cb(bev->input, read_resume, bev); /* at most one */
    return evbuffer_add_cb(bev->input, read_resume, bev) != NULL;
}

void sy_bev_set_read_cap(struct bufferevent *bev, bool tls, size_t cap)
{
    if (tls)
        bufferevent_setwatermark(bev, EV_READ, 0, cap);
    else
        bev->wm_read.high = cap; /* direct_read applies it */
}

static void direct_read(evutil_socket_t fd, short what, void *arg)
{
    struct bufferevent *bev = arg;
    short ev = BEV_EVENT_READING;
    if (what == EV_TIMEOUT) {
        ev |= BEV_EVENT_TIMEOUT;
        goto fail;
    }
    struct evbuffer *in = bev->input;
    size_t want = sizeof read_buf;
    if (bev->wm_read.high) {
        size_t len = evbuffer_get_length(in);
        if (len >= bev->wm_read.high) {
            if (read_suspend(bev))
                return;
            ev |= BEV_EVENT_ERROR; /* no memory for the callback that resumes */
            errno = ENOMEM;
            goto fail;
        }
        if (bev->wm_read.high - len < want)
            want = bev->wm_read.high - len;
    }
    ssize_t n = recv(fd, read_buf, want, 0);
    if (n > 0) {
        /* A bufferevent freezes the end of its input; its read path thaws it the same way. */
        evbuffer_unfreeze(in, 0);
        int rc = evbuffer_add(in, read_buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc != 0) {
            ev |= BEV_EVENT_ERROR;
            errno = ENOMEM;
            goto fail;
        }
        bufferevent_trigger(bev, EV_READ, 0); /* may free bev */
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    ev |= n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
fail:;
    int err = errno;
    bufferevent_disable(bev, EV_READ);
    errno = err;
    bufferevent_trigger_event(bev, ev, 0); /* may free bev */
}

void sy_bev_direct_read(struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0)
        return;
    bool pending = event_pending(&bev->ev_read, EV_READ | EV_TIMEOUT, NULL) != 0;
    event_del(&bev->ev_read);
    event_assign(&bev->ev_read, bev->ev_base, fd, EV_READ | EV_PERSIST | EV_FINALIZE, direct_read,
                 bev);
    if (pending)
        event_add(&bev->ev_read, evutil_timerisset(&bev->timeout_read) ? &bev->timeout_read : NULL);
}
