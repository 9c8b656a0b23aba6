/* errors.h — the project's negative return codes (0 is success). */
#ifndef SY_ERRORS_H
#define SY_ERRORS_H

enum sy_err {
    SY_OK = 0,
    SY_EINVAL = -1, /* bad argument or malformed input */
    SY_ERANGE = -2, /* value out of range */
    SY_ENOMEM = -3, /* allocation failed */
    SY_EAGAIN = -4, /* try again later (back-pressure) */
    SY_EPROTO = -5, /* protocol violation by a peer */
    SY_EIO = -6,    /* socket or file error */
    SY_ETIMEDOUT = -7,
    SY_ECLOSED = -8, /* the peer closed */
    SY_ENOTFOUND = -9,
    SY_ELIMIT = -10, /* a configured cap was hit */
};

const char *sy_strerror(int err);

#endif
