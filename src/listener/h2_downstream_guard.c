/*
 * h2_downstream_guard.c — what an HTTP/2 client may send before its
 * connection ends (RFC 9113 10.5): every frame header is looked at before
 * nghttp2 reads the payload (on_begin_frame), for stream id order (RFC
 * 9113 5.1.1) and frame floods; a callback that finds abuse makes nghttp2
 * stop at once (h2d_fail) and h2_downstream.c sends the one GOAWAY. The
 * limits are documented in docs/protocols.md ("Abuse limits").
 */
#include <nghttp2/nghttp2.h>
#include <string.h>

#include "core/worker.h"
#include "listener/h2_downstream-int.h"

int h2d_fail(struct h2_down_conn *c, uint32_t code, const char *why)
{
    if (!c->fail_why) {
        c->fail_code = code;
        c->fail_why = why;
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/*
 * Frames of each kind a client may send per one-second window before the
 * connection is ended with ENHANCE_YOUR_CALM. Generous for real clients
 * (which send a few SETTINGS and PRIORITY frames, PINGs under ping_policy,
 * and WINDOW_UPDATEs in step with the DATA they receive); a flood trips
 * them within a window, so the work per flooded frame stays constant.
 */
static const struct {
    uint32_t base;     /* frames per window */
    uint32_t per_data; /* more per DATA frame we sent in the window */
    const char *why;   /* GOAWAY debug data */
} flood_limit[FLOOD_KINDS] = {
    [FLOOD_SETTINGS] = {100, 0, "settings_flood"},
    [FLOOD_PING] = {100, 0, "ping_flood"},
    [FLOOD_EMPTY_DATA] = {100, 0, "empty_data_flood"},
    [FLOOD_WINDOW_UPDATE] = {1000, 4, "window_update_flood"},
    [FLOOD_PRIORITY] = {1000, 0, "priority_flood"},
};

#define FLOOD_WINDOW_MS 1000

/* One more frame of `kind`: 0, or h2d_fail's code when over its limit. */
static int flood_count(struct h2_down_conn *c, enum h2d_flood kind)
{
    uint64_t now = sy_now_ms();
    if (now - c->flood_window_ms >= FLOOD_WINDOW_MS) {
        c->flood_window_ms = now;
        memset(c->flood, 0, sizeof c->flood);
        c->data_sent = 0;
    }
    uint64_t limit = flood_limit[kind].base + (uint64_t)flood_limit[kind].per_data * c->data_sent;
    if (++c->flood[kind] > limit)
        return h2d_fail(c, NGHTTP2_ENHANCE_YOUR_CALM, flood_limit[kind].why);
    return 0;
}

/*
 * Rapid Reset (CVE-2023-44487): a token bucket of RESET_BURST client
 * RST_STREAMs refilled at RESET_RATE per second, as nghttp2's own limiter
 * (set to the same values, h2_down_session) but looked at first, so the
 * GOAWAY says ENHANCE_YOUR_CALM like the other floods (nghttp2's says
 * INTERNAL_ERROR). 0, or h2d_fail's code.
 */
static int reset_count(struct h2_down_conn *c)
{
    uint64_t now = sy_now_ms();
    if (!c->reset_refill_ms) {
        c->reset_budget = RESET_BURST * 1000ull;
        c->reset_refill_ms = now;
    }
    c->reset_budget += (now - c->reset_refill_ms) * RESET_RATE;
    c->reset_refill_ms = now;
    if (c->reset_budget > RESET_BURST * 1000ull)
        c->reset_budget = RESET_BURST * 1000ull;
    if (c->reset_budget < 1000)
        return h2d_fail(c, NGHTTP2_ENHANCE_YOUR_CALM, "rapid_reset");
    c->reset_budget -= 1000;
    return 0;
}

/* Did we reset stream `id` lately? (Its client may still send HEADERS: RFC 9113 5.1.) */
static bool reset_lately(const struct h2_down_conn *c, int32_t id)
{
    for (unsigned i = 0; i < H2D_RESET_RING; i++)
        if (c->reset_ring[i] == id)
            return true;
    return false;
}

/*
 * RFC 9113 5.1.1: a new stream's id is above every id the client used
 * before. nghttp2 ignores a HEADERS below that on a stream it does not
 * know (it cannot tell a closed stream from one never opened); we end the
 * connection with PROTOCOL_ERROR, unless we reset that stream ourselves
 * lately (then trailers may still be in flight) or it is still open.
 */
static int check_stream_id(struct h2_down_conn *c, int32_t id)
{
    if (id > c->max_client_id) {
        if (id & 1)
            c->max_client_id = id;
        return 0;
    }
    nghttp2_stream *s = nghttp2_session_find_stream(c->ng, id);
    if (s && nghttp2_stream_get_state(s) != NGHTTP2_STREAM_STATE_CLOSED)
        return 0;
    if (reset_lately(c, id))
        return 0;
    return h2d_fail(c, NGHTTP2_PROTOCOL_ERROR, "stream id not increasing");
}

int h2d_on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
    struct h2_down_conn *c = arg;
    switch (hd->type) {
    case NGHTTP2_HEADERS: return check_stream_id(c, hd->stream_id);
    case NGHTTP2_SETTINGS: return hd->flags & NGHTTP2_FLAG_ACK ? 0 : flood_count(c, FLOOD_SETTINGS);
    case NGHTTP2_PING: return hd->flags & NGHTTP2_FLAG_ACK ? 0 : flood_count(c, FLOOD_PING);
    case NGHTTP2_DATA:
        return hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)
                   ? flood_count(c, FLOOD_EMPTY_DATA)
                   : 0;
    case NGHTTP2_WINDOW_UPDATE: return flood_count(c, FLOOD_WINDOW_UPDATE);
    case NGHTTP2_PRIORITY: return flood_count(c, FLOOD_PRIORITY);
    case NGHTTP2_RST_STREAM: return reset_count(c);
    default: return 0;
    }
}
