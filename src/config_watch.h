/*
 * config_watch.h — --watch-config: reload when the config file changes
 * (main.c also watches each certificate and key file of the HTTPS
 * listeners with one of these).
 *
 * Watches the folder of the config file with inotify, so that every way a
 * file gets replaced is seen: written in place, renamed over (editors,
 * config management), or a Kubernetes ConfigMap volume swapping its
 * "..data" symlink. Events are coalesced for CONFIG_WATCH_SETTLE_MS and
 * then `changed` runs once on the main thread; the owner reloads only when
 * the file's bytes changed (the config version), so a touch is harmless.
 */
#ifndef SY_CONFIG_WATCH_H
#define SY_CONFIG_WATCH_H

#include <stddef.h>

struct event_base;
struct config_watch;

#define CONFIG_WATCH_SETTLE_MS 200

/* Start watching `path`; NULL with the reason in err when it cannot. */
struct config_watch *config_watch_new(struct event_base *base, const char *path,
                                      void (*changed)(void *ctx), void *ctx, char *err,
                                      size_t errlen);
/* NULL is a no-op. */
void config_watch_free(struct config_watch *w);

#endif
