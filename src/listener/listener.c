/* listener.c — see listener.h. */
#include "listener/listener.h"

#include <errno.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/worker.h"
#include "listener/listener-int.h"

static int open_one(const struct cfg_listener *l, char *err, size_t errlen)
{
    int fd = socket(l->address.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listener %s: socket: %s", l->name, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&l->address.ss, l->address.len) != 0 ||
        listen(fd, 1024) != 0) {
        snprintf(err, errlen, "listener %s: cannot listen on %s: %s", l->name, l->address.text,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int *listeners_open(const struct config *cfg, int n_workers, char *err, size_t errlen)
{
    size_t n = cfg->n_listeners * (size_t)n_workers;
    int *fds = malloc((n ? n : 1) * sizeof *fds);
    if (!fds) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        fds[i] = open_one(&cfg->listeners[i % cfg->n_listeners], err, errlen);
        if (fds[i] < 0) {
            for (size_t j = 0; j < i; j++)
                close(fds[j]);
            free(fds);
            return NULL;
        }
    }
    return fds;
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct listener_worker *lw = arg;
    int idx = -1;
    for (size_t i = 0; i < lw->n_evls; i++)
        if (lw->evls[i] == evl)
            idx = lw->listener_idx[i];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    h1_downstream_accept(lw, idx, fd, sa, (socklen_t)salen);
}

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    /* EMFILE and friends: log and keep going; libevent retries on the next event. */
    log_warn("accept: %s", strerror(errno));
}

struct listener_worker *listener_worker_new(struct worker *w, const int *fds, size_t n)
{
    struct listener_worker *lw = calloc(1, sizeof *lw);
    if (!lw)
        return NULL;
    lw->w = w;
    lw->evls = calloc(n + 1, sizeof *lw->evls);
    lw->listener_idx = calloc(n + 1, sizeof *lw->listener_idx);
    if (!lw->evls || !lw->listener_idx)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        lw->evls[i] = evconnlistener_new(w->base, on_accept, lw, LEV_OPT_CLOSE_ON_FREE, -1,
                                         fds[i]);
        if (!lw->evls[i])
            goto fail;
        evconnlistener_set_error_cb(lw->evls[i], on_accept_error);
        lw->listener_idx[i] = (int)i;
        lw->n_evls++;
    }
    return lw;
fail:
    listener_worker_free(lw);
    return NULL;
}

static void close_listeners(struct listener_worker *lw)
{
    for (size_t i = 0; i < lw->n_evls; i++)
        if (lw->evls[i])
            evconnlistener_free(lw->evls[i]);
    lw->n_evls = 0;
}

void listener_worker_drain(struct listener_worker *lw)
{
    close_listeners(lw);
    h1_downstream_close_idle(lw);
    if (lw->n_conns == 0 && lw->on_idle)
        lw->on_idle(lw->w);
}

unsigned listener_worker_conns(const struct listener_worker *lw) { return lw->n_conns; }

void listener_worker_on_idle(struct listener_worker *lw, listener_idle_fn fn) { lw->on_idle = fn; }

void listener_conn_closed(struct listener_worker *lw)
{
    lw->n_conns--;
    if (lw->n_conns == 0 && lw->w->draining && lw->on_idle)
        lw->on_idle(lw->w);
}

void listener_worker_free(struct listener_worker *lw)
{
    if (!lw)
        return;
    close_listeners(lw);
    lw->on_idle = NULL;
    h1_downstream_close_all(lw);
    free(lw->evls);
    free(lw->listener_idx);
    free(lw);
}
