/*
 * alloc_sweep.c — the allocation-failure sweep (STYLE rule 19): for every
 * N, fail the Nth allocation of one operation and check that it still ends
 * cleanly: no crash, no leak (LeakSanitizer, checked after every N), no
 * half-made result passed off as a whole one. N runs from 1 until the
 * operation completes without making N allocations.
 *
 * Operations:
 *   config     config_load_string on a config using every kind of url map
 *              rule (and each --config FILE): NULL with an "out of memory"
 *              error, or a snapshot whose JSON equals the one loaded without
 *              failures
 *   urlmap     url_map_compile: NULL, or a matcher that answers a set of
 *              requests as the one compiled without failures does
 *   startup    a worker as main.c starts one (tests/fuzz/harness.c: config,
 *              runtime_new, upstream pools, exchange state, listener_worker)
 *   h1, h2     requests through the real codecs and router
 *              (tests/fuzz/harness.h): the connection and every exchange
 *              end, and with no failure injected the response is complete
 *
 * Counted: malloc, calloc, realloc, strdup, strndup and aligned_alloc called
 * from the proxy's own objects (linked with -Wl,--wrap=...), which includes
 * nghttp2's allocations (they go through core/mem_cache.c; a fresh worker per
 * N, so its cache starts empty). With --libevent also libevent's own
 * (event_set_mem_functions), except the one inside bufferevent_setwatermark
 * that libevent 2.1 itself does not survive (see in_setwatermark). Not
 * counted: libyaml, PCRE2, OpenSSL and libc internals (stdio), which
 * allocate with the real malloc.
 *
 *   alloc-sweep [--libevent] [--fork] [--verbose] [--trace] [--corpus DIR]
 *               [--config FILE]... [config|urlmap|startup|h1|h2]...
 *
 * --corpus DIR: h1 and h2 also sweep every seed in DIR/h1/ and DIR/h2/
 * (tests/fuzz/corpus): pipelining, chunked bodies, Upgrade, trailers...
 *
 * --fork runs each N in a child process, so that a crash is reported and
 * the sweep goes on to the next N.
 *
 * Exit status 0 when every N of every operation passed; 1 otherwise, with
 * each failure on stderr ("h1: N=37: ...") after the sanitizer's report.
 */
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/config.h"
#include "core/arena.h"
#include "http/headers.h"
#include "urlmap/urlmap.h"

#include "../fuzz/harness.h"

/* ---- the counting allocator -------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);

/* Single-threaded: the proxy's code runs on this thread only here. */
static struct {
    bool armed;         /* counting (between arm() and disarm()) */
    int quiet;          /* > 0: the harness's own bookkeeping, not counted */
    unsigned long n;    /* allocations counted since arm() */
    unsigned long fail; /* fail the fail-th one; 0 = none */
    bool failed;        /* it happened */
    bool libevent;      /* count libevent's allocations too */
} inj;

static bool trace; /* --trace: print where every counted allocation comes from */

static bool fail_now(void)
{
    if (!inj.armed || inj.quiet)
        return false;
    ++inj.n;
    if (trace) {
        fprintf(stderr, "allocation %lu:\n", inj.n);
        __sanitizer_print_stack_trace();
    }
    if (inj.n != inj.fail)
        return false;
    inj.failed = true;
    return true;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return fail_now() ? NULL : __real_strndup(s, n);
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    return fail_now() ? NULL : __real_aligned_alloc(align, n);
}

/*
 * libevent 2.1.12 dereferences NULL when the evbuffer callback that
 * bufferevent_setwatermark adds cannot be allocated (evbuffer_add_cb's
 * result goes to evbuffer_cb_set_flags unchecked), and the function returns
 * void, so no caller can tell: that allocation is never failed. True when
 * the allocation comes from inside bufferevent_setwatermark.
 */
static bool in_setwatermark(void)
{
    void *frames[8];
    int n = backtrace(frames, 8);
    for (int i = 0; i < n; i++) {
        Dl_info di;
        if (dladdr(frames[i], &di) && di.dli_sname &&
            strcmp(di.dli_sname, "bufferevent_setwatermark") == 0)
            return true;
    }
    return false;
}

static unsigned long skipped; /* Ns whose allocation was in bufferevent_setwatermark */

/*
 * libevent's allocator (event_set_mem_functions): counted with --libevent.
 * The stack is looked at only for the allocation about to fail (backtrace
 * and dladdr are slow); one in bufferevent_setwatermark is let through
 * uncounted, so that N fails the allocation after it (which N+1 fails again).
 */
static bool ev_fail_now(void)
{
    if (!inj.libevent || !inj.armed || inj.quiet)
        return false;
    if (inj.n + 1 == inj.fail && in_setwatermark()) {
        skipped++;
        return false;
    }
    return fail_now();
}

static void ev_log(int severity, const char *msg)
{
    (void)severity; /* "calloc: Cannot allocate memory": expected here */
    (void)msg;
}

static void *ev_malloc(size_t n)
{
    return ev_fail_now() ? NULL : __real_malloc(n);
}

static void *ev_realloc(void *p, size_t n)
{
    return ev_fail_now() ? NULL : __real_realloc(p, n);
}

static void ev_free(void *p)
{
    free(p);
}

static void arm(unsigned long fail)
{
    inj.n = 0;
    inj.fail = fail;
    inj.failed = false;
    inj.armed = true;
}

static void disarm(void)
{
    inj.armed = false;
}

static void on_quiet(void *ctx, bool on)
{
    inj.quiet += on ? 1 : -1;
}

static const struct harness_hooks hooks = {.quiet = on_quiet};

/*
 * LeakSanitizer runs after every N and walks every chunk, quarantined ones
 * included: a small quarantine keeps that walk from growing to seconds.
 * ASAN_OPTIONS from the environment still apply on top.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=8";
}

/* ---- reporting ------------------------------------------------------------------------ */

static bool verbose;
static unsigned failures;

static void report(const char *op, unsigned long n, const char *what)
{
    fprintf(stderr, "alloc-sweep: %s: N=%lu: %s\n", op, n, what);
    failures++;
}

/* After each N: anything unreachable now is a leak of that N. */
static void check_leaks(const char *op, unsigned long n)
{
    if (__lsan_do_recoverable_leak_check())
        report(op, n, "leak (LeakSanitizer report above)");
}

/* ---- config ---------------------------------------------------------------------------- */

/* The url map of tests/fuzz/fuzz_urlmap.c (every kind of rule) and more. */
static const char rich_yaml[] =
    "listeners:\n"
    "  - {name: l, address: '127.0.0.1:1', protocol: HTTP, url_map: m,\n"
    "     xff_trusted_cidrs: ['10.0.0.0/8', '::1/128'],\n"
    "     http2: {keepalive: {time: 1h, timeout: 10s}, max_connection_age: 1h}}\n"
    "admin: {address: '127.0.0.1:2'}\n"
    "access_log: {enabled: true, path: '-', format: text}\n"
    "health_checks:\n"
    "  - {name: hc, type: HTTP, request_path: /healthz, check_interval: 5s, timeout: 1s}\n"
    "url_maps:\n"
    "  - name: m\n"
    "    default_service: a\n"
    "    header_action: {request_headers_to_add: [{header_name: x-m, header_value: m}]}\n"
    "    host_rules:\n"
    "      - {hosts: ['example.com', '*.example.com'], path_matcher: p}\n"
    "      - {hosts: ['*'], path_matcher: q}\n"
    "    path_matchers:\n"
    "      - name: p\n"
    "        default_service: a\n"
    "        route_rules:\n"
    "          - priority: 1\n"
    "            match_rules:\n"
    "              - prefix_match: /Admin\n"
    "                ignore_case: true\n"
    "                header_matches:\n"
    "                  - {header_name: x-a, exact_match: '1'}\n"
    "                  - {header_name: x-b, range_match: {start: -5, end: 100}}\n"
    "                  - {header_name: x-c, present_match: true, invert_match: true}\n"
    "                  - {header_name: x-d, regex_match: 'v[0-9]+'}\n"
    "                  - {header_name: ':method', exact_match: POST}\n"
    "                query_parameter_matches:\n"
    "                  - {name: q, regex_match: '[a-z]*'}\n"
    "                  - {name: debug, present_match: true}\n"
    "            service: b\n"
    "          - priority: 2\n"
    "            match_rules: [{full_path_match: /exact}, {regex_match: '/r/(.*)/x'}]\n"
    "            route_action:\n"
    "              weighted_backend_services:\n"
    "                - {backend_service: a, weight: 1}\n"
    "                - {backend_service: b, weight: 3,\n"
    "                   header_action: {response_headers_to_remove: [server]}}\n"
    "              url_rewrite: {path_prefix_rewrite: /new/, host_rewrite: inner}\n"
    "              retry_policy: {retry_conditions: [5xx, connect-failure], num_retries: 2}\n"
    "              fault_injection_policy: {abort: {http_status: 503, percentage: 1}}\n"
    "          - priority: 3\n"
    "            match_rules: [{prefix_match: /old/}]\n"
    "            url_redirect: {prefix_redirect: /new/, https_redirect: true, strip_query: "
    "false}\n"
    "      - name: q\n"
    "        default_url_redirect: {host_redirect: elsewhere, path_redirect: /moved}\n"
    "        path_rules:\n"
    "          - {paths: ['/a', '/a/*', '/b/*'], service: b}\n"
    "          - {paths: ['/c'], url_redirect: {prefix_redirect: /d}}\n"
    "backend_services:\n"
    "  - {name: a, endpoints: [{address: '127.0.0.1:2'}, {address: '127.0.0.1:4', weight: 2}],\n"
    "     locality_lb_policy: RING_HASH, session_affinity: HEADER_FIELD,\n"
    "     consistent_hash: {http_header_name: x-user, minimum_ring_size: 64},\n"
    "     health_checks: [hc]}\n"
    "  - {name: b, protocol: H2C, endpoints: [{address: '127.0.0.1:3'}],\n"
    "     circuit_breakers: {max_connections: 10}, outlier_detection: {consecutive_errors: 2}}\n";

static char *config_json(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    config_write_json(cfg, f);
    fclose(f);
    return buf;
}

static bool has_oom_error(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strstr(errs->msgs[i], "out of memory"))
            return true;
    return false;
}

static const char *config_yaml; /* the config being swept */
static char *config_want;       /* its JSON, loaded without failures */

static void config_setup(void)
{
    struct config_errors errs = {0};
    struct config *ref = config_load_string("sweep.yaml", config_yaml, strlen(config_yaml), &errs);
    if (!ref) {
        config_errors_print(&errs, stderr);
        abort();
    }
    config_want = config_json(ref);
    config_unref(ref);
    config_errors_free(&errs);
}

static void config_teardown(void)
{
    free(config_want);
}

static bool config_run(unsigned long n)
{
    struct config_errors e = {0};
    arm(n);
    struct config *cfg = config_load_string("sweep.yaml", config_yaml, strlen(config_yaml), &e);
    disarm();
    if (cfg) {
        char *got = config_json(cfg);
        if (strcmp(got, config_want) != 0)
            report("config", n, "loaded, but not the same config as without the failure");
        free(got);
    } else if (!inj.failed) {
        report("config", n, "refused without any allocation failing");
    } else if (!has_oom_error(&e)) {
        report("config", n, "refused without an \"out of memory\" error");
        config_errors_print(&e, stderr);
    }
    config_unref(cfg);
    config_errors_free(&e);
    check_leaks("config", n);
    return !inj.failed;
}

/* ---- url map -------------------------------------------------------------------------- */

/* Requests that reach every kind of rule of rich_yaml's url map. */
static const struct {
    const char *method, *host, *path, *query;
    const char *headers[4]; /* name, value, name, value */
} probes[] = {
    {"POST", "example.com", "/admin/x", "q=abc&debug", {"x-a", "1", "x-d", "v12"}},
    {"GET", "a.example.com", "/exact", NULL, {NULL}},
    {"GET", "example.com", "/r/a/b/x", NULL, {NULL}},
    {"GET", "example.com", "/old/thing", "k=v", {NULL}},
    {"GET", "other", "/a/b", NULL, {NULL}},
    {"GET", "other", "/c", NULL, {NULL}},
    {"GET", "other", "/zzz", NULL, {NULL}},
};

static void probe(const struct url_map *um, size_t i, struct url_map_result *res)
{
    struct arena a;
    struct http_headers h;
    arena_init(&a, 1 << 16);
    if (http_headers_init(&h, &a, 4) != 0)
        abort();
    for (int j = 0; j < 4 && probes[i].headers[j]; j += 2)
        http_headers_add(&h, &a, probes[i].headers[j], strlen(probes[i].headers[j]),
                         probes[i].headers[j + 1], strlen(probes[i].headers[j + 1]));
    struct url_map_request r = {
        .method = probes[i].method,
        .method_len = strlen(probes[i].method),
        .scheme = "http",
        .scheme_len = 4,
        .authority = probes[i].host,
        .authority_len = strlen(probes[i].host),
        .path = probes[i].path,
        .path_len = strlen(probes[i].path),
        .query = probes[i].query,
        .query_len = probes[i].query ? strlen(probes[i].query) : 0,
        .headers = &h,
    };
    url_map_match(um, &r, 12345, res);
    arena_free(&a);
}

static struct config *urlmap_cfg;
static struct url_map *urlmap_ref;

static void urlmap_setup(void)
{
    struct config_errors errs = {0};
    urlmap_cfg = config_load_string("sweep.yaml", rich_yaml, strlen(rich_yaml), &errs);
    urlmap_ref = urlmap_cfg ? url_map_compile(&urlmap_cfg->url_maps[0]) : NULL;
    if (!urlmap_ref)
        abort();
    config_errors_free(&errs);
}

static void urlmap_teardown(void)
{
    url_map_free(urlmap_ref);
    config_unref(urlmap_cfg);
}

static bool urlmap_run(unsigned long n)
{
    arm(n);
    struct url_map *um = url_map_compile(&urlmap_cfg->url_maps[0]);
    disarm();
    for (size_t i = 0; um && i < sizeof probes / sizeof probes[0]; i++) {
        struct url_map_result want, got;
        probe(urlmap_ref, i, &want);
        probe(um, i, &got);
        if (want.action != got.action || want.service != got.service ||
            want.matched_prefix_len != got.matched_prefix_len) {
            report("urlmap", n, "compiled, but matches differently than without the failure");
            break;
        }
    }
    if (!um && !inj.failed)
        report("urlmap", n, "NULL without any allocation failing");
    url_map_free(um);
    check_leaks("urlmap", n);
    return !inj.failed;
}

/* ---- requests through the codecs ------------------------------------------------------ */

static const char h1_request[] = "POST /split/a?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                                 "Content-Length: 5\r\nX-Drop: 1\r\n\r\nhello"
                                 "GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n";

/* After the preface: SETTINGS, HEADERS (POST /split/a, :authority
 * example.com; HPACK, no Huffman), DATA "hello" with END_STREAM. */
static const uint8_t h2_request[] = {
    0,    0,    0,    4,   0,   0,   0,   0,   0,                  /* SETTINGS */
    0,    0,    29,   1,   4,   0,   0,   0,   1,                  /* HEADERS, END_HEADERS */
    0x83, 0x86, 0x44, 8,   '/', 's', 'p', 'l', 'i', 't', '/', 'a', /* POST http /split/a */
    0x41, 11,   'e',  'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o',
    'm',  0x0f, 0x0d, 1,   '5',                   /* content-length: 5 */
    0,    0,    5,    0,   1,   0,   0,   0,   1, /* DATA, END_STREAM */
    'h',  'e',  'l',  'l', 'o',
};

/* The request being swept and what it gives without failures. */
static struct {
    const char *op;
    const char *input; /* "built-in" or the corpus file */
    enum harness_proto proto;
    const uint8_t *data;
    size_t size;
    struct harness_result ref;
} rq;

static void request_setup(void)
{
    struct harness *h = harness_new(NULL);
    if (!h || harness_run(h, rq.proto, rq.data, rq.size, &rq.ref) != 0 || rq.ref.exchanges_left)
        abort(); /* the input must run cleanly without failures */
    harness_free(h);
    if (verbose)
        fprintf(stderr, "%s: %s: reference: %zu bytes out, %u backend requests\n", rq.op, rq.input,
                rq.ref.out_bytes, rq.ref.backend_reqs);
}

static void request_teardown(void) {}

static bool same_result(const struct harness_result *a, const struct harness_result *b)
{
    return a->out_bytes == b->out_bytes && a->backend_reqs == b->backend_reqs;
}

static bool request_run(unsigned long n)
{
    struct harness_result res;
    struct harness *h = harness_new(&hooks);
    if (!h)
        abort();
    arm(n);
    int rc = harness_run(h, rq.proto, rq.data, rq.size, &res);
    disarm();
    char why[160];
    if (rc != 0)
        report(rq.op, n, "the harness could not connect");
    if (res.exchanges_left) {
        snprintf(why, sizeof why, "%u exchange(s) outlived their client connection",
                 res.exchanges_left);
        report(rq.op, n, why);
    }
    if (res.client_forced && verbose)
        fprintf(stderr, "%s: N=%lu: the client connection stayed open after EOF\n", rq.op, n);
    harness_free(h);
    if (!inj.failed && !same_result(&res, &rq.ref)) {
        /* Answers carry the time (Date), whose HPACK-coded length changes
         * when the second does: a reference made now decides. */
        struct harness_result now;
        struct harness *h2 = harness_new(NULL);
        if (!h2 || harness_run(h2, rq.proto, rq.data, rq.size, &now) != 0)
            abort();
        harness_free(h2);
        if (same_result(&res, &now))
            rq.ref = now;
        else
            report(rq.op, n, "no failure injected, yet a different response");
    }
    check_leaks(rq.op, n);
    return !inj.failed;
}

/* The worker's startup as main.c does it, from the config to the listener. */
static void startup_setup(void) {}

static bool startup_run(unsigned long n)
{
    arm(n);
    struct harness *h = harness_new(&hooks);
    disarm();
    if (!h && !inj.failed)
        report("startup", n, "failed without any allocation failing");
    harness_free(h);
    check_leaks("startup", n);
    return !inj.failed;
}

/* ---- the sweep -------------------------------------------------------------------------- */

struct op {
    const char *name;
    void (*setup)(void);
    bool (*run)(unsigned long n); /* true: N was never reached (the sweep is done) */
    void (*teardown)(void);
};

static bool use_fork;

/* Run N in a child, so that a crash ends only that N. */
static bool run_forked(const struct op *op, unsigned long n)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("alloc-sweep: fork");
        exit(2);
    }
    if (pid == 0) {
        unsigned before = failures;
        bool done = op->run(n);
        _exit((failures > before ? 1 : 0) | (done ? 2 : 0));
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        exit(2);
    if (WIFEXITED(st) && WEXITSTATUS(st) <= 3) {
        failures += WEXITSTATUS(st) & 1;
        return WEXITSTATUS(st) & 2;
    }
    report(op->name, n, "crashed (the sanitizer's report is above)");
    return false;
}

/* Every N of one operation: the number of allocation points. */
static unsigned long sweep(const struct op *op)
{
    unsigned long n;
    op->setup();
    if (trace) { /* one run without failures, showing every allocation */
        op->run(ULONG_MAX);
        op->teardown();
        return inj.n;
    }
    for (n = 1; n < 1000000; n++)
        if (use_fork ? run_forked(op, n) : op->run(n))
            break;
    op->teardown();
    return n - 1;
}

static void sweep_input(struct op *op, const char *input, const uint8_t *data, size_t size)
{
    rq.input = input;
    rq.data = data;
    rq.size = size;
    unsigned long n = sweep(op);
    printf("alloc-sweep: %s %s (%s): %lu allocation points\n", rq.op, input,
           inj.libevent ? "own + libevent" : "own", n);
}

/* The built-in request, then with `corpus` every seed of tests/fuzz/corpus/NAME/. */
static void sweep_inputs(struct op *op, const char *name, enum harness_proto proto,
                         const uint8_t *builtin, size_t builtin_size, const char *corpus)
{
    rq.op = op->name = name;
    rq.proto = proto;
    sweep_input(op, "built-in", builtin, builtin_size);
    if (!corpus)
        return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", corpus, name);
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char path[1024];
        uint8_t buf[65536];
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        FILE *f = ents[i]->d_name[0] != '.' ? fopen(path, "rb") : NULL;
        size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) {
            fclose(f);
            sweep_input(op, ents[i]->d_name, buf, len);
        }
        free(ents[i]);
    }
    if (n >= 0)
        free(ents);
}

/* ---- main ------------------------------------------------------------------------------- */

static bool wanted(int argc, char **argv, const char *op)
{
    bool any = false;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' || strcmp(argv[i - 1], "--corpus") == 0 ||
            strcmp(argv[i - 1], "--config") == 0)
            continue;
        any = true;
        if (strcmp(argv[i], op) == 0)
            return true;
    }
    return !any;
}

int main(int argc, char **argv)
{
    static const struct op config_op = {"config", config_setup, config_run, config_teardown};
    static const struct op urlmap_op = {"urlmap", urlmap_setup, urlmap_run, urlmap_teardown};
    static const struct op startup_op = {"startup", startup_setup, startup_run, startup_setup};
    struct op request_op = {"request", request_setup, request_run, request_teardown};
    const char *corpus = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--libevent") == 0)
            inj.libevent = true;
        else if (strcmp(argv[i], "--fork") == 0)
            use_fork = true;
        else if (strcmp(argv[i], "--verbose") == 0)
            verbose = true;
        else if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc)
            corpus = argv[++i];
        else if (strcmp(argv[i], "--trace") == 0)
            trace = true; /* with one operation: its allocation points, N=1.. */
    }
    /* Before libevent allocates anything. */
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    event_set_log_callback(ev_log);
    const char *scope = inj.libevent ? "own + libevent" : "own";
    if (wanted(argc, argv, "config")) {
        config_yaml = rich_yaml;
        printf("alloc-sweep: config_load_string, every kind of rule (%s allocations): %lu "
               "allocation points\n",
               scope, sweep(&config_op));
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i - 1], "--config") != 0)
                continue;
            static char file[1 << 20];
            FILE *f = fopen(argv[i], "r");
            size_t len = f ? fread(file, 1, sizeof file - 1, f) : 0;
            if (!f || ferror(f) || len == 0) {
                fprintf(stderr, "alloc-sweep: cannot read %s\n", argv[i]);
                exit(2);
            }
            fclose(f);
            file[len] = '\0';
            config_yaml = file;
            printf("alloc-sweep: config_load_string, %s (%s): %lu allocation points\n", argv[i],
                   scope, sweep(&config_op));
        }
    }
    if (wanted(argc, argv, "urlmap"))
        printf("alloc-sweep: url_map_compile (%s): %lu allocation points\n", scope,
               sweep(&urlmap_op));
    if (wanted(argc, argv, "startup"))
        printf("alloc-sweep: worker startup (%s): %lu allocation points\n", scope,
               sweep(&startup_op));
    if (wanted(argc, argv, "h1"))
        sweep_inputs(&request_op, "h1", HARNESS_H1, (const uint8_t *)h1_request,
                     sizeof h1_request - 1, corpus);
    if (wanted(argc, argv, "h2"))
        sweep_inputs(&request_op, "h2", HARNESS_H2, h2_request, sizeof h2_request, corpus);
    if (skipped)
        printf("alloc-sweep: %lu times the Nth allocation was bufferevent_setwatermark's, not "
               "failed (a libevent 2.1 bug)\n",
               skipped);
    printf("alloc-sweep: %u failure(s): %s\n", failures, failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
