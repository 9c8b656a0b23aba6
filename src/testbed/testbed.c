/*
 * testbed.c — switchyard-testbed's entry point: command line, TLS context
 * (ALPN h2 and http/1.1), the listener, signals, and the event loop.
 *
 *   switchyard-testbed --listen HOST:PORT [--name NAME]
 *                      [--tls-cert FILE --tls-key FILE] [--verbose]
 *
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a usage or startup error (with a
 * one-line reason on stderr), 2 for --help shown on error.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/listener.h>
#include <openssl/err.h>

#include "core/errors.h"
#include "core/parse.h"
#include "core/timer.h"
#include "testbed/testbed.h"

#define LISTEN_BACKLOG  1024
#define NAME_MAX_LEN    128
#define ACCEPT_PAUSE_MS 100 /* pause accepting after an accept error */

struct tb_args {
    const char *listen;
    const char *name;
    const char *cert, *key;
    bool verbose;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: switchyard-testbed --listen HOST:PORT [--name NAME]\n"
               "                          [--tls-cert FILE --tls-key FILE] [--verbose]\n"
               "\n"
               "A controllable HTTP/1.1 + HTTP/2 test backend. Plain listeners speak\n"
               "HTTP/1.1 and h2c (prior knowledge or Upgrade); with a certificate, TLS\n"
               "with ALPN h2 and http/1.1. Answers 200 with a JSON echo of the request\n"
               "unless steered by request headers:\n"
               "  x-testbed-status: CODE            x-testbed-delay: DURATION\n"
               "  x-testbed-body-delay: DURATION    x-testbed-body-size: BYTES\n"
               "  x-testbed-reset: before-headers|after-headers|mid-body\n"
               "  x-testbed-close: 1                x-testbed-grpc-status: CODE\n"
               "  x-testbed-fail-first: N  (with x-testbed-key: K)\n"
               "GET /healthz answers 200 \"ok\" until POST /testbed/health?status=fail.\n"
               "See docs/testbed.md.\n");
}

/* Returns 0, 1 (help printed: exit 0) or SY_EINVAL (message printed). */
static int args_parse(int argc, char **argv, struct tb_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char **dst = NULL;

        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0)
            return 1;
        if (strcmp(opt, "--verbose") == 0) {
            a->verbose = true;
            continue;
        }
        if (strcmp(opt, "--listen") == 0)
            dst = &a->listen;
        else if (strcmp(opt, "--name") == 0)
            dst = &a->name;
        else if (strcmp(opt, "--tls-cert") == 0)
            dst = &a->cert;
        else if (strcmp(opt, "--tls-key") == 0)
            dst = &a->key;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "switchyard-testbed: %s: %s\n", opt,
                    dst ? "missing value" : "unknown option (see --help)");
            return SY_EINVAL;
        }
        *dst = argv[++i];
    }
    if (!a->listen || (!a->cert != !a->key)) {
        fprintf(stderr, "switchyard-testbed: %s (see --help)\n",
                !a->listen ? "--listen is required" : "--tls-cert and --tls-key go together");
        return SY_EINVAL;
    }
    return 0;
}

/* Names go into a response header and JSON: visible ASCII only. */
static bool name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (name[i] < 0x21 || name[i] > 0x7e)
            return false;
    }
    return true;
}

/* ALPN: h2 when offered, else http/1.1; neither is a handshake without ALPN. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char prefs[] = "\x02h2\x08http/1.1";

    if (SSL_select_next_proto((unsigned char **)out, outlen, prefs, sizeof(prefs) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_ctx_new(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    unsigned long err;

    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    return ctx;

fail:
    err = ERR_get_error();
    fprintf(stderr, "switchyard-testbed: TLS setup (%s, %s): %s\n", cert, key,
            err ? ERR_reason_error_string(err) : "failed");
    SSL_CTX_free(ctx);
    return NULL;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    struct testbed *tb = arg;

    evutil_make_socket_nonblocking(fd);
    if (tb_conn_accept(tb, fd) != 0)
        fprintf(stderr, "switchyard-testbed: dropped a connection (out of memory)\n");
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct testbed *tb = arg;

    /* EMFILE and friends: keep serving the connections we have, and pause
     * accepting so a level-triggered listener does not spin. */
    perror("switchyard-testbed: accept");
    evconnlistener_disable(l);
    sy_timer_arm_ms(tb->accept_retry, ACCEPT_PAUSE_MS);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct testbed *tb = arg;

    evconnlistener_enable(tb->listener);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct testbed *tb = arg;

    event_base_loopbreak(tb->base);
}

static int listener_open(struct testbed *tb, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;

    if (sy_parse_addr(addr, &ss, &len) != 0) {
        fprintf(stderr, "switchyard-testbed: bad --listen address %s\n", addr);
        return SY_EINVAL;
    }
    tb->listener = evconnlistener_new_bind(
        tb->base, on_accept, tb, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        LISTEN_BACKLOG, (struct sockaddr *)&ss, (int)len);
    if (!tb->listener) {
        fprintf(stderr, "switchyard-testbed: cannot listen on %s: %s\n", addr,
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return SY_EIO;
    }
    evconnlistener_set_error_cb(tb->listener, on_accept_error);
    return 0;
}

/*
 * An event base with a precise monotonic clock: the default coarse clock can
 * fire a timer a few ms early, and tests measure x-testbed-delay.
 */
static struct event_base *base_new(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (!cfg)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* Runs until SIGTERM or SIGINT. Returns the exit status. */
static int testbed_run(struct testbed *tb, const struct tb_args *a)
{
    struct event *sigterm = NULL, *sigint = NULL;
    struct sy_link *l;
    int status = 1;

    sy_list_init(&tb->conns);
    tb->base = base_new();
    tb->fail = tb_fail_table_new();
    if (!tb->base || !tb->fail)
        goto fail;
    tb->accept_retry = evtimer_new(tb->base, on_accept_retry, tb);
    if (!tb->accept_retry)
        goto fail;
    if (a->cert && !(tb->ssl_ctx = tls_ctx_new(a->cert, a->key)))
        goto fail;
    if (listener_open(tb, a->listen) != 0)
        goto fail;
    sigterm = evsignal_new(tb->base, SIGTERM, on_signal, tb);
    sigint = evsignal_new(tb->base, SIGINT, on_signal, tb);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) != 0 || evsignal_add(sigint, NULL) != 0)
        goto fail;
    fprintf(stderr, "switchyard-testbed: %s listening on %s (%s)\n", tb->name, a->listen,
            tb->ssl_ctx ? "TLS, ALPN h2 http/1.1" : "HTTP/1.1 and h2c");
    event_base_dispatch(tb->base);
    status = 0;

fail:
    while ((l = sy_list_first(&tb->conns)))
        tb_conn_free(SY_CONTAINER_OF(l, struct tb_conn, link));
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (tb->accept_retry)
        event_free(tb->accept_retry);
    if (tb->listener)
        evconnlistener_free(tb->listener);
    SSL_CTX_free(tb->ssl_ctx);
    tb_fail_table_free(tb->fail);
    if (tb->base)
        event_base_free(tb->base);
    return status;
}

int main(int argc, char **argv)
{
    struct tb_args a = {.name = "testbed"};
    struct testbed tb = {.healthy = true};
    int rc = args_parse(argc, argv, &a);

    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0)
        return 1;
    if (!name_valid(a.name)) {
        fprintf(stderr, "switchyard-testbed: --name must be 1..%d visible ASCII characters\n",
                NAME_MAX_LEN);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    tb.name = a.name;
    tb.trace = a.verbose;
    return testbed_run(&tb, &a);
}
