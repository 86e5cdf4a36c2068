#!/usr/bin/env python3
"""A fake EC2 instance metadata service (IMDSv2 only) on 127.0.0.1.

Prints ``PORT <n>`` as its first stdout line. Point the AWS SDK at it with
AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:<n>.

Modes:
  ok            PUT /latest/api/token hands out a token (the request must carry
                X-aws-ec2-metadata-token-ttl-seconds; the answer carries the
                same header); GETs need that token (401 otherwise, which the
                SDK retries after fetching a new token) and serve
                  /latest/meta-data/placement/region            --region
                  /latest/meta-data/placement/availability-zone <region>a
                  /latest/meta-data/instance-id
                  /latest/meta-data/services/partition          --partition
                  /latest/meta-data/iam/info
                  /latest/meta-data/iam/security-credentials/      the role name
                  /latest/meta-data/iam/security-credentials/ROLE  credentials JSON
                  /latest/dynamic/instance-identity/document
                Credentials are --access-key/--secret-key (fresh fake values per
                run unless given) with a session token, expiring in an hour.
  refuse-token  the token PUT gets 403 (what IMDS answers when it is turned
                off for the instance); GETs get 401.
  drop          every connection is accepted, its request read, and then
                closed without an answer.

Every request is logged on stderr (``REQ <n> <METHOD> <path> -> <status>``),
a ``SUMMARY`` line is printed when it stops. It stops by itself after
--max-seconds, and with --watch-stdin as soon as its stdin closes.
"""

import argparse
import datetime
import http.server
import json
import os
import secrets
import signal
import socket
import string
import struct
import sys
import threading

ROLE = "secretfs-test-role"
ACCOUNT = "123456789012"
INSTANCE_ID = "i-0123456789abcdef0"  # the default of --instance-id

LOG_LOCK = threading.Lock()
COUNTS = {"requests": 0, "token": 0, "credentials": 0, "denied": 0, "dropped": 0, "not_found": 0}
ARGS = None
TOKENS = set()


def log(line):
    with LOG_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def bump(name):
    with LOG_LOCK:
        COUNTS[name] += 1
        return COUNTS[name]


def counts():
    with LOG_LOCK:
        return ",".join(f"{k}={v}" for k, v in COUNTS.items())


def fake_key(prefix, n, alphabet):
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        if ARGS.mode == "drop":
            self._drop()
            return
        try:
            super().handle()
        except (ConnectionError, socket.timeout, OSError):
            pass

    def _drop(self):
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
        n = bump("requests")
        bump("dropped")
        first = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        log(f"REQ {n} {first or '<nothing>'} -> dropped counts={counts()}")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # Close it here (not via socketserver, whose shutdown(SHUT_WR) sends a
        # FIN first); every file object on it must go for the fd to close.
        self.rfile.close()
        self.wfile.close()
        sock.close()
        self.close_connection = True

    def _send(self, status, body, content_type="text/plain", extra=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        return status

    def _drain(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def do_PUT(self):
        self._drain()
        n = bump("requests")
        status = self._put()
        log(f"REQ {n} PUT {self.path} -> {status} counts={counts()}")

    def _put(self):
        if self.path != "/latest/api/token":
            bump("not_found")
            return self._send(404, "Not Found")
        if ARGS.mode == "refuse-token":
            bump("denied")
            return self._send(403, "Forbidden")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self._send(400, "Bad Request")
        bump("token")
        token = secrets.token_urlsafe(40)
        with LOG_LOCK:
            TOKENS.add(token)
        return self._send(200, token, extra={"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def do_GET(self):
        n = bump("requests")
        status = self._get()
        log(f"REQ {n} GET {self.path} -> {status} counts={counts()}")

    def _get(self):
        token = self.headers.get("X-aws-ec2-metadata-token")
        with LOG_LOCK:
            valid = token in TOKENS
        if not valid:
            bump("denied")
            return self._send(401, "Unauthorized")
        path = self.path.split("?", 1)[0]
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        creds_prefix = "/latest/meta-data/iam/security-credentials/"
        if path == "/latest/meta-data/placement/region":
            return self._send(200, ARGS.region)
        if path == "/latest/meta-data/placement/availability-zone":
            return self._send(200, ARGS.region + "a")
        if path == "/latest/meta-data/instance-id":
            return self._send(200, ARGS.instance_id)
        if path == "/latest/meta-data/services/partition":
            return self._send(200, ARGS.partition)
        if path == "/latest/meta-data/iam/info":
            return self._send(200, json.dumps({
                "Code": "Success",
                "LastUpdated": iso(now),
                "InstanceProfileArn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{ROLE}",
                "InstanceProfileId": "AIPAEXAMPLEPROFILEID",
            }), "application/json")
        if path == creds_prefix:
            return self._send(200, ROLE)
        if path == creds_prefix + ROLE:
            bump("credentials")
            return self._send(200, json.dumps({
                "Code": "Success",
                "LastUpdated": iso(now),
                "Type": "AWS-HMAC",
                "AccessKeyId": ARGS.access_key,
                "SecretAccessKey": ARGS.secret_key,
                "Token": ARGS.session_token,
                "Expiration": iso(now + datetime.timedelta(hours=1)),
            }, indent=2), "application/json")
        if path == "/latest/dynamic/instance-identity/document":
            return self._send(200, json.dumps({
                "accountId": ACCOUNT,
                "architecture": "x86_64",
                "availabilityZone": ARGS.region + "a",
                "imageId": "ami-0123456789abcdef0",
                "instanceId": ARGS.instance_id,
                "instanceType": "i4i.large",
                "region": ARGS.region,
                "version": "2017-09-30",
            }), "application/json")
        bump("not_found")
        return self._send(404, "Not Found")

    def do_POST(self):
        self._drain()
        n = bump("requests")
        status = self._send(405, "Method Not Allowed")
        log(f"REQ {n} {self.command} {self.path} -> {status} counts={counts()}")

    do_DELETE = do_PATCH = do_POST


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["ok", "refuse-token", "drop"], default="ok")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--instance-id", default=INSTANCE_ID)
    p.add_argument("--partition", default="aws")
    p.add_argument("--access-key", default=None, help="default: a fresh fake ASIA... id")
    p.add_argument("--secret-key", default=None, help="default: a fresh fake secret")
    p.add_argument("--session-token", default=None, help="default: a fresh fake token")
    p.add_argument("--max-seconds", type=float, default=600.0)
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    ARGS = p.parse_args()
    upper = string.ascii_uppercase + string.digits
    ARGS.access_key = ARGS.access_key or fake_key("ASIA", 16, upper)
    ARGS.secret_key = ARGS.secret_key or fake_key("", 40, string.ascii_letters + string.digits + "+/")
    ARGS.session_token = ARGS.session_token or secrets.token_urlsafe(96)

    server = Server(("127.0.0.1", ARGS.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    log(f"fake-imds listening on 127.0.0.1:{server.server_address[1]} mode={ARGS.mode} "
        f"region={ARGS.region} role={ROLE}")

    def stop(reason):
        log(f"SUMMARY reason={reason} counts={counts()}")
        os._exit(0)

    threading.Timer(ARGS.max_seconds, stop, args=("max-seconds",)).start()
    if ARGS.watch_stdin:
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
