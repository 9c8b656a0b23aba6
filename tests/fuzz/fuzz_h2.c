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

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return harness_fuzz_one(HARNESS_H2, "fuzz_h2", data, size);
}
