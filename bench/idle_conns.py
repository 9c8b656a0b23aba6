#!/usr/bin/python3
"""Memory per idle client connection, for scripts/bench.sh (idle-h1, idle-h2).

  idle_conns.py --port PORT --proto h1|h2 --pid PID [--n 2000] [--deadline 120]

Reads the RSS of the proxy (VmRSS summed over PID and its descendants,
/proc), then opens N client connections to 127.0.0.1:PORT one after the
other; each completes one request and stays open:
  h1: one HTTP/1.1 keep-alive GET, its whole answer read;
  h2: h2c prior knowledge: the preface, the SETTINGS exchange (both sides'
      SETTINGS acknowledged) and one GET stream to its end.
Every request carries `x-testbed-body-size: 40` and must answer 200.
After a 1 s pause the RSS is read again (the connections still open), and
one JSON object is printed: n (connections opened), open_after (still open
when the RSS was read), rss_before_kb, rss_after_kb, kib_per_conn,
nproc. Every socket wait is bounded (5 s), so is the whole run (--deadline);
exit 1 if fewer than N connections could be set up.
"""
import argparse
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import _tree  # noqa: E402  (process tree from /proc)

SOCK_TIMEOUT = 5.0


def rss_kb(root):
    total, n = 0, 0
    for p in _tree(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        n += 1
                        break
        except OSError:
            continue
    return total, n


def h1_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=SOCK_TIMEOUT)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-testbed-body-size: 40\r\n\r\n" % port)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer's head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower()] = v.strip().lower()
    if b"content-length" in hdrs:
        want = int(hdrs[b"content-length"])
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    elif hdrs.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the chunked body")
            body += chunk
    else:
        raise ConnectionError("answer without a length (not keep-alive)")
    if status != 200:
        raise ConnectionError(f"status {status}")
    return s


def h2_conn(port):
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", port), timeout=SOCK_TIMEOUT)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                       (":path", "/"), ("x-testbed-body-size", "40")], end_stream=True)
    s.sendall(c.data_to_send())
    acked = remote_settings = ended = False
    status = None
    while not (acked and remote_settings and ended):
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed during the exchange")
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.SettingsAcknowledged):
                acked = True
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                remote_settings = True  # h2 queues the ACK, sent below
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise ConnectionError(f"{type(ev).__name__}")
        out = c.data_to_send()
        if out:
            s.sendall(out)
    if status != b"200":
        raise ConnectionError(f"status {status!r}")
    return s


def still_open(socks):
    """connections the proxy has not closed (poll: fds above 1024)"""
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN)
    closed = set()
    for fd, ev in p.poll(0):
        if ev & (select.POLLHUP | select.POLLERR):
            closed.add(fd)
            continue
        s = next(x for x in socks if x.fileno() == fd)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed.add(fd)
        except OSError:
            closed.add(fd)
    return len(socks) - len(closed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto", choices=("h1", "h2"), required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--deadline", type=float, default=120.0)
    a = ap.parse_args()
    open_one = h1_conn if a.proto == "h1" else h2_conn
    before, nproc = rss_kb(a.pid)
    t_end = time.monotonic() + a.deadline
    socks, err = [], None
    for _ in range(a.n):
        if time.monotonic() > t_end:
            err = f"deadline ({a.deadline:.0f}s) passed"
            break
        try:
            socks.append(open_one(a.port))
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            err = f"connection {len(socks) + 1}: {e}"
            break
    time.sleep(1.0)
    after, nproc2 = rss_kb(a.pid)
    n_open = still_open(socks)
    res = {"proto": a.proto, "n": len(socks), "wanted": a.n, "open_after": n_open,
           "rss_before_kb": before, "rss_after_kb": after, "nproc": max(nproc, nproc2),
           "kib_per_conn": (after - before) / len(socks) if socks else None}
    if err:
        res["error"] = err
    for s in socks:
        s.close()
    print(json.dumps(res))
    if err:
        sys.stderr.write(f"idle_conns: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
