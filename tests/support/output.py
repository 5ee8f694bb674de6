"""A child process in its own session whose output lines are collected."""

from __future__ import annotations

import os
import subprocess
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class OutputProcess:
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

    def count(self, text) -> int:
        return sum(text in line for line in list(self.lines))
