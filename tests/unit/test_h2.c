/*
 * Unit tests for src/http/h2.c, the HTTP/2 glue of both codecs and the
 * health checks: field helpers, name/value lists, and a client and a server
 * session talking through two evbuffers — a request body sent with NO_COPY
 * DATA (h2_body_*), trailers, deferral and resumption, the output cap;
 * a paged session's idle pages given back (h2_session_compact).
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <string.h>

#include "core/mem_cache.h"
#include "core/strlit.h"
#include "http/h2.h"
#include "test.h"

static void test_fields(void)
{
    TEST_CASE("h2 fields");
    static const char *const skipped[] = {"connection",        "keep-alive", "proxy-connection",
                                          "transfer-encoding", "upgrade",    "content-length"};
    static const char *const kept[] = {
        "te", "host", "content-type", "connections", "grpc", "upgrade-insec", ""};
    for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++) {
        struct http_header f = {skipped[i], "x", (uint32_t)strlen(skipped[i]), 1};
        CHECK(h2_field_skipped(&f));
    }
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        struct http_header f = {kept[i], "x", (uint32_t)strlen(kept[i]), 1};
        CHECK(!h2_field_skipped(&f));
    }
    CHECK(h2_name_is(":status", 7, SY_STRLIT(":status")));
    CHECK(!h2_name_is(":statu", 6, SY_STRLIT(":status")));
    CHECK(!h2_name_is(":statuz", 7, SY_STRLIT(":status")));
    nghttp2_nv nv = h2_nv_lit(SY_STRLIT("te"), SY_STRLIT("trailers"));
    CHECK(nv.namelen == 2 && nv.valuelen == 8 && nv.flags == NGHTTP2_NV_FLAG_NO_COPY_NAME);
    nv = h2_nv("a", 1, "bc", 2);
    CHECK(nv.namelen == 1 && nv.valuelen == 2 && nv.flags == NGHTTP2_NV_FLAG_NONE);
}

static void test_nv_lists(void)
{
    TEST_CASE("h2 nv lists");
    struct http_header v[] = {
        {"grpc-status", "0", 11, 1},
        {":path", "/", 5, 1},
        {"grpc-message", "", 12, 0},
    };
    struct http_headers h = {v, 3, 3};
    nghttp2_nv nv[3];
    CHECK(h2_nv_from_headers(nv, &h) == 2);
    CHECK(nv[0].name == (const uint8_t *)v[0].name && nv[1].namelen == 12);
    struct mem_cache mc = {0};
    for (int k = 0; k < 2; k++) { /* from the cache, then from malloc */
        size_t n = 0;
        nghttp2_nv *copy = h2_nv_copy(&h, k ? NULL : &mc, &n);
        CHECK(copy != NULL && n == 3);
        if (!copy)
            continue;
        CHECK(copy[0].namelen == 11 && memcmp(copy[0].name, "grpc-status", 11) == 0);
        CHECK(copy[0].valuelen == 1 && copy[0].value[0] == '0');
        CHECK(copy[1].namelen == 5 && memcmp(copy[1].name, ":path", 5) == 0);
        CHECK(copy[2].valuelen == 0);
        CHECK(copy[0].name != (const uint8_t *)v[0].name); /* a copy, not the list's bytes */
        h2_nv_free(copy, k ? NULL : &mc);
    }
    unsigned cached = 0;
    for (int c = 0; c < MEM_CACHE_CLASSES; c++)
        cached += mc.n[c];
    CHECK(cached == 1); /* the block went back to the cache */
    h2_nv_free(NULL, &mc);
    mem_cache_drain(&mc);
}

/* ---- a client and a server session ------------------------------------------------------- */

struct peer {
    nghttp2_session *ng;
    struct evbuffer *out; /* what this side sends */
    struct h2_body body;  /* client: the request body */
    struct evbuffer *got; /* server: the request body received */
    int32_t stream_id;
    unsigned headers, trailers, reads, deferrals;
    bool trailer_ok, end_stream;
};

static ssize_t on_body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct peer *p = src->ptr;
    ssize_t n = h2_body_read(ng, id, &p->body, length, flags);
    if (n == NGHTTP2_ERR_DEFERRED)
        p->deferrals++;
    else
        p->reads++;
    return n;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *arg)
{
    struct peer *p = arg;
    return h2_body_send(&p->body, f, framehd, length, p->out);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct peer *p = arg;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) {
        p->trailers++;
        p->trailer_ok = h2_name_is(name, nlen, SY_STRLIT("grpc-status")) && vlen == 1;
    } else {
        p->headers++;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct peer *p = arg;
    evbuffer_add(p->got, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
    struct peer *p = arg;
    if (f->hd.stream_id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        p->end_stream = true;
    return 0;
}

static const struct h2_session_def client_def = {
    .server = false,
    .send_data = on_send_data,
};

static const struct h2_session_def server_def = {
    .server = true,
    .on_header = on_header,
    .on_data_chunk_recv = on_data_chunk,
    .on_frame_recv = on_frame_recv,
    .reset_burst = 1000,
    .reset_rate = 33,
    .max_settings = 32,
};

/* Both ways until neither side has anything to say. */
static int pump(struct peer *cl, struct peer *sv)
{
    for (int k = 0; k < 100; k++) {
        if (h2_session_send(cl->ng, cl->out, 1 << 20, NULL) != 0 ||
            h2_session_recv(sv->ng, cl->out, NULL, 0, NULL) != 0 ||
            h2_session_send(sv->ng, sv->out, 1 << 20, NULL) != 0 ||
            h2_session_recv(cl->ng, sv->out, NULL, 0, NULL) != 0)
            return -1;
        if (!nghttp2_session_want_write(cl->ng) && !nghttp2_session_want_write(sv->ng))
            return 0;
    }
    return -1;
}

static bool body_is(struct evbuffer *b, char fill, size_t len)
{
    if (evbuffer_get_length(b) != len)
        return false;
    const unsigned char *p = evbuffer_pullup(b, -1);
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)fill)
            return false;
    return true;
}

static void test_sessions(void)
{
    TEST_CASE("h2 sessions");
    struct mem_cache mc = {0};
    struct h2_setup cs = {0}, ss = {0};
    struct peer cl = {0}, sv = {0};
    CHECK(h2_setup_init(&cs, &client_def) == 0 && h2_setup_init(&ss, &server_def) == 0);
    cl.out = evbuffer_new();
    cl.body.buf = evbuffer_new();
    sv.out = evbuffer_new();
    sv.got = evbuffer_new();
    CHECK(h2_session_new(&cs, &cl, &mc, &cl.ng) == 0);
    CHECK(h2_session_new(&ss, &sv, NULL, &sv.ng) == 0);
    if (!cl.ng || !sv.ng || !cl.out || !sv.out || !sv.got || !cl.body.buf)
        goto done;
    static const nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    CHECK(h2_submit_settings(sv.ng, iv, 1, 4 << 20) == 0);
    CHECK(nghttp2_session_get_local_window_size(sv.ng) == 4 << 20);
    CHECK(h2_submit_settings(cl.ng, NULL, 0, 0) == 0);
    CHECK(nghttp2_session_get_local_window_size(cl.ng) == NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE);

    /* The output cap: serialization stops once `out` holds that much. */
    CHECK(h2_session_send(sv.ng, sv.out, 1, NULL) == 0);
    size_t first = evbuffer_get_length(sv.out);
    CHECK(first > 0 && nghttp2_session_want_write(sv.ng));
    bool stop = true;
    CHECK(h2_session_send(sv.ng, sv.out, 1 << 20, &stop) == 0 &&
          evbuffer_get_length(sv.out) == first);

    nghttp2_nv nva[] = {
        h2_nv_lit(SY_STRLIT(":method"), SY_STRLIT("POST")),
        h2_nv_lit(SY_STRLIT(":scheme"), SY_STRLIT("http")),
        h2_nv_lit(SY_STRLIT(":authority"), SY_STRLIT("a")),
        h2_nv_lit(SY_STRLIT(":path"), SY_STRLIT("/")),
    };
    nghttp2_data_provider prd = {.source.ptr = &cl, .read_callback = on_body_read};
    cl.stream_id = nghttp2_submit_request(cl.ng, NULL, nva, 4, &prd, NULL);
    CHECK(cl.stream_id == 1);
    CHECK(pump(&cl, &sv) == 0);
    CHECK(sv.headers == 4 && cl.body.deferred && cl.deferrals == 1); /* no body yet */

    /* 100 KB: more than the 64 KiB stream window the client starts with. */
    char chunk[1000];
    memset(chunk, 'b', sizeof chunk);
    for (int i = 0; i < 100; i++)
        evbuffer_add(cl.body.buf, chunk, sizeof chunk);
    h2_body_resume(cl.ng, cl.stream_id, &cl.body);
    CHECK(!cl.body.deferred);
    CHECK(pump(&cl, &sv) == 0);
    CHECK(body_is(sv.got, 'b', 100000) && !sv.end_stream);
    CHECK(evbuffer_get_length(cl.body.buf) == 0 && cl.body.deferred);

    /* The end, with trailers: END_STREAM moves to them. */
    nghttp2_nv trailer = h2_nv_lit(SY_STRLIT("grpc-status"), SY_STRLIT("0"));
    cl.body.trailers = &trailer;
    cl.body.n_trailers = 1;
    cl.body.eof = true;
    h2_body_resume(cl.ng, cl.stream_id, &cl.body);
    CHECK(pump(&cl, &sv) == 0);
    CHECK(sv.trailers == 1 && sv.trailer_ok && sv.end_stream);

done:
    nghttp2_session_del(cl.ng);
    nghttp2_session_del(sv.ng);
    h2_setup_fini(&cs);
    h2_setup_fini(&ss);
    h2_setup_fini(&ss); /* twice is harmless */
    evbuffer_free(cl.out);
    evbuffer_free(cl.body.buf);
    evbuffer_free(sv.out);
    evbuffer_free(sv.got);
    mem_cache_drain(&mc);
}

/* A paged session gives back its frame buffer and its empty stream map
 * while idle, and works as before afterwards (HPACK state included). */
static void test_paged_session(void)
{
    TEST_CASE("h2 paged session compaction");
    struct mem_cache mc = {0};
    struct h2_setup cs = {0}, ss = {0};
    struct peer cl = {0}, sv = {0};
    struct h2_mem cm = {.mc = &mc};
    CHECK(h2_setup_init(&cs, &client_def) == 0 && h2_setup_init(&ss, &server_def) == 0);
    cl.out = evbuffer_new();
    sv.out = evbuffer_new();
    sv.got = evbuffer_new();
    CHECK(h2_session_new_paged(&cs, &cl, &cm, &cl.ng) == 0);
    CHECK(h2_session_new(&ss, &sv, NULL, &sv.ng) == 0);
    if (!cl.ng || !sv.ng || !cl.out || !sv.out || !sv.got)
        goto done;
    CHECK(h2_submit_settings(sv.ng, NULL, 0, 0) == 0 && h2_submit_settings(cl.ng, NULL, 0, 0) == 0);
    char *fb = NULL, *map = NULL;
    for (size_t i = 0; i < H2_MEM_BLOCKS; i++) {
        if (cm.blk[i] && cm.len[i] == 9 + 1 + 16384)
            fb = cm.blk[i];
        if (cm.blk[i] && cm.len[i] == 4096)
            map = cm.blk[i];
    }
    CHECK(fb != NULL && map != NULL); /* nghttp2 1.52: both are page blocks */
    if (!fb || !map)
        goto done;
    static char big[12000];
    memset(big, 'v', sizeof big);
    for (int round = 0; round < 2; round++) {
        nghttp2_nv nva[] = {
            h2_nv_lit(SY_STRLIT(":method"), SY_STRLIT("GET")),
            h2_nv_lit(SY_STRLIT(":scheme"), SY_STRLIT("http")),
            h2_nv_lit(SY_STRLIT(":authority"), SY_STRLIT("a")),
            h2_nv_lit(SY_STRLIT(":path"), SY_STRLIT("/")),
            h2_nv_lit(SY_STRLIT("x-indexed"), SY_STRLIT("in the dynamic table")),
            {(uint8_t *)"x-big", (uint8_t *)big, 5, sizeof big, NGHTTP2_NV_FLAG_NONE},
        };
        int32_t id = nghttp2_submit_request(cl.ng, NULL, nva, 6, NULL, NULL);
        CHECK(id > 0 && pump(&cl, &sv) == 0);
        CHECK(sv.headers == 6u * (unsigned)(round + 1));
        CHECK((test_resident_pages(fb, 5) & 0x7) == 0x7); /* the 12 KB HEADERS went through it */
        CHECK(nghttp2_submit_rst_stream(cl.ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL) == 0);
        CHECK(pump(&cl, &sv) == 0);
        /* Idle: nothing to send, no stream. */
        CHECK(h2_session_compact(&cm, cl.ng) == 6 * MEM_PAGE);
        CHECK(test_resident_pages(fb, 5) == 0 && test_resident_pages(map, 1) == 0);
    }
    /* Something to send: the frame buffer is kept. */
    CHECK(nghttp2_submit_ping(cl.ng, NGHTTP2_FLAG_NONE, NULL) == 0);
    CHECK(h2_session_compact(&cm, cl.ng) == 6 * MEM_PAGE); /* all zero pages still */
    CHECK(pump(&cl, &sv) == 0);
done:
    nghttp2_session_del(cl.ng);
    nghttp2_session_del(sv.ng);
    h2_setup_fini(&cs);
    h2_setup_fini(&ss);
    evbuffer_free(cl.out);
    evbuffer_free(sv.out);
    evbuffer_free(sv.got);
    mem_cache_drain(&mc);
}

/* A bad setting value is refused as such. */
static void test_settings_error(void)
{
    TEST_CASE("h2 settings");
    struct h2_setup s = {0};
    nghttp2_session *ng = NULL;
    CHECK(h2_setup_init(&s, &server_def) == 0 && h2_session_new(&s, NULL, NULL, &ng) == 0);
    static const nghttp2_settings_entry bad[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 2}};
    if (ng)
        CHECK(h2_submit_settings(ng, bad, 1, 0) != 0);
    nghttp2_session_del(ng);
    h2_setup_fini(&s);
}

/* A GOAWAY written by hand: what a client session makes of it. */
static void test_goaway_write(void)
{
    TEST_CASE("h2 goaway by hand");
    struct evbuffer *b = evbuffer_new();
    CHECK(h2_goaway_write(b, 7, NGHTTP2_ENHANCE_YOUR_CALM, "ping_flood") == 0);
    CHECK(evbuffer_get_length(b) == 9 + 8 + 10);
    uint8_t f[27];
    evbuffer_copyout(b, f, sizeof f);
    static const uint8_t hd[] = {0, 0, 18, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 11};
    CHECK(memcmp(f, hd, sizeof hd) == 0);
    CHECK(memcmp(f + 17, "ping_flood", 10) == 0);
    evbuffer_drain(b, evbuffer_get_length(b));
    CHECK(h2_goaway_write(b, 0x7fffffff, NGHTTP2_PROTOCOL_ERROR, NULL) == 0);
    evbuffer_copyout(b, f, 17);
    CHECK(evbuffer_get_length(b) == 17 && f[2] == 8 && f[9] == 0x7f && f[12] == 0xff &&
          f[16] == NGHTTP2_PROTOCOL_ERROR);
    evbuffer_free(b);
}

void test_h2_suite(void)
{
    test_goaway_write();
    test_fields();
    test_nv_lists();
    test_sessions();
    test_paged_session();
    test_settings_error();
}
