"""The process as an operator meets it (issue 13, items 6 and 7).

- Closes the proxy makes are logged as its own, not as the client leaving:
  DRT when the drain ends with an exchange still open (drain_timeout, or a
  second SIGTERM/SIGINT), MCA when http2.max_connection_age_grace cuts a
  stream; the status is the one sent, or 503 when none was (never 499).
- A second switchyard (or any process) already serving a listener or the
  admin address makes startup fail with "address A already in use by
  another process", instead of sharing the port through SO_REUSEPORT; the
  workers of one process still share theirs, and a restart on a port left
  in TIME_WAIT works.
- `switchyard -t` loads the listeners' certificates and keys and the
  backends' ca_file, and names the file that fails.
- The admin API answers 405 with Allow for a known path and a wrong method
  (404 for an unknown path).
- Signals: a second SIGTERM/SIGINT during a drain exits at once with
  128 + the signal; a single one after POST /drain keeps draining; SIGHUP
  during a drain is refused with a log line.
- sd_notify (systemd Type=notify), read from a unix datagram socket passed
  as NOTIFY_SOCKET: READY=1 once the listener accepts, RELOADING=1 (with
  MONOTONIC_USEC) then READY=1 around a reload, applied or refused,
  STOPPING=1 at the drain.
"""

import json
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import (HOST, free_port, free_ports, port_accepts, run_switchyard, tcp_conns,
                      wait_for, wait_port, wait_requests_at)
from h1util import H1Conn, NoResponse, get, request_bytes, simple_config
from h2util import H2Conn, proxy_config


def admin_block(port):
    return f'admin: {{address: "127.0.0.1:{port}"}}'


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def entries_for(px, path, timeout=5.0):
    """Access-log entries of `path` (waits, bounded, until there is one)."""
    found = wait_for(lambda: [e for e in px.access_log() if e.get("path") == path] or None,
                     timeout)
    return found or []


def flags(entry):
    return entry["response_flags"].split(",")


def admin_request(port, method, path, timeout=5.0):
    """(status, headers dict lower-case, body) of one admin request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method in ("POST", "PUT", "PATCH") else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---------------------------------------------------------------------------
# response flags of closes the proxy makes
# ---------------------------------------------------------------------------

def test_drain_timeout_logs_DRT_and_503_before_any_response(proxy, testbed):
    tb = testbed(name="tb1")
    port = free_port()
    px = proxy(simple_config(port, tb.addr, drain_timeout="1s"), expect_ports=[port])
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/cut-before-head", headers=[("x-testbed-delay", "10s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        px.send_signal(signal.SIGTERM)
        rc = wait_exit(px.proc, 8)
        assert rc == 0, f"exit {rc}\n{px.stderr()}"
        try:
            r = c.read_response(timeout=3)
        except NoResponse:
            r = None
        assert r is None, r  # the client never got an answer
    [e] = entries_for(px, "/cut-before-head")
    assert e["status"] == 503, e
    assert "DRT" in flags(e) and "DC" not in flags(e), e


def test_drain_timeout_after_the_head_keeps_the_status_sent(proxy, testbed):
    tb = testbed(name="tb1")
    port = free_port()
    px = proxy(simple_config(port, tb.addr, drain_timeout="1s", timeout="60s"),
               expect_ports=[port])
    with H1Conn(port, timeout=10) as c:
        # Head and a first quarter of the body at once, the rest 5 s apart.
        c.send(request_bytes("GET", "/cut-mid-body", headers=[
            ("x-testbed-body-size", "4000"), ("x-testbed-body-delay", "5s")]))
        head = c.read_head(timeout=10)
        assert head.startswith(b"HTTP/1.1 200 "), head
        px.send_signal(signal.SIGTERM)
        rc = wait_exit(px.proc, 8)
        assert rc == 0, f"exit {rc}\n{px.stderr()}"
    [e] = entries_for(px, "/cut-mid-body")
    assert e["status"] == 200, e
    assert "DRT" in flags(e) and "DC" not in flags(e), e


def test_client_going_away_is_still_499_DC(proxy, testbed):
    """The control: a client that leaves is DC (the flags above must not
    have swallowed it)."""
    tb = testbed(name="tb1")
    port = free_port()
    px = proxy(simple_config(port, tb.addr), expect_ports=[port])
    c = H1Conn(port, timeout=10)
    c.send(request_bytes("GET", "/client-left", headers=[("x-testbed-delay", "5s")]))
    assert wait_requests_at(tb.port), "the request never reached the backend"
    # a reset, not a FIN (a half-closed client still gets its answer)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    [e] = entries_for(px, "/client-left")
    assert e["status"] == 499 and "DC" in flags(e) and "DRT" not in flags(e), e


def test_max_connection_age_grace_logs_MCA(proxy, testbed):
    """Two streams outlive max_connection_age + grace: one still waiting
    for its head (503 MCA), one whose head went out (200 MCA)."""
    tb = testbed(name="tb1")
    port = free_port()
    px = proxy(proxy_config(port, tb.addr, timeout="60s", listener_extra="""\
http2:
  max_connection_age: 1s
  max_connection_age_grace: 1s"""), expect_ports=[port])
    with H2Conn(port, timeout=10) as c:
        waiting = c.request("GET", "/age-no-head", headers=[("x-testbed-delay", "10s")])
        started = c.request("GET", "/age-mid-body", headers=[
            ("x-testbed-body-size", "4000"), ("x-testbed-body-delay", "10s")])
        assert c.pump_until(lambda: c.stream(started).status is not None, 5), c.streams
        assert c.pump_until(lambda: c.closed, 8), "connection not closed after the grace"
        assert not c.stream(waiting).done and not c.stream(started).ended
    [a] = entries_for(px, "/age-no-head")
    [b] = entries_for(px, "/age-mid-body")
    assert a["status"] == 503 and "MCA" in flags(a) and "DC" not in flags(a), a
    assert b["status"] == 200 and "MCA" in flags(b) and "DC" not in flags(b), b


# ---------------------------------------------------------------------------
# an address someone else serves
# ---------------------------------------------------------------------------

def start_fails(proxy, config_text):
    """Start a proxy expected to fail at startup: (exit code, stderr)."""
    px = proxy(config_text)
    rc = wait_exit(px.proc, 15)
    assert rc is not None, f"still running:\n{px.stderr()}"
    return rc, px.stderr()


def test_second_switchyard_on_the_same_port_fails(proxy, testbed):
    tb = testbed(name="tb1")
    port, admin1, admin2 = free_ports(3)
    first = proxy(simple_config(port, tb.addr, top_extra=admin_block(admin1)), workers=2,
                  expect_ports=[port, admin1])
    rc, err = start_fails(proxy, simple_config(port, tb.addr, top_extra=admin_block(admin2)))
    assert rc == 1, err
    assert f"address 127.0.0.1:{port} already in use by another process" in err, err
    assert not port_accepts(admin2), "the second proxy's admin is up"
    # Every connection still reaches the first proxy (none is lost to a
    # socket of the second one that nobody accepts on).
    for i in range(20):
        r = get(port, f"/after/{i}", timeout=5)
        assert r.status == 200, r
    assert len(entries_for(first, "/after/19")) == 1
    assert first.running()


@pytest.mark.parametrize("reuseport", [True, False], ids=["SO_REUSEPORT", "plain"])
def test_port_held_by_another_program_fails(proxy, testbed, reuseport):
    tb = testbed(name="tb1")
    port = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuseport:  # the case the kernel would otherwise let us share
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((HOST, port))
        holder.listen(16)
        rc, err = start_fails(proxy, simple_config(port, tb.addr))
    finally:
        holder.close()
    assert rc == 1, err
    assert f"address 127.0.0.1:{port} already in use by another process" in err, err


def test_admin_address_held_by_another_program_fails(proxy, testbed):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((HOST, admin))
        holder.listen(16)
        rc, err = start_fails(proxy, simple_config(port, tb.addr, top_extra=admin_block(admin)))
    finally:
        holder.close()
    assert rc == 1, err
    assert f"address 127.0.0.1:{admin} already in use by another process" in err, err


def time_wait_on(port):
    """Leave 127.0.0.1:port in TIME_WAIT, as a previous run's connections do
    (the side that closes first keeps it): a socket bound to the port
    connects to a throwaway listener and closes first."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind((HOST, 0))
        srv.listen(1)
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        cli.bind((HOST, port))
        cli.connect(srv.getsockname())
        peer, _ = srv.accept()
        cli.shutdown(socket.SHUT_WR)
        assert peer.recv(1) == b""   # our FIN is there
        peer.close()
        cli.settimeout(5)
        assert cli.recv(1) == b""    # and theirs: now TIME_WAIT on our side
    finally:
        cli.close()
        srv.close()
    return wait_for(lambda: tcp_conns(local_port=port, state="06"), 2)


def test_workers_share_the_port_and_restart_over_time_wait(proxy, testbed):
    """Four workers bind the port together (the probe binds nothing that
    stays); a port a previous run left in TIME_WAIT does not count as in use."""
    tb = testbed(name="tb1")
    port = free_port()
    config = simple_config(port, tb.addr)
    first = proxy(config, workers=4, expect_ports=[port])
    assert len(tcp_conns(local_port=port, state="0A")) == 4, "one listening socket per worker"
    for i in range(8):
        assert get(port, f"/w/{i}").status == 200
    assert first.stop() == 0, first.stderr()
    assert time_wait_on(port), "could not leave the port in TIME_WAIT"
    second = proxy(config, workers=4, expect_ports=[port])
    assert get(port, "/again").status == 200
    assert second.running()


# ---------------------------------------------------------------------------
# -t loads the TLS files
# ---------------------------------------------------------------------------

def tls_config(port, cert, key, ca_file=None):
    backend_tls = f"\n    tls: {{ca_file: \"{ca_file}\", verify: true}}" if ca_file else ""
    protocol = "HTTPS" if ca_file else "HTTP"
    return f"""\
listeners:
  - name: secure
    address: "127.0.0.1:{port}"
    protocol: HTTPS
    tls:
      certificates:
        - {{cert_file: "{cert}", key_file: "{key}"}}
    url_map: main
url_maps:
  - name: main
    default_service: svc
backend_services:
  - name: svc
    protocol: {protocol}
    endpoints: [{{address: "127.0.0.1:9"}}]{backend_tls}
"""


def test_check_loads_good_tls_files(certs, tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(tls_config(free_port(), certs.cert, certs.key, ca_file=certs.ca))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 0, r.stderr
    assert "ok (version" in r.stdout


def test_check_names_a_missing_certificate(certs, tmp_path):
    missing = tmp_path / "nowhere" / "cert.pem"
    p = tmp_path / "bad.yaml"
    p.write_text(tls_config(free_port(), missing, certs.key))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "listener secure" in r.stderr and str(missing) in r.stderr, r.stderr
    assert "ok (version" not in r.stdout


def test_check_names_a_key_that_is_not_a_key(certs, tmp_path):
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    p = tmp_path / "bad.yaml"
    p.write_text(tls_config(free_port(), certs.cert, junk))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert str(junk) in r.stderr, r.stderr


def test_check_names_a_key_of_another_certificate(certs, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(tls_config(free_port(), certs.cert, certs.other_key))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    # OpenSSL 3 finds the mismatch as it loads the key; the proxy checks again after
    assert re.search(r"mismatch|does not match", r.stderr), r.stderr
    assert str(certs.other_key) in r.stderr, r.stderr


def test_check_names_a_missing_backend_ca_file(certs, tmp_path):
    missing = tmp_path / "no-ca.pem"
    p = tmp_path / "bad.yaml"
    p.write_text(tls_config(free_port(), certs.cert, certs.key, ca_file=missing))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "backend_service svc" in r.stderr and str(missing) in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# admin: 405 + Allow
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,allow", [
    ("POST", "/ready", "GET, HEAD"),
    ("DELETE", "/metrics", "GET, HEAD"),
    ("PUT", "/config", "GET, HEAD"),
    ("POST", "/backends", "GET, HEAD"),
    ("GET", "/reload", "POST"),
    ("DELETE", "/drain", "POST"),
    ("PATCH", "/reload", "POST"),
])
def test_admin_wrong_method_is_405_with_allow(proxy, testbed, method, path, allow):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    px = proxy(simple_config(port, tb.addr, top_extra=admin_block(admin)),
               expect_ports=[port, admin])
    status, headers, body = admin_request(admin, method, path)
    assert status == 405, (status, body)
    assert headers.get("allow") == allow, headers
    # Nothing happened: no reload, no drain.
    assert admin_request(admin, "GET", "/ready")[0] == 200
    assert px.running()


def test_admin_unknown_path_is_404_whatever_the_method(proxy, testbed):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    proxy(simple_config(port, tb.addr, top_extra=admin_block(admin)), expect_ports=[port, admin])
    for method in ("GET", "POST", "DELETE"):
        status, headers, _ = admin_request(admin, method, "/no-such-endpoint")
        assert status == 404, (method, status)
        assert "allow" not in headers
    assert admin_request(admin, "HEAD", "/metrics")[0] == 200


# ---------------------------------------------------------------------------
# signals during a drain
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_ends_the_drain_at_once(proxy, testbed, sig):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    px = proxy(simple_config(port, tb.addr, drain_timeout="60s", timeout="60s",
                             top_extra=admin_block(admin)), expect_ports=[port, admin])
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/held", headers=[("x-testbed-delay", "30s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        px.send_signal(sig)
        assert wait_for(lambda: admin_request(admin, "GET", "/ready")[0] == 503, 5), \
            "not draining after the first signal"
        assert px.running(), "the first signal must drain, not exit"
        t0 = time.monotonic()
        px.send_signal(sig)
        rc = wait_exit(px.proc, 5)
        elapsed = time.monotonic() - t0
    assert rc == 128 + sig, f"exit {rc}\n{px.stderr()}"
    assert elapsed < 3.0, elapsed
    [e] = entries_for(px, "/held")
    assert e["status"] == 503 and "DRT" in flags(e) and "DC" not in flags(e), e
    assert f"exit status {128 + sig}" in px.stderr(), px.stderr()


def test_one_signal_after_post_drain_keeps_draining(proxy, testbed):
    """POST /drain (an orchestrator's hook), then SIGTERM (the stop): that
    is the first signal, not the second; the exchange finishes, exit 0."""
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    px = proxy(simple_config(port, tb.addr, drain_timeout="20s", top_extra=admin_block(admin)),
               expect_ports=[port, admin])
    with H1Conn(port, timeout=15) as c:
        c.send(request_bytes("GET", "/finishes", headers=[("x-testbed-delay", "2s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        assert admin_request(admin, "POST", "/drain")[0] == 200
        px.send_signal(signal.SIGTERM)
        r = c.read_response(timeout=10)
        assert r.status == 200, r
    rc = wait_exit(px.proc, 10)
    assert rc == 0, f"exit {rc}\n{px.stderr()}"
    [e] = entries_for(px, "/finishes")
    assert e["status"] == 200 and e["response_flags"] == "-", e


def test_sighup_during_the_drain_is_refused(proxy, testbed):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    text = simple_config(port, tb.addr, drain_timeout="20s", top_extra=admin_block(admin))
    px = proxy(text, expect_ports=[port, admin])
    version = json.loads(admin_request(admin, "GET", "/config")[2])["version"]
    with H1Conn(port, timeout=15) as c:
        c.send(request_bytes("GET", "/inflight", headers=[("x-testbed-delay", "3s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        px.send_signal(signal.SIGTERM)
        assert wait_for(lambda: admin_request(admin, "GET", "/ready")[0] == 503, 5)
        px.write_config(text.replace("drain_timeout: 20s", "drain_timeout: 21s"))
        px.reload()
        assert wait_for(lambda: "reload refused: draining" in px.stderr(), 5), px.stderr()
        assert json.loads(admin_request(admin, "GET", "/config")[2])["version"] == version
        assert admin_request(admin, "POST", "/reload")[0] == 400  # the admin path agrees
        r = c.read_response(timeout=10)
        assert r.status == 200, r
    assert wait_exit(px.proc, 10) == 0, px.stderr()
    assert "loaded from" not in px.stderr(), px.stderr()  # no reload went through


# ---------------------------------------------------------------------------
# sd_notify
# ---------------------------------------------------------------------------

class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def next(self, timeout=10.0):
        """The next datagram as {key: value}, or None on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (socket.timeout, TimeoutError):
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(msg)
        return msg

    def close(self):
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def test_notify_ready_reloading_stopping(proxy, testbed, notify_socket, tmp_path):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    text = simple_config(port, tb.addr, top_extra=admin_block(admin))
    # Not waiting for the port here: READY=1 is what says it is up.
    px = proxy(text, workers=2, env={"NOTIFY_SOCKET": notify_socket.path})
    ready = notify_socket.next(15)
    assert ready is not None, f"no READY=1 within 15 s\n{px.stderr()}"
    # READY=1 comes once the listener accepts: a request goes through at once.
    assert ready.get("READY") == "1", ready
    assert port_accepts(port), "READY=1 before the listener accepts"
    assert get(port, "/after-ready", timeout=5).status == 200
    v1 = json.loads(admin_request(admin, "GET", "/config")[2])["version"]
    assert v1 in ready.get("STATUS", ""), ready

    # A reload that applies: RELOADING=1 (with the monotonic clock), then READY=1.
    px.write_config(text.replace("drain_timeout: 5s", "drain_timeout: 6s"))
    before_us = time.monotonic() * 1e6
    px.reload()
    reloading = notify_socket.next(10)
    assert reloading is not None and reloading.get("RELOADING") == "1", reloading
    assert re.fullmatch(r"\d+", reloading.get("MONOTONIC_USEC", "")), reloading
    # CLOCK_MONOTONIC both sides: within the seconds this took.
    assert before_us - 1e6 <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic() * 1e6 + 1e6
    done = notify_socket.next(10)
    assert done is not None and done.get("READY") == "1", done
    v2 = json.loads(admin_request(admin, "GET", "/config")[2])["version"]
    assert v2 != v1 and v2 in done.get("STATUS", ""), (v1, v2, done)

    # A reload that is refused still ends with READY=1, and the status says why.
    px.write_config("listeners: [nonsense\n")
    px.reload()
    reloading = notify_socket.next(10)
    assert reloading is not None and reloading.get("RELOADING") == "1", reloading
    done = notify_socket.next(10)
    assert done is not None and done.get("READY") == "1", done
    assert "reload refused" in done.get("STATUS", "") and v2 in done["STATUS"], done

    # SIGTERM: STOPPING=1, then a clean exit.
    px.send_signal(signal.SIGTERM)
    stopping = notify_socket.next(10)
    assert stopping is not None and stopping.get("STOPPING") == "1", stopping
    assert wait_exit(px.proc, 10) == 0, px.stderr()
    assert notify_socket.next(0.5) is None, notify_socket.messages


def test_check_sends_nothing(notify_socket, tmp_path):
    """switchyard -t (ExecStartPre, ExecReload) is not the service: silent."""
    p = tmp_path / "ok.yaml"
    p.write_text(simple_config(free_port(), "127.0.0.1:9"))
    r = run_switchyard(["-t", "-c", p], env={"NOTIFY_SOCKET": notify_socket.path})
    assert r.returncode == 0, r.stderr
    assert notify_socket.next(0.5) is None, notify_socket.messages
