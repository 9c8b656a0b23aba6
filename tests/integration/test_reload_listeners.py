"""Reload that changes listeners and certificates (docs/operations.md, Reload):
a listener added by a reload serves at once; a removed one stops accepting
while its open connections finish what they started (HTTP/1.1: the response
in flight, then Connection: close; HTTP/2: GOAWAY); a moved one serves on
its new address; its counters carry over. Certificates: replaced files and
POST /reload (or, with --watch-config, nothing else) make new handshakes
present the new certificate, under TLS load from several threads with no
failed request; a bad certificate refuses the reload and the old one keeps
being served; min_version applies to new handshakes; session tickets resume
across a rotation. A DNS answer after such a reload keeps the listeners as
the reload left them."""

import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (HOST, admin_metrics, binary, child_env, free_port, port_accepts,
                      sanitizer_report, wait_for)
from dnsserver import dns_server  # noqa: F401  (a fixture)
from h1util import H1Conn, request_bytes
from h2util import H2Conn

LOAD_THREADS = 3
LOAD_SECONDS_MAX = 60.0   # bound on every load loop


def listener_yaml(name, port, protocol="HTTP", tls=None):
    out = (f"  - name: {name}\n"
           f"    address: \"{HOST}:{port}\"\n"
           f"    protocol: {protocol}\n"
           f"    url_map: main\n")
    if tls:
        cert, key, extra = tls
        out += ("    tls:\n"
                "      certificates:\n"
                f"        - {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n")
        for line in extra.splitlines():
            out += f"      {line}\n"
    return out


def config(listeners, admin_port, backend_addr):
    return ("listeners:\n" + "".join(listeners) + f"""\
admin: {{address: "{HOST}:{admin_port}"}}
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 5s
url_maps:
  - name: main
    default_service: svc
backend_services:
  - name: svc
    protocol: HTTP
    timeout: 10s
    endpoints:
      - {{address: "{backend_addr}"}}
""")


def post_reload(admin_port):
    """POST /reload: (status, body)."""
    c = http.client.HTTPConnection(HOST, admin_port, timeout=10)
    try:
        c.request("POST", "/reload")
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def get(port, path="/", headers=None):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def refused(port):
    """True when a TCP connect to the port is refused."""
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def requests_on(admin_port, listener):
    m = admin_metrics(admin_port)
    return sum(v for k, v in m.items()
               if k.startswith("switchyard_requests_total{") and f'listener="{listener}"' in k)


@pytest.fixture
def two(proxy, testbed):
    """A proxy with listeners a and b (HTTP), admin, one backend; returns a
    function rewriting the config with the listeners given."""
    tb = testbed(name="tb1")
    pa, pb, admin_port = free_port(), free_port(), free_port()
    px = proxy(config([listener_yaml("a", pa), listener_yaml("b", pb)], admin_port, tb.addr),
               workers=2, expect_ports=[pa, pb, admin_port])

    def rewrite(*listeners):
        px.write_config(config(list(listeners), admin_port, tb.addr))
    return px, pa, pb, admin_port, tb, rewrite


# ---------------------------------------------------------------------------
# adding, removing, moving listeners
# ---------------------------------------------------------------------------

def test_add_listener_by_reload(two):
    px, pa, pb, admin_port, tb, rewrite = two
    assert get(pa)[0] == 200
    pc = free_port()
    assert refused(pc)
    rewrite(listener_yaml("a", pa), listener_yaml("b", pb), listener_yaml("c", pc))
    status, body = post_reload(admin_port)
    assert status == 200, body
    assert port_accepts(pc)
    for _ in range(4):   # every worker serves it (two workers, SO_REUSEPORT)
        status, body = get(pc, "/on-c")
        assert status == 200 and json.loads(body)["path"] == "/on-c"
    assert wait_for(lambda: requests_on(admin_port, "c") == 4, 5), admin_metrics(admin_port)
    # a's counters carried over the reload
    assert requests_on(admin_port, "a") == 1
    assert "listener c added on" in px.stderr()
    log = [e for e in px.access_log(5) if e["path"] == "/on-c"]
    assert len(log) == 4 and all(e["listener"] == "c" for e in log)


def test_remove_listener_finishes_in_flight_request(two):
    """b is removed while a keep-alive connection on it has a request in
    flight: b's port refuses new connections, the request completes with
    Connection: close, and a keeps serving."""
    px, pa, pb, admin_port, tb, rewrite = two
    c = http.client.HTTPConnection(HOST, pb, timeout=15)
    c.request("GET", "/warm")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("connection") != "close"
    r.read()
    c.request("GET", "/slow", headers={"x-testbed-delay": "1500ms"})
    assert wait_for(lambda: requests_on(admin_port, "b") == 1, 5)
    rewrite(listener_yaml("a", pa))
    status, body = post_reload(admin_port)
    assert status == 200, body
    assert wait_for(lambda: refused(pb), 5), "b still accepts after its removal"
    r = c.getresponse()   # the request in flight, answered on the old config
    assert r.status == 200 and json.loads(r.read())["path"] == "/slow"
    assert r.getheader("connection") == "close"
    c.close()
    assert get(pa)[0] == 200
    assert wait_for(lambda: requests_on(admin_port, "b") == 2, 5)
    gauge = 'switchyard_listener_connections{listener="b"}'
    assert wait_for(lambda: admin_metrics(admin_port).get(gauge) == 0, 5), \
        admin_metrics(admin_port)
    assert "listener b on" in px.stderr() and "removed" in px.stderr()


def test_remove_listener_sends_goaway_to_http2(two):
    """An HTTP/2 (h2c) connection of a removed listener gets a GOAWAY; its
    open stream completes; then the proxy closes it."""
    px, pa, pb, admin_port, tb, rewrite = two
    h = H2Conn(pb)
    try:
        sid = h.request("GET", "/h2-slow", headers=[("x-testbed-delay", "1s")])
        assert wait_for(lambda: admin_metrics(admin_port).get(
            'switchyard_listener_connections{listener="b"}') == 1, 5)
        rewrite(listener_yaml("a", pa))
        assert post_reload(admin_port)[0] == 200
        st = h.wait_stream(sid, timeout=10)
        assert st.status == 200 and st.json()["path"] == "/h2-slow", st
        assert h.goaway, "no GOAWAY on the removed listener's connection"
        assert h.wait_closed(timeout=10)
    finally:
        h.close()
    assert wait_for(lambda: refused(pb), 5)


def test_idle_keepalive_connection_of_removed_listener_closes(two):
    px, pa, pb, admin_port, tb, rewrite = two
    s = socket.create_connection((HOST, pb), timeout=10)
    s.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    rewrite(listener_yaml("a", pa))
    assert post_reload(admin_port)[0] == 200
    s.settimeout(5)
    rest = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:   # bounded: the proxy closes it
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    else:
        pytest.fail("the idle connection of a removed listener stayed open")
    s.close()


def test_move_listener_to_new_port_and_back(two):
    px, pa, pb, admin_port, tb, rewrite = two
    assert get(pb)[0] == 200
    pb2 = free_port()
    rewrite(listener_yaml("a", pa), listener_yaml("b", pb2))
    assert post_reload(admin_port)[0] == 200
    assert wait_for(lambda: refused(pb), 5)
    assert get(pb2)[0] == 200
    assert "listener b moved to" in px.stderr()
    # same name, same counters
    assert wait_for(lambda: requests_on(admin_port, "b") == 2, 5)
    # removed, then added again under the same name: its counters carry on
    rewrite(listener_yaml("a", pa))
    assert post_reload(admin_port)[0] == 200
    assert wait_for(lambda: refused(pb2), 5)
    rewrite(listener_yaml("a", pa), listener_yaml("b", pb))
    assert post_reload(admin_port)[0] == 200
    assert get(pb)[0] == 200
    assert wait_for(lambda: requests_on(admin_port, "b") == 3, 5)


def test_address_in_use_refuses_reload(two):
    """A new address another process holds refuses the reload; nothing changes."""
    px, pa, pb, admin_port, tb, rewrite = two
    blocker = socket.socket()
    blocker.bind((HOST, 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    try:
        rewrite(listener_yaml("a", pa), listener_yaml("b", pb), listener_yaml("c", busy))
        status, body = post_reload(admin_port)
        assert status == 400 and f"listener c: address {HOST}:{busy} already in use" in body, \
            body
        assert get(pa)[0] == 200 and get(pb)[0] == 200
        # the refused name left nothing in /metrics
        assert not [k for k in admin_metrics(admin_port) if 'listener="c"' in k]
    finally:
        blocker.close()


# ---------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------

def fingerprint(port, ca, sni="localhost"):
    """SHA-256 of the certificate a new handshake gets (verified by the CA)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(pem):
    der = ssl.PEM_cert_to_DER_cert(open(pem).read())
    return hashlib.sha256(der).hexdigest()


def openssl_fingerprint(port):
    """The served certificate's fingerprint as openssl s_client | openssl x509 sees it."""
    sc = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}",
                         "-servername", "localhost"], input=b"", capture_output=True,
                        timeout=20)
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                       input=sc.stdout, capture_output=True, timeout=20)
    return x.stdout.decode().strip().split("=", 1)[-1].replace(":", "").lower()


class TlsLoad:
    """LOAD_THREADS threads, each making one new TLS connection per request
    (so every request is a new handshake) until stopped; counts successes,
    failures, and the certificates seen."""

    def __init__(self, port, ca):
        self.port, self.ca = port, ca
        self.ok = 0
        self.failures = []
        self.seen = set()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(LOAD_THREADS)]

    def one(self, ctx):
        with socket.create_connection((HOST, self.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
                s.sendall(b"GET /load HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(data[:200])
        return fp

    def run(self):
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = False
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                fp = self.one(ctx)
                with self.lock:
                    self.ok += 1
                    self.seen.add(fp)
            except Exception as e:   # every failure counts
                with self.lock:
                    self.failures.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads)


@pytest.fixture
def tls_files(tmp_path, certs):
    """Copies of the server certificate and key, to be replaced by the tests."""
    cert, key = tmp_path / "live" / "tls.crt", tmp_path / "live" / "tls.key"
    cert.parent.mkdir()
    shutil.copy(certs.cert, cert)
    shutil.copy(certs.key, key)
    return cert, key


def make_leaf(certs, d, name):
    """A new certificate for localhost (new key), signed by the test CA."""
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                    "-subj", "/CN=localhost"], cwd=d, check=True, capture_output=True,
                   timeout=60)
    (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", str(certs.ca),
                    "-CAkey", str(certs.ca_key), "-CAcreateserial", "-days", "2", "-sha256",
                    "-extfile", f"{name}.ext", "-out", f"{name}.pem"], cwd=d, check=True,
                   capture_output=True, timeout=60)
    return d / f"{name}.pem", d / f"{name}.key"


def rotate(cert, key, new_cert, new_key):
    """Replace both files the way cert managers do: write aside, rename over."""
    for src, dst in ((new_key, key), (new_cert, cert)):
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copy(src, tmp)
        tmp.rename(dst)


@pytest.fixture
def https(proxy, testbed, certs, tls_files):
    """start(extra_args=(), tls_extra="") -> (Proxy, port, admin_port)"""
    def go(extra_args=(), tls_extra=""):
        tb = testbed(name="tb1")
        port, admin_port = free_port(), free_port()
        cert, key = tls_files
        px = proxy(config([listener_yaml("pub", port, "HTTPS", (cert, key, tls_extra))],
                          admin_port, tb.addr),
                   workers=2, extra_args=extra_args, expect_ports=[port, admin_port])
        return px, port, admin_port
    return go


def rotate_under_load(certs, tls_files, tmp_path, port, trigger):
    cert, key = tls_files
    old = file_fingerprint(cert)
    assert fingerprint(port, certs.ca) == old
    new_cert, new_key = make_leaf(certs, tmp_path, "rotated")
    new = file_fingerprint(new_cert)
    with TlsLoad(port, certs.ca) as load:
        assert wait_for(lambda: load.ok >= 20, 20), load.failures[:3]
        rotate(cert, key, new_cert, new_key)
        trigger()
        assert wait_for(lambda: fingerprint(port, certs.ca) == new, 10)
        n = load.ok
        assert wait_for(lambda: load.ok >= n + 20, 20), load.failures[:3]
    assert load.failures == [], load.failures[:5]
    assert load.seen == {old, new}
    assert openssl_fingerprint(port) == new
    return load


def test_rotate_certificate_with_post_reload_under_load(https, certs, tls_files, tmp_path):
    px, port, admin_port = https()

    def trigger():
        status, body = post_reload(admin_port)
        assert status == 200, body
    rotate_under_load(certs, tls_files, tmp_path, port, trigger)
    assert "listener pub: new TLS context" in px.stderr()


def test_rotate_certificate_with_watch_config_under_load(https, certs, tls_files, tmp_path):
    """--watch-config also watches the certificate and key files: replacing
    them is enough."""
    px, port, admin_port = https(extra_args=["--watch-config"])
    rotate_under_load(certs, tls_files, tmp_path, port, lambda: None)
    assert wait_for(lambda: admin_metrics(admin_port).get(
        "switchyard_config_reloads_total", 0) >= 1, 5)


def test_bad_certificate_refuses_reload_and_old_one_serves(https, certs, tls_files):
    px, port, admin_port = https()
    cert, key = tls_files
    old = file_fingerprint(cert)
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    status, body = post_reload(admin_port)
    assert status == 400 and f"listener pub: cannot load certificate {cert}" in body, body
    assert fingerprint(port, certs.ca) == old
    assert admin_metrics(admin_port).get("switchyard_config_reload_failures_total") == 1
    # a key that does not match the certificate is refused too
    shutil.copy(certs.other_cert, cert)
    status, body = post_reload(admin_port)
    assert status == 400 and f"listener pub: cannot load private key {key}" in body \
        and "mismatch" in body, body
    assert fingerprint(port, certs.ca) == old
    assert get_tls(port, certs.ca) == 200


def test_bad_certificate_with_watch_config_keeps_old_one(https, certs, tls_files, tmp_path):
    px, port, admin_port = https(extra_args=["--watch-config"])
    cert, key = tls_files
    old = file_fingerprint(cert)
    cert.write_text("garbage\n")
    assert wait_for(lambda: "reload refused" in px.stderr(), 5), px.stderr()
    assert f"cannot load certificate {cert}" in px.stderr()
    assert fingerprint(port, certs.ca) == old
    # the fix is picked up by the next change
    new_cert, new_key = make_leaf(certs, tmp_path, "fixed")
    rotate(cert, key, new_cert, new_key)
    assert wait_for(lambda: fingerprint(port, certs.ca) == file_fingerprint(new_cert), 10)


def get_tls(port, ca):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    c = http.client.HTTPSConnection(HOST, port, timeout=10, context=ctx)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_min_version_change_applies_to_new_handshakes(https, certs, tls_files):
    px, port, admin_port = https()
    cert, key = tls_files
    ctx12 = ssl.create_default_context(cafile=str(certs.ca))
    ctx12.check_hostname = False
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2

    def tls12_ok():
        try:
            with socket.create_connection((HOST, port), timeout=10) as raw:
                with ctx12.wrap_socket(raw, server_hostname="localhost"):
                    return True
        except ssl.SSLError:
            return False
    assert tls12_ok()
    text = open(px.config_path).read()
    px.write_config(text.replace("      certificates:\n",
                                 "      min_version: TLS1.3\n      certificates:\n", 1))
    assert post_reload(admin_port)[0] == 200
    assert not tls12_ok()
    assert get_tls(port, certs.ca) == 200


def test_session_tickets_survive_a_certificate_rotation(https, certs, tls_files, tmp_path):
    """The ticket keys carry over a new TLS context: a TLS 1.2 session made
    before the rotation resumes after it."""
    px, port, admin_port = https()
    sess = tmp_path / "sess.pem"
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    r = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-tls1_2",
                        "-servername", "localhost", "-ign_eof", "-sess_out", str(sess)],
                       input=req, capture_output=True, timeout=20)
    assert b"HTTP/1.1 200" in r.stdout, r.stdout
    cert, key = tls_files
    new_cert, new_key = make_leaf(certs, tmp_path, "rot")
    rotate(cert, key, new_cert, new_key)
    assert post_reload(admin_port)[0] == 200
    r = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-tls1_2",
                        "-servername", "localhost", "-ign_eof", "-sess_in", str(sess)],
                       input=req, capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    assert "HTTP/1.1 200" in out and "Reused, TLSv1.2" in out, out


# ---------------------------------------------------------------------------
# a DNS answer after a reload that moved the listeners' slots
# ---------------------------------------------------------------------------

def test_dns_answer_after_listener_reload_keeps_listener_slots(proxy, testbed, dns_server,
                                                               tmp_path):
    """A DNS answer that changes addresses publishes a runtime of the same
    config without a reload: it must keep the listener slots the last
    reload gave (here b, the only listener left, is not the first slot)."""
    tb = testbed(name="tb1")
    tb_port = tb.port
    errp = tmp_path / "tb2.stderr"
    with open(errp, "wb") as ef:   # a second backend on 127.0.0.2, same port
        tb2 = subprocess.Popen([str(binary("switchyard-testbed")), "--listen",
                                f"127.0.0.2:{tb_port}", "--name", "tb2"],
                               stdin=subprocess.DEVNULL, stdout=ef, stderr=subprocess.STDOUT,
                               env=child_env())
    try:
        assert wait_for(lambda: port_accepts(tb_port, host="127.0.0.2"), 10)
        dns_server.set("svc.test", ["127.0.0.1"], ttl=1)
        pa, pb, admin_port = free_port(), free_port(), free_port()
        backend = f"svc.test:{tb_port}"

        def cfg(*listeners):
            text = config(list(listeners), admin_port, backend)
            return text.replace("    endpoints:\n",
                                "    discovery: DNS\n    dns_refresh_rate: 200ms\n"
                                "    endpoints:\n").replace(
                "drain_timeout: 5s\n",
                f"drain_timeout: 5s\ndns: {{resolvers: [\"{dns_server.addr}\"]}}\n")
        px = proxy(cfg(listener_yaml("a", pa), listener_yaml("b", pb)), workers=2,
                   expect_ports=[pa, pb, admin_port])
        assert wait_for(lambda: get(pb)[0] == 200, 10)
        px.write_config(cfg(listener_yaml("b", pb)))
        assert post_reload(admin_port)[0] == 200
        assert wait_for(lambda: refused(pa), 5)
        before = requests_on(admin_port, "b")
        dns_server.set("svc.test", ["127.0.0.1", "127.0.0.2"], ttl=1)
        addr2 = f'endpoint="127.0.0.2:{tb_port}"'
        assert wait_for(lambda: any(addr2 in k for k in admin_metrics(admin_port)), 10), \
            admin_metrics(admin_port)
        seen = set()
        for _ in range(8):
            status, body = get(pb, "/after-dns")
            assert status == 200
            seen.add(json.loads(body)["instance"])
        assert seen == {"tb1", "tb2"}
        assert wait_for(lambda: requests_on(admin_port, "b") == before + 8, 5)
        assert requests_on(admin_port, "a") == 0
    finally:
        tb2.terminate()
        tb2.wait(10)
    assert not sanitizer_report(errp.read_text())


def test_handshake_in_progress_on_removed_listener_drains(proxy, testbed, certs, tls_files):
    """A TLS connection accepted before its listener's removal but whose
    handshake ends after it is served once, with Connection: close."""
    tb = testbed(name="tb1")
    pa, pb, admin_port = free_port(), free_port(), free_port()
    cert, key = tls_files
    b = listener_yaml("b", pb, "HTTPS", (cert, key, ""))
    px = proxy(config([listener_yaml("a", pa), b], admin_port, tb.addr), workers=1,
               expect_ports=[pa, pb, admin_port])
    raw = socket.create_connection((HOST, pb), timeout=10)   # accepted, no ClientHello yet
    assert wait_for(lambda: admin_metrics(admin_port).get(
        'switchyard_listener_connections{listener="b"}') == 1, 5)
    px.write_config(config([listener_yaml("a", pa)], admin_port, tb.addr))
    assert post_reload(admin_port)[0] == 200
    assert wait_for(lambda: refused(pb), 5)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /late HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # bounded: the proxy closes after the answer
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head, data[:300]


def test_reorder_keeps_counts_and_caps_per_listener(proxy, testbed):
    """A reload that removes the first listener and adds one in front moves
    every listener's place in the config: connection counts, the
    max_connections cap and counters still follow each name."""
    tb = testbed(name="tb1")
    pa, pb, pc, admin_port = free_port(), free_port(), free_port(), free_port()
    capped = listener_yaml("b", pb) + "    limits: {max_connections: 1}\n"
    px = proxy(config([listener_yaml("a", pa), capped], admin_port, tb.addr), workers=1,
               expect_ports=[pa, pb, admin_port])
    gauge = 'switchyard_listener_connections{listener="%s"}'
    assert wait_for(lambda: admin_metrics(admin_port).get(gauge % "b") == 0, 5)
    first = H1Conn(pb)
    conns = [first]
    try:
        first.send(request_bytes("GET", "/first"))
        assert first.read_response(timeout=10).status == 200
        px.write_config(config([listener_yaml("c", pc), capped], admin_port, tb.addr))
        assert post_reload(admin_port)[0] == 200
        assert wait_for(lambda: refused(pa), 5)
        m = admin_metrics(admin_port)
        assert m.get(gauge % "b") == 1 and m.get(gauge % "a") == 0 and m.get(gauge % "c") == 0, m
        second = H1Conn(pb)   # in the backlog: b is at its cap
        conns.append(second)
        second.send(request_bytes("GET", "/second"))
        try:
            second.read_head(timeout=1.0)   # the passing of time is the point
            pytest.fail("b served past its max_connections after the reload")
        except TimeoutError:
            pass
        assert get(pc)[0] == 200   # c is not capped by b's count
        first.close()
        r = second.read_response(timeout=5)
        assert r.status == 200 and r.json()["path"] == "/second"
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: requests_on(admin_port, "b") == 2 and
                    requests_on(admin_port, "c") == 1 and requests_on(admin_port, "a") == 0, 5)


def test_new_stream_on_removed_listener_is_served_by_its_config(two):
    """During the GOAWAY grace a client may still open streams on a removed
    listener's HTTP/2 connection: they are served by the config the listener
    came from (its url map), logged and counted under its name."""
    px, pa, pb, admin_port, tb, rewrite = two
    h = H2Conn(pb)
    try:
        assert h.get("/before", timeout=10).status == 200
        rewrite(listener_yaml("a", pa))
        assert post_reload(admin_port)[0] == 200
        assert wait_for(lambda: refused(pb), 5)
        st = h.get("/after-removal", timeout=10)   # within the 1 s grace
        assert st.status == 200 and st.json()["path"] == "/after-removal", st
        assert h.goaway
        assert h.wait_closed(timeout=10)
    finally:
        h.close()
    log = [e for e in px.access_log(2) if e["path"] == "/after-removal"]
    assert len(log) == 1 and log[0]["listener"] == "b" and log[0]["status"] == 200
    assert wait_for(lambda: requests_on(admin_port, "b") == 2, 5)
