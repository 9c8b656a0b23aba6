/*
 * fuzz_h1.c — libFuzzer target: the HTTP/1.1 downstream codec on arbitrary
 * client bytes, through the whole request path (router, url map, h1
 * upstream, an in-process backend; see harness.h). Nothing may crash or
 * leak, and no exchange may outlive its connection once everything was
 * closed (that would be a lost cleanup: a leak the next input inherits).
 *
 * Input: the bytes a client sends on a fresh plain-text connection (an
 * input opening with the HTTP/2 preface takes the prior-knowledge h2c path).
 */
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return harness_fuzz_one(HARNESS_H1, "fuzz_h1", data, size);
}
