/*
 * test_core.c — core primitives: the arena's cleanup registrations (order,
 * early release, cancel, the two moments, the reserve past the limit), the
 * intrusive list's splicing, and the ownership contract of
 * sy_bev_openssl_new against the libevent actually linked (its allocator is
 * swapped for one that fails on demand), and deadlines (timer.h) on a real
 * event base: re-armed, cancelled, deleted; the worker's defer queue
 * (defer.h): order, once per batch, cancel, work queued while a batch runs.
 */
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/defer.h"
#include "core/list.h"
#include "core/timer.h"
#include "core/tls_bev.h"
#include "core/worker.h"
#include "test.h"

/* ---- arena cleanups ------------------------------------------------------------------------ */

struct trace {
    char log[32]; /* one letter per cleanup run, in order (the first 31) */
    size_t n;
    int runs;
};

struct probe {
    struct trace *t;
    char name;
    struct arena *a;             /* for the cleanup that registers another */
    struct arena_cleanup *other; /* for the cleanup that runs another early */
    struct probe *chained;
};

static void on_probe(void *arg)
{
    struct probe *p = arg;
    p->t->runs++;
    if (p->t->n + 1 < sizeof p->t->log)
        p->t->log[p->t->n++] = p->name;
    p->t->log[p->t->n] = '\0';
    if (p->chained)
        arena_on_cleanup(p->a, on_probe, p->chained);
    if (p->other)
        arena_cleanup_run(p->other);
}

static void test_arena_cleanups(void)
{
    TEST_CASE("arena cleanups");
    struct arena a;
    struct trace t = {0};
    struct probe p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (struct probe){.t = &t, .name = (char)('a' + i), .a = &a};

    /* Newest first; arena_on_free ones wait for arena_free. */
    arena_init(&a, 4096);
    arena_on_free(&a, on_probe, &p[0]);
    arena_on_cleanup(&a, on_probe, &p[1]);
    struct arena_cleanup *c = arena_on_cleanup(&a, on_probe, &p[2]);
    arena_on_cleanup(&a, on_probe, &p[3]);
    CHECK(c != NULL);
    arena_run_cleanups(&a);
    CHECK_STR(t.log, "dcb");
    arena_cleanup_run(c); /* already ran: nothing */
    arena_run_cleanups(&a);
    CHECK_STR(t.log, "dcb");
    arena_free(&a);
    CHECK_STR(t.log, "dcba");

    /* Released early: runs once, at that moment; cancelled: never. */
    t.n = 0;
    t.log[0] = '\0';
    arena_init(&a, 4096);
    struct arena_cleanup *early = arena_on_cleanup(&a, on_probe, &p[0]);
    struct arena_cleanup *gone = arena_on_cleanup(&a, on_probe, &p[1]);
    arena_on_cleanup(&a, on_probe, &p[2]);
    arena_cleanup_run(early);
    CHECK_STR(t.log, "a");
    arena_cleanup_cancel(gone);
    arena_cleanup_run(NULL);
    arena_cleanup_cancel(NULL);
    arena_free(&a); /* runs the rest (no arena_run_cleanups first) */
    CHECK_STR(t.log, "ac");

    /* A cleanup that registers another (it runs too, after the pending ones)
     * or runs another early (that one then does not run twice). */
    t.n = 0;
    t.log[0] = '\0';
    arena_init(&a, 4096);
    struct arena_cleanup *target = arena_on_cleanup(&a, on_probe, &p[0]);
    p[1].other = target;
    arena_on_cleanup(&a, on_probe, &p[1]);
    p[2].chained = &p[3];
    arena_on_cleanup(&a, on_probe, &p[2]);
    arena_run_cleanups(&a);
    CHECK_STR(t.log, "cbad");
    arena_free(&a);
    CHECK_STR(t.log, "cbad");
    p[1].other = NULL;
    p[2].chained = NULL;

    /* A full arena still takes registrations (the reserve), not data. */
    t.runs = 0;
    arena_init(&a, 1024);
    CHECK(arena_alloc(&a, 1024) != NULL);
    CHECK(!a.limit_hit);
    CHECK(arena_alloc(&a, 16) == NULL);
    CHECK(a.limit_hit);
    int taken = 0;
    for (int i = 0; i < 64 && arena_on_cleanup(&a, on_probe, &p[i % 8]); i++)
        taken++;
    CHECK(taken >= 16 && taken < 64); /* bounded by ARENA_CLEANUP_RESERVE */
    CHECK(arena_alloc(&a, 16) == NULL);
    arena_grant(&a, 64);
    CHECK(arena_alloc(&a, 16) != NULL);
    arena_free(&a);
    CHECK(t.runs == taken); /* every registration ran */
}

/* ---- list splicing ------------------------------------------------------------------------- */

struct item {
    int v;
    struct sy_link link;
};

/* The values on `head` in order, as digits ("" when empty). */
static void list_str(const struct sy_link *head, char *out)
{
    size_t n = 0;
    for (const struct sy_link *l = head->next; l != head; l = l->next)
        out[n++] = (char)('0' + SY_CONTAINER_OF(l, struct item, link)->v);
    out[n] = '\0';
}

static void test_list_splice(void)
{
    TEST_CASE("list splice");
    struct item it[6];
    struct sy_link a, b;
    char s[16];
    sy_list_init(&a);
    sy_list_init(&b);
    for (int i = 0; i < 6; i++) {
        it[i] = (struct item){.v = i};
        sy_list_insert_tail(i < 3 ? &a : &b, &it[i].link);
    }
    sy_list_splice_head(&a, &b);
    list_str(&a, s);
    CHECK_STR(s, "345012");
    CHECK(sy_list_empty(&b));
    sy_list_splice_tail(&b, &a);
    list_str(&b, s);
    CHECK_STR(s, "345012");
    CHECK(sy_list_empty(&a));
    sy_list_splice_tail(&b, &a); /* empty: nothing moves */
    sy_list_splice_head(&a, &a);
    list_str(&b, s);
    CHECK_STR(s, "345012");
    sy_list_unlink(&it[0].link);
    sy_list_insert_tail(&a, &it[0].link);
    sy_list_splice_tail(&a, &b); /* onto a non-empty list */
    list_str(&a, s);
    CHECK_STR(s, "034512");
    sy_list_splice_head(&b, &a); /* into an empty one */
    list_str(&b, s);
    CHECK_STR(s, "034512");
}

/* ---- sy_bev_openssl_new: who frees the SSL -------------------------------------------------- */

static int fail_alloc_at = -1; /* the index of the libevent allocation to refuse, -1: none */
static int n_allocs;

static void *counting_malloc(size_t n)
{
    return n_allocs++ == fail_alloc_at ? NULL : malloc(n);
}

static void *counting_realloc(void *p, size_t n)
{
    return n_allocs++ == fail_alloc_at ? NULL : realloc(p, n);
}

static int ssl_frees;

static void on_ssl_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    ssl_frees++;
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void test_tls_bev_contract(void)
{
    TEST_CASE("sy_bev_openssl_new");
    struct event_base *base = event_base_new();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, on_ssl_free);
    int sv[2] = {-1, -1};
    CHECK(base && ctx && idx >= 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    if (!base || !ctx || sv[0] < 0)
        goto out;

    /* The bufferevent's own allocation fails: the SSL is freed (once), the fd stays ours. */
    SSL *ssl = SSL_new(ctx);
    SSL_set_ex_data(ssl, idx, ssl);
    ssl_frees = 0;
    n_allocs = 0;
    fail_alloc_at = 0;
    event_set_mem_functions(counting_malloc, counting_realloc, free);
    struct bufferevent *bev =
        sy_bev_openssl_new(base, sv[0], ssl, BUFFEREVENT_SSL_CONNECTING, 0 /* added */);
    event_set_mem_functions(NULL, NULL, NULL);
    fail_alloc_at = -1;
    CHECK(bev == NULL);
    CHECK(ssl_frees == 1);
    CHECK(fd_open(sv[0]));

    /* An SSL already bound to another fd: refused, and freed. */
    ssl = SSL_new(ctx);
    SSL_set_ex_data(ssl, idx, ssl);
    SSL_set_fd(ssl, sv[1]);
    ssl_frees = 0;
    bev = sy_bev_openssl_new(base, sv[0], ssl, BUFFEREVENT_SSL_CONNECTING, 0);
    CHECK(bev == NULL);
    CHECK(ssl_frees == 1);
    CHECK(fd_open(sv[0]) && fd_open(sv[1]));

    /* No SSL (its creation failed): NULL, nothing else. */
    CHECK(sy_bev_openssl_new(base, sv[0], NULL, BUFFEREVENT_SSL_CONNECTING, 0) == NULL);

    /* Success: the bufferevent owns both and frees both. */
    ssl = SSL_new(ctx);
    SSL_set_ex_data(ssl, idx, ssl);
    ssl_frees = 0;
    bev = sy_bev_openssl_new(base, sv[0], ssl, BUFFEREVENT_SSL_CONNECTING, 0);
    CHECK(bev != NULL);
    if (bev) {
        bufferevent_free(bev);
        event_base_loop(base, EVLOOP_NONBLOCK); /* libevent finalizes it in its loop */
        CHECK(ssl_frees == 1);
        CHECK(!fd_open(sv[0]));
        sv[0] = -1;
    }
out:
    for (int i = 0; i < 2; i++)
        if (sv[i] >= 0)
            close(sv[i]);
    SSL_CTX_free(ctx);
    if (base)
        event_base_free(base);
}

/* ---- random ids ----------------------------------------------------------------------------- */

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_random_ids(void)
{
    TEST_CASE("sy_uuid4, sy_random_hex");
    struct worker w;
    memset(&w, 0, sizeof w);
    w.rng = 0x9e3779b97f4a7c15ull;
    /* Every position of a 32-digit id takes each of the 16 digits over
     * enough draws: the digit conversion misses none and mixes nothing in. */
    unsigned seen[32] = {0};
    bool ok = true;
    for (int k = 0; k < 2000; k++) {
        char id[33];
        sy_random_hex(&w, id, 32);
        ok &= strlen(id) == 32;
        for (int i = 0; i < 32; i++) {
            ok &= is_lower_hex(id[i]);
            seen[i] |= 1u << (id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
        }
    }
    CHECK(ok);
    for (int i = 0; i < 32; i++)
        CHECK(seen[i] == 0xffff);
    char span[17];
    sy_random_hex(&w, span, 16);
    CHECK(strlen(span) == 16 && strspn(span, "0123456789abcdef") == 16);
    char odd[6];
    sy_random_hex(&w, odd, 5);
    CHECK(strlen(odd) == 5 && strspn(odd, "0123456789abcdef") == 5);
    /* RFC 9562 version 4: 8-4-4-4-12 lowercase hex, version 4, variant 10xx. */
    unsigned variants = 0;
    for (int k = 0; k < 200; k++) {
        char u[37];
        sy_uuid4(&w, u);
        ok = strlen(u) == 36 && u[8] == '-' && u[13] == '-' && u[18] == '-' && u[23] == '-';
        for (int i = 0; i < 36; i++)
            if (i != 8 && i != 13 && i != 18 && i != 23)
                ok &= is_lower_hex(u[i]);
        ok &= u[14] == '4' && strchr("89ab", u[19]) != NULL;
        CHECK(ok);
        variants |= 1u << (u[19] <= '9' ? u[19] - '8' : u[19] - 'a' + 2);
    }
    CHECK(variants == 0xf);
}

/* ---- deadlines ----------------------------------------------------------------------------- */

struct fired {
    int n;
    uint64_t at_ms; /* sy_now_us() / 1000 of the last run (the deadlines' clock) */
};

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    struct fired *f = arg;
    f->n++;
    f->at_ms = sy_now_us() / 1000;
}

/* Run `base` for `ms` milliseconds (less if nothing is pending). */
static void run_for(struct event_base *base, uint64_t ms)
{
    struct timeval tv = sy_tv_ms(ms);
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static bool ev_pending(struct sy_deadline *d)
{
    return event_pending(&d->ev, EV_TIMEOUT, NULL) != 0;
}

static void test_deadline(void)
{
    TEST_CASE("sy_deadline");
    struct event_base *base = event_base_new();
    CHECK(base != NULL);
    if (!base)
        return;
    struct fired f = {0};
    struct sy_deadline d;
    sy_deadline_assign(&d, base, on_due, &f);
    CHECK(!sy_deadline_armed(&d) && !ev_pending(&d));

    /* Armed: runs once, never before it is due (even on a base with the coarse clock). */
    uint64_t t0 = sy_now_us() / 1000;
    CHECK(sy_deadline_arm(&d, 40) == 0);
    CHECK(sy_deadline_armed(&d) && ev_pending(&d));
    run_for(base, 400);
    CHECK(f.n == 1 && f.at_ms >= t0 + 40);
    CHECK(!sy_deadline_armed(&d) && !ev_pending(&d));

    /* Re-armed for later while pending: no new expiry is set, and it runs
     * once, at the later time. */
    f = (struct fired){0};
    t0 = sy_now_us() / 1000;
    sy_deadline_arm(&d, 20);
    uint64_t first = d.fires_ms;
    sy_deadline_arm(&d, 120);
    CHECK(d.fires_ms == first);
    run_for(base, 60);
    CHECK(f.n == 0 && ev_pending(&d)); /* expired once, waits for the rest */
    run_for(base, 600);
    CHECK(f.n == 1 && f.at_ms >= t0 + 120);

    /* Re-armed for sooner while pending: the earlier time wins. */
    f = (struct fired){0};
    sy_deadline_arm(&d, 5000);
    t0 = sy_now_us() / 1000;
    sy_deadline_arm(&d, 20);
    run_for(base, 2000);
    CHECK(f.n == 1 && f.at_ms < t0 + 1000);

    /* Cancelled: the event may stay pending, but the callback never runs;
     * arming again afterwards works as before. */
    f = (struct fired){0};
    sy_deadline_arm(&d, 20);
    sy_deadline_cancel(&d);
    CHECK(!sy_deadline_armed(&d) && ev_pending(&d));
    run_for(base, 100);
    CHECK(f.n == 0 && !ev_pending(&d));
    sy_deadline_arm(&d, 10);
    sy_deadline_cancel(&d);
    sy_deadline_arm(&d, 30); /* the cancelled expiry comes first: it re-adds */
    run_for(base, 400);
    CHECK(f.n == 1);

    /* 0 ms: the next loop turn. */
    f = (struct fired){0};
    sy_deadline_arm(&d, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(f.n == 1);

    /* Deleted: out of the loop at once (its memory may then be freed). */
    f = (struct fired){0};
    sy_deadline_arm(&d, 20);
    sy_deadline_del(&d);
    CHECK(!sy_deadline_armed(&d) && !ev_pending(&d));
    run_for(base, 60);
    CHECK(f.n == 0);
    event_base_free(base);
}

/* ---- defer queue --------------------------------------------------------------------------- */

struct step {
    struct sy_defer d;
    struct sy_defer_queue *q;
    char name;
    char *log;               /* appended to, one letter per run */
    struct step *queue_next; /* queued by this step when it runs */
    struct step *cancel;     /* cancelled by this step when it runs */
};

static void on_step(struct sy_defer *d)
{
    struct step *s = SY_CONTAINER_OF(d, struct step, d);
    size_t n = strlen(s->log);
    if (n < 15) {
        s->log[n] = s->name;
        s->log[n + 1] = '\0';
    }
    if (s->queue_next)
        sy_defer(s->q, &s->queue_next->d);
    if (s->cancel)
        sy_defer_cancel(&s->cancel->d);
}

static void test_defer_queue(void)
{
    TEST_CASE("sy_defer_queue");
    struct event_base *base = event_base_new();
    CHECK(base != NULL);
    if (!base)
        return;
    struct sy_defer_queue q;
    CHECK(sy_defer_queue_init(&q, base) == 0);
    char log[16] = "";
    struct step st[4];
    for (int i = 0; i < 4; i++) {
        st[i] = (struct step){.q = &q, .name = (char)('a' + i), .log = log};
        sy_defer_init(&st[i].d, on_step);
    }

    /* First queued, first run; queued twice, run once; nothing runs
     * before the loop does. */
    sy_defer(&q, &st[1].d);
    sy_defer(&q, &st[0].d);
    sy_defer(&q, &st[1].d);
    CHECK(sy_defer_scheduled(&st[0].d) && sy_defer_scheduled(&st[1].d));
    CHECK(strcmp(log, "") == 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(strcmp(log, "ba") == 0);
    CHECK(!sy_defer_scheduled(&st[0].d) && !sy_defer_scheduled(&st[1].d));

    /* Cancelled before the loop: not run. Cancelled by an earlier step of
     * the same batch: not run either. */
    log[0] = '\0';
    sy_defer(&q, &st[0].d);
    sy_defer(&q, &st[1].d);
    sy_defer(&q, &st[2].d);
    sy_defer_cancel(&st[0].d);
    st[1].cancel = &st[2];
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(strcmp(log, "b") == 0);
    st[1].cancel = NULL;

    /* Queued while a batch runs: after that batch, in the same loop turn
     * (as libevent runs an event made active by a callback). */
    log[0] = '\0';
    st[0].queue_next = &st[3];
    st[3].queue_next = &st[1];
    sy_defer(&q, &st[0].d);
    sy_defer(&q, &st[1].d);
    sy_defer(&q, &st[2].d);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK(strcmp(log, "abcdb") == 0);
    st[0].queue_next = st[3].queue_next = NULL;

    /* Freed with work queued: dropped, the event gone with it. */
    log[0] = '\0';
    sy_defer(&q, &st[0].d);
    sy_defer_queue_free(&q);
    CHECK(!sy_defer_scheduled(&st[0].d));
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(strcmp(log, "") == 0);
    event_base_free(base);
}

void test_core_suite(void)
{
    test_random_ids();
    test_arena_cleanups();
    test_list_splice();
    test_tls_bev_contract();
    test_deadline();
    test_defer_queue();
}
