/* Unit tests for the retry decisions (src/exchange/retry.c). */
#include "exchange/retry.h"
#include "test.h"

static uint32_t met(enum attempt_result r, int status, int grpc)
{
    struct attempt_report rep = {r, status, grpc};
    return retry_conditions_met(&rep);
}

static void test_conditions(void)
{
    TEST_CASE("retry conditions");
    /* Each condition: one outcome that meets it, one that must not. */
    CHECK(met(RESULT_RESPONSE, 500, -1) & CFG_RETRY_5XX);
    CHECK(!(met(RESULT_RESPONSE, 500, -1) & CFG_RETRY_GATEWAY_ERROR));
    CHECK(met(RESULT_RESPONSE, 503, -1) & CFG_RETRY_GATEWAY_ERROR);
    CHECK(met(RESULT_RESPONSE, 502, -1) & CFG_RETRY_GATEWAY_ERROR);
    CHECK(met(RESULT_RESPONSE, 504, -1) & CFG_RETRY_GATEWAY_ERROR);
    CHECK(met(RESULT_RESPONSE, 200, -1) == 0);
    CHECK(met(RESULT_RESPONSE, 404, -1) == 0);
    CHECK(met(RESULT_RESPONSE, 409, -1) == CFG_RETRY_RETRIABLE_4XX);
    CHECK(!(met(RESULT_RESPONSE, 429, -1) & CFG_RETRY_RETRIABLE_4XX));
    CHECK(met(RESULT_CONNECT_FAILURE, 0, -1) & CFG_RETRY_CONNECT_FAILURE);
    CHECK(met(RESULT_CONNECT_FAILURE, 0, -1) & CFG_RETRY_5XX);
    CHECK(!(met(RESULT_RESET, 0, -1) & CFG_RETRY_CONNECT_FAILURE));
    CHECK(met(RESULT_RESET, 0, -1) & CFG_RETRY_5XX);
    CHECK(met(RESULT_PER_TRY_TIMEOUT, 0, -1) & CFG_RETRY_GATEWAY_ERROR);
    CHECK(met(RESULT_REFUSED_STREAM, 0, -1) & CFG_RETRY_REFUSED_STREAM);
    CHECK(!(met(RESULT_RESET, 0, -1) & CFG_RETRY_REFUSED_STREAM));
    CHECK(met(RESULT_RESPONSE, 200, 14) == CFG_RETRY_UNAVAILABLE);
    CHECK(met(RESULT_RESPONSE, 200, 1) == CFG_RETRY_CANCELLED);
    CHECK(met(RESULT_RESPONSE, 200, 4) == CFG_RETRY_DEADLINE_EXCEEDED);
    CHECK(met(RESULT_RESPONSE, 200, 13) == CFG_RETRY_INTERNAL);
    CHECK(met(RESULT_RESPONSE, 200, 8) == CFG_RETRY_RESOURCE_EXHAUSTED);
    CHECK(met(RESULT_RESPONSE, 200, 0) == 0);
    CHECK(met(RESULT_RESPONSE, 200, 5) == 0); /* NOT_FOUND is not retriable */
}

static void test_names(void)
{
    TEST_CASE("retry condition names");
    CHECK_STR(retry_condition_name(CFG_RETRY_5XX | CFG_RETRY_GATEWAY_ERROR), "gateway-error");
    CHECK_STR(retry_condition_name(met(RESULT_CONNECT_FAILURE, 0, -1)), "connect-failure");
    CHECK_STR(retry_condition_name(CFG_RETRY_5XX), "5xx");
    CHECK_STR(retry_condition_name(CFG_RETRY_UNAVAILABLE), "unavailable");
    CHECK_STR(retry_condition_name(0), "none");
}

static void test_policy(void)
{
    TEST_CASE("retry policy defaults");
    struct cfg_route_action a = {0};
    struct retry_policy p;
    retry_policy_from_route(&a, &p);
    CHECK(p.conditions == CFG_RETRY_GATEWAY_ERROR && p.num_retries == 1 && !p.allow_body);
    a.retry_policy.set = true;
    a.retry_policy.retry_conditions = CFG_RETRY_5XX;
    a.retry_policy.num_retries = 3;
    a.retry_policy.per_try_timeout_ms = 250;
    retry_policy_from_route(&a, &p);
    CHECK(p.conditions == CFG_RETRY_5XX && p.num_retries == 3 && p.allow_body);
    CHECK(p.per_try_timeout_ms == 250);
}

static void test_backoff(void)
{
    TEST_CASE("backoff bounds");
    /* Full jitter: uniform in [0, min(cap, base * 2^(n-1))]. */
    uint64_t x = 88172645463325252ull;
    for (unsigned n = 1; n <= 8; n++) {
        uint64_t ceiling = 25ull << (n - 1);
        if (ceiling > 250)
            ceiling = 250;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            uint64_t d = retry_backoff_ms(n, 25, 250, x);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        CHECK(hi <= ceiling);
        CHECK(lo <= ceiling / 10);     /* reaches near zero */
        CHECK(hi >= ceiling * 9 / 10); /* and near the ceiling */
    }
    CHECK(retry_backoff_ms(1, 0, 250, 12345) == 0);
}

static void test_local_status(void)
{
    TEST_CASE("local status");
    CHECK(retry_local_status(RESULT_CONNECT_FAILURE) == 503);
    CHECK(retry_local_status(RESULT_RESET) == 502);
    CHECK(retry_local_status(RESULT_PROTOCOL_ERROR) == 502);
    CHECK(retry_local_status(RESULT_PER_TRY_TIMEOUT) == 504);
}

static bool idem(const char *m)
{
    return retry_method_idempotent(m, strlen(m));
}

static void test_idempotent(void)
{
    TEST_CASE("idempotent methods (RFC 9110 9.2.2)");
    CHECK(idem("GET") && idem("HEAD") && idem("OPTIONS") && idem("TRACE") && idem("PUT") &&
          idem("DELETE"));
    CHECK(!idem("POST") && !idem("PATCH") && !idem("CONNECT") && !idem("PRI"));
    CHECK(!idem("get"));  /* methods are case-sensitive */
    CHECK(!idem("GETX")); /* whole name only */
    CHECK(!idem("GE"));
    CHECK(!idem(""));
    CHECK(!retry_method_idempotent(NULL, 0));
}

static void test_stale_resend(void)
{
    TEST_CASE("stale keep-alive resend");
    CHECK(retry_stale_resend(true, "GET", 3, true, 0));
    CHECK(retry_stale_resend(true, "PUT", 3, true, 0));
    CHECK(!retry_stale_resend(false, "GET", 3, true, 0)); /* not stale: the policy decides */
    CHECK(!retry_stale_resend(true, "POST", 4, true, 0)); /* not idempotent */
    CHECK(!retry_stale_resend(true, "PATCH", 5, true, 0));
    CHECK(!retry_stale_resend(true, "PUT", 3, false, 0)); /* body not kept for a replay */
    CHECK(!retry_stale_resend(true, "GET", 3, true, 1));  /* once per exchange */
}

void test_retry_suite(void)
{
    test_idempotent();
    test_stale_resend();
    test_conditions();
    test_names();
    test_policy();
    test_backoff();
    test_local_status();
}
