"""A child process that must not outlive its parent asks the kernel to signal
it when the parent dies (Linux's ``PR_SET_PDEATHSIG``).

Without it, a ``kill -9`` of the gunicorn master left its embedded RQ worker
running under PID 1, and a restarted site of the same name later found that
leftover — old code — running its jobs. The work horse asks the same of its
RQ worker.

Two traps, both handled here or by the caller:
- the parent may already be gone when the child asks: the child compares
  ``getppid()`` with the pid it was told, after asking, and gives up if they
  differ;
- the kernel's "parent" is the *thread* that forked the child: the signal
  comes when that thread ends, even if the process lives on. A parent must
  fork such a child from a thread that lives as long as the child does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int, parent_pid: int) -> bool:
    """Have ``signum`` sent to this process when ``parent_pid`` dies.

    Returns False if the parent is already gone (the caller should exit).
    Where the kernel has no such call (not Linux), only checks the parent.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent_pid
