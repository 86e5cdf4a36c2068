#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 proxy in front of a local moto server.

Listens on 127.0.0.1 (an ephemeral port unless --port is given), prints
``PORT <n>`` as its first stdout line, and forwards every request to
127.0.0.1:<--upstream> unchanged: same method, same path and query, the same
headers in the same order (Host and Authorization included, so a SigV4
signature made for the proxy's address still matches what moto sees), and the
same body. The upstream response is relayed with its status, headers and body
(hop-by-hop framing is re-done: the body is sent with a Content-Length).

It never connects anywhere but 127.0.0.1:<upstream>, and it exits by itself
after --max-seconds (and, with --watch-stdin, as soon as its stdin closes,
i.e. when the process that started it is gone).

Faults, checked in this order for each request:

  --reset N          the first N *connections* are closed with a TCP reset
                     after their request was read, without any answer.
  --stall S          hold each of the first --stall-count requests (default 1;
                     "all" for every request) for S seconds, then go on.
  --forever          every request fails with 503 and a retryable error body
                     (S3: <Code>ServiceUnavailable</Code>; KMS:
                     {"__type":"DependencyTimeoutException"}), for ever.
  --unavailable N    the first N requests (of any kind) fail with a retryable
                     error: S3 gets 503 <Code>SlowDown</Code> (a throttling
                     code in the AWS SDKs' lists, and a 5xx), KMS gets 500
                     {"__type":"KMSInternalException"} (the AWS SDKs retry
                     500/502/503/504 as transient errors).
  --throttle N       the first N KMS requests (X-Amz-Target: TrentService.*)
                     get 400 {"__type":"ThrottlingException"} with
                     x-amzn-ErrorType: ThrottlingException.
  --admit-per-second R
                     KMS requests beyond R within any sliding second get the
                     same ThrottlingException answer.
  --owner ACCOUNT    a request whose x-amz-expected-bucket-owner header is
                     not ACCOUNT (default 123456789012, moto's account) gets
                     403 <Code>AccessDenied</Code>, as S3 answers it. moto
                     itself ignores that header.
  --deny-marker M    (repeatable) access denied for requests that carry M:
                     an S3 request whose path contains M gets 403
                     <Code>AccessDenied</Code>; a KMS request whose body
                     contains M (e.g. in its EncryptionContext) gets 400
                     {"__type":"AccessDeniedException"}. Not retried.
  --deny-kms ACTION:M
                     (repeatable) the same denial for the KMS requests of
                     one action (X-Amz-Target: TrentService.ACTION) whose
                     body contains M: e.g. Decrypt:<key ARN> refuses to
                     decrypt under that key, while GenerateDataKey and
                     ReEncrypt to it still work (a key policy that lacks
                     kms:Decrypt for the caller).

A fault pattern, checked before all of the above for the requests in its
scope (--pattern-scope all|kms|s3, default all):

  --pattern ITEM,ITEM,...
                     request n of the scope gets item n; after the last item
                     requests are forwarded, unless the last item is "loop",
                     which starts the pattern again (faults for ever). Items:
                       reset     TCP reset after the request was read
                       throttle  KMS 400 ThrottlingException; S3 503 SlowDown
                       503       KMS 503 DependencyTimeoutException;
                                 S3 503 ServiceUnavailable
                       500       KMS 500 KMSInternalException;
                                 S3 500 InternalError
                       stall:S   wait S seconds, then forward (slow success)
                       ok        forward
                       flood     200 with a body that does not end:
                                 chunked, no Content-Length, 64 KiB
                                 every 10 ms until the client goes
                                 (or FLOOD_SECONDS pass)
                     and "stall:S+ITEM": wait S seconds, then ITEM (e.g.
                     "stall:2+503": a slow failure).

Every request is logged as one line on stderr:

  REQ <n> conn=<c> <METHOD> <path> target=<X-Amz-Target|-> owner=<header|-> \
      action=<forward|throttle|unavailable|forever|owner-denied|denied|reset|stall...|pattern-ITEM> \
      status=<code> counts=<kms=..,s3=..,throttled=..,...>

and a ``SUMMARY`` line with the counters is printed when it stops.
"""

import argparse
import http.client
import http.server
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}

S3_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<RequestId>{rid}</RequestId><HostId>fault-proxy</HostId></Error>"
)


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.counts = {
            "connections": 0,
            "requests": 0,
            "kms": 0,
            "s3": 0,
            "forwarded": 0,
            "throttled": 0,
            "unavailable": 0,
            "forever": 0,
            "reset": 0,
            "stalled": 0,
            "owner_denied": 0,
            "denied": 0,
            "pattern": 0,
            "flood_bytes": 0,
            "upstream_errors": 0,
        }
        self.pattern_no = 0
        self.kms_window = deque()

    def bump(self, name, by=1):
        with self.lock:
            self.counts[name] += by
            return self.counts[name]

    def snapshot(self):
        with self.lock:
            return ",".join(f"{k}={v}" for k, v in self.counts.items())


STATE = None
LOG_LOCK = threading.Lock()


def log(line):
    with LOG_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"
    sys_version = ""

    def log_message(self, fmt, *args):  # the per-request line replaces it
        pass

    # ---- connection level: --reset -------------------------------------
    def handle(self):
        conn_no = STATE.bump("connections")
        self.conn_no = conn_no
        if conn_no <= STATE.args.reset:
            self._reset_connection()
            return
        try:
            super().handle()
        except (ConnectionError, socket.timeout, OSError):
            pass

    def _reset_connection(self):
        sock = self.connection
        head = b""
        try:
            sock.settimeout(2.0)
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
        first = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        first = " ".join(first.split(" ")[:2])  # METHOD path, as in the other lines
        target = "-"
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"x-amz-target:"):
                target = line.split(b":", 1)[1].strip().decode("latin-1", "replace")
        n = STATE.bump("requests")
        STATE.bump("reset")
        log(
            f"REQ {n} conn={self.conn_no} {first or '<nothing>'} target={target} "
            f"owner=- action=reset status=- counts={STATE.snapshot()}"
        )
        try:
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # Close it here (not via socketserver, whose shutdown(SHUT_WR) sends a
        # FIN first); every file object on it must go for the fd to close.
        self.rfile.close()
        self.wfile.close()
        sock.close()
        self.close_connection = True

    # ---- request level ---------------------------------------------------
    def do_GET(self):
        self._serve()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _read_body(self):
        """The request body exactly as sent, and whether it was chunked."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            raw = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                raw += size_line
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while True:
                        line = self.rfile.readline(65537)
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            break
                    break
                raw += self.rfile.read(size)
                raw += self.rfile.readline(65537)  # CRLF after the chunk
            return bytes(raw), True
        length = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(length) if length else b""), False

    def _serve(self):
        args = STATE.args
        n = STATE.bump("requests")
        target = self.headers.get("X-Amz-Target") or ""
        is_kms = target.startswith("TrentService.")
        kms_no = STATE.bump("kms") if is_kms else None
        if not is_kms:
            STATE.bump("s3")
        owner = self.headers.get("x-amz-expected-bucket-owner")
        body, chunked = self._read_body()
        actions = []

        item = self._pattern_item(is_kms)
        if item is not None:
            STATE.bump("pattern")
            status = self._serve_pattern(item, is_kms, body, chunked, actions)
            log(
                f"REQ {n} conn={self.conn_no} {self.command} {self.path} "
                f"target={target or '-'} owner={owner if owner is not None else '-'} "
                f"action={'+'.join(actions)} status={status} counts={STATE.snapshot()}"
            )
            if status == "-":
                self._reset_now()
            return

        if args.stall > 0 and (args.stall_count < 0 or n <= args.stall_count):
            STATE.bump("stalled")
            actions.append(f"stall{args.stall:g}s")
            time.sleep(args.stall)

        status = None
        if args.forever:
            STATE.bump("forever")
            actions.append("forever")
            status = self._fail_unavailable(is_kms, forever=True)
        elif args.unavailable and n <= args.unavailable:
            STATE.bump("unavailable")
            actions.append("unavailable")
            status = self._fail_unavailable(is_kms, forever=False)
        elif is_kms and self._should_throttle(kms_no):
            STATE.bump("throttled")
            actions.append("throttle")
            status = self._send(
                400,
                json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
                "application/x-amz-json-1.1",
                {"x-amzn-ErrorType": "ThrottlingException"},
            )
        elif owner is not None and owner != args.owner:
            STATE.bump("owner_denied")
            actions.append("owner-denied")
            status = self._send(
                403,
                S3_XML.format(code="AccessDenied", message="Access Denied", rid=f"FP{n}").encode(),
                "application/xml",
            )
        elif self._denied(is_kms, body):
            STATE.bump("denied")
            actions.append("denied")
            status = self._fail_denied(is_kms, n)
        else:
            actions.append("forward")
            status = self._forward(body, chunked)

        log(
            f"REQ {n} conn={self.conn_no} {self.command} {self.path} "
            f"target={target or '-'} owner={owner if owner is not None else '-'} "
            f"action={'+'.join(actions)} status={status} counts={STATE.snapshot()}"
        )

    # ---- --pattern and --deny-marker -------------------------------------
    def _pattern_item(self, is_kms):
        """The pattern item for this request, or None (no pattern, out of
        scope, or past the end of a pattern that does not loop)."""
        args = STATE.args
        if not args.pattern:
            return None
        scope = args.pattern_scope
        if (scope == "kms" and not is_kms) or (scope == "s3" and is_kms):
            return None
        items, loop = args.pattern
        with STATE.lock:
            STATE.pattern_no += 1
            i = STATE.pattern_no - 1
        if loop:
            return items[i % len(items)]
        return items[i] if i < len(items) else None

    def _serve_pattern(self, item, is_kms, body, chunked, actions):
        """Applies one pattern item; returns the status sent ("-": none, the
        caller resets the connection)."""
        stall, what = item
        if stall > 0:
            STATE.bump("stalled")
            actions.append(f"pattern-stall{stall:g}s")
            time.sleep(stall)
        actions.append(f"pattern-{what}")
        if what == "reset":
            STATE.bump("reset")
            return "-"
        if what == "throttle":
            STATE.bump("throttled")
            if is_kms:
                return self._send(
                    400,
                    json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
                    "application/x-amz-json-1.1",
                    {"x-amzn-ErrorType": "ThrottlingException"},
                )
            xml = S3_XML.format(code="SlowDown", message="Please reduce your request rate.", rid="FPP")
            return self._send(503, xml.encode(), "application/xml")
        if what == "503":
            STATE.bump("unavailable")
            return self._fail_unavailable(is_kms, forever=True)
        if what == "500":
            STATE.bump("unavailable")
            if is_kms:
                return self._send(
                    500,
                    json.dumps({"__type": "KMSInternalException", "message": "Internal failure"}).encode(),
                    "application/x-amz-json-1.1",
                    {"x-amzn-ErrorType": "KMSInternalException"},
                )
            xml = S3_XML.format(code="InternalError", message="We encountered an internal error.", rid="FPI")
            return self._send(500, xml.encode(), "application/xml")
        if what == "flood":
            return self._flood()
        return self._forward(body, chunked)  # "ok"

    def _flood(self):
        """200 and a chunked body without end, until the client closes the
        connection (or FLOOD_SECONDS pass): an object too large to read."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"\x81" * FLOOD_CHUNK
        frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        end = time.monotonic() + FLOOD_SECONDS
        try:
            while time.monotonic() < end:
                self.wfile.write(frame)
                self.wfile.flush()
                STATE.bump("flood_bytes", len(chunk))
                time.sleep(FLOOD_PAUSE)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True
        return 200

    def _reset_now(self):
        """Closes this connection with a TCP reset, after a request was read."""
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The fd closes (sending RST) once the socket and its reader are
        # closed; the writer holds no descriptor of its own.
        try:
            self.rfile.close()
            sock.close()
        except OSError:
            pass
        self.close_connection = True

    def _denied(self, is_kms, body):
        target = self.headers.get("X-Amz-Target") or ""
        for rule in STATE.args.deny_kms or []:
            action, marker = rule.split(":", 1)
            if is_kms and target == f"TrentService.{action}" and marker.encode() in body:
                return True
        for marker in STATE.args.deny_marker or []:
            if is_kms and marker.encode() in body:
                return True
            if not is_kms and marker in self.path:
                return True
        return False

    def _fail_denied(self, is_kms, n):
        if is_kms:
            return self._send(
                400,
                json.dumps({
                    "__type": "AccessDeniedException",
                    "message": "User: arn:aws:sts::123456789012:assumed-role/secretfs-test-role/i-0 "
                               "is not authorized to perform: kms:"
                               + (self.headers.get("X-Amz-Target") or "TrentService.Decrypt").split(".", 1)[-1]
                               + " (fault proxy)",
                }).encode(),
                "application/x-amz-json-1.1",
                {"x-amzn-ErrorType": "AccessDeniedException"},
            )
        return self._send(
            403,
            S3_XML.format(code="AccessDenied", message="Access Denied", rid=f"FPD{n}").encode(),
            "application/xml",
        )

    def _should_throttle(self, kms_no):
        args = STATE.args
        if kms_no <= args.throttle:
            return True
        with STATE.lock:
            if args.admit_per_second is not None:
                now = time.monotonic()
                win = STATE.kms_window
                while win and now - win[0] >= 1.0:
                    win.popleft()
                if len(win) >= args.admit_per_second:
                    return True
                win.append(now)
        return False

    def _fail_unavailable(self, is_kms, forever):
        if is_kms:
            if forever:
                code, etype = 503, "DependencyTimeoutException"
                msg = "Service is temporarily unavailable"
            else:
                code, etype = 500, "KMSInternalException"
                msg = "Internal failure"
            return self._send(
                code,
                json.dumps({"__type": etype, "message": msg}).encode(),
                "application/x-amz-json-1.1",
                {"x-amzn-ErrorType": etype},
            )
        if forever:
            xml = S3_XML.format(code="ServiceUnavailable", message="Service Unavailable", rid="FPU")
        else:
            xml = S3_XML.format(code="SlowDown", message="Please reduce your request rate.", rid="FPS")
        return self._send(503, xml.encode(), "application/xml")

    def _send(self, status, body, content_type, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-amzn-RequestId", "fault-proxy")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        return status

    def _forward(self, body, chunked):
        up = http.client.HTTPConnection("127.0.0.1", STATE.args.upstream, timeout=120)
        try:
            up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                up.putheader(name, value)
            up.endheaders()
            if body:
                up.send(body)
            resp = up.getresponse()
            data = resp.read()
            headers = resp.getheaders()
            status, reason = resp.status, resp.reason
        except (OSError, http.client.HTTPException) as exc:
            STATE.bump("upstream_errors")
            log(f"upstream error: {exc!r}")
            return self._send(502, b"bad gateway\n", "text/plain")
        finally:
            up.close()

        self.send_response_only(status, reason)
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                continue
            if lname == "content-length":
                if self.command == "HEAD" or status in (204, 304):
                    has_length = True
                    self.send_header(name, value)
                continue
            self.send_header(name, value)
        if not has_length and not (self.command == "HEAD" or status in (204, 304) or 100 <= status < 200):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        STATE.bump("forwarded")
        return status


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A boot storm connects hundreds of clients at once; socketserver's
    # default backlog of 5 would drop most SYNs (the kernel caps this at
    # net.core.somaxconn).
    request_queue_size = 512


def parse_count(text):
    if text == "all":
        return -1
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 or 'all'")
    return value


PATTERN_ITEMS = ("reset", "throttle", "503", "500", "ok", "flood")
# The body of a "flood" answer: FLOOD_CHUNK bytes every FLOOD_PAUSE seconds,
# for at most FLOOD_SECONDS.
FLOOD_CHUNK = 64 * 1024
FLOOD_PAUSE = 0.01
FLOOD_SECONDS = 60.0


def parse_pattern(text):
    """"reset,throttle,stall:2+503,ok,loop" -> ([(stall, what), ...], loop)."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    loop = bool(words) and words[-1] == "loop"
    if loop:
        words = words[:-1]
    if not words:
        raise argparse.ArgumentTypeError("an empty pattern")
    items = []
    for w in words:
        stall, what = 0.0, w
        if w.startswith("stall:"):
            head, _, rest = w.partition("+")
            try:
                stall = float(head[len("stall:"):])
            except ValueError:
                raise argparse.ArgumentTypeError(f"{w!r}: stall:SECONDS")
            if stall < 0:
                raise argparse.ArgumentTypeError(f"{w!r}: a negative stall")
            what = rest or "ok"
        if what not in PATTERN_ITEMS:
            raise argparse.ArgumentTypeError(
                f"{w!r}: use {', '.join(PATTERN_ITEMS)}, stall:S or stall:S+ITEM (and a final loop)")
        items.append((stall, what))
    return items, loop


def main():
    global STATE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", type=int, required=True, help="moto's port on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: ephemeral)")
    p.add_argument("--throttle", type=int, default=0)
    p.add_argument("--unavailable", type=int, default=0)
    p.add_argument("--forever", action="store_true")
    p.add_argument("--reset", type=int, default=0)
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--stall-count", type=parse_count, default=1)
    p.add_argument("--owner", default="123456789012")
    p.add_argument("--admit-per-second", type=float, default=None)
    p.add_argument("--deny-marker", action="append", default=[])
    p.add_argument("--deny-kms", action="append", default=[], metavar="ACTION:M")
    p.add_argument("--pattern", type=parse_pattern, default=None)
    p.add_argument("--pattern-scope", choices=("all", "kms", "s3"), default="all")
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = p.parse_args()
    if not 0 < args.upstream < 65536:
        p.error("--upstream must be a TCP port")
    STATE = State(args)

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    log(f"fault-proxy listening on 127.0.0.1:{server.server_address[1]} -> 127.0.0.1:{args.upstream} "
        f"args={vars(args)}")

    def stop(reason):
        log(f"SUMMARY reason={reason} counts={STATE.snapshot()}")
        os._exit(0)

    threading.Timer(args.max_seconds, stop, args=("max-seconds",)).start()
    if args.watch_stdin:
        def watch():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except OSError:
                pass
            stop("stdin-closed")

        threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop("SIGINT"))
    server.serve_forever()


if __name__ == "__main__":
    main()
