/* config_watch.c — see config_watch.h. */
#include "config_watch.h"

#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timer.h"

struct config_watch {
    int fd;
    int wd;
    char *base_name; /* the config file's name in its folder */
    char *path;      /* the file, for the log */
    struct event *read_ev;
    struct event *settle_ev;
    void (*changed)(void *ctx);
    void *ctx;
};

/* Does an event on `name` in the folder concern the config file? */
static bool concerns(const struct config_watch *w, const char *name)
{
    /* Kubernetes ConfigMap volumes: the file is a symlink through "..data",
     * which is swapped atomically to a new timestamped folder. */
    return !strcmp(name, w->base_name) || !strcmp(name, "..data");
}

static void on_settled(evutil_socket_t fd, short what, void *arg)
{
    struct config_watch *w = arg;
    log_info("%s changed: reloading", w->path);
    w->changed(w->ctx);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct config_watch *w = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    for (int round = 0; round < 64; round++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if (ev->len && concerns(w, ev->name))
                hit = true;
            if (ev->mask & IN_Q_OVERFLOW)
                hit = true;
            p += sizeof *ev + ev->len;
        }
    }
    if (hit)
        sy_timer_arm_ms(w->settle_ev, CONFIG_WATCH_SETTLE_MS);
}

struct config_watch *config_watch_new(struct event_base *base, const char *path,
                                      void (*changed)(void *ctx), void *ctx, char *err,
                                      size_t errlen)
{
    struct config_watch *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->fd = -1;
    w->changed = changed;
    w->ctx = ctx;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    w->base_name = strdup(slash ? slash + 1 : path);
    w->path = strdup(path);
    if (!dir || !w->base_name || !w->path) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 ||
        (w->wd = inotify_add_watch(
             w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB)) < 0) {
        snprintf(err, errlen, "--watch-config: cannot watch %s: %s", dir, strerror(errno));
        goto fail;
    }
    w->read_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_readable, w);
    w->settle_ev = evtimer_new(base, on_settled, w);
    if (!w->read_ev || !w->settle_ev || event_add(w->read_ev, NULL) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    log_info("watching %s for changes", path);
    free(dir);
    return w;
fail:
    free(dir);
    config_watch_free(w);
    return NULL;
}

void config_watch_free(struct config_watch *w)
{
    if (!w)
        return;
    if (w->read_ev)
        event_free(w->read_ev);
    if (w->settle_ev)
        event_free(w->settle_ev);
    if (w->fd >= 0)
        close(w->fd);
    free(w->base_name);
    free(w->path);
    free(w);
}
