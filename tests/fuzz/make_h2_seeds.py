#!/usr/bin/python3
"""Write the seed corpus of fuzz_h2 (tests/fuzz/corpus/h2/): what an HTTP/2
client sends after the connection preface (the harness sends the preface),
built with python3-h2 (Debian's) and, for frames h2 will not make as a
client, hyperframe + hpack directly.

    /usr/bin/python3 tests/fuzz/make_h2_seeds.py

Rerunning rewrites the same files (HPACK output is deterministic).
"""
import os
import sys

import h2.config
import h2.connection
import h2.settings
import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "h2")


def client(settings=None):
    cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    if settings:
        c.update_settings(settings)
    return c


def after_preface(c):
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    return data[len(PREFACE):]


def req(method, path, extra=(), authority="example.com"):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority)] + list(extra)


def seeds():
    out = {}

    c = client()
    c.send_headers(1, req("GET", "/"), end_stream=True)
    out["get"] = after_preface(c)

    c = client()
    c.send_headers(1, req("POST", "/upload", [("content-length", "11"),
                                              ("content-type", "text/plain")]))
    c.send_data(1, b"hello world", end_stream=True)
    out["post_cl"] = after_preface(c)

    c = client()
    c.send_headers(1, req("POST", "/split/stream", [("te", "trailers"),
                                                    ("content-type", "application/grpc")]))
    c.send_data(1, b"\x00\x00\x00\x00\x05hello")
    c.send_data(1, b"\x00\x00\x00\x00\x03bye")
    c.send_headers(1, [("grpc-timeout", "1S"), ("x-trailer", "t")], end_stream=True)
    out["post_trailers"] = after_preface(c)

    c = client()
    for sid, path in ((1, "/a"), (3, "/old/x"), (5, "/abort"), (7, "/split/y?q=1")):
        c.send_headers(sid, req("GET", path, [("user-agent", "fuzz"), ("x-drop", "1")]),
                       end_stream=True)
    out["concurrent"] = after_preface(c)

    c = client()
    c.send_headers(1, req("GET", "/slow"), end_stream=True)
    c.reset_stream(1)
    c.send_headers(3, req("HEAD", "/h"), end_stream=True)
    out["rst_then_head"] = after_preface(c)

    c = client({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    c.send_headers(1, req("GET", "/window"), end_stream=True)
    c.increment_flow_control_window(100)
    c.increment_flow_control_window(50, stream_id=1)
    c.ping(b"12345678")
    out["small_window_ping"] = after_preface(c)

    # The backend's other answers (tests/fuzz/harness.h): a body larger than
    # the stream window (opened a little), chunked with a trailer, 204, 503,
    # delimited by the close.
    c = client()
    for sid, path in ((1, "/big"), (3, "/chunked"), (5, "/204"), (7, "/503"), (9, "/close")):
        c.send_headers(sid, req("GET", path, [("te", "trailers")]), end_stream=True)
    c.increment_flow_control_window(1 << 20)
    c.increment_flow_control_window(40000, stream_id=1)
    out["responses"] = after_preface(c)

    c = client()
    c.send_headers(1, req("GET", "/bye"), end_stream=True)
    c.close_connection()
    out["goaway"] = after_preface(c)

    # Frames the h2 client API does not make, built by hand.
    enc = hpack.Encoder()
    settings = SettingsFrame(0, settings={0x4: 65535, 0x3: 100}).serialize()
    block = enc.encode(req("GET", "/cont", [("x-long", "v" * 40), ("cookie", "a=1"),
                                            ("cookie", "b=2")]))
    h = HeadersFrame(1)
    h.data = block[:10]
    h.flags.add("END_STREAM")
    cont = ContinuationFrame(1)
    cont.data = block[10:]
    cont.flags.add("END_HEADERS")
    out["continuation"] = settings + h.serialize() + cont.serialize()

    enc = hpack.Encoder()
    h = HeadersFrame(1)
    h.data = enc.encode(req("CONNECT", "/upgrade", [(":protocol", "websocket"),
                                                 ("sec-websocket-version", "13")]))
    h.flags.add("END_HEADERS")
    d = DataFrame(1)
    d.data = b"\x81\x05hello"
    out["extended_connect"] = settings + h.serialize() + d.serialize()

    enc = hpack.Encoder()
    h = HeadersFrame(3)
    h.data = enc.encode(req("POST", "/p", [("content-length", "4")]))
    h.flags.add("END_HEADERS")
    h.flags.add("PRIORITY")
    h.depends_on, h.stream_weight = 0, 15
    pr = PriorityFrame(5)
    pr.depends_on, pr.stream_weight = 3, 200
    d = DataFrame(3)
    d.data = b"abcd"
    d.flags.add("END_STREAM")
    d.flags.add("PADDED")
    d.pad_length = 3
    wu = WindowUpdateFrame(0)
    wu.window_increment = 1 << 20
    ping = PingFrame(0)
    ping.opaque_data = b"\x00" * 8
    rst = RstStreamFrame(3)
    rst.error_code = 8
    ga = GoAwayFrame(0)
    ga.last_stream_id = 3
    out["priority_padded_misc"] = (settings + h.serialize() + pr.serialize() + d.serialize() +
                                   wu.serialize() + ping.serialize() + rst.serialize() +
                                   ga.serialize())
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
