"""HTTPS listener TLS parameters (docs/configuration.md, listeners, TLS):
tls.cipher_suites and tls.ecdh_curves with their forward-secret defaults,
names checked by `switchyard -t` and on reload (a reload applies them to new
handshakes), and session tickets under
tls.session_ticket_rotation (resumption across a rotation, no resumption
once the ticket's key is gone, tickets off with 0s, keys shared by the
workers). Clients: openssl s_client, Python's ssl module and curl."""

import json
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import HOST, free_port, run_switchyard, wait_for
from h2util import proxy_config

REQ = b"GET /tls-params HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
DEFAULT_TLS12 = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                 "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
                 "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]
DEFAULT_TLS13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                 "TLS_AES_128_GCM_SHA256"]


def tls_yaml(certs, tls_extra=""):
    """The listener's `tls:` block (YAML at listener indentation)."""
    out = ("tls:\n"
           "  certificates:\n"
           f"    - {{cert_file: \"{certs.cert}\", key_file: \"{certs.key}\"}}\n")
    for line in tls_extra.splitlines():
        out += f"  {line}\n"
    return out


def params_config(port, backend_addr, certs, tls_extra="", admin_port=None):
    top = f'admin: {{address: "{HOST}:{admin_port}"}}' if admin_port else ""
    return proxy_config(port, backend_addr, protocol="HTTPS",
                        listener_extra=tls_yaml(certs, tls_extra), top_extra=top)


@pytest.fixture
def start(proxy, testbed, certs):
    """start(tls_extra="", workers=1, admin=False) -> (Proxy, port, admin_port)."""
    def go(tls_extra="", workers=1, admin=False):
        tb = testbed(name="tb1")
        port = free_port()
        admin_port = free_port() if admin else None
        px = proxy(params_config(port, tb.addr, certs, tls_extra, admin_port), workers=workers,
                   expect_ports=[port] + ([admin_port] if admin else []))
        return px, port, admin_port
    return go


def s_client(port, *args, stdin=b"", timeout=20):
    """openssl s_client to 127.0.0.1:port with SNI localhost; (returncode, output).
    With a request on stdin it reads until the server closes (-ign_eof)."""
    more = ["-ign_eof"] if stdin else []
    r = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}",
                        "-servername", "localhost", *more, *map(str, args)],
                       input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def negotiated(out):
    """(protocol, cipher) from s_client's 'New, TLSv1.2, Cipher is X' line, or None."""
    m = re.search(r"^(?:New|Reused), (TLSv[\d.]+), Cipher is (\S+)", out, re.M)
    return (m.group(1), m.group(2)) if m else None


def handshake_fails(out):
    return "Cipher is (NONE)" in out or "alert handshake failure" in out or negotiated(out) is None


def python_tls(port, certs, max_version=None, ciphers=None):
    """A Python ssl handshake (and one request); returns (version, cipher name)."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if max_version:
        ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(REQ)
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            return s.version(), s.cipher()[0]


def admin_config(admin_port):
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/config", timeout=10) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------
# defaults: forward secrecy, AEAD
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("suite", ["AES128-GCM-SHA256", "AES256-SHA", "ECDHE-ECDSA-AES128-SHA"])
def test_default_refuses_weak_tls12_suites(start, certs, suite):
    """No static-RSA (non-forward-secret) suite, and no CBC suite, by default."""
    px, port, _ = start()
    rc, out = s_client(port, "-tls1_2", "-cipher", suite, "-CAfile", certs.ca)
    assert rc != 0 and handshake_fails(out), out
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        python_tls(port, certs, ssl.TLSVersion.TLSv1_2, ciphers=suite)
    assert px.running()


def test_default_negotiates_ecdhe(start, certs):
    px, port, _ = start()
    rc, out = s_client(port, "-tls1_2", "-CAfile", certs.ca, stdin=REQ)
    assert negotiated(out) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"), out
    assert "Server Temp Key: X25519" in out, out
    # the first default curve the client also has wins (server preference)
    rc, out = s_client(port, "-tls1_2", "-groups", "P-384:P-256", "-CAfile", certs.ca)
    assert "Server Temp Key: ECDH, prime256v1" in out, out
    version, cipher = python_tls(port, certs, ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-"), cipher
    version, cipher = python_tls(port, certs)
    assert (version, cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")


def test_defaults_in_admin_config(start):
    px, port, admin_port = start(admin=True)
    tls = admin_config(admin_port)["listeners"][0]["tls"]
    assert tls["cipher_suites"] == DEFAULT_TLS12 + DEFAULT_TLS13, tls
    assert tls["ecdh_curves"] == ["X25519", "P-256", "P-384"], tls
    assert tls["session_ticket_rotation"] == "1h", tls


# ---------------------------------------------------------------------------
# configured suites and curves
# ---------------------------------------------------------------------------

def test_cipher_suites_honoured(start, certs):
    px, port, _ = start("cipher_suites: [ECDHE-ECDSA-CHACHA20-POLY1305, "
                        "TLS_CHACHA20_POLY1305_SHA256]")
    r = subprocess.run(["curl", "-sv", "--max-time", "20", "--tls-max", "1.2", "--cacert",
                        str(certs.ca), "--resolve", f"localhost:{port}:{HOST}",
                        f"https://localhost:{port}/chacha"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "SSL connection using TLSv1.2 / ECDHE-ECDSA-CHACHA20-POLY1305" in r.stderr, r.stderr
    rc, out = s_client(port, "-tls1_3", "-CAfile", certs.ca)
    assert negotiated(out) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"), out
    # a default suite that is not listed is refused, in both versions
    rc, out = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert rc != 0 and handshake_fails(out), out
    rc, out = s_client(port, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert rc != 0 and handshake_fails(out), out


def test_tls12_only_list_keeps_tls13_defaults(start, certs):
    """A list naming no TLS 1.3 suite leaves TLS 1.3 at its default suites."""
    px, port, admin_port = start("cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384]", admin=True)
    rc, out = s_client(port, "-tls1_2", "-CAfile", certs.ca)
    assert negotiated(out) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"), out
    assert python_tls(port, certs) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    tls = admin_config(admin_port)["listeners"][0]["tls"]
    assert tls["cipher_suites"] == ["ECDHE-ECDSA-AES256-GCM-SHA384"] + DEFAULT_TLS13, tls


def test_non_forward_secret_suite_when_configured(start, certs):
    """An operator may opt in to a static-RSA suite; it is then offered."""
    px, port, _ = start("cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, AES128-GCM-SHA256]")
    rc, out = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
                       "-CAfile", certs.ca)
    assert negotiated(out) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"), out
    # the test certificate is ECDSA: a static-RSA suite still finds no key to use
    rc, out = s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
    assert rc != 0 and handshake_fails(out), out


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_ecdh_curves_honoured(start, certs, version):
    px, port, _ = start("ecdh_curves: [P-384]")
    rc, out = s_client(port, version, "-groups", "X25519")
    assert rc != 0 and handshake_fails(out), out
    # (TLS 1.2 also needs the client to accept the P-256 certificate's curve)
    rc, out = s_client(port, version, "-groups", "P-384:P-256", "-CAfile", certs.ca, stdin=REQ)
    assert negotiated(out) is not None and "HTTP/1.1 200" in out, out
    assert "Server Temp Key: ECDH, secp384r1" in out, out
    assert python_tls(port, certs)[0] == "TLSv1.3"   # it offers P-384 among others
    assert px.running()


# ---------------------------------------------------------------------------
# bad names: -t and reload
# ---------------------------------------------------------------------------

BAD = [
    ("cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, NOPE-SHA256]", "NOPE-SHA256",
     "listeners[0].tls.cipher_suites[1]: unknown cipher suite 'NOPE-SHA256'"),
    ("cipher_suites: [HIGH]", "HIGH", "listeners[0].tls.cipher_suites[0]: unknown cipher suite"),
    ("cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_NOPE]", "TLS_NOPE",
     "listeners[0].tls.cipher_suites[1]: unknown cipher suite 'TLS_NOPE'"),
    ("cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]", "TLS_ECDHE",
     "listeners[0].tls.cipher_suites[0]: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256' is a TLS 1.2 "
     "suite: write its OpenSSL name 'ECDHE-ECDSA-AES128-GCM-SHA256'"),
    ("cipher_suites: []", "[]", "listeners[0].tls.cipher_suites: must name at least one"),
    ("ecdh_curves: [X25519, P-999]", "P-999",
     "listeners[0].tls.ecdh_curves[1]: unknown curve 'P-999'"),
    ("ecdh_curves: [P-384, secp384r1]", "secp384r1",
     "listeners[0].tls.ecdh_curves[1]: duplicate curve 'secp384r1' (same as 'P-384'"),
    ("ecdh_curves: []", "[]", "listeners[0].tls.ecdh_curves: must name at least one curve"),
    ("session_ticket_rotation: 500ms", "500ms",
     "listeners[0].tls.session_ticket_rotation: 500ms out of range"),
]


@pytest.mark.parametrize("extra,token,message", BAD, ids=[b[1] for b in BAD])
def test_check_refuses_bad_names(certs, tmp_path, extra, token, message):
    text = params_config(free_port(), "127.0.0.1:9", certs, extra)
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines, 1) if extra.split(":")[0] + ":" in l)
    col = lines[line - 1].index(token, lines[line - 1].index(":") + 1) + 1
    p = tmp_path / "bad-tls.yaml"
    p.write_text(text)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = [l for l in r.stderr.splitlines() if l.strip()]
    assert errs == [l for l in errs if l.startswith(f"{p}:")] and len(errs) == 1, r.stderr
    assert errs[0].startswith(f"{p}:{line}:{col}: {message}"), (errs[0], line, col)


def test_check_accepts_good_names(certs, tmp_path):
    p = tmp_path / "good-tls.yaml"
    p.write_text(params_config(free_port(), "127.0.0.1:9", certs,
                               "cipher_suites: [TLS_AES_128_GCM_SHA256, ECDHE-RSA-AES256-GCM-SHA384]\n"
                               "ecdh_curves: [x25519, secp384r1, prime256v1, X448]\n"
                               "session_ticket_rotation: 24h"))
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 0, r.stderr


def test_reload_with_bad_suite_keeps_serving(start, certs):
    px, port, admin_port = start(admin=True)
    version = admin_config(admin_port)["version"]
    text = open(px.config_path).read()
    assert "\n      certificates:\n" in text
    px.write_config(text.replace("\n      certificates:\n",
                                 "\n      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, BOGUS]\n"
                                 "      certificates:\n", 1))
    req = urllib.request.Request(f"http://{HOST}:{admin_port}/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    body = ei.value.read().decode()
    assert ei.value.code == 400, body
    assert re.search(r":\d+:\d+: listeners\[0\]\.tls\.cipher_suites\[1\]: unknown cipher suite "
                     r"'BOGUS'", body), body
    assert admin_config(admin_port)["version"] == version
    rc, out = s_client(port, "-tls1_2", "-CAfile", certs.ca, stdin=REQ)
    assert negotiated(out) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256") \
        and "HTTP/1.1 200" in out, out


def test_reload_changing_tls_applies_to_new_handshakes(start, certs):
    """A reload that changes a TLS setting builds a new context: new
    handshakes get the new settings (X25519 is refused once ecdh_curves is
    [P-384]); a connection made before the reload keeps working."""
    px, port, admin_port = start(admin=True)
    version = admin_config(admin_port)["version"]
    rc, out = s_client(port, "-tls1_3", "-groups", "X25519", "-CAfile", certs.ca, stdin=REQ)
    assert "HTTP/1.1 200" in out, out
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    held = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=10),
                           server_hostname="localhost")
    text = open(px.config_path).read()
    px.write_config(text.replace("\n      certificates:\n",
                                 "\n      ecdh_curves: [P-384]\n      certificates:\n", 1))
    req = urllib.request.Request(f"http://{HOST}:{admin_port}/reload", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert admin_config(admin_port)["version"] != version
    rc, out = s_client(port, "-tls1_3", "-groups", "X25519", "-CAfile", certs.ca, stdin=REQ)
    assert "HTTP/1.1 200" not in out, out
    rc, out = s_client(port, "-tls1_3", "-groups", "P-384", "-CAfile", certs.ca, stdin=REQ)
    assert "HTTP/1.1 200" in out and "secp384r1" in out, out
    with held:  # made on the old context, still served
        held.sendall(REQ)
        data = b""
        while len(data) < 12:
            chunk = held.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data


# ---------------------------------------------------------------------------
# session tickets and their rotation
# ---------------------------------------------------------------------------

def new_session(port, certs, flag, sess):
    """A full handshake that saves its session (with the ticket) to `sess`."""
    # (s_client reads until the server closes, so TLS 1.3 tickets arrive first)
    rc, out = s_client(port, flag, "-CAfile", certs.ca, "-sess_out", sess, stdin=REQ)
    assert re.search(r"^New, TLSv1\.[23]", out, re.M) and "HTTP/1.1 200" in out, out
    assert sess.exists() and sess.stat().st_size > 0, out
    return out


def resume(port, certs, flag, sess):
    """'Reused' or 'New': what the server made of the saved session."""
    rc, out = s_client(port, flag, "-CAfile", certs.ca, "-sess_in", sess, stdin=REQ)
    assert "HTTP/1.1 200" in out, out
    m = re.search(r"^(New|Reused), TLSv1\.[23]", out, re.M)
    assert m, out
    return m.group(1)


ROTATION = 2.0   # s, session_ticket_rotation in the rotation test


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_ticket_resumes_across_rotation_then_expires(start, certs, tmp_path, flag):
    """A ticket resumes across a key rotation, for up to 2 rotations; once
    its key is dropped (after 3 rotations at most) the handshake is full."""
    px, port, _ = start(f"session_ticket_rotation: {ROTATION:g}s")
    sess = tmp_path / "sess.pem"
    t0 = time.monotonic()
    out = new_session(port, certs, flag, sess)
    assert "TLS session ticket:" in out, out
    assert f"TLS session ticket lifetime hint: {int(2 * ROTATION)} (seconds)" in out, out
    assert resume(port, certs, flag, sess) == "Reused"
    # Waiting out one rotation period is the point: any span longer than a
    # period contains a rotation, and the ticket must still be accepted.
    time.sleep(max(0.0, t0 + 1.1 * ROTATION - time.monotonic()))
    got = resume(port, certs, flag, sess)
    took = time.monotonic() - t0
    assert took < 2 * ROTATION, f"too slow to test the window ({took:.2f}s)"
    assert got == "Reused", f"not resumed {took:.2f}s after issue (rotation {ROTATION}s)"
    # then poll (bounded) until the ticket is refused: a full handshake
    seen = wait_for(lambda: resume(port, certs, flag, sess) == "New" and time.monotonic(),
                    timeout=3 * ROTATION + 5, interval=0.25)
    assert seen, f"ticket still accepted {time.monotonic() - t0:.1f}s after issue"
    # (t0 is before the ticket was issued; the key of its period is kept for
    # 2 more periods, so it is never refused before 2 rotations)
    assert seen - t0 > 2 * ROTATION - 0.1, seen - t0
    assert seen - t0 < 3 * ROTATION + 2, seen - t0
    assert px.running()


def test_tickets_shared_by_workers(start, certs, tmp_path):
    """Every worker decrypts the tickets any worker issued (one key set per
    listener): parallel resumptions land on various workers, all resume."""
    px, port, _ = start(workers=4)
    for flag in ("-tls1_2", "-tls1_3"):
        sess = tmp_path / f"sess{flag}.pem"
        new_session(port, certs, flag, sess)
        procs = [subprocess.Popen(["openssl", "s_client", "-connect", f"{HOST}:{port}",
                                   "-servername", "localhost", flag, "-CAfile", str(certs.ca),
                                   "-ign_eof", "-sess_in", str(sess)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for _ in range(12)]
        outs = [p.communicate(REQ, timeout=30)[0].decode(errors="replace") for p in procs]
        for out in outs:
            assert re.search(r"^Reused, TLSv1\.[23]", out, re.M) and "HTTP/1.1 200" in out, out


def test_tickets_off(start, certs, tmp_path):
    """session_ticket_rotation: 0s: no tickets; TLS 1.2 still resumes by
    session ID from the listener's session cache."""
    px, port, admin_port = start("session_ticket_rotation: 0s", admin=True)
    assert admin_config(admin_port)["listeners"][0]["tls"]["session_ticket_rotation"] == "0s"
    sess = tmp_path / "sess.pem"
    out = new_session(port, certs, "-tls1_2", sess)
    assert "TLS session ticket" not in out, out
    assert re.search(r"Session-ID: [0-9A-F]{64}", out), out
    assert resume(port, certs, "-tls1_2", sess) == "Reused"
    sess13 = tmp_path / "sess13.pem"
    new_session(port, certs, "-tls1_3", sess13)
    assert resume(port, certs, "-tls1_3", sess13) == "Reused"   # stateful (cached) tickets


def test_default_ticket_lifetime(start, certs, tmp_path):
    """Default rotation 1h: tickets last 2 rotations, the lifetime hint says 7200 s."""
    px, port, _ = start()
    out = new_session(port, certs, "-tls1_2", tmp_path / "s.pem")
    assert "TLS session ticket lifetime hint: 7200 (seconds)" in out, out
    assert resume(port, certs, "-tls1_2", tmp_path / "s.pem") == "Reused"
