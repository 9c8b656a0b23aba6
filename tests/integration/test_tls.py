"""HTTPS listeners: ALPN (h2 and http/1.1), X-Forwarded-Proto, SNI certificate
choice, min_version, session resumption, startup errors for bad certificate
files, and the handshake bound by timeouts.request_headers."""

import json
import socket
import ssl
import subprocess
import time

import pytest

from conftest import free_port, run_switchyard
from h2util import H2Conn, proxy_config

TLS_EXTRA = """\
tls:
  certificates:
{certs}
{min_version}
"""


def tls_config(port, backend_addr, certs_list, min_version=None, listener_extra=""):
    lines = "\n".join(f"    - {{cert_file: \"{c}\", key_file: \"{k}\"}}" for c, k in certs_list)
    mv = f"  min_version: {min_version}" if min_version else ""
    extra = TLS_EXTRA.format(certs=lines, min_version=mv) + listener_extra
    return proxy_config(port, backend_addr, protocol="HTTPS", listener_extra=extra)


def start_tls(proxy, testbed, certs, both=False, min_version=None, listener_extra=""):
    tb = testbed(name="tb1")
    port = free_port()
    cl = [(certs.cert, certs.key)]
    if both:
        cl.append((certs.other_cert, certs.other_key))
    px = proxy(tls_config(port, tb.addr, cl, min_version, listener_extra),
               workers=1, expect_ports=[port])
    return px, port, tb


@pytest.fixture
def tlspx(proxy, testbed, certs):
    return start_tls(proxy, testbed, certs, both=True)


def curl(*args, timeout=30):
    return subprocess.run(["curl", "-sS", "--max-time", "20", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def openssl_client(port, *args, stdin=b"", timeout=20):
    """openssl s_client to 127.0.0.1:port; (returncode, stdout+stderr)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                       input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def peer_cert(port, server_hostname, ca):
    """The certificate the server presents for this SNI name (verified by the CA)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            return s.getpeercert()


def sans(cert):
    return sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")


# ---------------------------------------------------------------------------
# ALPN and forwarding headers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("flag,version", [("--http2", "2"), ("--http1.1", "1.1")])
def test_alpn_curl(tlspx, certs, flag, version):
    px, port, tb = tlspx
    r = curl(flag, "--cacert", certs.ca, "--resolve", f"localhost:{port}:127.0.0.1",
             "-w", "\n%{http_version} %{response_code}", f"https://localhost:{port}/tls?x=1")
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == f"{version} 200", r.stdout
    echo = json.loads(body)
    assert echo["path"] == "/tls?x=1"
    assert echo["headers"].get("x-forwarded-proto") == "https", echo["headers"]
    assert echo["headers"].get("host") == f"localhost:{port}"
    log = px.access_log(min_entries=1)
    assert log[-1]["protocol"] == ("HTTP/2" if version == "2" else "HTTP/1.1"), log[-1]


def test_alpn_python_h2(tlspx, certs):
    """A raw h2 client over TLS (ALPN h2): several streams, https scheme forwarded."""
    px, port, tb = tlspx
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with H2Conn(port, tls=ctx, server_hostname="localhost") as c:
        sids = [c.request("GET", f"/p/{i}", scheme="https", authority=f"localhost:{port}")
                for i in range(5)]
        for st in c.wait_streams(sids, 10):
            assert st.status == 200 and st.ended, st
            echo = st.json()
            assert echo["headers"]["x-forwarded-proto"] == "https"
        assert [s.json()["path"] for s in c.wait_streams(sids)] == [f"/p/{i}" for i in range(5)]


def test_no_alpn_is_http1(tlspx, certs):
    """A TLS client that offers no ALPN is served HTTP/1.1."""
    px, port, tb = tlspx
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(b"GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b'"/plain"' in data


# ---------------------------------------------------------------------------
# SNI
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,expect", [
    ("other.test", ["*.other.test", "other.test"]),       # the second cert's SAN
    ("api.other.test", ["*.other.test", "other.test"]),   # its wildcard SAN
    ("localhost", ["localhost"]),                          # the first cert's own name
    ("unknown.example", ["localhost"]),                    # unknown: the default
    ("127.0.0.1", ["localhost"]),                          # no SNI (an IP): the default
])
def test_sni_selects_certificate(tlspx, certs, name, expect):
    px, port, tb = tlspx
    assert sans(peer_cert(port, name, certs.ca)) == expect


def test_sni_second_certificate_serves_requests(tlspx, certs):
    px, port, tb = tlspx
    r = curl("--http2", "--cacert", certs.ca, "--resolve", f"other.test:{port}:127.0.0.1",
             "-w", "\n%{http_version} %{response_code}", f"https://other.test:{port}/sni")
    assert r.returncode == 0, r.stderr   # verified against other.test's certificate
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == "2 200", r.stdout
    assert json.loads(body)["headers"]["host"] == f"other.test:{port}"


# ---------------------------------------------------------------------------
# versions and resumption
# ---------------------------------------------------------------------------

def test_min_version_tls13_refuses_tls12(proxy, testbed, certs):
    px, port, tb = start_tls(proxy, testbed, certs, min_version="TLS1.3")
    rc, out = openssl_client(port, "-servername", "localhost", "-tls1_2")
    assert rc != 0, out
    assert "Cipher is (NONE)" in out, out      # no TLS 1.2 session was set up
    assert "alert protocol version" in out, out
    rc, out = openssl_client(port, "-servername", "localhost", "-tls1_3",
                             "-CAfile", str(certs.ca))
    assert rc == 0, out
    assert "TLSv1.3" in out, out
    # and python's client, capped at TLS 1.2, is refused too
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert px.running()


def test_default_min_version_accepts_tls12(tlspx, certs):
    px, port, tb = tlspx
    rc, out = openssl_client(port, "-servername", "localhost", "-tls1_2",
                             "-CAfile", str(certs.ca))
    assert rc == 0, out
    assert "TLSv1.2" in out, out


@pytest.mark.parametrize("ver", ["1.2", "1.3"])
def test_session_resumption(tlspx, certs, tmp_path, ver):
    px, port, tb = tlspx
    sess = tmp_path / "sess.pem"
    flag = "-tls1_2" if ver == "1.2" else "-tls1_3"
    req = b"GET /resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    # -ign_eof: read until the server closes, so TLS 1.3 tickets arrive first.
    # (The exit status is not checked here: see test_close_notify.)
    rc, out = openssl_client(port, "-servername", "localhost", flag, "-CAfile", str(certs.ca),
                             "-ign_eof", "-sess_out", str(sess), stdin=req)
    assert f"New, TLSv{ver}" in out and "HTTP/1.1 200" in out, out
    assert sess.exists() and sess.stat().st_size > 0, out
    rc, out = openssl_client(port, "-servername", "localhost", flag, "-CAfile", str(certs.ca),
                             "-ign_eof", "-sess_in", str(sess), stdin=req)
    assert f"Reused, TLSv{ver}" in out, out
    assert "HTTP/1.1 200" in out, out


def test_close_notify(tlspx, certs):
    """RFC 8446 6.1: the server sends close_notify before closing its side
    (here after a Connection: close response), not a bare TCP FIN."""
    px, port, tb = tlspx
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF   # python sets it by default
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost",
                             suppress_ragged_eofs=False) as s:
            s.sendall(b"GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            deadline = time.monotonic() + 10
            eof = None
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except ssl.SSLError as e:   # UNEXPECTED_EOF_WHILE_READING
                    eof = f"TCP closed without close_notify ({e})"
                    break
                if not chunk:
                    eof = "close_notify"
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert eof == "close_notify", eof


# ---------------------------------------------------------------------------
# startup errors
# ---------------------------------------------------------------------------

def _start_fail(proxy_cfg_text, tmp_path):
    cfgp = tmp_path / "bad-tls.yaml"
    cfgp.write_text(proxy_cfg_text)
    return run_switchyard(["-c", cfgp, "--workers", "1"], timeout=30)


def _one_line_naming(r, path):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    naming = [l for l in lines if str(path) in l]
    assert naming, f"no stderr line names {path}:\n{r.stderr}"
    assert len(lines) == 1, f"expected one line on stderr:\n{r.stderr}"


@pytest.mark.parametrize("which", ["missing-cert", "garbage-cert", "missing-key"])
def test_unreadable_certificate_file(certs, tmp_path, which):
    cert, key = certs.cert, certs.key
    if which == "missing-cert":
        cert = bad = tmp_path / "nope.pem"
    elif which == "garbage-cert":
        cert = bad = tmp_path / "garbage.pem"
        bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                       "-----END CERTIFICATE-----\n")
    else:
        key = bad = tmp_path / "nope.key"
    port = free_port()
    r = _start_fail(tls_config(port, "127.0.0.1:9", [(cert, key)]), tmp_path)
    assert r.returncode == 1, r.stderr
    _one_line_naming(r, bad)


def test_key_does_not_match_certificate(certs, tmp_path):
    port = free_port()
    r = _start_fail(tls_config(port, "127.0.0.1:9", [(certs.cert, certs.other_key)]), tmp_path)
    assert r.returncode == 1, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert str(certs.other_key) in lines[0] or str(certs.cert) in lines[0], r.stderr


def test_bad_second_certificate_fails_startup(certs, tmp_path):
    port = free_port()
    bad = tmp_path / "missing-other.pem"
    r = _start_fail(tls_config(port, "127.0.0.1:9",
                               [(certs.cert, certs.key), (bad, certs.other_key)]), tmp_path)
    assert r.returncode == 1, r.stderr
    _one_line_naming(r, bad)


# ---------------------------------------------------------------------------
# handshake timeout
# ---------------------------------------------------------------------------

def _closed_after(sock, timeout):
    """Seconds until the peer closes (EOF or RST), or None within timeout."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    for _ in range(int(timeout / 0.2) + 2):
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except (socket.timeout, TimeoutError):
            pass
        except (ConnectionResetError, OSError):
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return None
    return None


@pytest.mark.parametrize("partial", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
                         ids=["silent", "partial-hello"])
def test_stalled_handshake_closed(proxy, testbed, certs, partial):
    px, port, tb = start_tls(proxy, testbed, certs,
                             listener_extra="timeouts: {request_headers: 1s}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if partial:
            s.sendall(partial)
        t = _closed_after(s, 6)
    assert t is not None, "a client that never finished the handshake was not closed"
    assert 0.7 <= t <= 4, t
    # the listener still works
    r = curl("--http2", "--cacert", certs.ca, "--resolve", f"localhost:{port}:127.0.0.1",
             "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
             f"https://localhost:{port}/after")
    assert r.stdout == "2 200", (r.stdout, r.stderr)
