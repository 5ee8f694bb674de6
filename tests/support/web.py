"""A real gunicorn web process for one site (app/gunicorn_conf.py), run as a
Heroku web dyno (platform.Dyno): ``stop()`` is a dyno stop, ``crash()`` a
dyno crash, ``signal()`` a signal to the gunicorn master alone (``kill <pid>``,
as `make run` suggests)."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode

from tests.support.redis_server import free_port
from tests.support.platform import Dyno
from tests.support.sites import FAST_ENV

GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")


class WebSite(Dyno):
    def __init__(self, name, redis_url, prefix, schedule="tests.support.schedule_removed", extra_env=None,
                 auth=("op", "s3cret-pass")):
        self.name = name
        self.port = free_port()
        self.auth = auth
        env = {**os.environ, **FAST_ENV, "REDIS_URL": redis_url, "BATON_PREFIX": prefix,
               "BATON_SCHEDULE": schedule, "BATON_SITE": name, "PORT": str(self.port),
               "PYTHONUNBUFFERED": "1", "WEB_CONCURRENCY": "2"}
        if auth:
            env.update(BASIC_AUTH_USERNAME=auth[0], BASIC_AUTH_PASSWORD=auth[1])
        env.update(extra_env or {})
        self.env = env
        self.started = time.monotonic()
        super().__init__([GUNICORN, "-c", "app/gunicorn_conf.py", "app:create_app()"], env)

    def bound(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def get(self, path, auth="default", method="GET", csrf_header=True, headers=None):
        """(status, body) — auth None sends no credentials. A method other than
        GET/HEAD sends ``X-Baton-Request: 1`` (app/csrf.py) unless
        ``csrf_header`` is False; ``headers`` are added as given."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         headers=dict(headers or {}))
        if csrf_header and method not in ("GET", "HEAD"):
            request.add_header("X-Baton-Request", "1")
        credentials = self.auth if auth == "default" else auth
        if credentials:
            token = b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
