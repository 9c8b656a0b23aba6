/* test_parse.c — the value parsers of src/core/parse.c and sy_strerror. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/errors.h"
#include "core/parse.h"
#include "test.h"

static void check_duration(const char *s, int want_rc, uint64_t want_ms)
{
    uint64_t ms = 777;
    int rc = sy_parse_duration_ms(s, &ms);

    CHECK(rc == want_rc);
    if (rc != want_rc)
        fprintf(stderr, "  duration '%s': rc %d\n", s, rc);
    CHECK(ms == (want_rc == 0 ? want_ms : 777)); /* untouched on failure */
}

static void test_durations(void)
{
    TEST_CASE("parse: durations");
    check_duration("250ms", 0, 250);
    check_duration("30s", 0, 30000);
    check_duration("5m", 0, 300000);
    check_duration("2h", 0, 7200000);
    check_duration("1.5s", 0, 1500);
    check_duration("0.25s", 0, 250);
    check_duration("1.2345s", 0, 1234);
    check_duration("0.5m", 0, 30000);
    check_duration("0s", 0, 0);
    check_duration("0", 0, 0);
    check_duration("0ms", 0, 0);
    check_duration("600s", 0, 600000);
    check_duration("", SY_EINVAL, 0);
    check_duration("-1s", SY_EINVAL, 0);
    check_duration("10", SY_EINVAL, 0);
    check_duration("5x", SY_EINVAL, 0);
    check_duration("1d", SY_EINVAL, 0);
    check_duration("100us", SY_EINVAL, 0);
    check_duration("1.s", SY_EINVAL, 0);
    check_duration(".5s", SY_EINVAL, 0);
    check_duration("s", SY_EINVAL, 0);
    check_duration(" 1s", SY_EINVAL, 0);
    check_duration("1s ", SY_EINVAL, 0);
    check_duration("1.5.5s", SY_EINVAL, 0);
    check_duration("1S", SY_EINVAL, 0);
    check_duration("99999999999999999999h", SY_ERANGE, 0);
    check_duration("9999999999999999h", SY_ERANGE, 0);
    CHECK(sy_parse_duration_ms(NULL, &(uint64_t){0}) == SY_EINVAL);
}

static void check_size(const char *s, int want_rc, uint64_t want)
{
    uint64_t v = 777;
    int rc = sy_parse_size(s, &v);

    CHECK(rc == want_rc);
    if (rc != want_rc)
        fprintf(stderr, "  size '%s': rc %d\n", s, rc);
    CHECK(v == (want_rc == 0 ? want : 777));
}

static void test_sizes(void)
{
    TEST_CASE("parse: sizes");
    check_size("512", 0, 512);
    check_size("0", 0, 0);
    check_size("64KiB", 0, 65536);
    check_size("1KiB", 0, 1024);
    check_size("1MiB", 0, 1048576);
    check_size("1GiB", 0, 1073741824ull);
    check_size("64KB", 0, 64000);
    check_size("64kb", 0, 64000);
    check_size("2MB", 0, 2000000);
    check_size("10B", 0, 10);
    check_size("", SY_EINVAL, 0);
    check_size("KiB", SY_EINVAL, 0);
    check_size("1.5MiB", SY_EINVAL, 0);
    check_size("-1", SY_EINVAL, 0);
    check_size("10 KiB", SY_EINVAL, 0);
    check_size("1TiB", SY_EINVAL, 0);
    check_size("99999999999999999999", SY_ERANGE, 0);
    check_size("99999999999GiB", SY_ERANGE, 0);
}

static void test_addresses(void)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;
    static const char *const bad[] = {
        "127.0.0.1",      "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",     "127.0.0.1:8x",
        "::1:80",         "[::1]80",    "[::1]",           "[::1]:",           ":80",
        "[127.0.0.1]:80", "",           "[]:80",           "127.0.0.1:123456", NULL};

    TEST_CASE("parse: addresses");
    CHECK(sy_parse_addr("127.0.0.1:8080", &ss, &len) == 0);
    CHECK(ss.ss_family == AF_INET && len == sizeof(struct sockaddr_in));
    CHECK(ntohs(v4->sin_port) == 8080 && ntohl(v4->sin_addr.s_addr) == 0x7f000001);
    CHECK(sy_parse_addr("0.0.0.0:0", &ss, &len) == 0);
    CHECK(ss.ss_family == AF_INET && ntohs(v4->sin_port) == 0);
    CHECK(sy_parse_addr("[::1]:8443", &ss, &len) == 0);
    CHECK(ss.ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6));
    CHECK(ntohs(v6->sin6_port) == 8443 && IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
    CHECK(sy_parse_addr("[::]:65535", &ss, &len) == 0 && ntohs(v6->sin6_port) == 65535);
    CHECK(sy_parse_addr("localhost:9001", &ss, &len) == 0);
    CHECK((ss.ss_family == AF_INET && ntohs(v4->sin_port) == 9001) ||
          (ss.ss_family == AF_INET6 && ntohs(v6->sin6_port) == 9001));
    for (size_t i = 0; bad[i]; i++) {
        memset(&ss, 0xab, sizeof(ss));
        len = 99;
        CHECK(sy_parse_addr(bad[i], &ss, &len) == SY_EINVAL);
        CHECK(len == 99); /* untouched */
        if (len != 99)
            fprintf(stderr, "  address '%s' accepted\n", bad[i]);
    }
    CHECK(sy_parse_addr(NULL, &ss, &len) == SY_EINVAL);
}

/* Does CIDR `cidr` contain the textual address `ip`? */
static bool contains(const char *cidr, const char *ip)
{
    int fam;
    uint8_t addr[16];
    unsigned prefix;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;

    if (sy_parse_cidr(cidr, &fam, addr, &prefix) != 0)
        return false;
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        return sy_cidr_contains(fam, addr, prefix, (const struct sockaddr *)&sin);
    }
    if (inet_pton(AF_INET6, ip, &sin6.sin6_addr) != 1)
        return false;
    sin6.sin6_family = AF_INET6;
    return sy_cidr_contains(fam, addr, prefix, (const struct sockaddr *)&sin6);
}

static void test_cidrs(void)
{
    int fam = 0;
    uint8_t addr[16];
    unsigned prefix = 0;
    static const char *const bad[] = {"10.0.0.0/33", "::/129",        "10.0.0.0/",   "abc",
                                      "/8",          "10.0.0.0/-1",   "10.0.0.0/8x", "",
                                      "10.0.0/8",    "10.0.0.0/0008", NULL};

    TEST_CASE("parse: CIDRs");
    CHECK(sy_parse_cidr("10.0.0.0/8", &fam, addr, &prefix) == 0);
    CHECK(fam == AF_INET && prefix == 8 && addr[0] == 10);
    CHECK(sy_parse_cidr("192.168.1.1", &fam, addr, &prefix) == 0);
    CHECK(fam == AF_INET && prefix == 32 && addr[3] == 1);
    CHECK(sy_parse_cidr("::/0", &fam, addr, &prefix) == 0);
    CHECK(fam == AF_INET6 && prefix == 0);
    CHECK(sy_parse_cidr("::1", &fam, addr, &prefix) == 0 && prefix == 128);
    CHECK(sy_parse_cidr("10.1.2.3/8", &fam, addr, &prefix) == 0);
    CHECK(addr[0] == 10 && addr[1] == 0 && addr[2] == 0 && addr[3] == 0); /* masked */
    for (size_t i = 0; bad[i]; i++) {
        prefix = 77;
        CHECK(sy_parse_cidr(bad[i], &fam, addr, &prefix) == SY_EINVAL && prefix == 77);
    }

    TEST_CASE("parse: CIDR contains");
    CHECK(contains("10.0.0.0/8", "10.1.2.3"));
    CHECK(contains("10.0.0.0/8", "10.255.255.255"));
    CHECK(!contains("10.0.0.0/8", "11.0.0.1"));
    CHECK(!contains("10.0.0.0/8", "9.255.255.255"));
    CHECK(contains("172.16.0.0/12", "172.31.255.255"));
    CHECK(!contains("172.16.0.0/12", "172.32.0.0"));
    CHECK(contains("192.168.1.1", "192.168.1.1"));
    CHECK(!contains("192.168.1.1", "192.168.1.2"));
    CHECK(contains("0.0.0.0/0", "203.0.113.9"));
    CHECK(contains("0.0.0.0/0", "::ffff:203.0.113.9")); /* v4-mapped on dual stack */
    CHECK(contains("10.0.0.0/8", "::ffff:10.9.9.9"));
    CHECK(!contains("10.0.0.0/8", "::ffff:11.9.9.9"));
    CHECK(!contains("0.0.0.0/0", "2001:db8::1"));
    CHECK(contains("::/0", "2001:db8::1"));
    CHECK(contains("::/0", "::1"));
    CHECK(!contains("::/0", "127.0.0.1"));
    CHECK(contains("2001:db8::/32", "2001:db8:ffff::1"));
    CHECK(!contains("2001:db8::/32", "2001:db9::1"));
    CHECK(contains("2001:db8::/33", "2001:db8:7fff::1"));
    CHECK(!contains("2001:db8::/33", "2001:db8:8000::1"));
    CHECK(contains("::1", "::1") && !contains("::1", "::2"));
    CHECK(!sy_cidr_contains(AF_INET, addr, 0, NULL));
}

static void check_grpc(const char *s, int want_rc, uint64_t want_ms)
{
    uint64_t ms = 777;
    int rc = sy_parse_grpc_timeout_ms(s, &ms);

    CHECK(rc == want_rc);
    if (rc != want_rc)
        fprintf(stderr, "  grpc-timeout '%s': rc %d\n", s, rc);
    CHECK(ms == (want_rc == 0 ? want_ms : 777));
}

static void test_grpc_timeout(void)
{
    TEST_CASE("parse: grpc-timeout");
    check_grpc("100m", 0, 100);
    check_grpc("5S", 0, 5000);
    check_grpc("1H", 0, 3600000);
    check_grpc("2M", 0, 120000);
    check_grpc("10u", 0, 1); /* sub-ms rounds up: never 0 = "none" */
    check_grpc("1000u", 0, 1);
    check_grpc("1001u", 0, 2);
    check_grpc("7n", 0, 1);
    check_grpc("2000000n", 0, 2);
    check_grpc("0m", 0, 0);
    check_grpc("0n", 0, 0);
    check_grpc("99999999H", 0, 99999999ull * 3600000);
    check_grpc("", SY_EINVAL, 0);
    check_grpc("m", SY_EINVAL, 0);
    check_grpc("123456789m", SY_EINVAL, 0); /* at most 8 digits */
    check_grpc("5s", SY_EINVAL, 0);
    check_grpc("5", SY_EINVAL, 0);
    check_grpc("5mm", SY_EINVAL, 0);
    check_grpc("-5m", SY_EINVAL, 0);
    check_grpc("5 m", SY_EINVAL, 0);
    check_grpc("1.5S", SY_EINVAL, 0);
}

static void test_strerror(void)
{
    TEST_CASE("errors: sy_strerror");
    CHECK_STR(sy_strerror(SY_OK), "success");
    CHECK_STR(sy_strerror(SY_ENOMEM), "out of memory");
    CHECK_STR(sy_strerror(SY_ETIMEDOUT), "timed out");
    CHECK_STR(sy_strerror(12345), "unknown error");
    for (int e = SY_ELIMIT; e < 0; e++)
        CHECK(strcmp(sy_strerror(e), sy_strerror(e + 1)) != 0);
}

static void test_formatting(void)
{
    TEST_CASE("formatting");
    char buf[64];
    size_t n = sy_u64_to_dec(buf, 0);
    buf[n] = '\0';
    CHECK_STR(buf, "0");
    n = sy_u64_to_dec(buf, 18446744073709551615ull);
    buf[n] = '\0';
    CHECK_STR(buf, "18446744073709551615");
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK(sy_parse_addr("10.0.255.7:80", &ss, &len) == 0);
    sy_sockaddr_ip(&ss, buf, sizeof buf);
    CHECK_STR(buf, "10.0.255.7");
    CHECK(sy_parse_addr("[2001:db8::1]:443", &ss, &len) == 0);
    sy_sockaddr_ip(&ss, buf, sizeof buf);
    CHECK_STR(buf, "2001:db8::1");
    ss.ss_family = AF_UNIX;
    sy_sockaddr_ip(&ss, buf, sizeof buf);
    CHECK_STR(buf, "");
}

static void test_decimal(void)
{
    TEST_CASE("parse: decimal (sy_parse_dec, sy_parse_dec_i64)");
    uint64_t v = 7;
    int64_t i = 7;
    CHECK(sy_parse_dec("0", 1, 10, &v) == 0 && v == 0);
    CHECK(sy_parse_dec("14", 2, 16, &v) == 0 && v == 14);
    CHECK(sy_parse_dec("17", 2, 16, &v) == SY_ERANGE && v == 14);
    CHECK(sy_parse_dec("", 0, 16, &v) == SY_EINVAL);
    CHECK(sy_parse_dec("1a", 2, 99, &v) == SY_EINVAL);
    CHECK(sy_parse_dec("+1", 2, 99, &v) == SY_EINVAL);
    CHECK(sy_parse_dec(" 1", 2, 99, &v) == SY_EINVAL);
    CHECK(sy_parse_dec("123", 2, 99, &v) == 0 && v == 12); /* length-bounded */
    CHECK(sy_parse_dec("18446744073709551615", 20, UINT64_MAX, &v) == 0 && v == UINT64_MAX);
    CHECK(sy_parse_dec("18446744073709551616", 20, UINT64_MAX, &v) == SY_ERANGE);
    CHECK(sy_parse_dec("99999999999999999999", 20, UINT64_MAX, &v) == SY_ERANGE);
    CHECK(sy_parse_dec("9", 1, 3, &v) == SY_ERANGE);
    CHECK(sy_parse_dec_i64("-9223372036854775808", 20, &i) == 0 && i == INT64_MIN);
    CHECK(sy_parse_dec_i64("9223372036854775807", 19, &i) == 0 && i == INT64_MAX);
    CHECK(sy_parse_dec_i64("9223372036854775808", 19, &i) == SY_ERANGE);
    CHECK(sy_parse_dec_i64("-", 1, &i) == SY_EINVAL);
    CHECK(sy_parse_dec_i64("-0", 2, &i) == 0 && i == 0);
}

void test_parse_suite(void)
{
    test_decimal();
    test_formatting();
    test_durations();
    test_sizes();
    test_addresses();
    test_cidrs();
    test_grpc_timeout();
    test_strerror();
}
