"""A throwaway redis-server on a free loopback port, for tests, benchmarks
and `make run`. It keeps nothing on disk and never touches another server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, executable: str | None = None, extra_args=(), password=None):
        self.executable = executable or shutil.which("redis-server")
        if not self.executable:
            raise RuntimeError("redis-server not found on PATH (apt-get install redis-server)")
        self.port = port or free_port()
        self.extra_args = list(extra_args) + (["--requirepass", password] if password else [])
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="baton-redis-")
        self.process: subprocess.Popen | None = None

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
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)

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
