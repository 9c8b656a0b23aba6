/* notify.c — see notify.h. The build picks one of the two halves. */
#include "core/notify.h"

#ifdef SY_HAVE_SYSTEMD

#include <systemd/sd-daemon.h>

#include "core/worker.h" /* sy_now_us: CLOCK_MONOTONIC, as MONOTONIC_USEC wants */

bool sy_notify_supported(void)
{
    return true;
}

void sy_notify_ready(const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void sy_notify_reloading(void)
{
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)sy_now_us());
}

void sy_notify_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}

#else /* no libsystemd: nobody to tell */

bool sy_notify_supported(void)
{
    return false;
}

void sy_notify_ready(const char *status)
{
    (void)status;
}

void sy_notify_reloading(void) {}

void sy_notify_stopping(void) {}

#endif
