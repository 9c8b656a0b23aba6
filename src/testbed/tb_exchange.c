/*
 * tb_exchange.c — one request/response pair of the testbed, independent of
 * the protocol: the request head store, and the driver that plays a plan
 * (delay, close or reset, head, body chunks with delays, reset mid-body)
 * through the protocol's ops.
 */
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "testbed/testbed.h"

#define HEAD_BUF_INITIAL 2048

static void on_exchange_timer(evutil_socket_t fd, short what, void *arg);

const char *tb_exchange_state_str(enum tb_exchange_state s)
{
    switch (s) {
    case TB_EX_REQUEST: return "request";
    case TB_EX_DELAY: return "delay";
    case TB_EX_RESPONDING: return "responding";
    case TB_EX_BODY_WAIT: return "body-wait";
    case TB_EX_DONE: return "done";
    }
    return "?";
}

/* The one place an exchange changes state. */
static void exchange_set_state(struct tb_exchange *ex, enum tb_exchange_state s)
{
    ex->state = s;
}

struct tb_exchange *tb_exchange_new(struct tb_conn *conn, const struct tb_exchange_ops *ops,
                                    enum tb_protocol protocol, int32_t stream_id)
{
    struct tb_exchange *ex = calloc(1, sizeof(*ex));

    if (!ex)
        return NULL;
    ex->timer = evtimer_new(conn->tb->base, on_exchange_timer, ex);
    if (!ex->timer) {
        free(ex);
        return NULL;
    }
    ex->conn = conn;
    ex->ops = ops;
    ex->stream_id = stream_id;
    ex->req.protocol = protocol;
    exchange_set_state(ex, TB_EX_REQUEST);
    sy_list_insert_tail(&conn->exchanges, &ex->link);
    return ex;
}

void tb_exchange_free(struct tb_exchange *ex)
{
    if (!ex)
        return;
    event_free(ex->timer);
    if (ex->planned)
        tb_plan_free(&ex->plan);
    free(ex->req.buf);
    free(ex);
}

void tb_exchange_retire(struct tb_exchange *ex)
{
    struct tb_conn *c = ex->conn;

    if (ex->state == TB_EX_DONE)
        return;
    exchange_set_state(ex, TB_EX_DONE);
    evtimer_del(ex->timer);
    sy_list_unlink(&ex->link);
    sy_list_insert_tail(&c->retired, &ex->link);
}

/* ---- request head store ------------------------------------------------- */

/* Makes room for n more bytes; false (and too_large) past TB_HEAD_CAP. */
static bool request_reserve(struct tb_request *req, size_t n)
{
    size_t want = (size_t)req->len + n, cap = req->cap ? req->cap : HEAD_BUF_INITIAL;
    char *nb;

    if (want > TB_HEAD_CAP) {
        req->too_large = true;
        return false;
    }
    if (want <= req->cap)
        return true;
    while (cap < want)
        cap *= 2;
    if (cap > TB_HEAD_CAP)
        cap = TB_HEAD_CAP;
    nb = realloc(req->buf, cap);
    if (!nb) {
        req->too_large = true;
        return false;
    }
    req->buf = nb;
    req->cap = (uint32_t)cap;
    return true;
}

/* The span a piece of this kind extends; NULL when no field has room. */
static struct tb_span *request_piece_span(struct tb_request *req, enum tb_piece kind, bool start)
{
    struct tb_field *f;

    switch (kind) {
    case TB_PIECE_METHOD: return &req->method;
    case TB_PIECE_PATH: return &req->path;
    case TB_PIECE_AUTHORITY: return &req->authority;
    case TB_PIECE_NAME:
        if (start) {
            if (req->nfields == TB_FIELDS_CAP) {
                req->too_large = true;
                return NULL;
            }
            f = &req->fields[req->nfields++];
            f->name = (struct tb_span){.off = req->len, .len = 0};
            f->value = (struct tb_span){.off = req->len, .len = 0};
        }
        return req->nfields ? &req->fields[req->nfields - 1].name : NULL;
    case TB_PIECE_VALUE:
        if (req->nfields == 0)
            return NULL;
        return &req->fields[req->nfields - 1].value;
    }
    return NULL;
}

void tb_request_append(struct tb_request *req, enum tb_piece kind, bool start, const char *p,
                       size_t n)
{
    struct tb_span *s;

    if (req->too_large)
        return;
    s = request_piece_span(req, kind, start);
    if (!s)
        return;
    if (start && kind != TB_PIECE_NAME) {
        s->off = req->len; /* a repeated item replaces the earlier one */
        s->len = 0;
    }
    if (n == 0 || !request_reserve(req, n))
        return;
    memcpy(req->buf + req->len, p, n);
    if (kind == TB_PIECE_NAME) {
        for (size_t i = 0; i < n; i++) {
            char ch = req->buf[req->len + i];
            if (ch >= 'A' && ch <= 'Z')
                req->buf[req->len + i] = (char)(ch - 'A' + 'a');
        }
    }
    req->len += (uint32_t)n;
    s->len += (uint32_t)n;
}

bool tb_span_eq(const struct tb_request *req, struct tb_span s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && (n == 0 || memcmp(req->buf + s.off, lit, n) == 0);
}

bool tb_request_header(const struct tb_request *req, const char *name, struct tb_span *out)
{
    for (uint32_t i = 0; i < req->nfields; i++) {
        if (tb_span_eq(req, req->fields[i].name, name)) {
            *out = req->fields[i].value;
            return true;
        }
    }
    return false;
}

bool tb_request_copy(const struct tb_request *req, struct tb_span s, char *dst, size_t cap)
{
    if ((size_t)s.len + 1 > cap)
        return false;
    if (s.len)
        memcpy(dst, req->buf + s.off, s.len);
    dst[s.len] = '\0';
    return true;
}

/* ---- the driver ------------------------------------------------------------ */

/* The delay is over (or there was none): close, reset, or send the head. */
static void exchange_answer(struct tb_exchange *ex)
{
    const struct tb_plan *p = &ex->plan;

    if (p->close) {
        ex->ops->close(ex);
        return;
    }
    if (p->reset == TB_RESET_BEFORE_HEADERS) {
        ex->ops->reset(ex);
        return;
    }
    exchange_set_state(ex, TB_EX_RESPONDING);
    ex->limit = (p->head || p->no_body) ? 0 : p->body_len;
    if (p->reset == TB_RESET_AFTER_HEADERS)
        ex->limit = 0;
    else if (p->reset == TB_RESET_MID_BODY)
        ex->limit = ex->limit > 1 ? ex->limit / 2 : 0;
    ex->chunk_size = UINT64_MAX;
    if (p->body_delay_ms) {
        uint64_t quarter = (p->body_len + 3) / 4;
        ex->chunk_size = quarter < 1 ? 1 : quarter > TB_CHUNK_MAX ? TB_CHUNK_MAX : quarter;
    }
    ex->chunk_left = ex->chunk_size;
    ex->ops->respond(ex);
}

void tb_exchange_request_done(struct tb_exchange *ex)
{
    tb_plan_build(ex->conn->tb, &ex->req, &ex->plan);
    ex->planned = true;
    if (ex->plan.delay_ms) {
        exchange_set_state(ex, TB_EX_DELAY);
        sy_timer_arm_ms(ex->timer, ex->plan.delay_ms);
        return;
    }
    exchange_answer(ex);
}

static void on_exchange_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tb_exchange *ex = arg;
    struct tb_conn *c = ex->conn;

    if (ex->state == TB_EX_DELAY) {
        exchange_answer(ex);
    } else if (ex->state == TB_EX_BODY_WAIT) {
        exchange_set_state(ex, TB_EX_RESPONDING);
        ex->chunk_left = ex->chunk_size;
        ex->ops->resume_body(ex);
    }
    tb_conn_reap(c); /* ex may be freed from here on */
}

/* Copies body bytes [ex->sent, ex->sent + n) into dst. */
static void exchange_copy_body(struct tb_exchange *ex, char *dst, size_t n)
{
    if (ex->plan.body)
        memcpy(dst, ex->plan.body + ex->sent, n);
    else
        tb_pattern_fill(dst, ex->sent, n);
}

enum tb_pull tb_exchange_pull(struct tb_exchange *ex, char *dst, size_t max, size_t *n)
{
    uint64_t left = ex->limit - ex->sent, take;

    *n = 0;
    if (ex->state == TB_EX_BODY_WAIT)
        return TB_PULL_WAIT;
    if (left == 0)
        return ex->plan.reset != TB_RESET_NONE ? TB_PULL_RESET : TB_PULL_EOF;
    if (ex->chunk_left == 0) {
        exchange_set_state(ex, TB_EX_BODY_WAIT);
        sy_timer_arm_ms(ex->timer, ex->plan.body_delay_ms);
        return TB_PULL_WAIT;
    }
    take = left < max ? left : max;
    if (take > ex->chunk_left)
        take = ex->chunk_left;
    exchange_copy_body(ex, dst, (size_t)take);
    ex->sent += take;
    ex->chunk_left -= take;
    *n = (size_t)take;
    if (ex->sent == ex->limit && ex->plan.reset == TB_RESET_NONE)
        return TB_PULL_EOF;
    return TB_PULL_MORE;
}
