"""HTTP/2 health checks against a server that speaks first.

Most HTTP/2 servers (grpcio among them) send their SETTINGS as soon as they
accept. When the probe's socket is readable by the time libevent reports the
connect, the read callback runs first; the probe used to throw those bytes
away, then failed every check ("SETTINGS expected") and the endpoint never
became healthy. The proxy runs under strace with every connect(2) held back
100 ms, which makes that ordering certain.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import HOST, binary, child_env, free_port, wait_for, wait_port
from test_backends import config, hc


class SpeaksFirst:
    """An h2c server that sends its SETTINGS on accept and answers 200 "ok"."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        self.answered = 0
        self.stopping = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h.initiate_connection()
        try:
            c.sendall(h.data_to_send())  # before the client said anything
            c.settimeout(10)
            for _ in range(1000):
                data = c.recv(65536)
                if not data:
                    break
                for ev in h.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        h.send_headers(ev.stream_id, [(":status", "200"),
                                                      ("content-length", "2")])
                        h.send_data(ev.stream_id, b"ok", end_stream=True)
                        self.answered += 1
                c.sendall(h.data_to_send())
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.sock.close()


def children(pid):
    """Direct children of `pid` (the proxy strace started)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def stop_traced(proc):
    """Stop the proxy, then strace: strace ends when its tracee has. A SIGTERM
    to strace alone would detach and leave the proxy running."""
    for kid in children(proc.pid):
        try:
            os.kill(kid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        for kid in children(proc.pid):
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_h2c_check_reads_what_the_server_sent_before_connect(tmp_path):
    be = SpeaksFirst()
    port = free_port()
    cfg = tmp_path / "sy.yaml"
    cfg.write_text(config(port, [be.addr], protocol="H2C",
                          checks=[hc(type="H2C", check_interval="300ms", timeout="2s")]))
    err = tmp_path / "stderr"
    with open(err, "wb") as ef:
        proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=connect",
             "-e", "inject=connect:delay_exit=100000",
             str(binary("switchyard")), "-c", str(cfg), "--workers", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef,
            env=child_env(), cwd=str(tmp_path))
    try:
        assert wait_port(port, 30, proc)
        pat = re.compile(rf"endpoint={re.escape(be.addr)} unknown->healthy")
        ok = wait_for(lambda: pat.search(err.read_text(errors="replace")), 15)
        assert ok, err.read_text(errors="replace")[-3000:]
        assert "->unhealthy" not in err.read_text(errors="replace")
        assert be.answered >= 1
    finally:
        kids = children(proc.pid)
        stop_traced(proc)
        assert wait_for(lambda: not [k for k in kids if os.path.exists(f"/proc/{k}")], 5), kids
        be.close()
