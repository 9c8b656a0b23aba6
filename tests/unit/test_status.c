/* Unit tests: the status page's latency quantiles (src/admin/status.c). */
#include <math.h>
#include <stdint.h>

#include "admin/status.h"
#include "core/stats.h"
#include "test.h"

static int near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

void test_status_suite(void)
{
    uint64_t b[STATS_N_BUCKETS + 1] = {0};
    TEST_CASE("status quantile: empty");
    CHECK(status_quantile_ms(b, 0.5) < 0);

    TEST_CASE("status quantile: inside the first bucket, from 0");
    b[0] = 4; /* (0, 1 ms] */
    CHECK(near(status_quantile_ms(b, 0.5), 0.5));
    CHECK(near(status_quantile_ms(b, 1.0), 1.0));

    TEST_CASE("status quantile: a bucket boundary");
    b[1] = 4; /* (1, 5 ms] */
    CHECK(near(status_quantile_ms(b, 0.5), 1.0));
    CHECK(near(status_quantile_ms(b, 0.75), 3.0));

    TEST_CASE("status quantile: p99 of 21 fast and 10 in (25, 50 ms]");
    b[0] = 21;
    b[1] = 0;
    b[4] = 10;
    CHECK(stats_bucket_ms[3] == 25 && stats_bucket_ms[4] == 50);
    CHECK(near(status_quantile_ms(b, 0.99), 25 + 25 * (0.99 * 31 - 21) / 10));
    CHECK(status_quantile_ms(b, 0.5) < 1);

    TEST_CASE("status quantile: past the last bound");
    uint64_t slow[STATS_N_BUCKETS + 1] = {0};
    slow[STATS_N_BUCKETS] = 3;
    CHECK(near(status_quantile_ms(slow, 0.5), stats_bucket_ms[STATS_N_BUCKETS - 1]));
    slow[0] = 97;
    CHECK(near(status_quantile_ms(slow, 0.5), 0.5 / 0.97));
    CHECK(near(status_quantile_ms(slow, 0.99), stats_bucket_ms[STATS_N_BUCKETS - 1]));
}
