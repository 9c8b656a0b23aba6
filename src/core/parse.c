/*
 * parse.c — value parsers for durations, sizes, addresses, CIDRs and gRPC
 * timeouts. See parse.h for the accepted grammar. All functions are pure
 * (sy_parse_addr may consult the resolver) and leave outputs untouched on
 * failure.
 */
#include "core/parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

/* Longest host part accepted by sy_parse_addr (a DNS name is <= 253). */
#define SY_ADDR_HOST_MAX 256

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Reads a run of decimal digits at *s into *out, advancing *s.
 * Returns 0, SY_EINVAL when there is no digit, SY_ERANGE on overflow.
 */
static int read_u64(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;

    if (!is_digit(*p))
        return SY_EINVAL;
    for (; is_digit(*p); p++) {
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
            return SY_ERANGE;
    }
    *s = p;
    *out = v;
    return 0;
}

int sy_parse_dec(const void *s, size_t len, uint64_t max, uint64_t *out)
{
    const unsigned char *p = s;
    uint64_t v = 0;

    if (len == 0)
        return SY_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((char)p[i]))
            return SY_EINVAL;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (max - d) / 10 || v * 10 + d > max)
            return SY_ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int sy_parse_dec_i64(const void *s, size_t len, int64_t *out)
{
    const char *p = s;
    bool neg = len > 0 && p[0] == '-';
    uint64_t v;
    int rc =
        sy_parse_dec(p + neg, len - neg, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v);
    if (rc != 0)
        return rc;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* Milliseconds per duration unit; 0 when the unit is unknown. */
static uint64_t duration_unit_ms(const char *unit)
{
    if (strcmp(unit, "ms") == 0)
        return 1;
    if (strcmp(unit, "s") == 0)
        return 1000;
    if (strcmp(unit, "m") == 0)
        return 60 * 1000;
    if (strcmp(unit, "h") == 0)
        return 3600 * 1000;
    return 0;
}

/*
 * Accepts DIGITS [ "." DIGITS ] UNIT with UNIT one of ms, s, m, h, or a bare
 * "0". Fractions below one millisecond are truncated ("1.2345s" = 1234 ms).
 * Returns 0, SY_EINVAL (syntax, sign, unknown unit) or SY_ERANGE (overflow).
 */
int sy_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    uint64_t whole, frac = 0, scale = 1, unit, ms;
    int rc;

    if (!s)
        return SY_EINVAL;
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    if ((rc = read_u64(&p, &whole)) != 0)
        return rc;
    if (*p == '.') {
        p++;
        if (!is_digit(*p))
            return SY_EINVAL;
        /* Keep at most 9 fractional digits; the rest cannot matter. */
        for (; is_digit(*p); p++) {
            if (scale < 1000000000ULL) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
        }
    }
    unit = duration_unit_ms(p);
    if (unit == 0)
        return SY_EINVAL;
    if (__builtin_mul_overflow(whole, unit, &ms) ||
        __builtin_add_overflow(ms, frac * unit / scale, &ms))
        return SY_ERANGE;
    *out_ms = ms;
    return 0;
}

/* Bytes per size suffix (case-insensitive); 0 when unknown. */
static uint64_t size_unit(const char *unit)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"kb", 1000ULL},
        {"mb", 1000ULL * 1000},
        {"gb", 1000ULL * 1000 * 1000},
        {"kib", 1024ULL},
        {"mib", 1024ULL * 1024},
        {"gib", 1024ULL * 1024 * 1024},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(unit, units[i].name) == 0)
            return units[i].mult;
    }
    return 0;
}

/*
 * Accepts DIGITS [UNIT] with UNIT one of B, KB, MB, GB (powers of 1000) or
 * KiB, MiB, GiB (powers of 1024), case-insensitive.
 * Returns 0, SY_EINVAL or SY_ERANGE.
 */
int sy_parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v, mult;
    int rc;

    if (!s)
        return SY_EINVAL;
    if ((rc = read_u64(&p, &v)) != 0)
        return rc;
    mult = size_unit(p);
    if (mult == 0)
        return SY_EINVAL;
    if (__builtin_mul_overflow(v, mult, &v))
        return SY_ERANGE;
    *out = v;
    return 0;
}

/* Parses a numeric port 0..65535 (all digits, no sign). */
static int parse_port(const char *s, unsigned *port)
{
    const char *p = s;
    uint64_t v;

    if (read_u64(&p, &v) != 0 || *p != '\0' || p - s > 5 || v > 65535)
        return SY_EINVAL;
    *port = (unsigned)v;
    return 0;
}

/*
 * Splits "host:port" or "[v6]:port" into host (copied to `host`, at most
 * SY_ADDR_HOST_MAX bytes) and the port string. Sets *bracketed for [v6].
 */
static int split_host_port(const char *s, char *host, const char **port, bool *bracketed)
{
    const char *colon, *hend;
    size_t hlen;

    if (s[0] == '[') {
        hend = strchr(s, ']');
        if (!hend || hend[1] != ':')
            return SY_EINVAL;
        s++;
        colon = hend + 1;
        *bracketed = true;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return SY_EINVAL; /* no port, or an unbracketed IPv6 literal */
        hend = colon;
        *bracketed = false;
    }
    hlen = (size_t)(hend - s);
    if (hlen == 0 || hlen >= SY_ADDR_HOST_MAX)
        return SY_EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    *port = colon + 1;
    return 0;
}

/*
 * Resolves "host:port" / "[v6]:port" once with getaddrinfo (numeric port
 * required, first result wins). Returns 0 or SY_EINVAL (syntax, bad port,
 * resolution failure).
 */
int sy_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[SY_ADDR_HOST_MAX];
    const char *port;
    bool bracketed;
    unsigned portnum;
    struct addrinfo hints, *res = NULL;

    if (!s || split_host_port(s, host, &port, &bracketed) != 0)
        return SY_EINVAL;
    if (parse_port(port, &portnum) != 0)
        return SY_EINVAL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (bracketed ? AI_NUMERICHOST : 0);
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return SY_EINVAL;
    if (res->ai_addrlen > sizeof(*ss)) {
        freeaddrinfo(res);
        return SY_EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int sy_split_addr(const char *s, char *host, size_t cap, uint16_t *port, bool *numeric)
{
    char h[SY_ADDR_HOST_MAX];
    const char *pstr;
    bool bracketed;
    unsigned portnum;
    unsigned char bin[sizeof(struct in6_addr)];

    if (!s || split_host_port(s, h, &pstr, &bracketed) != 0 || parse_port(pstr, &portnum) != 0)
        return SY_EINVAL;
    bool v6 = inet_pton(AF_INET6, h, bin) == 1;
    if (bracketed != v6)
        return SY_EINVAL; /* "[name]:80" or an unbracketed v6 literal */
    size_t len = strlen(h);
    if (len >= cap)
        return SY_EINVAL;
    memcpy(host, h, len + 1);
    *port = (uint16_t)portnum;
    *numeric = v6 || inet_pton(AF_INET, h, bin) == 1;
    return 0;
}

bool sy_valid_dns_name(const char *s)
{
    size_t total = strlen(s), label = 0;
    if (total == 0 || total > 253)
        return false;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0)
                return false; /* an empty label ("a..b", ".a"); "a." (the root) is fine */
            label = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-' || c == '_') || ++label > 63)
            return false;
    }
    return true;
}

/* Clears the bits of `addr` past `prefix`. */
static void mask_addr(uint8_t addr[16], unsigned prefix, unsigned bits)
{
    for (unsigned i = 0; i < bits / 8; i++) {
        unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;
        if (keep >= 8)
            continue;
        addr[i] &= (uint8_t)(0xff00u >> keep);
    }
}

/*
 * Accepts "ADDR/PREFIX" or a bare ADDR (full-length prefix). Host bits past
 * the prefix are cleared. IPv4 uses addr[0..3]; the rest is zeroed.
 * Returns 0 or SY_EINVAL.
 */
int sy_parse_cidr(const char *s, int *family, uint8_t addr[16], unsigned *prefix)
{
    char buf[INET6_ADDRSTRLEN + 1];
    const char *slash;
    uint8_t a[16];
    unsigned bits, pfx;
    int fam;
    size_t n;

    if (!s)
        return SY_EINVAL;
    slash = strchr(s, '/');
    n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(buf))
        return SY_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(a, 0, sizeof(a));
    if (inet_pton(AF_INET, buf, a) == 1) {
        fam = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, buf, a) == 1) {
        fam = AF_INET6;
        bits = 128;
    } else {
        return SY_EINVAL;
    }
    pfx = bits;
    if (slash) {
        const char *p = slash + 1;
        uint64_t v;
        if (read_u64(&p, &v) != 0 || *p != '\0' || p - (slash + 1) > 3 || v > bits)
            return SY_EINVAL;
        pfx = (unsigned)v;
    }
    mask_addr(a, pfx, bits);
    *family = fam;
    memcpy(addr, a, 16);
    *prefix = pfx;
    return 0;
}

/* Compares the first `prefix` bits of a and b. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (a[whole] & mask) == (b[whole] & mask);
}

/*
 * True when `sa` (AF_INET or AF_INET6) lies inside the CIDR. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d, as seen on dual-stack sockets) also matches
 * IPv4 CIDRs.
 */
bool sy_cidr_contains(int family, const uint8_t addr[16], unsigned prefix,
                      const struct sockaddr *sa)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const uint8_t *ip;

    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        if (family != AF_INET)
            return false;
        ip = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
        return prefix_equal(ip, addr, prefix);
    }
    if (sa->sa_family != AF_INET6)
        return false;
    ip = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (family == AF_INET6)
        return prefix_equal(ip, addr, prefix);
    if (family == AF_INET && memcmp(ip, v4mapped, 12) == 0)
        return prefix_equal(ip + 12, addr, prefix);
    return false;
}

/*
 * gRPC "grpc-timeout": 1..8 digits then one unit: H hours, M minutes,
 * S seconds, m milliseconds, u microseconds, n nanoseconds. Sub-millisecond
 * values round up so that a non-zero timeout never becomes 0 ("none").
 * Returns 0 or SY_EINVAL.
 */
int sy_parse_grpc_timeout_ms(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    uint64_t v;

    if (!s || read_u64(&p, &v) != 0 || p - s > 8 || p[0] == '\0' || p[1] != '\0')
        return SY_EINVAL;
    switch (*p) {
    case 'H': v *= 3600ULL * 1000; break;
    case 'M': v *= 60ULL * 1000; break;
    case 'S': v *= 1000; break;
    case 'm': break;
    case 'u': v = (v + 999) / 1000; break;
    case 'n': v = (v + 999999) / 1000000; break;
    default: return SY_EINVAL;
    }
    *out_ms = v;
    return 0;
}

size_t sy_u64_to_dec(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

void sy_sockaddr_ip(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    out[0] = '\0';
    if (ss->ss_family == AF_INET && cap >= 16) {
        const uint8_t *b = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
        char *p = out;
        for (int i = 0; i < 4; i++) {
            unsigned v = b[i];
            if (v >= 100) {
                *p++ = (char)('0' + v / 100);
                v %= 100;
                *p++ = (char)('0' + v / 10);
            } else if (v >= 10) {
                *p++ = (char)('0' + v / 10);
            }
            *p++ = (char)('0' + v % 10);
            *p++ = i < 3 ? '.' : '\0';
        }
    } else if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)cap);
    }
}
