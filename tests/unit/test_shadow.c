/* Unit tests for the shadow compare (src/exchange/shadow.c): what counts as a difference. */
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/stats.h"
#include "exchange/shadow.h"
#include "http/headers.h"
#include "runtime.h"
#include "test.h"

/* One compare at a time, with its own arena, route counters and policy. */
struct fixture {
    struct arena arena;
    struct stats *st;
    struct runtime_route route;
    struct cfg_mirror_policy policy;
    struct shadow_compare *c;
};

static char *ignored[] = {"x-ignored"};

static void setup(struct fixture *f, uint64_t max_body)
{
    static const char *const none[] = {NULL};
    memset(f, 0, sizeof *f);
    arena_init(&f->arena, 1 << 20);
    f->st = stats_new(none, 0, 1);
    f->route.stats = stats_route(f->st, "um/pm/priority:1");
    f->policy.compare.enabled = true;
    f->policy.compare.ignore_headers = ignored;
    f->policy.compare.n_ignore_headers = 1;
    f->policy.compare.max_body_bytes = max_body;
    f->c = shadow_compare_new(&f->arena, &f->policy);
}

static void teardown(struct fixture *f)
{
    arena_free(&f->arena);
    stats_free(f->st);
}

/* A head with `status` and "name: value" fields (NULL-terminated pairs). */
static void head(struct fixture *f, enum shadow_side s, int status, const char *const *kv)
{
    struct http_response_head h = {.status = status, .content_length = -1};
    http_headers_init(&h.headers, &f->arena, 8);
    for (size_t i = 0; kv && kv[i]; i += 2)
        http_headers_add(&h.headers, &f->arena, kv[i], strlen(kv[i]), kv[i + 1], strlen(kv[i + 1]));
    shadow_compare_head(f->c, s, &h);
}

static void end(struct fixture *f, enum shadow_side s, const char *const *trailers)
{
    struct http_headers t;
    http_headers_init(&t, &f->arena, 4);
    for (size_t i = 0; trailers && trailers[i]; i += 2)
        http_headers_add(&t, &f->arena, trailers[i], strlen(trailers[i]), trailers[i + 1],
                         strlen(trailers[i + 1]));
    shadow_compare_end(f->c, s, &t);
}

/* `len` body bytes of `byte`, with byte `at` (if < len) replaced by `other`, in pieces of `piece`.
 */
static void body(struct fixture *f, enum shadow_side s, size_t len, char byte, size_t at,
                 char other, size_t piece)
{
    char *b = malloc(len + 1);
    memset(b, byte, len);
    if (at < len)
        b[at] = other;
    for (size_t off = 0; off < len; off += piece) {
        struct evbuffer *e = evbuffer_new();
        evbuffer_add(e, b + off, off + piece < len ? piece : len - off);
        shadow_compare_body(f->c, s, e);
        CHECK(evbuffer_get_length(e) == (off + piece < len ? piece : len - off)); /* unchanged */
        evbuffer_free(e);
    }
    free(b);
}

/* Finish; returns the result counted, and the /shadow JSON in *json (caller frees). */
static int finish(struct fixture *f, char **json)
{
    struct http_request_head req = {.method = "GET", .method_len = 3, .path = "/x", .path_len = 2};
    struct shadow_subject subj = {
        .worker_id = 0,
        .stats = f->st,
        .route = &f->route,
        .req = &req,
        .request_id = "req-1",
        .mirror_service = "new",
    };
    enum sy_log_level lvl = sy_log_get_level();
    sy_log_set_level(SY_LOG_WARN); /* the mismatch line goes to the ring only */
    shadow_compare_finish(f->c, &subj);
    sy_log_set_level(lvl);
    size_t n;
    FILE *out = open_memstream(json, &n);
    stats_write_shadow_json(f->st, out);
    fclose(out);
    for (int r = 0; r < STATS_N_COMPARE_RESULTS; r++)
        if (f->route.stats->shards[0].compare[r])
            return r;
    return -1;
}

static void test_fields(void)
{
    struct fixture f;
    char *json = NULL;

    TEST_CASE("shadow: same fields in another order, framing and noise fields ignored");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200,
         (const char *const[]){"content-type", "text/plain", "x-a", "1", "content-length", "5",
                               "date", "Mon", "server", "old", "x-request-id", "a", "connection",
                               "keep-alive", "x-ignored", "p", NULL});
    head(&f, SHADOW_MIRROR, 200,
         (const char *const[]){"x-a", "1", "Content-Type", "text/plain", "transfer-encoding",
                               "chunked", "date", "Tue", "server", "new", "X-Ignored", "m", NULL});
    body(&f, SHADOW_PRIMARY, 5, 'b', 9, 0, 5);
    body(&f, SHADOW_MIRROR, 5, 'b', 9, 0, 1);
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MATCH);
    CHECK(strstr(json, "\"recent_mismatches\":[]") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: grpc-status in the head (trailers-only) or in the trailers is the same");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200,
         (const char *const[]){"content-type", "application/grpc", "grpc-status", "0", NULL});
    head(&f, SHADOW_MIRROR, 200, (const char *const[]){"content-type", "application/grpc", NULL});
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, (const char *const[]){"grpc-status", "0", NULL});
    CHECK(finish(&f, &json) == STATS_COMPARE_MATCH);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: a repeated field compares as its values in order");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200,
         (const char *const[]){"vary", "a", "x-z", "1", "vary", "b", NULL});
    head(&f, SHADOW_MIRROR, 200, (const char *const[]){"vary", "b", "vary", "a", "x-z", "1", NULL});
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"diff\":\"header\",\"header\":\"vary\",\"body_offset\":null") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: the alphabetically first differing or missing name is reported");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200, (const char *const[]){"x-m", "1", "x-q", "1", NULL});
    head(&f, SHADOW_MIRROR, 200,
         (const char *const[]){"x-q", "2", "x-m", "1", "x-b", "only-mirror", NULL});
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"header\":\"x-b\"") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: the status first");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200, (const char *const[]){"x-a", "1", NULL});
    head(&f, SHADOW_MIRROR, 503, (const char *const[]){"x-a", "2", NULL});
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"primary_status\":200,\"mirror_status\":503,\"diff\":\"status\","
                       "\"header\":\"x-a\"") != NULL);
    CHECK(strstr(json, "\"request_id\":\"req-1\",\"route\":\"um/pm/priority:1\"") != NULL);
    free(json);
    teardown(&f);
}

static void test_bodies(void)
{
    struct fixture f;
    char *json = NULL;

    TEST_CASE("shadow: one byte differs at 1300: the chunk at 1024 is reported");
    setup(&f, 4096);
    head(&f, SHADOW_PRIMARY, 200, NULL);
    head(&f, SHADOW_MIRROR, 200, NULL);
    body(&f, SHADOW_PRIMARY, 3000, 'a', 1300, 'b', 777);
    body(&f, SHADOW_MIRROR, 3000, 'a', 9999, 'b', 100);
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"diff\":\"body\",\"header\":null,\"body_offset\":1024,"
                       "\"body_chunk_bytes\":512,\"primary_body_bytes\":3000,"
                       "\"mirror_body_bytes\":3000") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: one more byte at the end of a full chunk");
    setup(&f, 4096);
    head(&f, SHADOW_PRIMARY, 200, NULL);
    head(&f, SHADOW_MIRROR, 200, NULL);
    body(&f, SHADOW_PRIMARY, 1024, 'a', 9999, 0, 1024);
    body(&f, SHADOW_MIRROR, 1025, 'a', 9999, 0, 300);
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"body_offset\":1024") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: differences past max_body_bytes are not compared");
    setup(&f, 2000);
    head(&f, SHADOW_PRIMARY, 200, NULL);
    head(&f, SHADOW_MIRROR, 200, NULL);
    body(&f, SHADOW_PRIMARY, 5000, 'a', 2000, 'b', 333);
    body(&f, SHADOW_MIRROR, 6000, 'a', 9999, 'b', 4096);
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MATCH);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: large max_body_bytes: 128 chunks at most");
    setup(&f, 1 << 20);
    CHECK(f.c != NULL);
    head(&f, SHADOW_PRIMARY, 200, NULL);
    head(&f, SHADOW_MIRROR, 200, NULL);
    body(&f, SHADOW_PRIMARY, 100000, 'a', 20000, 'b', 65536);
    body(&f, SHADOW_MIRROR, 100000, 'a', 99999, 'a', 4000);
    end(&f, SHADOW_PRIMARY, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_MISMATCH);
    CHECK(strstr(json, "\"body_offset\":16384,\"body_chunk_bytes\":8192") != NULL);
    free(json);
    teardown(&f);

    TEST_CASE("shadow: a side without a complete answer: incomplete");
    setup(&f, 1024);
    head(&f, SHADOW_PRIMARY, 200, NULL);
    head(&f, SHADOW_MIRROR, 200, NULL);
    end(&f, SHADOW_MIRROR, NULL);
    CHECK(finish(&f, &json) == STATS_COMPARE_INCOMPLETE);
    free(json);
    teardown(&f);
}

void test_shadow_suite(void)
{
    test_fields();
    test_bodies();
}
