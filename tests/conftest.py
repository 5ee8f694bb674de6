"""Fixtures: real redis-server processes on free loopback ports, and electors
that are always stopped at the end of a test."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid

import pytest
import redis as redis_py

from election import Callbacks, ElectionConfig, Elector, Identity, Lease
from tests.support.redis_server import RedisServer, free_port
from tests.support.cdp import Browser
from tests.support.sites import Site
from tests.support.web import WebSite
from tests.support.waiting import wait_until  # noqa: F401  (tests import it from here)

# Fast timings keep failover tests short; every relation the defaults have
# (interval < deadline < ttl, 30 % margin) holds here too.
FAST = ElectionConfig(ttl=1.0, renew_interval=0.2, renew_deadline=0.7, retry_backoff_max=0.2)


@pytest.fixture(scope="session")
def shared_redis():
    """One server for the tests that only need keys of their own (see `prefix`)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def r(shared_redis):
    """A client of the shared server that decodes replies to str."""
    client = shared_redis.client()
    yield client
    client.close()


@pytest.fixture
def raw(shared_redis):
    """A client of the shared server without decode_responses, as RQ needs."""
    client = shared_redis.client(decode_responses=False)
    yield client
    client.close()


# The ttl of the leases lease_for makes unless told otherwise.
LEASE_TTL_MS = 5000


@pytest.fixture
def lease_for(shared_redis, prefix):
    """Leases of the shared server under the test's prefix, one candidate
    each (``lease_for("b", require_ready=True)``), closed at the end."""
    opened = []

    def make(site="a", ttl_ms=LEASE_TTL_MS, **lease_options):
        lease = Lease.from_url(shared_redis.url, Identity(site=site, dyno="web.1"), ttl_ms, prefix=prefix,
                               **lease_options)
        opened.append(lease)
        return lease

    yield make
    for lease in opened:
        lease.close()


@pytest.fixture
def redis_server():
    """A server of the test's own, for tests that kill, freeze or restart it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server speaking only TLS, with a self-signed certificate (as Heroku's)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "key.pem",
                    "-out", tmp_path / "cert.pem", "-days", "2", "-subj", "/CN=baton-test"],
                   check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", tmp_path / "cert.pem", "--tls-key-file", tmp_path / "key.pem",
                             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", tmp_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis_py.Redis(host="127.0.0.1", port=port, ssl=True, ssl_cert_reqs="none", decode_responses=True)
    wait_until(lambda: _pings(client), timeout=10, what="the TLS redis-server")
    yield f"rediss://127.0.0.1:{port}/0", client
    client.close()
    proc.terminate()
    proc.wait(10)


def _pings(client):
    try:
        return client.ping()
    except Exception:
        return False


# On a failure, the last lines of every process a test started are printed
# (pytest shows them under "Captured stdout teardown"): a flaky failure in CI
# must carry what the sites said.
FAILURE_LOG_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.baton_failed = report.failed


def _print_logs_if_failed(request, named_processes) -> None:
    if not getattr(request.node, "baton_failed", False):
        return
    for name, process in named_processes:
        lines = list(process.lines)
        print(f"----- {name}: last {min(len(lines), FAILURE_LOG_LINES)} of {len(lines)} lines -----")
        print("\n".join(lines[-FAILURE_LOG_LINES:]))


@pytest.fixture
def web(request):
    """Web sites (real gunicorn dynos, tests/support/web.py), closed at the end."""
    made = []

    def make(*args, **kwargs):
        made.append(WebSite(*args, **kwargs))
        return made[-1]

    yield make
    _print_logs_if_failed(request, [(f"web site {site.name}", site) for site in made])
    for site in made:
        site.close()


@pytest.fixture
def sites(request):
    """Sites of `python -m workers scheduler|worker` processes (tests/support/sites.py), closed at the end."""
    made = []

    def make(*args, **kwargs):
        made.append(Site(*args, **kwargs))
        return made[-1]

    yield make
    _print_logs_if_failed(request, [(f"site {site.name} {kind}", proc) for site in made
                                    for kind, proc in (("scheduler", site.scheduler), ("worker", site.worker)) if proc])
    for site in made:
        site.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven over the DevTools protocol (tests/support/cdp.py)."""
    with Browser(tmp_path / "profile", tmp_path / "chromium.log") as b:
        yield b


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:10]}"


class EventLog:
    """Records callback calls with the monotonic time they ran."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def callbacks(self, site: str) -> Callbacks:
        def add(kind):
            def record(value):
                with self.lock:
                    self.events.append((time.monotonic(), site, kind, value))
            return record

        return Callbacks(on_elected=add("elected"), on_demoted=add("demoted"), on_leader_changed=add("leader"))

    def of(self, kind, site=None):
        with self.lock:
            return [e for e in self.events if e[2] == kind and (site is None or e[1] == site)]


@pytest.fixture
def events():
    return EventLog()


@pytest.fixture
def make_elector(events):
    made = []

    def make(url, prefix, site, config=FAST, callbacks=None, start=True, dyno="web.1", **lease_options):
        lease = Lease.from_url(url, Identity(site=site, dyno=dyno), config.ttl_ms, prefix=prefix, **lease_options)
        elector = Elector(lease, config, callbacks or events.callbacks(site))
        made.append(elector)
        return elector.start() if start else elector

    yield make
    for elector in made:
        elector.stop(timeout=5)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="baton")
