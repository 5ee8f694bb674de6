"""A webhook receiver on loopback, standing in for Slack, PagerDuty or a
Healthchecks-style endpoint: it keeps every POST's JSON body (and every
GET's path: a monitor's pings), and can answer 500 or stay silent past the
sender's timeout for its first POSTs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self, fail_first: int = 0, silent_first: int = 0, silent_s: float = 0.0):
        self.requests = []  # (monotonic time, JSON body, status answered)
        self.pings = []  # (monotonic time, path) of GETs
        self._lock = threading.Lock()
        self.fail_first, self.silent_first, self.silent_s = fail_first, silent_first, silent_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                with receiver._lock:
                    n = len(receiver.requests)
                    status = 500 if n < receiver.fail_first else 200
                    receiver.requests.append((time.monotonic(), body, status))
                if n < receiver.silent_first:
                    time.sleep(receiver.silent_s)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self):  # a monitor's ping (workers/pings.py)
                with receiver._lock:
                    receiver.pings.append((time.monotonic(), self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, kind: str | None = None, status: int | None = 200) -> list:
        """Bodies received (answered ``status``; None: all), of ``kind`` if given."""
        with self._lock:
            return [body for _t, body, answered in self.requests
                    if (status is None or answered == status) and (kind is None or body.get("kind") == kind)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
