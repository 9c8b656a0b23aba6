/* Unit tests for src/http: head checks, header lists, hop-by-hop stripping. */
#include <event2/buffer.h>
#include <stdint.h>
#include <string.h>

#include "core/arena.h"
#include "core/errors.h"
#include "core/mem_cache.h"
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
    void *many[1100];
    for (int i = 0; i < 1100; i++)
        many[i] = mem_cache_malloc(32, &mc);
    for (int i = 0; i < 1100; i++)
        mem_cache_free(many[i], &mc);
    CHECK(mc.n[0] == 1024); /* capped: the rest went back to malloc */
    mem_cache_free(c, &mc);
    mem_cache_free(z, &mc);
    mem_cache_free(NULL, &mc);
    mem_cache_drain(&mc);
    CHECK(mc.n[0] == 0 && mc.free[0] == NULL);
}
