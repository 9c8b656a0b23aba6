/*
 * Unit tests for src/http: head checks, header lists, hop-by-hop stripping,
 * request-target / authority / request-line syntax, Transfer-Encoding and
 * the strict chunked-body validator.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "core/errors.h"
#include "core/mem_cache.h"
#include "core/strlit.h"
#include "http/h1.h"
#include "http/headers.h"
#include "test.h"

static int check(const char *head)
{
    return h1_head_check(head, strlen(head));
}

static void test_head_check(void)
{
    TEST_CASE("h1_head_check");
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n") == 0);
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n") == 0);
    CHECK(check("GET / HTTP/1.1\nHost: a\r\n\r\n") == SY_EPROTO);         /* bare LF */
    CHECK(check("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n") == SY_EPROTO); /* bare LF in fields */
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n") == SY_EPROTO); /* obs-fold */
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n") == SY_EPROTO);
    CHECK(check("GET / HTTP/1.1\r\nHost : a\r\n\r\n") == SY_EPROTO); /* space before colon */
    CHECK(check("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n") == SY_EPROTO);
    CHECK(check("GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n") == SY_EPROTO); /* lone CR */
    CHECK(check("GET / HTTP/1.1\r\nNoColon\r\n\r\n") == SY_EPROTO);
    CHECK(check("GET / HTTP/1.1\r\n: empty-name\r\n\r\n") == SY_EPROTO);
    CHECK(check("GET / HTTP/1.1\r\nX(y): a\r\n\r\n") == SY_EPROTO); /* not a token */
    CHECK(check("\r\nGET / HTTP/1.1\r\n\r\n") == SY_EPROTO);
    CHECK(check("GET / HTTP/1.1\r\nHost: a\r\n") == SY_EPROTO); /* incomplete */
    CHECK(check("GET / HTTP/1.1\r\nX: \x7f\r\n\r\n") == SY_EPROTO);
    const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    CHECK(h1_head_check(nul, sizeof nul - 1) == SY_EPROTO);
}

static void test_head_length(void)
{
    TEST_CASE("h1_head_length");
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "GET / HTTP/1.1\r\nHost: a\r\n");
    CHECK(h1_head_length(b, 1024) == 0);
    evbuffer_add_printf(b, "\r\nbody");
    CHECK(h1_head_length(b, 1024) == 27);
    CHECK(h1_head_length(b, 20) == SY_ELIMIT);
    evbuffer_drain(b, evbuffer_get_length(b));
    for (int i = 0; i < 100; i++)
        evbuffer_add_printf(b, "X-Long-%d: aaaaaaaaaaaaaaaaaaaa\r\n", i);
    CHECK(h1_head_length(b, 1024) == SY_ELIMIT);
    evbuffer_drain(b, evbuffer_get_length(b));
    /* A head split over chains, its end across the boundary. */
    static const char *const parts[] = {"GET / HTTP/1.1\r\nHost: a\r\n\r", "\nbody"};
    for (int i = 0; i < 2; i++)
        evbuffer_add_reference(b, parts[i], strlen(parts[i]), NULL, NULL);
    CHECK(h1_head_length(b, 1024) == 27);
    CHECK(h1_head_length(b, 26) == SY_ELIMIT);
    evbuffer_drain(b, evbuffer_get_length(b));
    /* Bare LFs end a head too (h1_head_check refuses it), whichever ends first. */
    evbuffer_add_printf(b, "GET / HTTP/1.1\nHost: a\n\nx\r\n\r\n");
    CHECK(h1_head_length(b, 1024) == 24);
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "GET / HTTP/1.1\r\n\r\n\n\n");
    CHECK(h1_head_length(b, 1024) == 18);
    evbuffer_drain(b, evbuffer_get_length(b));
    evbuffer_add_printf(b, "GET / HTTP/1.1\nA: b\n\r\n");
    CHECK(h1_head_length(b, 1024) == 0);
    evbuffer_free(b);
}

static void test_header_list(void)
{
    TEST_CASE("http_headers");
    struct arena a;
    arena_init(&a, 1 << 20);
    struct http_headers h;
    CHECK(http_headers_init(&h, &a, 2) == 0);
    CHECK(http_headers_add(&h, &a, "a", 1, "1", 1) == 0);
    CHECK(http_headers_add(&h, &a, "b", 1, "2", 1) == 0);
    CHECK(http_headers_add(&h, &a, "a", 1, "3", 1) == 0); /* grows past cap */
    CHECK(h.n == 3);
    CHECK(http_headers_count(&h, "a", 1) == 2);
    const struct http_header *f = http_headers_get(&h, "b", 1);
    CHECK(f && f->value_len == 1 && f->value[0] == '2');
    CHECK(http_headers_remove(&h, "a", 1) == 2);
    CHECK(h.n == 1 && http_headers_get(&h, "a", 1) == NULL);
    CHECK(http_headers_add_copy(&h, &a, "c", 1, "xyz", 3) == 0);
    CHECK(http_headers_get(&h, "c", 1) != NULL);
    arena_free(&a);
}

static void test_hop_by_hop(void)
{
    TEST_CASE("hop-by-hop");
    struct arena a;
    arena_init(&a, 1 << 20);
    struct http_headers h;
    http_headers_init(&h, &a, 4);
    static const char *const fields[][2] = {
        {"connection", "close, X-Custom"},
        {"x-custom", "1"},
        {"keep-alive", "timeout=5"},
        {"proxy-connection", "keep-alive"},
        {"te", "trailers, gzip"},
        {"transfer-encoding", "chunked"},
        {"upgrade", "websocket"},
        {"http2-settings", "AAA"},
        {"x-keep", "yes"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        http_headers_add(&h, &a, fields[i][0], strlen(fields[i][0]), fields[i][1],
                         strlen(fields[i][1]));
    http_headers_strip_hop_by_hop(&h, false);
    CHECK(h.n == 1);
    CHECK(http_headers_get(&h, "x-keep", 6) != NULL);

    http_headers_init(&h, &a, 4);
    http_headers_add(&h, &a, "te", 2, "trailers", 8);
    http_headers_strip_hop_by_hop(&h, true);
    CHECK(h.n == 1 && http_headers_get(&h, "te", 2) != NULL);

    /* Several Connection fields, mixed case; Host, Content-Length and TE
     * cannot be dropped by naming them; "te: trailers" keeps its place. */
    http_headers_init(&h, &a, 4);
    http_headers_add(&h, &a, "x-a", 3, "1", 1);
    http_headers_add(&h, &a, "connection", 10, "X-A, host", 9);
    http_headers_add(&h, &a, "host", 4, "h", 1);
    http_headers_add(&h, &a, "te", 2, "trailers", 8);
    http_headers_add(&h, &a, "content-length", 14, "3", 1);
    http_headers_add(&h, &a, "connection", 10, " ,content-length,,x-b ,te", 25);
    http_headers_add(&h, &a, "x-b", 3, "2", 1);
    http_headers_add(&h, &a, "x-c", 3, "3", 1);
    http_headers_strip_hop_by_hop(&h, true);
    CHECK(h.n == 4);
    CHECK(h.n == 4 && h.v[0].name_len == 4 && h.v[1].name_len == 2 && h.v[2].name_len == 14 &&
          h.v[3].name_len == 3 && h.v[3].name[2] == 'c');

    /* A huge Connection value: linear, and the framing fields still go. */
    static char big[64 * 1024];
    size_t n = 0;
    for (unsigned k = 0; n + 4 < sizeof big; k++) { /* "aa,ba,ca,...": 676 distinct names */
        big[n] = (char)('a' + k % 26);
        big[n + 1] = (char)('a' + (k / 26) % 26);
        big[n + 2] = ',';
        n += 3;
    }
    http_headers_init(&h, &a, 4);
    http_headers_add(&h, &a, "connection", 10, big, n);
    http_headers_add(&h, &a, "upgrade", 7, "websocket", 9);
    http_headers_add(&h, &a, "aa", 2, "1", 1);
    http_headers_add(&h, &a, "x-keep", 6, "1", 1);
    http_headers_strip_hop_by_hop(&h, false);
    CHECK(http_headers_get(&h, "upgrade", 7) == NULL &&
          http_headers_get(&h, "connection", 10) == NULL);
    CHECK(http_headers_get(&h, "x-keep", 6) != NULL);
    arena_free(&a);
}

static void test_tokens(void)
{
    TEST_CASE("tokens");
    CHECK(http_list_has_token("close", 5, "close"));
    CHECK(http_list_has_token("keep-alive, Close", 17, "close"));
    CHECK(!http_list_has_token("closed", 6, "close"));
    CHECK(!http_list_has_token("", 0, "close"));
    CHECK(http_is_token("x-foo", 5));
    CHECK(!http_is_token("x foo", 5));
    CHECK(!http_is_token("", 0));
    CHECK(http_is_field_value("a\tb c", 5));
    CHECK(!http_is_field_value("a\nb", 3));
    CHECK(strcmp(http_reason(504), "Gateway Timeout") == 0);
    CHECK(strcmp(http_reason(599), "Unknown") == 0);
}

/* Request-target syntax (RFC 9112 3.2, RFC 3986): h1 request lines and h2 :path. */
static void test_target(void)
{
    TEST_CASE("http_target_is_valid");
    static const struct {
        const char *t;
        bool ok;
    } table[] = {
        {"/", true},
        {"/a/b?c=d&e=f", true},
        {"/a;p=1/b:c@d!$&'()*+,=-._~", true},
        {"/?q=/a?b", true},
        {"/a%2Fb%2e%C3%A9", true},
        {"*", true},
        {"http://h.test/p?q=1", true},
        {"HTTPS://h.test:8443", true},
        {"http://h.test?q", true},
        {"http://[::1]:80/x", true},
        {"http://10.0.0.1/x", true},
        {"", false},
        {"a", false},
        {"/a b", false},
        {"/a\tb", false},
        {"/a\fb", false},
        {"/a\vb", false},
        {"/a\x7f", false},
        {"/a\x80", false},
        {"/a\xff", false},
        {"/a#frag", false},
        {"/a\"b", false},
        {"/a<b>", false},
        {"/a\\b", false},
        {"/a^b", false},
        {"/a`b", false},
        {"/a{b}", false},
        {"/a|b", false},
        {"/a[b]", false},
        {"/%", false},
        {"/%4", false},
        {"/%zz", false},
        {"/%4g", false},
        {"**", false},
        {"h.test:80", false}, /* authority-form */
        {"http://user@h.test/p", false},
        {"http://u:pw@h.test/p", false},
        {"http:///p", false},
        {"http://h.test:abc/", false},
        {"ftp://h.test/", false},
        {"http:/h.test/", false},
        {"http://h.test/a b", false},
        {"http://h.test/#x", false},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        bool ok = http_target_is_valid(table[i].t, strlen(table[i].t));
        if (ok != table[i].ok)
            fprintf(stderr, "target \"%s\": %d\n", table[i].t, ok);
        CHECK(ok == table[i].ok);
    }
    const char nul[] = "/a\0b";
    CHECK(!http_target_is_valid(nul, sizeof nul - 1));
    CHECK(!http_path_is_valid(SY_STRLIT("*")));
    CHECK(!http_path_is_valid(SY_STRLIT("http://h/")));
    CHECK(http_path_is_valid(SY_STRLIT("/x?y")));

    struct http_absolute_target t;
    const char *u = "http://h.test:81/a/b?c";
    CHECK(http_absolute_target_parse(u, strlen(u), &t) == 0);
    CHECK(t.authority_len == 9 && memcmp(t.authority, "h.test:81", 9) == 0);
    CHECK(t.rest_len == 6 && memcmp(t.rest, "/a/b?c", 6) == 0);
    u = "http://h.test?c";
    CHECK(http_absolute_target_parse(u, strlen(u), &t) == 0);
    CHECK(t.authority_len == 6 && t.rest_len == 2 && t.rest[0] == '?');
    u = "http://h.test";
    CHECK(http_absolute_target_parse(u, strlen(u), &t) == 0 && t.rest_len == 0);
    u = "http://a@h.test/";
    CHECK(http_absolute_target_parse(u, strlen(u), &t) == SY_EPROTO);
}

/* uri-host [ ":" port ]: Host and :authority. */
static void test_authority(void)
{
    TEST_CASE("http_authority_is_valid");
    static const struct {
        const char *a;
        bool ok;
    } table[] = {
        {"h.test", true},
        {"H.Test:8080", true},
        {"h.test:0", true},
        {"h.test:65535", true},
        {"127.0.0.1", true},
        {"127.0.0.1:80", true},
        {"[::1]", true},
        {"[2001:db8::1]:443", true},
        {"[::ffff:1.2.3.4]", true},
        {"xn--bcher-kva.test", true},
        {"a_b-c~d.e!$&'()*+;=", true},
        {"h%41.test", true},
        {"", false},
        {":80", false},
        {"h.test:", false},
        {"h.test:abc", false},
        {"h.test:65536", false},
        {"h.test:123456", false},
        {"h.test:-1", false},
        {"h.test:+80", false},
        {"h.test:80:80", false},
        {"h.test/evil", false},
        {"h.test?x", false},
        {"h.test#x", false},
        {"u@h.test", false},
        {"a b", false},
        {"a.test,b.test", false},
        {"h.test\t", false},
        {"h\xc3\xa9.test", false},
        {"h%4.test", false},
        {"[::1", false},
        {"::1", false},
        {"[::1]x", false},
        {"[::1]:", false},
        {"[fe80::1%25eth0]", false},
        {"[g::1]", false},
        {"[1.2.3.4]", false},
        {"[]", false},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        bool ok = http_authority_is_valid(table[i].a, strlen(table[i].a));
        if (ok != table[i].ok)
            fprintf(stderr, "authority \"%s\": %d\n", table[i].a, ok);
        CHECK(ok == table[i].ok);
    }
}

static int line(const char *head, struct h1_request_line *rl)
{
    return h1_request_line_parse(head, strlen(head), rl);
}

static void test_request_line(void)
{
    TEST_CASE("h1_request_line_parse");
    struct h1_request_line rl;
    CHECK(line("GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n", &rl) == 0);
    CHECK(rl.method_len == 3 && memcmp(rl.method, "GET", 3) == 0);
    CHECK(rl.target_len == 4 && memcmp(rl.target, "/a?b", 4) == 0);
    CHECK(rl.major == 1 && rl.minor == 1);
    CHECK(line("OPTIONS * HTTP/1.0\r\n\r\n", &rl) == 0 && rl.minor == 0);
    CHECK(line("GET /a\tb HTTP/1.1\r\n\r\n", &rl) == 0); /* the target's bytes are checked apart */
    CHECK(line("GET  /a HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a  HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a HTTP/1.1 \r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line(" GET /a HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a b HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET\t/a HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a\r\n\r\n", &rl) == SY_EPROTO); /* HTTP/0.9 */
    CHECK(line("GET /a http/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a HTTP/1.10\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("GET /a HTTP/1.1", &rl) == SY_EPROTO);
    CHECK(line("GET /a HTTP/1.1\r", &rl) == SY_EPROTO);
    CHECK(line("G@T /a HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(line("\r\nGET /a HTTP/1.1\r\n\r\n", &rl) == SY_EPROTO);
    CHECK(h1_head_fields(SY_STRLIT("GET / HTTP/1.1\r\n\r\n")) == 0);
    CHECK(h1_head_fields(SY_STRLIT("GET / HTTP/1.1\r\nHost: h\r\na:b\r\n\r\n")) == 2);
}

static void test_transfer_encoding(void)
{
    TEST_CASE("h1_transfer_encoding_parse");
    static const struct {
        const char *v;
        enum h1_te te;
    } table[] = {
        {"chunked", H1_TE_CHUNKED},
        {"Chunked", H1_TE_CHUNKED},
        {"CHUNKED", H1_TE_CHUNKED},
        {" chunked\t", H1_TE_CHUNKED},
        {"gzip, chunked", H1_TE_UNKNOWN},
        {"identity, chunked", H1_TE_UNKNOWN},
        {"x,chunked", H1_TE_UNKNOWN},
        {"chunked, chunked", H1_TE_MALFORMED},
        {"chunked, gzip", H1_TE_MALFORMED},
        {"gzip", H1_TE_MALFORMED},
        {"identity", H1_TE_MALFORMED},
        {"xchunked", H1_TE_MALFORMED},
        {"\"chunked\"", H1_TE_MALFORMED},
        {"chunked;q=1", H1_TE_MALFORMED},
        {"", H1_TE_MALFORMED},
        {",chunked", H1_TE_MALFORMED},
        {"chunked,", H1_TE_MALFORMED},
        {"gzip,,chunked", H1_TE_MALFORMED},
        {"\x0b"
         "chunked",
         H1_TE_MALFORMED},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        enum h1_te te = h1_transfer_encoding_parse(table[i].v, strlen(table[i].v));
        if (te != table[i].te)
            fprintf(stderr, "transfer-encoding \"%s\": %d\n", table[i].v, (int)te);
        CHECK(te == table[i].te);
    }
}

/* Run the validator over `body` at once and byte by byte; both must agree. */
static ssize_t chunked_run(const char *body, size_t len, uint32_t max_fields, bool *done)
{
    struct h1_chunked a, b;
    h1_chunked_init(&a, max_fields, 1024);
    h1_chunked_init(&b, max_fields, 1024);
    ssize_t whole = h1_chunked_check(&a, body, len);
    ssize_t taken = 0;
    for (size_t i = 0; i < len && !h1_chunked_done(&b); i++) {
        ssize_t r = h1_chunked_check(&b, body + i, 1);
        if (r < 0) {
            taken = r;
            break;
        }
        taken += r;
    }
    CHECK(whole == taken);
    CHECK(h1_chunked_done(&a) == h1_chunked_done(&b));
    *done = h1_chunked_done(&a);
    return whole;
}

static void test_chunked(void)
{
    TEST_CASE("h1_chunked_check");
    enum { PART = -100 }; /* valid so far, not complete */
    static const struct {
        const char *body;
        ssize_t want; /* bytes of body when complete, PART, or an error */
    } table[] = {
        {"3\r\nabc\r\n0\r\n\r\n", 13},
        {"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 13}, /* the next request is not taken */
        {"A\r\n0123456789\r\n0\r\n\r\n", 20},
        {"a\r\n0123456789\r\n0\r\n\r\n", 20},
        {"00000000000000003\r\nabc\r\n0\r\n\r\n", 29},
        {"3;a=b;c=\"d e\"\r\nabc\r\n0;z\r\n\r\n", 27},
        {"3 ;a\r\nabc\r\n0\r\n\r\n", 16},
        {"3; a = b\t;c\r\nabc\r\n0\r\n\r\n", 23},
        {"3;a=\"x\\\"y\"\r\nabc\r\n0\r\n\r\n", 22},
        {"3;a=\"\xc3\xa9\"\r\nabc\r\n0\r\n\r\n", 20},
        {"3\r\nabc\r\n0\r\nX-T: 1\r\nY:\r\n\r\n", 25},
        {"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n", 33},
        {"3\r\nabc\r\n", PART},
        {"3\r\nab", PART},
        {"", PART},
        {"3\r\nabc\r\n0\r\n", PART},
        /* chunk-size */
        {" 3\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"0x3\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"-3\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"+3\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"zz\r\nhello\r\n0\r\n\r\n", SY_EPROTO},
        {"10000000000000003\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"1000000000000000\r\n", SY_EPROTO}, /* 2^60 */
        {"3\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3 \r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3 garbage\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3\rabc\r\n0\r\n\r\n", SY_EPROTO},
        /* chunk-ext */
        {"3;x\nyy\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;;a\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a=\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a \r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a=b c\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a=\"x\r\n\"\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a=\"x\"y\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a(b\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        {"3;a=b\x7f\r\nabc\r\n0\r\n\r\n", SY_EPROTO},
        /* the CRLF after data */
        {"3\r\nabcXX0\r\n\r\n", SY_EPROTO},
        {"3\r\nabc;;1d\r\n", SY_EPROTO},
        {"3\r\nabc\n0\r\n\r\n", SY_EPROTO},
        {"3\r\nabc\r0\r\n\r\n", SY_EPROTO},
        {"3\r\nabcd\r\n0\r\n\r\n", SY_EPROTO},
        /* last chunk and trailers */
        {"3\r\nabc\r\n0\n\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\n\n", SY_EPROTO},
        {"3\r\nabc\r\nGET /smuggled HTTP/1.1\r\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\nGET /smuggled HTTP/1.1\r\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\nX : 1\r\n\r\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\nX: 1\r\n folded\r\n\r\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\nX: a\nY: b\r\n\r\n", SY_EPROTO},
        {"3\r\nabc\r\n0\r\n: a\r\n\r\n", SY_EPROTO},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *b = table[i].body;
        size_t len = strlen(b);
        bool done;
        ssize_t got = chunked_run(b, len, 10, &done);
        ssize_t want = table[i].want;
        bool ok =
            want == PART ? (got == (ssize_t)len && !done) : (got == want && (want < 0 || done));
        if (!ok)
            fprintf(stderr, "chunked \"%s\": got %zd done %d\n", b, got, done);
        CHECK(ok);
    }
    /* Embedded NULs, with their lengths. */
    bool done;
    static const char nul_ext[] = "3;a\0\r\nabc\r\n0\r\n\r\n";
    static const char nul_data[] = "3\r\na\0c\r\n0\r\n\r\n";
    static const char nul_quoted[] = "3;a=\"x\0\"\r\nabc\r\n0\r\n\r\n";
    static const char nul_trailer[] = "3\r\nabc\r\n0\r\nX: a\0b\r\n\r\n";
    CHECK(chunked_run(nul_ext, sizeof nul_ext - 1, 10, &done) == SY_EPROTO);
    CHECK(chunked_run(nul_data, sizeof nul_data - 1, 10, &done) == 13 && done); /* data is data */
    CHECK(chunked_run(nul_quoted, sizeof nul_quoted - 1, 10, &done) == SY_EPROTO);
    CHECK(chunked_run(nul_trailer, sizeof nul_trailer - 1, 10, &done) == SY_EPROTO);

    /* Caps: trailer fields, trailer bytes, the size line. */
    const char *tr = "1\r\na\r\n0\r\nA: 1\r\nB: 2\r\n\r\n";
    CHECK(chunked_run(tr, strlen(tr), 2, &done) == (ssize_t)strlen(tr) && done);
    CHECK(chunked_run(tr, strlen(tr), 1, &done) == SY_ELIMIT);
    CHECK(chunked_run(tr, strlen(tr), 0, &done) == SY_ELIMIT);
    struct h1_chunked ck;
    h1_chunked_init(&ck, 100, 10);
    CHECK(h1_chunked_check(&ck, SY_STRLIT("1\r\na\r\n0\r\nA: 12345\r\n\r\n")) == SY_ELIMIT);
    CHECK(h1_chunked_check(&ck, SY_STRLIT("\r\n")) == SY_EPROTO); /* stays failed */
    h1_chunked_init(&ck, 100, 8);
    CHECK(h1_chunked_check(&ck, SY_STRLIT("1\r\na\r\n0\r\nA: 1\r\n\r\n")) ==
          17);                                         /* 8 bytes: at the cap */
    CHECK(h1_chunked_check(&ck, SY_STRLIT("x")) == 0); /* done: nothing more is taken */
    static char longline[H1_CHUNK_LINE_MAX + 16];
    memset(longline, 'a', sizeof longline);
    memcpy(longline, "1;", 2);
    h1_chunked_init(&ck, 100, 100);
    CHECK(h1_chunked_check(&ck, longline, H1_CHUNK_LINE_MAX - 2) == H1_CHUNK_LINE_MAX - 2);
    CHECK(h1_chunked_check(&ck, longline + 2, 16) == SY_EPROTO);
    /* A large chunk fed in pieces: the data is skipped, not inspected. */
    h1_chunked_init(&ck, 100, 100);
    CHECK(h1_chunked_check(&ck, SY_STRLIT("fffff\r\n")) == 7);
    static char data[0xfffff];
    CHECK(h1_chunked_check(&ck, data, sizeof data) == (ssize_t)sizeof data);
    CHECK(h1_chunked_check(&ck, SY_STRLIT("\r\n0\r\n\r\n")) == 7 && h1_chunked_done(&ck));
}

static void test_arena(void)
{
    TEST_CASE("arena");
    struct arena a;
    arena_init(&a, 10000);
    char *p = arena_alloc(&a, 5000);
    CHECK(p != NULL);
    CHECK(arena_alloc(&a, 4000) != NULL); /* second block */
    CHECK(arena_alloc(&a, 2000) == NULL); /* over the limit */
    char *s = arena_strndup(&a, "hello", 3);
    CHECK(s && strcmp(s, "hel") == 0);
    arena_free(&a);
    CHECK(a.head == NULL && a.used_total == 0);
}

void test_http_suite(void)
{
    test_head_check();
    test_head_length();
    test_header_list();
    test_hop_by_hop();
    test_tokens();
    test_target();
    test_authority();
    test_request_line();
    test_transfer_encoding();
    test_chunked();
    test_arena();
}

/* src/core/mem_cache.c: the nghttp2 allocator of a worker. */
void test_mem_cache_suite(void)
{
    TEST_CASE("mem_cache");
    struct mem_cache mc = {0};
    char *a = mem_cache_malloc(40, &mc);
    CHECK(a != NULL && ((uintptr_t)a & 15) == 0);
    memset(a, 'x', 40);
    mem_cache_free(a, &mc);
    CHECK(mc.n[0] == 1);
    char *b = mem_cache_malloc(60, &mc); /* same class: the cached block comes back */
    CHECK(b == a && mc.n[0] == 0);
    char *z = mem_cache_calloc(10, 10, &mc);
    CHECK(z != NULL && z[0] == 0 && z[99] == 0);
    memcpy(b, "hello", 6);
    char *c = mem_cache_realloc(b, 1000, &mc); /* grows into a bigger class */
    CHECK(c != NULL && strcmp(c, "hello") == 0);
    CHECK(mc.n[0] == 1);                       /* the old block went back to its class */
    CHECK(mem_cache_realloc(c, 10, &mc) == c); /* shrinking keeps the block */
    char *big = mem_cache_malloc(100000, &mc); /* beyond the classes: plain malloc */
    CHECK(big != NULL);
    big[99999] = 1;
    mem_cache_free(big, &mc);
    CHECK(mc.n[MEM_CACHE_CLASSES - 1] == 0);
    CHECK(mem_cache_calloc((size_t)-1, 16, &mc) == NULL); /* overflow */
    static void *many[2100];
    for (int i = 0; i < 2100; i++)
        many[i] = mem_cache_malloc(32, &mc);
    for (int i = 0; i < 2100; i++)
        mem_cache_free(many[i], &mc);
    CHECK(mc.n[0] == 2048); /* capped: the rest went back to malloc */
    mem_cache_free(c, &mc);
    mem_cache_free(z, &mc);
    mem_cache_free(NULL, &mc);
    mem_cache_drain(&mc);
    CHECK(mc.n[0] == 0 && mc.free[0] == NULL);
}

/* mem_cache's page blocks: page-aligned, reused, zeroed by calloc, their
 * pages given back (mincore shows it). */
void test_mem_cache_pages_suite(void)
{
    TEST_CASE("mem_cache page blocks");
    struct mem_cache mc = {0};
    char *map = mem_cache_calloc(256, 16, &mc); /* nghttp2's stream map */
    char *fb = mem_cache_malloc(16394, &mc);    /* and its frame buffer */
    CHECK(map && fb && ((uintptr_t)map & (MEM_PAGE - 1)) == 0 &&
          ((uintptr_t)fb & (MEM_PAGE - 1)) == 0);
    CHECK(mem_cache_page_block(&mc, map) == MEM_PAGE);
    CHECK(mem_cache_page_block(&mc, fb) == 5 * MEM_PAGE);
    char *small = mem_cache_malloc(100, &mc);
    CHECK(mem_cache_page_block(&mc, small) == 0 && mem_cache_page_block(&mc, NULL) == 0);

    /* Reused after a free, and zeroed again by calloc. */
    memset(map, 7, MEM_PAGE);
    mem_cache_free(map, &mc);
    char *map2 = mem_cache_calloc(1, MEM_PAGE, &mc);
    CHECK(map2 == map && map2[0] == 0 && map2[MEM_PAGE - 1] == 0);

    /* Grown out of a small block: copied. */
    memcpy(small, "hello", 6);
    char *grown = mem_cache_realloc(small, 5000, &mc);
    CHECK(grown && strcmp(grown, "hello") == 0 && mem_cache_page_block(&mc, grown) == 2 * MEM_PAGE);
    CHECK(mem_cache_realloc(grown, 8000, &mc) == grown); /* still fits its pages */

    /* Given back: only the all-zero pages of a live block; all of a dead one. */
    memset(fb, 0, 5 * MEM_PAGE);
    fb[0] = 1;
    fb[3 * MEM_PAGE + 5] = 2;
    CHECK(test_resident_pages(fb, 5) == 0x1f);
    CHECK(mem_cache_release(&mc, fb, false) == 3 * MEM_PAGE);
    CHECK(test_resident_pages(fb, 5) == 0x09);
    CHECK(fb[0] == 1 && fb[3 * MEM_PAGE + 5] == 2 && fb[MEM_PAGE] == 0);
    CHECK(mem_cache_release(&mc, fb, true) == 5 * MEM_PAGE);
    CHECK(test_resident_pages(fb, 5) == 0 && fb[0] == 0);
    CHECK(mem_cache_release(&mc, small + 16, true) == 0); /* not a page block */

    /* Freed blocks past the first few of a size go back at once. */
    static char *many[40];
    for (int i = 0; i < 40; i++) {
        many[i] = mem_cache_malloc(MEM_PAGE, &mc);
        if (many[i])
            many[i][0] = 1;
    }
    for (int i = 0; i < 40; i++)
        mem_cache_free(many[i], &mc);
    CHECK(test_resident_pages(many[0], 1) == 1);
    CHECK(test_resident_pages(many[39], 1) == 0);
    /* Enough of them for a second arena. */
    static char *lots[130];
    int ok = 0;
    for (int i = 0; i < 130; i++)
        ok += (lots[i] = mem_cache_malloc(4 * MEM_PAGE, &mc)) != NULL;
    CHECK(ok == 130 && mc.n_arenas == 2);
    CHECK(mem_cache_page_block(&mc, lots[129]) == 4 * MEM_PAGE);
    for (int i = 0; i < 130; i++)
        mem_cache_free(lots[i], &mc);
    mem_cache_free(map2, &mc);
    mem_cache_free(fb, &mc);
    mem_cache_free(grown, &mc);
    mem_cache_drain(&mc);
    CHECK(mc.n_arenas == 0 && mc.arenas == NULL);
}
