"""Tests of switchyard-testbed itself (and of the conftest harness)."""
import subprocess
from conftest import free_port


def test_certs_verify(certs):
    for c in (certs.cert, certs.other_cert):
        r = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(c)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


def test_free_port():
    assert 0 < free_port() < 65536
