"""A grpcio backend for switchyard's gRPC tests (service switchyard.test.Echo
from echo.proto), run as a subprocess:

    python3 server.py --stubs DIR --name NAME --port-file FILE
                      [--tls-cert PEM --tls-key KEY]

DIR holds echo_pb2.py / echo_pb2_grpc.py generated at test time. The server
listens on 127.0.0.1 on a port it picks (port 0) and writes that port to
FILE once it is serving. Messages up to 8 MiB both ways.

Every call answers with initial metadata
    x-server: NAME, x-method: METHOD,
    x-time-remaining: seconds left of the call's deadline ("none" without one;
                      the deadline comes from the grpc-timeout request header),
    x-echo-<key>: value for every request metadata key starting with "x-"
and trailing metadata
    x-trailer: done:NAME:METHOD, x-trailer-bin: b"\\x00\\x01\\xfe\\xff".

Request metadata steers it:
    x-key: K            count this call under key K (see x-query)
    x-sleep: SECONDS    wait before answering (stops early if the call ends)
    x-fail-first: N     with x-key: the first N calls of K fail UNAVAILABLE,
                        trailers-only (no initial metadata)
    x-fail-code: NAME   fail with grpc.StatusCode[NAME] (e.g. NOT_FOUND) ...
    x-fail-message: S   ... and this status message (details); the trailing
                        metadata above is sent with the failure
    x-fail-message-bin: B  the same as UTF-8 bytes (for non-ASCII messages)
    x-fail-after: N     ServerStream: apply x-fail-code only after sending N
                        messages (the status then follows DATA, in trailers)
    x-stream-count: N   ServerStream: send N messages (default 1)
    x-interval: SECONDS ServerStream: pause between messages
    x-query: WHAT       Unary only, answered by the server itself: reply.text
                        is "calls:K" -> calls seen under key K,
                        "cancelled:K" -> "1" if a call under K saw its client
                        cancel (the RPC ended before the handler finished)

Replies: Unary echoes payload/text/index; ServerStream sends the request's
payload N times with index 0..N-1 and text "<text>-<i>"; ClientStream answers
once with index = messages received, total_bytes = payload bytes received,
text = the texts joined by ","; BidiStream answers each message as it comes
(same payload/text/index). total_bytes and server are set on every reply.
"""

import argparse
import collections
import concurrent.futures
import os
import sys
import threading
import time

MAX_MSG = 8 * 1024 * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc
    import echo_pb2
    import echo_pb2_grpc

    name = args.name
    lock = threading.Lock()
    calls = collections.Counter()
    cancelled = set()

    def log(msg):
        sys.stderr.write(f"[{name}] {msg}\n")
        sys.stderr.flush()

    def nap(context, seconds):
        """Sleep up to `seconds`; False if the RPC ended meanwhile."""
        end = time.monotonic() + seconds
        while True:
            if not context.is_active():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.02))

    class Call:
        """Per-call bookkeeping: metadata, key, cancellation detection."""

        def __init__(self, context, method):
            self.context = context
            self.method = method
            self.md = {}
            for k, v in context.invocation_metadata():
                self.md[k] = v
            self.key = self.md.get("x-key")
            self.done = False
            if self.key:
                with lock:
                    calls[self.key] += 1
                    self.n = calls[self.key]
            else:
                self.n = 0
            context.add_callback(self._ended)

        def _ended(self):
            if not self.done:
                self.mark_cancelled()

        def mark_cancelled(self):
            if self.key:
                with lock:
                    cancelled.add(self.key)
            log(f"{self.method} key={self.key} cancelled")

        def initial(self):
            tr = self.context.time_remaining()
            md = [("x-server", name), ("x-method", self.method),
                  ("x-time-remaining", "none" if tr is None or tr > 1e6 else f"{tr:.3f}")]
            for k, v in self.md.items():
                if k.startswith("x-"):
                    md.append(("x-echo-" + k, v))
            return md

        def trailing(self):
            return [("x-trailer", f"done:{name}:{self.method}"),
                    ("x-trailer-bin", b"\x00\x01\xfe\xff")]

        def fail(self):
            """Abort with x-fail-code / x-fail-message (raises)."""
            self.done = True
            self.context.set_trailing_metadata(self.trailing() + [("x-server", name)])
            msg = self.md.get("x-fail-message-bin")
            msg = msg.decode("utf-8") if msg is not None else self.md.get("x-fail-message", "")
            self.context.abort(grpc.StatusCode[self.md["x-fail-code"]], msg)

        def begin(self, fail_now=True):
            """Apply x-sleep / x-fail-*; then send initial metadata and set
            trailing metadata. Raises (via abort) on failure. False if the
            call ended while sleeping."""
            ctx = self.context
            sleep = float(self.md.get("x-sleep", "0") or 0)
            if sleep > 0 and not nap(ctx, sleep):
                self.mark_cancelled()
                return False
            ff = int(self.md.get("x-fail-first", "0") or 0)
            if self.key and self.n <= ff:
                self.done = True
                ctx.abort(grpc.StatusCode.UNAVAILABLE, f"fail-first {self.n}/{ff}")
            if fail_now and self.md.get("x-fail-code"):
                self.fail()
            ctx.send_initial_metadata(self.initial())
            ctx.set_trailing_metadata(self.trailing())
            return True

    def reply(req, **kw):
        r = echo_pb2.EchoReply(payload=req.payload, text=req.text, index=req.index,
                               total_bytes=len(req.payload), server=name)
        for k, v in kw.items():
            setattr(r, k, v)
        return r

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            md = dict(context.invocation_metadata())
            q = md.get("x-query")
            if q:
                what, _, key = q.partition(":")
                with lock:
                    if what == "calls":
                        text = str(calls[key])
                    elif what == "cancelled":
                        text = "1" if key in cancelled else "0"
                    else:
                        text = "?"
                return echo_pb2.EchoReply(text=text, server=name)
            c = Call(context, "Unary")
            if not c.begin():
                return echo_pb2.EchoReply()
            c.done = True
            return reply(request)

        def ServerStream(self, request, context):
            c = Call(context, "ServerStream")
            fail_after = c.md.get("x-fail-after")
            if not c.begin(fail_now=fail_after is None):
                return
            n = int(c.md.get("x-stream-count", "1"))
            interval = float(c.md.get("x-interval", "0") or 0)
            try:
                for i in range(n):
                    if fail_after is not None and i == int(fail_after):
                        c.fail()
                    if not context.is_active():
                        c.mark_cancelled()
                        return
                    yield reply(request, index=i, text=f"{request.text}-{i}")
                    if interval > 0 and i + 1 < n and not nap(context, interval):
                        c.mark_cancelled()
                        return
                c.done = True
            except GeneratorExit:
                if not c.done:
                    c.mark_cancelled()
                raise

        def ClientStream(self, request_iterator, context):
            c = Call(context, "ClientStream")
            if not c.begin():
                return echo_pb2.EchoReply()
            count = 0
            total = 0
            texts = []
            for req in request_iterator:
                count += 1
                total += len(req.payload)
                texts.append(req.text)
            c.done = True
            return echo_pb2.EchoReply(index=count, total_bytes=total,
                                      text=",".join(texts), server=name)

        def BidiStream(self, request_iterator, context):
            c = Call(context, "BidiStream")
            if not c.begin():
                return
            for req in request_iterator:
                yield reply(req)
            c.done = True

    opts = [("grpc.max_send_message_length", MAX_MSG),
            ("grpc.max_receive_message_length", MAX_MSG)]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=32),
                         options=opts)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    if args.tls_cert:
        with open(args.tls_key, "rb") as f:
            key = f.read()
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    if not port:
        log("could not bind")
        return 1
    server.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.rename(tmp, args.port_file)
    log(f"serving on 127.0.0.1:{port} tls={bool(args.tls_cert)}")
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
