/*
 * fuzz_config.c — libFuzzer target: the config loader (YAML → validated
 * snapshot or FILE:LINE:COL errors) on arbitrary bytes. Every input must
 * either load or be refused with at least one error; nothing may crash or
 * leak (LeakSanitizer runs at exit of each libFuzzer run).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("fuzz.yaml", (const char *)data, size, &errs);
    if (!cfg && errs.n == 0)
        abort(); /* refused without saying why */
    config_unref(cfg);
    config_errors_free(&errs);
    return 0;
}
