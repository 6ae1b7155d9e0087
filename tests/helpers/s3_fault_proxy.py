"""A fault-injecting HTTP proxy in front of the S3 test server: the object store failing on cue.

Every request is forwarded unchanged (method, path, query, headers with Host, Range and the SigV4
Authorization, body) to the upstream server. A schedule, cycled over the requests it targets (object
GETs by default), says which of them fail and how:

  reset  the connection is reset (RST) before any response byte
  500    InternalError, with S3's XML error body
  503    SlowDown, with S3's XML error body
  cut    the full headers (true Content-Length), half the body, then a reset
  slow   a delay of `slow_s` before the first response byte, then the real response
  ok     forwarded as is

The proxy runs in its own process: a DataLoader worker forked by the test would otherwise inherit the
proxy's sockets, and a reset closed in one process but held open in another never reaches the client.
`FaultProxy(...).counts()` says how many requests it served and how many faults of each kind it injected.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("reset", "500", "503", "cut", "slow")
STATS_PATH = "/__fault_proxy__/stats"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
ERRORS = {"500": ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
          "503": ("Slow Down", "SlowDown", "Please reduce your request rate.")}


class FaultProxy:
    """Context manager: the proxy process on 127.0.0.1 (a free port); `url` is its endpoint URL."""

    def __init__(self, upstream: str, schedule: list[str], *, slow_s: float = 0.2, targets: tuple[str, ...] = ("get",),
                 only: str = ""):
        self.args = [upstream, "--schedule", ",".join(schedule), "--slow-s", str(slow_s),
                     "--targets", ",".join(targets), "--only", only]

    def __enter__(self) -> "FaultProxy":
        self.process = subprocess.Popen([sys.executable, __file__, *self.args], stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"
        return self

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + STATS_PATH, timeout=5) as response:
            return json.load(response)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, schedule: list[str], slow_s: float, targets: set[str], only: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.schedule, self.slow_s, self.targets, self.only = schedule, slow_s, targets, only
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "targeted": 0, **{kind: 0 for kind in KINDS}}

    def next_fault(self, method: str, path: str) -> str:
        """Counts the request; the schedule's next entry if the request is a target, else "ok"."""
        bare = urllib.parse.urlsplit(path).path
        target = "head" if method == "HEAD" else "get" if "/" in bare.strip("/") else "list"
        with self.lock:
            self.counts["requests"] += 1
            if method not in ("GET", "HEAD") or target not in self.targets or self.only not in bare:
                return "ok"
            kind = self.schedule[self.counts["targeted"] % len(self.schedule)]
            self.counts["targeted"] += 1
            if kind != "ok":
                self.counts[kind] += 1
            return kind

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up (read timeout) while a slow response slept: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 does: botocore reuses its connections

    def log_message(self, *args) -> None:
        """Quiet: one line per request would bury the test output."""

    def do_GET(self) -> None:
        if self.path == STATS_PATH:
            with self.server.lock:
                self._send(200, [("Content-Type", "application/json")], json.dumps(self.server.counts).encode())
            return
        self._proxy()

    def _proxy(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.server.next_fault(self.command, self.path)
        if fault == "reset":
            return self._reset()
        if fault in ERRORS:
            reason, code, message = ERRORS[fault]
            xml = (f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code><Message>{message}</Message>"
                   f"<Resource>{self.path}</Resource><RequestId>fault-proxy</RequestId></Error>").encode()
            return self._send(int(fault), [("Content-Type", "application/xml")], xml, reason)
        if fault == "slow":
            time.sleep(self.server.slow_s)
        status, reason, headers, payload = self._forward(body)
        if fault == "cut":  # the promised length, half the bytes, then a reset mid-body
            self._send_headers(status, reason, headers, len(payload))
            self.wfile.write(payload[:len(payload) // 2])
            time.sleep(0.05)  # let the client take the headers and the first bytes
            return self._reset()
        self._send(status, headers, payload, reason)

    do_HEAD = do_PUT = do_POST = do_DELETE = _proxy

    def _forward(self, body: bytes):
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():  # Host included: the signature covers it
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, headers, payload
        finally:
            conn.close()

    def _send_headers(self, status: int, reason: str | None, headers, length: int) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers):
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, headers, payload: bytes, reason: str | None = None) -> None:
        self._send_headers(status, reason, headers, len(payload))
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST, so the client sees ECONNRESET."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()  # the last reference: the real close happens now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream")
    parser.add_argument("--schedule", default="ok", help=f"comma-separated, cycled: ok or one of {', '.join(KINDS)}")
    parser.add_argument("--slow-s", type=float, default=0.2)
    parser.add_argument("--targets", default="get", help="which requests may fail: get (objects), list, head")
    parser.add_argument("--only", default="", help="only paths containing this text may fail")
    args = parser.parse_args()
    schedule = args.schedule.split(",")
    if unknown := set(schedule) - {"ok", *KINDS}:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    server = _Server(args.upstream, schedule, args.slow_s, set(args.targets.split(",")), args.only)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
