/*
 * Unit tests for the hardening of the exchange's edges: access-log escaping
 * (src/exchange/access_log.c), the X-Request-Id rule
 * (src/exchange/request_prep.c) and ending an outlier ejection when a health
 * check passes (src/backend/outlier.c).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/time_cache.h"
#include "core/worker.h"
#include "exchange/access_log.h"
#include "exchange/request_prep.h"
#include "test.h"

/* Escape `s` (n bytes) with fn into a NUL-terminated static buffer of `cap` usable bytes. */
static const char *esc(size_t (*fn)(char *, size_t, const char *, size_t), const char *s, size_t n,
                       size_t cap)
{
    static char out[512];
    size_t k = fn(out, cap < sizeof out - 1 ? cap : sizeof out - 1, s, n);
    out[k] = '\0';
    return out;
}

#define JSON(lit)      esc(access_log_json_escape, lit, sizeof(lit) - 1, 511)
#define TEXT(lit)      esc(access_log_text_escape, lit, sizeof(lit) - 1, 511)
#define JSON_CAP(l, c) esc(access_log_json_escape, l, sizeof(l) - 1, c)

static void test_json_escape(void)
{
    TEST_CASE("access log: JSON escaping");
    CHECK_STR(JSON("/plain/path?a=1"), "/plain/path?a=1");
    /* a forged field stays inside its string */
    CHECK_STR(JSON("a\",\"status\":200,\"x\":\""), "a\\\",\\\"status\\\":200,\\\"x\\\":\\\"");
    CHECK_STR(JSON("back\\slash"), "back\\\\slash");
    CHECK_STR(JSON("nl\ncr\rtab\tnul\0end"), "nl\\u000acr\\u000dtab\\u0009nul\\u0000end");
    CHECK_STR(JSON("\x01\x1f\x7f"), "\\u0001\\u001f\\u007f");
    /* bytes from 0x80: one \u00XX each (read back as Latin-1: the same bytes) */
    CHECK_STR(JSON("\xff\xc3\xa9"), "\\u00ff\\u00c3\\u00a9");
    CHECK_STR(JSON("'<>/&"), "'<>/&");
    /* never half an escape: stops before the byte whose escape does not fit */
    CHECK_STR(JSON_CAP("ab\"c", 3), "ab");
    CHECK_STR(JSON_CAP("ab\"c", 4), "ab\\\"");
    CHECK_STR(JSON_CAP("a\n", 6), "a");
    CHECK_STR(JSON_CAP("a\n", 7), "a\\u000a");
    CHECK_STR(JSON_CAP("abc", 0), "");
}

static void test_text_escape(void)
{
    TEST_CASE("access log: text escaping");
    CHECK_STR(TEXT("/plain/path?a=1"), "/plain/path?a=1");
    CHECK_STR(TEXT("a b"), "a\\x20b");
    CHECK_STR(TEXT("q\"uote"), "q\\x22uote");
    CHECK_STR(TEXT("back\\slash"), "back\\x5cslash");
    CHECK_STR(TEXT("nl\nx"), "nl\\x0ax");
    CHECK_STR(TEXT("\x7f\x80\xff"), "\\x7f\\x80\\xff");
    CHECK_STR(esc(access_log_text_escape, "a\"", 2, 4), "a");
    CHECK_STR(esc(access_log_text_escape, "a\"", 2, 5), "a\\x22");
}

static bool rid(const char *s)
{
    return request_id_valid(s, strlen(s));
}

static void test_request_id(void)
{
    TEST_CASE("X-Request-Id: kept or replaced");
    CHECK(rid("e994445c-6fb4-4001-99c6-e3a164224a10")); /* UUID */
    CHECK(rid("0123456789abcdef0123456789abcdef"));     /* hex (nginx $request_id) */
    CHECK(rid("YWJjZGVm+/Zz=="));                       /* base64 */
    CHECK(rid("trace.span:1_2-3"));
    CHECK(rid("x"));
    CHECK(!rid(""));
    CHECK(!rid("a\",\"status\":200,\"x\":\""));
    CHECK(!rid("has space"));
    CHECK(!rid("tab\there"));
    CHECK(!rid("ctl\x01"));
    CHECK(!rid("back\\slash"));
    CHECK(!rid("semi;colon"));
    CHECK(!rid("caf\xc3\xa9"));
    CHECK(!request_id_valid("a\0b", 3));
    char max[EXCHANGE_REQUEST_ID_MAX + 2];
    memset(max, 'a', sizeof max);
    CHECK(request_id_valid(max, EXCHANGE_REQUEST_ID_MAX));
    CHECK(!request_id_valid(max, EXCHANGE_REQUEST_ID_MAX + 1));
}

static bool tp(const char *s, char *tid, unsigned char *flags)
{
    return traceparent_parse(s, strlen(s), tid, flags);
}

static void test_traceparent(void)
{
    char tid[EXCHANGE_TRACE_ID_LEN + 1];
    unsigned char fl = 0;
    TEST_CASE("traceparent: W3C trace context level 1");
    CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK_STR(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(fl == 1);
    CHECK(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", tid, &fl) && fl == 0);
    /* a later version: its known part, more after a '-' allowed */
    CHECK(tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-xyz", tid, &fl) && fl == 9);
    CHECK(tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", tid, &fl));
    CHECK(!tp("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", tid, &fl));
    CHECK(!tp("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("00-00000000000000000000000000000000-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", tid, &fl));
    CHECK(!tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", tid, &fl));
    CHECK(!tp("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, &fl));
    CHECK(!tp("", tid, &fl));
}

static void test_time_cache(void)
{
    struct sy_time_cache c;
    TEST_CASE("time cache: ISO and HTTP dates of now");
    sy_time_cache_init(&c);
    time_t before = time(NULL);
    char iso[64], date[64];
    snprintf(iso, sizeof iso, "%s", sy_time_iso(&c));
    snprintf(date, sizeof date, "%s", sy_time_http_date(&c));
    time_t after = time(NULL);
    struct tm tm = {0};
    CHECK(strlen(iso) == 24 && iso[10] == 'T' && iso[19] == '.' && iso[23] == 'Z');
    CHECK(strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm) != NULL);
    time_t t = timegm(&tm);
    CHECK(t >= before && t <= after);
    memset(&tm, 0, sizeof tm);
    CHECK(strlen(date) == 29 && strcmp(date + 26, "GMT") == 0);
    CHECK(strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL);
    t = timegm(&tm);
    CHECK(t >= before && t <= after);
    /* the same second: the cached strings move with the clock, never back */
    const char *p = sy_time_iso(&c);
    CHECK(p == c.iso && strcmp(p, iso) >= 0);
}

static void test_uneject(void)
{
    TEST_CASE("a passing health check ends an ejection");
    struct endpoint_state e = {.service = "svc", .address = "127.0.0.1:1", .healthy = 1};
    uint64_t now = sy_now_ms();
    e.ejected_until_ms = now + 30000;
    e.ejections = 2;
    e.consecutive_gateway_failure = 1;
    CHECK(backend_endpoint_ejected(&e, now));
    CHECK(backend_endpoint_uneject(&e, "hc: health check passed"));
    CHECK(!backend_endpoint_ejected(&e, sy_now_ms()));
    CHECK(e.ejected_until_ms > 0);                 /* kept: the multiplier decays from here */
    CHECK(e.ejections == 2);                       /* the multiplier is kept */
    CHECK(e.consecutive_gateway_failure == 0);     /* counting starts again */
    CHECK(!backend_endpoint_uneject(&e, "again")); /* not ejected any more */
    struct endpoint_state never = {.service = "svc", .address = "127.0.0.1:2", .healthy = 1};
    CHECK(!backend_endpoint_uneject(&never, "never ejected"));
    CHECK(never.ejected_until_ms == 0);
}

void test_reliability_suite(void)
{
    test_json_escape();
    test_text_escape();
    test_request_id();
    test_traceparent();
    test_time_cache();
    test_uneject();
}
