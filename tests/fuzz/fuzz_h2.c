/*
 * fuzz_h2.c — libFuzzer target: the HTTP/2 downstream codec on arbitrary
 * HTTP/2 frames, through the whole request path (router, url map, h1
 * upstream, an in-process backend; see harness.h). Nothing may crash or
 * leak, and no exchange may outlive its connection once everything was
 * closed (that would be a lost cleanup: a leak the next input inherits).
 *
 * Input: the frames a client sends after the connection preface (the
 * harness sends the preface itself), starting with its SETTINGS.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct harness *h;
static int verbose = -1; /* SY_FUZZ_VERBOSE=1: one line per input on stderr */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!h && !(h = harness_new(NULL)))
        abort();
    struct harness_result r;
    if (harness_run(h, HARNESS_H2, data, size, &r) != 0)
        abort(); /* out of fds or memory: the harness itself */
    if (verbose < 0)
        verbose = getenv("SY_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "%s: %zu bytes in, %zu out, %u backend requests, %u turns%s%s\n", "fuzz_h2",
                size, r.out_bytes, r.backend_reqs, r.turns,
                r.client_forced ? ", client closed by force" : "",
                r.upstream_forced ? ", upstream closed by force" : "");
    if (r.exchanges_left) {
        fprintf(stderr, "fuzz_h2: %u exchange(s) outlived the connection\n", r.exchanges_left);
        abort();
    }
    return 0;
}
