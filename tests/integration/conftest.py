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
  free_port(), free_ports(n), port_accepts(port), wait_port(port, timeout, proc),
  wait_for(pred, timeout, interval), tcp_conns(local_port, remote_port, state),
  caught_up(port, n_conns), wait_requests_at(port, n, timeout),
  admin_metrics(admin_port) -> {series: value},
  run_switchyard(args, timeout=30, env=None, input=None) -> CompletedProcess(text),
  binary(name), child_env(extra), sanitizer_report(text), HOST, SY_BUILD,
  CHILD_ENV_DEFAULTS

Waiting
  Tests wait for events, not for time: wait_for() polls a predicate until it
  holds, bounded in time and in count. A bare time.sleep() in a test is only
  there when the passing of time is the point (pacing a slow client, holding
  a connection idle, waiting out a timeout under test), and says so in a
  comment. "A request has reached the backend" is read from the kernel's
  socket table (wait_requests_at): the proxy's connection to the backend is
  up and the backend has accepted it and read every byte sent on it.
  tcp_conns() asks sock_diag netlink, which filters by port in the kernel
  (parsing /proc/net/tcp, its fallback, takes seconds while a load test on
  the machine holds 100k sockets).

Ports
  free_port()/free_ports(n) reserve each port they return for the life of the
  pytest process, across processes: two runs on one machine (two checkouts,
  CI next to a developer, pytest-xdist workers) never get the same port. That
  matters because the proxy listens with SO_REUSEPORT, so a second proxy on a
  port that is already in use would bind silently and share its traffic.
    - A port is reserved by a write lock on byte <port> of one shared lock
      file, PORT_LOCK_FILE (fcntl.lockf, non-blocking). The lock is held by
      this process until it exits (even if it is killed); a port whose byte
      is locked by another process is skipped. One descriptor serves every
      port. (POSIX record locks go away when the process closes *any*
      descriptor of that file, so nothing else may open it.) If that file
      cannot be opened for writing (another user made it, say), a per-user
      file is used instead.
    - The port must also bind on 127.0.0.1 without SO_REUSEADDR or
      SO_REUSEPORT at the time it is chosen, so anything already listening or
      connected there (a foreign reuseport listener included) is skipped.
    - Ports come from below the kernel's ephemeral range
      (net.ipv4.ip_local_port_range), so a port chosen by the kernel for
      bind(port 0) or for an outgoing connection never lands on a reserved
      port before its owner binds it.
    - Within one run every port is returned at most once, so ports chosen
      before anything binds them are distinct.
"""

import dataclasses
import fcntl
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
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


PORT_LOCK_FILE = Path("/tmp/switchyard-test-ports.lock")
PORT_TRIES = 2000    # candidates looked at before giving up


def _port_candidates():
    """The range free ports are drawn from: below the ephemeral range when it
    leaves room (the usual 32768-60999 gives 10000-32767), else above it."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        lo, hi = (int(x) for x in text.split()[:2])
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - 10000 >= 4096:
        return range(10000, lo)
    if 65535 - hi >= 4096:
        return range(hi + 1, 65536)
    return range(1024, 65536)


class _PortReserver:
    """free_port()'s state: the lock file descriptor and the ports this
    process holds (see "Ports" in the module docstring)."""

    def __init__(self):
        self.mutex = threading.Lock()
        self.fd = None
        self.held = set()
        self.candidates = _port_candidates()
        self.rng = random.Random(os.getpid() ^ time.monotonic_ns())

    def _open(self):
        paths = [PORT_LOCK_FILE,
                 PORT_LOCK_FILE.with_name(f"{PORT_LOCK_FILE.stem}-{os.getuid()}.lock")]
        last = None
        for path in paths:
            try:
                try:   # no O_CREAT: fs.protected_regular refuses it on others' files
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                    try:
                        os.fchmod(fd, 0o666)   # other users' runs lock it too
                    except OSError:
                        pass
                return fd
            except OSError as e:
                last = e
        raise RuntimeError(f"cannot open a port lock file ({paths}): {last}")

    @staticmethod
    def _bindable(port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
        return True

    def take(self):
        with self.mutex:
            if self.fd is None:
                self.fd = self._open()
            c = self.candidates
            start = self.rng.randrange(len(c))
            for i in range(min(PORT_TRIES, len(c))):
                port = c[(start + i) % len(c)]
                if port in self.held:
                    continue
                try:
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
                except OSError:
                    continue   # another process holds it
                if not self._bindable(port):
                    fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, port)
                    continue
                self.held.add(port)
                return port
        raise RuntimeError(f"no free port in {min(PORT_TRIES, len(self.candidates))} tries "
                           f"from {self.candidates}")


_ports = _PortReserver()


def free_port():
    """A TCP port on 127.0.0.1, reserved for this pytest process (no other
    process that uses free_port() gets it while this one runs) and bindable
    when chosen; never returned twice in one run. See "Ports" above."""
    return _ports.take()


def free_ports(n):
    """n distinct reserved ports (free_port() never repeats a port)."""
    return [free_port() for _ in range(n)]


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
        time.sleep(interval)   # the polling interval
    return None


_NETLINK_SOCK_DIAG = 4          # NETLINK_SOCK_DIAG
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_LOOPBACK = socket.inet_aton(HOST)


def _tcp_conns_netlink(local_port, remote_port, states):
    """tcp_conns() through sock_diag netlink: the kernel filters by port, so
    the cost does not grow with every other socket on the machine (reading
    /proc/net/tcp takes seconds when a load test holds 100k sockets)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5)
        req = (struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, states)
               + struct.pack("!HH", local_port or 0, remote_port or 0) + bytes(44))
        nl.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                            _NLM_F_REQUEST_DUMP, 1, 0) + req)
        out = []
        for _ in range(100000):
            data = nl.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR or length < 16:
                    raise OSError("sock_diag error")
                m = off + 16
                st = data[m + 1]
                lport, rport = struct.unpack_from("!HH", data, m + 4)
                rx, tx = struct.unpack_from("=II", data, m + 56)
                if st == 0x0A:
                    tx = 0   # a listener's "wqueue" is its backlog size
                if data[m + 8:m + 12] == _LOOPBACK:
                    out.append((lport, rport, "%02X" % st, tx, rx))
                off += (length + 3) & ~3
        raise OSError("sock_diag: no end of dump")


def _tcp_conns_proc(local_port, remote_port, state):
    out = []
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                cols = line.split()
                laddr, lport = cols[1].split(":")
                raddr, rport = cols[2].split(":")
                lport, rport = int(lport, 16), int(rport, 16)
                if laddr != "0100007F" or (state is not None and cols[3] != state):
                    continue
                if local_port is not None and lport != local_port:
                    continue
                if remote_port is not None and rport != remote_port:
                    continue
                tx, rx = (int(x, 16) for x in cols[4].split(":"))
                out.append((lport, rport, cols[3], tx, rx))
    except FileNotFoundError:
        pass
    return out


def tcp_conns(local_port=None, remote_port=None, state="01"):
    """127.0.0.1 TCP sockets as (local_port, remote_port, state, tx_queue,
    rx_queue) tuples, filtered by port and by state (hex as in
    /proc/net/tcp: "01" ESTABLISHED, "0A" LISTEN, None any). For a listening
    socket rx_queue is its accept queue: connections not yet accepted. Read
    with sock_diag netlink (filtered in the kernel), else /proc/net/tcp."""
    states = 0xFFF if state is None else 1 << int(state, 16)
    try:
        got = _tcp_conns_netlink(local_port, remote_port, states)
    except OSError:
        return _tcp_conns_proc(local_port, remote_port, state)
    # the kernel skips listeners when a remote port is given; filter anyway
    return [c for c in got
            if (state is None or c[2] == state)
            and (local_port is None or c[0] == local_port)
            and (remote_port is None or c[1] == remote_port)]


def caught_up(port, n_conns=0):
    """True when the server listening on 127.0.0.1:port has accepted every
    connection made to it and read every byte that arrived on them (an
    unread FIN counts as a byte, so a connection its client closed counts
    until the server has seen the end), with at least n_conns of them
    established."""
    socks = tcp_conns(local_port=port, state=None)
    if any(rx for *_, rx in socks):   # a LISTEN socket's rx: not yet accepted
        return False
    return len([c for c in socks if c[2] == "01"]) >= n_conns


def wait_requests_at(port, n=1, timeout=10.0):
    """Wait until n connections to the server on 127.0.0.1:port (e.g. the
    proxy's to a backend) are established, and that server has accepted them
    and read all they carried: a request written on them has reached it.
    True, or False on timeout."""
    return bool(wait_for(lambda: len(tcp_conns(remote_port=port)) >= n
                         and caught_up(port, n), timeout))


def admin_metrics(port):
    """The proxy's admin GET /metrics on 127.0.0.1:port as {series: value},
    series as written (e.g. 'switchyard_upstream_retries_total{backend_service="svc"}');
    {} while the admin API does not answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)   # no *_proxy from the env
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        if r.status != 200:
            return {}
        text = r.read().decode()
    except (OSError, http.client.HTTPException):
        return {}
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                out[series] = float(value)
            except ValueError:
                pass
    return out


def wait_port(port, timeout=START_TIMEOUT, proc=None):
    """True once 127.0.0.1:port accepts TCP; False on timeout or if proc exits."""
    def state():
        if proc is not None and proc.poll() is not None:
            return "exited"
        return "up" if port_accepts(port) else None
    return wait_for(state, timeout) == "up"


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
