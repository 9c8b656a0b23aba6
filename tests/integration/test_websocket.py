"""WebSocket through the proxy: HTTP/1.1 Upgrade, tunnelled both ways."""
import asyncio
import subprocess
import sys
import time

import pytest
import websockets

from conftest import free_port, wait_port

ECHO_SERVER = r'''
import asyncio, sys, websockets
async def echo(ws, path=None):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None):
        await asyncio.Future()
asyncio.run(main())
'''


@pytest.fixture
def ws_backend(tmp_path):
    port = free_port()
    script = tmp_path / "ws_echo.py"
    script.write_text(ECHO_SERVER)
    proc = subprocess.Popen(["/usr/bin/python3", str(script), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=10, proc=proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def config(listen, backend, timeout="30s"):
    return f"""
listeners:
  - name: ws
    address: "127.0.0.1:{listen}"
    url_map: m
url_maps:
  - name: m
    default_service: chat
backend_services:
  - name: chat
    timeout: {timeout}
    endpoints: [{{address: "127.0.0.1:{backend}"}}]
"""


async def chat(port, messages, path="/chat"):
    out = []
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None,
                                  open_timeout=5, close_timeout=2) as ws:
        for m in messages:
            await ws.send(m)
            out.append(await asyncio.wait_for(ws.recv(), 10))
    return out


def test_websocket_echo_both_ways(proxy, ws_backend):
    port = free_port()
    px = proxy(config(port, ws_backend), expect_ports=[port])
    msgs = ["hello", "b" * 70000, b"\x00\x01binary" * 1000]
    assert asyncio.run(chat(port, msgs)) == msgs
    log = px.access_log(min_entries=1)
    assert log[-1]["status"] == 101
    assert log[-1]["path"] == "/chat"
    assert log[-1]["bytes_in"] > 0 and log[-1]["bytes_out"] > 0


def test_websocket_many_messages_and_big_one(proxy, ws_backend):
    port = free_port()
    proxy(config(port, ws_backend), expect_ports=[port])
    msgs = [f"m{i}" for i in range(200)] + [bytes(range(256)) * 8192]  # + 2 MiB
    assert asyncio.run(chat(port, msgs)) == msgs


def test_websocket_session_bounded_by_backend_timeout(proxy, ws_backend):
    port = free_port()
    px = proxy(config(port, ws_backend, timeout="1s"), expect_ports=[port])

    async def idle_session():
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat", open_timeout=5) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            started = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - started

    elapsed = asyncio.run(idle_session())
    assert elapsed < 5
    log = px.access_log(min_entries=1)
    assert "UT" in log[-1]["response_flags"]


def test_plain_request_to_websocket_backend_is_not_upgraded(proxy, ws_backend):
    """Without Upgrade the backend's answer (426 or 400 from the websocket server) passes."""
    import httpx
    port = free_port()
    proxy(config(port, ws_backend), expect_ports=[port])
    r = httpx.get(f"http://127.0.0.1:{port}/chat", timeout=5)
    assert r.status_code in (400, 426)


def _ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 5.2), payload < 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def test_websocket_over_http2_extended_connect(proxy, ws_backend):
    """RFC 8441: an h2 client's extended CONNECT reaches an HTTP/1.1 WebSocket backend."""
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    port = free_port()
    proxy(config(port, ws_backend), expect_ports=[port])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 10
    enabled = False
    while not enabled and time.monotonic() < deadline:
        for ev in conn.receive_data(sock.recv(65536)):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                setting = ev.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                enabled = enabled or (setting is not None and setting.new_value == 1)
        sock.sendall(conn.data_to_send())
    assert enabled, "the proxy must advertise SETTINGS_ENABLE_CONNECT_PROTOCOL"
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                          (":scheme", "http"), (":path", "/chat"),
                          (":authority", f"127.0.0.1:{port}"),
                          ("sec-websocket-version", "13")])
    sock.sendall(conn.data_to_send())
    status, echoed = None, b""
    sent = False
    while time.monotonic() < deadline and len(echoed) < 7:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived):
                echoed += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                pytest.fail(f"stream reset: {ev.error_code}")
        if status == b"200" and not sent:
            conn.send_data(1, _ws_frame(b"hello"))
            sent = True
        sock.sendall(conn.data_to_send())
    sock.close()
    assert status == b"200"
    assert echoed[:2] == b"\x81\x05" and echoed[2:7] == b"hello"
