/*
 * tb_conn.c — one accepted connection of the testbed: TLS handshake and
 * ALPN, sniffing the HTTP/2 preface on plain sockets, dispatch to the
 * HTTP/1.1 or HTTP/2 code, and the three ways to close (after flushing,
 * abruptly, with a TCP RST).
 *
 * Lifetime: nothing frees a connection while one of its callbacks is on the
 * stack. Closing only sets TB_CONN_DEAD; every libevent callback that can
 * touch a connection ends with tb_conn_reap(), which frees it then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>

#include "core/errors.h"
#include "core/strlit.h"
#include "core/timer.h"
#include "testbed/testbed.h"

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN      (sizeof(H2_PREFACE) - 1)
#define CONN_LINGER_POLL_MS 10  /* re-check the send queue before an RST this often */
#define CONN_LINGER_POLLS   500 /* ... for at most 5 s */

static const char *conn_state_str(enum tb_conn_state s)
{
    switch (s) {
    case TB_CONN_HANDSHAKE: return "handshake";
    case TB_CONN_SNIFF: return "sniff";
    case TB_CONN_H1: return "h1";
    case TB_CONN_H2: return "h2";
    case TB_CONN_FLUSHING: return "flushing";
    case TB_CONN_DEAD: return "dead";
    }
    return "?";
}

/* The one place a connection changes state. DEAD is final. */
static void conn_set_state(struct tb_conn *c, enum tb_conn_state s)
{
    if (c->state == TB_CONN_DEAD)
        return;
    if (c->tb->trace)
        fprintf(stderr, "testbed: conn %p %s -> %s\n", (void *)c, conn_state_str(c->state),
                conn_state_str(s));
    c->state = s;
}

bool tb_conn_closing(const struct tb_conn *c)
{
    return c->state == TB_CONN_FLUSHING || c->state == TB_CONN_DEAD;
}

void tb_conn_abort(struct tb_conn *c)
{
    conn_set_state(c, TB_CONN_DEAD);
}

void tb_conn_reset(struct tb_conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    /* SO_LINGER 0: close() sends RST instead of FIN and drops unsent data. */
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    conn_set_state(c, TB_CONN_DEAD);
}

/* Bytes the kernel still holds for the peer (unsent or unacknowledged). */
static int conn_unacked(struct tb_conn *c)
{
    int n = 0;
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    if (fd < 0 || ioctl(fd, SIOCOUTQ, &n) != 0)
        return 0;
    return n;
}

/*
 * FLUSHING and the output is written: FIN, or RST when asked. An RST makes
 * the kernel drop what it has not sent yet, so a reset "after headers" or
 * "mid-body" first waits (bounded) until the peer has acknowledged them.
 */
static void conn_flushed(struct tb_conn *c)
{
    if (!c->reset_after_flush) {
        conn_set_state(c, TB_CONN_DEAD);
        return;
    }
    if (conn_unacked(c) > 0 && c->linger_polls < CONN_LINGER_POLLS && c->linger_timer) {
        c->linger_polls++;
        sy_timer_arm_ms(c->linger_timer, CONN_LINGER_POLL_MS);
        return;
    }
    tb_conn_reset(c);
}

static void on_conn_linger(evutil_socket_t fd, short what, void *arg)
{
    struct tb_conn *c = arg;

    conn_flushed(c);
    tb_conn_reap(c);
}

void tb_conn_reset_after_flush(struct tb_conn *c)
{
    c->reset_after_flush = true;
    tb_conn_close_after_flush(c);
}

void tb_conn_close_after_flush(struct tb_conn *c)
{
    if (tb_conn_closing(c))
        return;
    conn_set_state(c, TB_CONN_FLUSHING);
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_flushed(c);
        return;
    }
    /* Be told when the output is completely written. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
}

/* Frees every exchange on the list `head`, leaving it empty. */
static void conn_free_list(struct sy_link *head)
{
    struct sy_link *l;

    while ((l = sy_list_first(head))) {
        sy_list_unlink(l);
        tb_exchange_free(SY_CONTAINER_OF(l, struct tb_exchange, link));
    }
}

void tb_conn_free(struct tb_conn *c)
{
    sy_list_unlink(&c->link);
    /* The protocol state first: an h2 session may still point at exchanges. */
    tb_h1_free(c->h1);
    tb_h2_free(c->h2);
    conn_free_list(&c->exchanges);
    conn_free_list(&c->retired);
    if (c->linger_timer)
        event_free(c->linger_timer);
    if (c->bev)
        bufferevent_free(c->bev); /* closes the socket (and frees the SSL) */
    free(c);
}

void tb_conn_reap(struct tb_conn *c)
{
    conn_free_list(&c->retired);
    if (c->state == TB_CONN_DEAD)
        tb_conn_free(c);
}

/* ---- protocol selection -------------------------------------------------------- */

void tb_conn_set_h1(struct tb_conn *c)
{
    if (tb_h1_start(c) != 0) {
        tb_conn_abort(c);
        return;
    }
    conn_set_state(c, TB_CONN_H1);
    tb_h1_on_read(c);
}

void tb_conn_set_h2(struct tb_conn *c)
{
    if (tb_h2_start(c, NULL, 0, false, NULL) != 0) {
        tb_conn_abort(c);
        return;
    }
    conn_set_state(c, TB_CONN_H2);
    tb_h2_on_read(c);
}

int tb_conn_upgrade_h2(struct tb_conn *c, const uint8_t *settings, size_t settings_len,
                       bool head_request, struct tb_exchange *ex)
{
    int rc = tb_h2_start(c, settings, settings_len, head_request, ex);

    if (rc == 0)
        conn_set_state(c, TB_CONN_H2);
    return rc;
}

/* Plain socket: the connection preface means h2c by prior knowledge. */
static void conn_sniff(struct tb_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    unsigned char *p;

    if (n > H2_PREFACE_LEN)
        n = H2_PREFACE_LEN;
    p = evbuffer_pullup(in, (ev_ssize_t)n);
    if (n && memcmp(p, H2_PREFACE, n) != 0) {
        tb_conn_set_h1(c);
        return;
    }
    if (n == H2_PREFACE_LEN)
        tb_conn_set_h2(c);
    /* else: a prefix of the preface so far, wait for more */
}

/* TLS handshake done: ALPN decides; no ALPN sniffs like a plain socket. */
static void conn_tls_ready(struct tb_conn *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;

    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len == SY_STRLEN("h2") && memcmp(alpn, SY_STRLIT("h2")) == 0) {
        tb_conn_set_h2(c);
    } else if (alpn_len) {
        tb_conn_set_h1(c);
    } else {
        conn_set_state(c, TB_CONN_SNIFF);
        conn_sniff(c);
    }
}

/* ---- libevent callbacks ----------------------------------------------------------- */

static void on_conn_read(struct bufferevent *bev, void *arg)
{
    struct tb_conn *c = arg;

    if (c->state == TB_CONN_HANDSHAKE)
        conn_tls_ready(c);
    else if (c->state == TB_CONN_SNIFF)
        conn_sniff(c);
    else if (c->state == TB_CONN_H1)
        tb_h1_on_read(c);
    else if (c->state == TB_CONN_H2)
        tb_h2_on_read(c);
    else if (c->state == TB_CONN_FLUSHING)
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    tb_conn_reap(c);
}

static void on_conn_write(struct bufferevent *bev, void *arg)
{
    struct tb_conn *c = arg;
    size_t out = evbuffer_get_length(bufferevent_get_output(bev));

    if (c->state == TB_CONN_FLUSHING) {
        if (out == 0)
            conn_flushed(c);
    } else if (c->state == TB_CONN_H1) {
        tb_h1_on_write(c);
    } else if (c->state == TB_CONN_H2) {
        tb_h2_on_write(c);
    }
    tb_conn_reap(c);
}

static void on_conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct tb_conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == TB_CONN_HANDSHAKE)
            conn_tls_ready(c);
    } else if (what & BEV_EVENT_ERROR) {
        tb_conn_abort(c);
    } else if (what & BEV_EVENT_EOF) {
        c->peer_eof = true;
        if (c->state == TB_CONN_H1)
            tb_h1_on_eof(c);
        else if (c->state != TB_CONN_FLUSHING)
            tb_conn_abort(c);
    }
    tb_conn_reap(c);
}

int tb_conn_accept(struct testbed *tb, int fd)
{
    struct tb_conn *c = calloc(1, sizeof(*c));
    int opts = BEV_OPT_CLOSE_ON_FREE;
    SSL *ssl = NULL;
    int rc = SY_ENOMEM;

    if (!c)
        goto fail;
    c->tb = tb;
    sy_list_init(&c->exchanges);
    sy_list_init(&c->retired);
    c->tls = tb->ssl_ctx != NULL;
    if (c->tls) {
        ssl = SSL_new(tb->ssl_ctx);
        if (!ssl)
            goto fail;
        c->bev = bufferevent_openssl_socket_new(tb->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
        if (c->bev)
            ssl = NULL; /* owned by the bufferevent */
    } else {
        c->bev = bufferevent_socket_new(tb->base, fd, opts);
    }
    if (!c->bev)
        goto fail;
    c->linger_timer = evtimer_new(tb->base, on_conn_linger, c);
    if (!c->linger_timer)
        goto fail;
    c->state = c->tls ? TB_CONN_HANDSHAKE : TB_CONN_SNIFF;
    bufferevent_setcb(c->bev, on_conn_read, on_conn_write, on_conn_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, TB_IN_CAP);
    bufferevent_setwatermark(c->bev, EV_WRITE, TB_OUT_LOW, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    sy_list_insert_tail(&tb->conns, &c->link);
    return 0;

fail:
    SSL_free(ssl);
    if (c && c->bev) {
        bufferevent_free(c->bev); /* closes fd */
        fd = -1;
    }
    free(c);
    if (fd >= 0)
        close(fd);
    return rc;
}
