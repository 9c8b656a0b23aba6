/*
 * notify.h — tell the service manager where the process is (systemd
 * Type=notify, sd_notify(3)): ready, reloading, stopping.
 *
 * Through libsystemd's sd_notify() when the build found it (the Makefile
 * defines SY_HAVE_SYSTEMD when pkg-config knows libsystemd); without it
 * every call is a no-op, and so is sd_notify() itself outside systemd (no
 * $NOTIFY_SOCKET). Main thread only; failures are ignored: a service
 * manager that cannot be told is no reason to stop serving.
 */
#ifndef SY_NOTIFY_H
#define SY_NOTIFY_H

#include <stdbool.h>

/* Built with libsystemd: the calls below reach the service manager. */
bool sy_notify_supported(void);

/*
 * READY=1 and STATUS=`status` (one line, shown by `systemctl status`): the
 * listeners accept, or a reload (sy_notify_reloading) is over, whether it
 * was applied or refused.
 */
void sy_notify_ready(const char *status);

/*
 * RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC, µs), which systemd
 * 253 and later want with it; systemd 252 (Debian 12) ignores the field.
 * A sy_notify_ready() must follow.
 */
void sy_notify_reloading(void);

/* STOPPING=1: the drain started; nothing follows. */
void sy_notify_stopping(void);

#endif
