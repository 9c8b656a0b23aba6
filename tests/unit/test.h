/*
 * test.h — the unit test harness. Each tests/unit/test_*.c file defines one
 * `void test_<name>_suite(void)` that main.c calls; inside, CHECK(...) records
 * a pass or a failure with file:line. The runner ends on "N passed, N failed".
 */
#ifndef SY_TEST_H
#define SY_TEST_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

extern int test_passed, test_failed;
extern const char *test_current;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__,                           \
                    test_current ? test_current : "", #cond);                                      \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ && b_ && strcmp(a_, b_) == 0) {                                                     \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "FAIL %s:%d [%s]: \"%s\" != \"%s\"\n", __FILE__, __LINE__,             \
                    test_current ? test_current : "", a_ ? a_ : "(null)", b_ ? b_ : "(null)");     \
        }                                                                                          \
    } while (0)

#define TEST_CASE(name) (test_current = (name))

void test_parse_suite(void);
void test_config_suite(void);
void test_urlmap_suite(void);
void test_urlmap_trace_suite(void);
void test_http_suite(void);
void test_backend_suite(void);
void test_retry_suite(void);
void test_reliability_suite(void);
void test_mem_cache_suite(void);
void test_mem_cache_pages_suite(void);
void test_core_suite(void);
void test_h2_suite(void);
void test_limits_suite(void);
void test_shadow_suite(void);
void test_status_suite(void);

/* Which of the `pages` 4 KiB pages from `p` are resident (mincore), one bit
 * each from the lowest; ~0u when that cannot be told. */
static inline unsigned test_resident_pages(const void *p, size_t pages)
{
    unsigned char v[16] = {0};
    if (pages > sizeof v || mincore((void *)p, pages * 4096, v) != 0)
        return ~0u;
    unsigned bits = 0;
    for (size_t i = 0; i < pages; i++)
        bits |= (unsigned)(v[i] & 1) << i;
    return bits;
}

#endif
