"""The platforms Baton runs on, emulated once for every test that stops or
kills a site — never a signal to the gunicorn master alone, which proves
nothing about either platform.

**A Heroku dyno** (``Dyno``): the dyno's command in a session of its own.
A dyno stop sends SIGTERM to *every* process of the dyno — the gunicorn
master, its HTTP workers, the RQ worker and its work horse, whatever their
process group or session (RQ's horse calls setpgrp) — possibly more than
once, and SIGKILL to every process still there 30 s later. A crash is
SIGKILL to every process at once. The dyno's processes are found the way
the platform finds them (by container, not by process tree): each carries
the dyno's tag in its environment, so a process reparented to init after its
parent died — the orphan a dyno must never leave — is still found.

**A container** (``Container``): the image's command as PID 1 of a new PID
namespace (``unshare --pid``), as docker runs an exec-form CMD.
``docker compose stop`` sends SIGTERM to PID 1 only, SIGKILL after
``stop_grace_period``; when PID 1 exits, the kernel kills every other
process of the namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field

from tests.support.output import OutputProcess
from workers.shutdown import PLATFORM_KILL_AFTER_S

TAG = "BATON_TEST_DYNO"


def tagged(tag: str) -> list:
    """Live processes (not zombies: their environment is gone) carrying ``tag``."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def _signal_all(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class StopReport:
    """What a platform stop saw."""

    seconds: float  # from the first SIGTERM until no process of the dyno was left
    killed: list = field(default_factory=list)  # pids the platform had to SIGKILL
    returncode: int | None = None  # the dyno command's (the gunicorn master's) exit status

    @property
    def clean(self) -> bool:
        """Every process exited by itself, in time, and the command with 0."""
        return not self.killed and self.returncode == 0


class Dyno(OutputProcess):
    """``argv`` run as a Heroku dyno (see the module docstring)."""

    def __init__(self, argv, env):
        self.tag = uuid.uuid4().hex
        super().__init__(argv, {**env, TAG: self.tag})

    def pids(self) -> list:
        return tagged(self.tag)

    def pids_running(self, *argv) -> list:
        """Processes of the dyno whose command line holds ``argv`` in a row
        (``"-m", "workers", "worker"``: its RQ workers and their work horses)."""
        wanted = list(argv)
        return [pid for pid in self.pids()
                if any(cmdline(pid)[i:i + len(wanted)] == wanted for i in range(len(cmdline(pid))))]

    def freeze(self, *argv) -> list:
        """SIGSTOP the processes :meth:`pids_running` finds: a process wedged
        (not dead, so nothing restarts it). Returns their pids for ``thaw``."""
        pids = self.pids_running(*argv)
        _signal_all(pids, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids) -> None:
        _signal_all(pids, signal.SIGCONT)

    def stop(self, repeat_after: float = 0.5, kill_after: float = PLATFORM_KILL_AFTER_S) -> StopReport:
        """Heroku's dyno stop: SIGTERM to every process, again ``repeat_after``
        later, SIGKILL to whatever is left ``kill_after`` after the first."""
        started = time.monotonic()
        _signal_all(self.pids(), signal.SIGTERM)
        repeated = False
        killed = []
        while self.pids() or self.proc.poll() is None:
            now = time.monotonic() - started
            if not repeated and now >= repeat_after:
                _signal_all(self.pids(), signal.SIGTERM)
                repeated = True
            if now >= kill_after:
                killed = self.pids()
                _signal_all(killed, signal.SIGKILL)
                self.proc.wait(10)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - started
        return StopReport(seconds, killed, self.proc.wait(10))

    def crash(self) -> None:
        """SIGKILL to every process of the dyno at once."""
        _signal_all(self.pids(), signal.SIGKILL)
        self.proc.wait(10)

    def kill_master(self, sig=signal.SIGKILL) -> None:
        """A signal to the dyno command's process alone (``kill -9 <pid>``)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def close(self) -> None:
        if self.pids():
            _signal_all(self.pids(), signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def container_unavailable() -> str | None:
    """Why a PID namespace cannot be made here, or None."""
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid is not permitted here: {probe.stderr.strip()}"
    return None


class Container(Dyno):
    """``argv`` as PID 1 of a new PID namespace (see the module docstring)."""

    def __init__(self, argv, env):
        super().__init__(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *argv], env)

    def pid1(self) -> int | None:
        """The host pid of the namespace's PID 1: unshare's child."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            return None
        return children[0] if children else None

    def docker_stop(self, grace_period: float = PLATFORM_KILL_AFTER_S) -> StopReport:
        """``docker compose stop``: SIGTERM to PID 1, SIGKILL after the grace period."""
        started = time.monotonic()
        pid1 = self.pid1()
        if pid1:
            os.kill(pid1, signal.SIGTERM)
        killed = []
        try:
            returncode = self.proc.wait(grace_period)
        except subprocess.TimeoutExpired:
            killed = self.pids()
            _signal_all(killed, signal.SIGKILL)
            returncode = self.proc.wait(10)
        return StopReport(time.monotonic() - started, killed, returncode)
