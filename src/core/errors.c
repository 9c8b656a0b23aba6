/* errors.c — human-readable names for the project's negative return codes. */
#include "core/errors.h"

/*
 * Returns a static string for `err` (one of enum sy_err); never NULL.
 * Unknown codes map to "unknown error".
 */
const char *sy_strerror(int err)
{
    switch (err) {
    case SY_OK: return "success";
    case SY_EINVAL: return "invalid argument";
    case SY_ERANGE: return "value out of range";
    case SY_ENOMEM: return "out of memory";
    case SY_EAGAIN: return "try again";
    case SY_EPROTO: return "protocol error";
    case SY_EIO: return "I/O error";
    case SY_ETIMEDOUT: return "timed out";
    case SY_ECLOSED: return "connection closed";
    case SY_ENOTFOUND: return "not found";
    case SY_ELIMIT: return "limit reached";
    default: return "unknown error";
    }
}
