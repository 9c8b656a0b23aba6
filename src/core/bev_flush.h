/*
 * bev_flush.h — optimistic writes for bufferevents on plain sockets.
 *
 * libevent's bufferevent watches a socket for writability whenever its
 * output buffer has bytes: two epoll_ctl calls and one extra loop turn per
 * response. Instead, a plain connection keeps EV_WRITE disabled, queues its
 * output during a loop turn, and calls sy_bev_flush() once: the bytes go
 * out with one writev, and EV_WRITE is enabled only for a rest the kernel
 * did not take (the write callback then calls sy_bev_written()).
 *
 * TLS bufferevents write through OpenSSL themselves: for them both calls
 * only keep EV_WRITE enabled.
 */
#ifndef SY_BEV_FLUSH_H
#define SY_BEV_FLUSH_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;

/*
 * Write the queued output of `bev` now. Returns the bytes still queued (0
 * when everything went out). On EAGAIN or a socket error the rest stays
 * queued with EV_WRITE enabled, so the bufferevent finishes it or reports
 * the error through its event callback.
 */
size_t sy_bev_flush(struct bufferevent *bev, bool tls);

/* From the write callback: stop watching writability once the output is empty. */
void sy_bev_written(struct bufferevent *bev, bool tls);

/*
 * Reads for a plain-socket bufferevent without libevent's
 * ioctl(FIONREAD) before each read: one recv of up to SY_BEV_READ_MAX bytes
 * (or up to the read high-water mark) into a per-thread buffer, appended to
 * the input. Callbacks, watermarks, EOF and errors behave as libevent's own
 * read path. Call it after bufferevent_socket_new with a socket, or after
 * bufferevent_socket_connect (which replaces the read event); not for TLS.
 */
void sy_bev_direct_read(struct bufferevent *bev);

/*
 * Stop reading while `cap` bytes or more wait in the input (0 = no cap):
 * libevent's read high-water mark for TLS, direct_read's own cap for a plain
 * socket read by sy_bev_direct_read (without a callback on every input
 * change).
 */
void sy_bev_set_read_cap(struct bufferevent *bev, bool tls, size_t cap);

#define SY_BEV_READ_MAX 16384

#endif
