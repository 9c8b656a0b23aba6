"""
Shared harness for switchyard's integration tests.

Binaries come from $SY_BUILD (default: <repo>/build/asan). Every process a
test starts is tracked by its fixture and stopped by pid at teardown; a
sanitizer report in any of their stderr fails the test. Everything listens on
127.0.0.1 only, and every wait is bounded in time.

Fixtures
  testbed  factory: start(name="tb1", tls=False, extra_args=(), port=None) -> Testbed
           Testbed: .name .port .addr ("127.0.0.1:PORT") .url .tls .pid .proc
                    .stop(timeout=10) -> rc, .kill() -> rc, .running(), .stderr()
  proxy    factory: start(config_text, workers=1, extra_args=(), expect_ports=None,
                          env=None) -> Proxy
           Proxy: .proc .pid .config_path .stdout_path .stderr_path
                  .access_log(min_entries=0, timeout=5.0) -> [dict], .stdout(), .stderr(),
                  .reload() (SIGHUP), .send_signal(sig), .write_config(text),
                  .running(), .stop(sig=SIGTERM, timeout=35) -> rc
  certs    session: a throwaway CA plus server certs (see Certs)
  sy_build the Path of the binaries directory

Plain helpers (importable with `from conftest import ...`)
  free_port(), port_accepts(port), wait_port(port, timeout, proc),
  wait_for(pred, timeout, interval), run_switchyard(args, timeout=30, env=None,
  input=None) -> CompletedProcess(text), binary(name), child_env(extra),
  sanitizer_report(text), HOST, SY_BUILD, CHILD_ENV_DEFAULTS
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SY_BUILD = Path(os.environ.get("SY_BUILD", str(REPO / "build" / "asan"))).resolve()
HOST = "127.0.0.1"

START_TIMEOUT = 10.0   # s, for a listener to accept TCP
STOP_TIMEOUT = 10.0    # s, after SIGTERM before SIGKILL (testbeds)

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
)

# Sanitizer behaviour for every child, unless the caller set it already
# (the Makefile exports the same values).
CHILD_ENV_DEFAULTS = {
    "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=99",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}


def binary(name):
    """Path of a built binary in SY_BUILD; fails the test if it is missing."""
    path = SY_BUILD / name
    if not path.is_file():
        pytest.fail(f"{path} not built (see `make asan`, or set SY_BUILD)")
    return path


def child_env(extra=None):
    env = dict(os.environ)
    for k, v in CHILD_ENV_DEFAULTS.items():
        env.setdefault(k, v)
    if extra:
        env.update(extra)
    return env


def free_port():
    """An unused TCP port on 127.0.0.1 (free at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct unused ports: all are held bound until every one is chosen,
    so two of them can never be the same (as back-to-back free_port() calls
    can be, when nothing binds the first before the second is asked for)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(port, host=HOST):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(pred, timeout=5.0, interval=0.02):
    """Poll pred() until it returns a truthy value (returned) or timeout (None)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return None


def wait_port(port, timeout=START_TIMEOUT, proc=None):
    """True once 127.0.0.1:port accepts TCP; False on timeout or if proc exits."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):
        if proc is not None and proc.poll() is not None:
            return False
        if port_accepts(port):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return False


def sanitizer_report(text):
    """The first sanitizer marker found in text, or None."""
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


def read_text(path):
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Signal proc by pid, wait up to timeout, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def run_switchyard(args, timeout=30, env=None, input=None):
    """Run SY_BUILD/switchyard with args (e.g. ["-t", "-c", path]) to completion.
    Returns a CompletedProcess with text stdout/stderr."""
    cmd = [str(binary("switchyard"))] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(env), input=input, cwd=str(REPO))


# ---------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Certs:
    dir: Path
    ca: Path            # CA certificate (PEM): trust anchor for clients / backends
    ca_key: Path
    cert: Path          # server cert for localhost, 127.0.0.1 (and ::1)
    key: Path
    other_cert: Path    # server cert for other.test, *.other.test
    other_key: Path

    def __getitem__(self, k):
        return getattr(self, k)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _make_leaf(d, name, cn, san):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A throwaway CA and two server certificates, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=switchyard test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _make_leaf(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1")
    _make_leaf(d, "other", "other.test", "DNS:other.test,DNS:*.other.test")
    return Certs(dir=d, ca=d / "ca.pem", ca_key=d / "ca.key",
                 cert=d / "server.pem", key=d / "server.key",
                 other_cert=d / "other.pem", other_key=d / "other.key")


@pytest.fixture(scope="session")
def sy_build():
    return SY_BUILD


# ---------------------------------------------------------------------------
# test backend
# ---------------------------------------------------------------------------

class Testbed:
    """One running switchyard-testbed. Attributes: name, port, addr, url, tls,
    pid, proc, stderr_path."""

    __test__ = False  # not a test class for pytest

    def __init__(self, proc, name, port, tls, stderr_path):
        self.proc = proc
        self.pid = proc.pid
        self.name = name
        self.port = port
        self.tls = tls
        self.addr = f"{HOST}:{port}"
        self.url = f"{'https' if tls else 'http'}://{HOST}:{port}"
        self.stderr_path = stderr_path

    def running(self):
        return self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after timeout. Returns the exit code."""
        return stop_process(self.proc, signal.SIGTERM, timeout)

    def kill(self):
        """SIGKILL: the backend vanishes without closing anything cleanly."""
        return stop_process(self.proc, signal.SIGKILL, 10)

    def stderr(self):
        return read_text(self.stderr_path)

    def __repr__(self):
        return f"<Testbed {self.name} {self.addr} pid={self.pid}>"


@pytest.fixture
def testbed(request, tmp_path):
    """Factory: start(name="tb1", tls=False, extra_args=(), port=None) -> Testbed.
    tls=True serves the `certs` server certificate (localhost/127.0.0.1)."""
    started = []
    counter = [0]

    def start(name="tb1", tls=False, extra_args=(), port=None):
        exe = binary("switchyard-testbed")
        tls_args = []
        if tls:
            c = request.getfixturevalue("certs")
            tls_args = ["--tls-cert", str(c.cert), "--tls-key", str(c.key)]
        last_err = ""
        # A port from free_port() can be taken by someone else before we bind:
        # retry a few times with a fresh one (never when the caller fixed it).
        for _ in range(1 if port else 3):
            p = port or free_port()
            counter[0] += 1
            errp = tmp_path / f"testbed-{name}-{counter[0]}.stderr"
            cmd = [str(exe), "--listen", f"{HOST}:{p}", "--name", name,
                   *tls_args, *[str(a) for a in extra_args]]
            with open(errp, "wb") as ef:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=ef, stderr=subprocess.STDOUT,
                                        env=child_env(), cwd=str(tmp_path))
            tb = Testbed(proc, name, p, tls, errp)
            started.append(tb)
            if wait_port(p, START_TIMEOUT, proc):
                return tb
            stop_process(proc, signal.SIGKILL, 5)
            last_err = tb.stderr()
        pytest.fail(f"testbed {name} did not start:\n{last_err}")

    yield start

    problems = []
    for tb in started:
        tb.stop()
        rep = sanitizer_report(tb.stderr())
        if rep:
            problems.append(f"{tb!r}: {rep}\n{tb.stderr()[-8000:]}")
    if problems:
        pytest.fail("sanitizer report from testbed:\n" + "\n".join(problems))


# ---------------------------------------------------------------------------
# proxy
# ---------------------------------------------------------------------------

class Proxy:
    """One running switchyard. stdout is the access log, stderr the logs."""

    def __init__(self, proc, config_path, stdout_path, stderr_path):
        self.proc = proc
        self.pid = proc.pid
        self.config_path = config_path
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def running(self):
        return self.proc.poll() is None

    def stderr(self):
        return read_text(self.stderr_path)

    def stdout(self):
        return read_text(self.stdout_path)

    def access_log(self, min_entries=0, timeout=5.0):
        """Parsed JSON lines written to stdout so far (non-JSON lines skipped).
        With min_entries, waits (bounded by timeout) until that many exist."""
        def parse():
            out = []
            for line in self.stdout().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
            return out

        if min_entries <= 0:
            return parse()
        got = wait_for(lambda: (lambda v: v if len(v) >= min_entries else None)(parse()),
                       timeout)
        return got if got is not None else parse()

    def write_config(self, text):
        """Replace the config file's content (then call reload())."""
        Path(self.config_path).write_text(text)

    def reload(self):
        """SIGHUP: reload the config file."""
        self.proc.send_signal(signal.SIGHUP)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=35):
        """Send sig, wait up to timeout (then SIGKILL). Returns the exit code."""
        return stop_process(self.proc, sig, timeout)

    def __repr__(self):
        return f"<Proxy pid={self.pid} config={self.config_path}>"


@pytest.fixture
def proxy(tmp_path):
    """Factory: start(config_text, workers=1, extra_args=(), expect_ports=None,
    env=None) -> Proxy. Waits until every port in expect_ports accepts TCP."""
    started = []

    def start(config_text, workers=1, extra_args=(), expect_ports=None, env=None):
        exe = binary("switchyard")
        n = len(started) + 1
        cfg = tmp_path / f"switchyard-{n}.yaml"
        cfg.write_text(config_text)
        outp = tmp_path / f"switchyard-{n}.stdout"
        errp = tmp_path / f"switchyard-{n}.stderr"
        cmd = [str(exe), "-c", str(cfg), "--workers", str(workers),
               *[str(a) for a in extra_args]]
        with open(outp, "wb") as of, open(errp, "wb") as ef:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=of, stderr=ef,
                                    env=child_env(env), cwd=str(tmp_path))
        px = Proxy(proc, cfg, outp, errp)
        started.append(px)
        for port in expect_ports or ():
            if not wait_port(port, START_TIMEOUT, proc):
                if proc.poll() is not None:
                    pytest.fail(f"switchyard exited with {proc.returncode} before "
                                f"port {port} was up:\n{px.stderr()}")
                pytest.fail(f"switchyard port {port} not accepting after "
                            f"{START_TIMEOUT}s:\n{px.stderr()}")
        return px

    yield start

    problems = []
    for px in started:
        px.stop(signal.SIGTERM, 35)
        err = px.stderr()
        rep = sanitizer_report(err)
        if rep:
            problems.append(f"{px!r}: {rep}\n{err[-8000:]}")
    if problems:
        pytest.fail("sanitizer report from switchyard:\n" + "\n".join(problems))
