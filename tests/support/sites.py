"""Real `python -m workers scheduler|worker` processes for one site."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAST_ENV = {"BATON_LEASE_TTL": "1", "BATON_RENEW_INTERVAL": "0.2", "BATON_RENEW_DEADLINE": "0.7"}


class OutputProcess:
    """A child process in its own session whose output lines are collected."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text) -> bool:
        return any(text in line for line in list(self.lines))


class Proc(OutputProcess):
    """``python -m workers <args>``."""

    def __init__(self, args, env):
        super().__init__([sys.executable, "-m", "workers", *args], env)

    def signal(self, sig):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the worker's work horse too

    def stop(self, timeout=15):
        # SIGTERM to the process only, as a platform would: RQ lets a running job finish.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait(5)


class Site:
    def __init__(self, name, redis_url, prefix, schedule, extra_env=None, scheduler=True, worker=True):
        self.name = name
        self.env = {**os.environ, **FAST_ENV, "REDIS_URL": redis_url, "BATON_PREFIX": prefix,
                    "BATON_SCHEDULE": schedule, "BATON_SITE": name, "PYTHONUNBUFFERED": "1",
                    **(extra_env or {})}
        self.scheduler = Proc(["scheduler"], self.env) if scheduler else None
        self.worker = Proc(["worker"], self.env) if worker else None

    def procs(self):
        return [p for p in (self.scheduler, self.worker) if p is not None]

    def kill(self):
        for p in self.procs():
            p.signal(signal.SIGKILL)
        for p in self.procs():
            p.proc.wait(5)

    def stop(self):
        return [p.stop() for p in self.procs()]
