/*
 * parse.h — small value parsers shared by the config loader and the proxy.
 * Pure functions, no allocation unless stated. All return 0 on success and
 * SY_EINVAL (or SY_ERANGE) on failure, leaving outputs untouched.
 */
#ifndef SY_PARSE_H
#define SY_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

/*
 * "250ms", "30s", "5m", "2h", "1.5s", "0s", also "100us" / "1d"? No: units are
 * ms, s, m, h (and a bare "0"). Result in milliseconds.
 */
int sy_parse_duration_ms(const char *s, uint64_t *out_ms);

/* "64KiB", "1MiB", "1GiB", "512", "64KB"/"64kb" (= 1000s), "1KiB". Bytes. */
int sy_parse_size(const char *s, uint64_t *out);

/*
 * "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:80", "localhost:9001" (resolved
 * once with getaddrinfo, numeric port required). Port 0 is accepted (tests
 * ask the kernel for a free port elsewhere, not here).
 */
int sy_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/*
 * The parts of "host:port" / "[v6]:port" without resolving anything: the
 * host (brackets removed) into `host` (cap bytes with its NUL), the port
 * number, and whether the host is an IP literal. SY_EINVAL on bad syntax.
 */
int sy_split_addr(const char *s, char *host, size_t cap, uint16_t *port, bool *numeric);

/* Is `s` a syntactically valid DNS host name (labels of [A-Za-z0-9_-], 1..63 bytes, 253 in all)? */
bool sy_valid_dns_name(const char *s);

/* "10.0.0.0/8", "::/0", "192.168.1.1" (= /32). addr in network order. */
int sy_parse_cidr(const char *s, int *family, uint8_t addr[16], unsigned *prefix);

/* Does `sa` fall in the given cidr? */
bool sy_cidr_contains(int family, const uint8_t addr[16], unsigned prefix,
                      const struct sockaddr *sa);

/* Duration parsing for the testbed's headers and grpc-timeout:
 * grpc-timeout "100m" (ms), "5S", "1H", "10u", "7n", "2M" (minutes). */
int sy_parse_grpc_timeout_ms(const char *s, uint64_t *out_ms);

/*
 * The IP address of `ss` as text (no port) into `out` (NUL-terminated; cap
 * >= INET6_ADDRSTRLEN); "" for other families. IPv4 without printf.
 */
void sy_sockaddr_ip(const struct sockaddr_storage *ss, char *out, size_t cap);

/* A TCP peer's address, kept per connection: 28 bytes where a sockaddr_storage is 128. */
union sy_inet_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/*
 * The whole of s[0..len) as a base-10 unsigned integer no larger than `max`:
 * digits only (no sign, space or empty string). 0, SY_EINVAL (not all
 * digits, or empty) or SY_ERANGE (> max). The one decimal parser of the
 * proxy: header values (grpc-status, content-length, :status), config and
 * testbed values.
 */
int sy_parse_dec(const void *s, size_t len, uint64_t max, uint64_t *out);

/* As sy_parse_dec, with an optional leading '-': INT64_MIN..INT64_MAX. */
int sy_parse_dec_i64(const void *s, size_t len, int64_t *out);

/* Decimal digits of v into buf (no NUL, at most 20 bytes); returns the length. */
size_t sy_u64_to_dec(char *buf, uint64_t v);

#endif
