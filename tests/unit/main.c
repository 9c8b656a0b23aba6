/* Unit test runner: runs every suite and ends on "N passed, N failed". */
#include "test.h"

int test_passed, test_failed;
const char *test_current;

int main(void)
{
    test_parse_suite();
    test_config_suite();
    test_urlmap_suite();
    test_urlmap_trace_suite();
    test_http_suite();
    test_backend_suite();
    test_retry_suite();
    test_reliability_suite();
    test_mem_cache_suite();
    test_mem_cache_pages_suite();
    test_core_suite();
    test_h2_suite();
    test_limits_suite();
    test_shadow_suite();
    test_status_suite();
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
