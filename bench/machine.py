"""How much CPU the machine's host took away during a run.

On a virtual machine, "steal" is time a vCPU was ready to run but the host
ran someone else. The benchmarks' p99s are a few milliseconds, so they move
with it: a run records its steal share so that its tails can be read against
the machine they were measured on. Linux only (/proc/stat); None elsewhere.
"""

from __future__ import annotations

from typing import Optional

# Field order of the aggregate "cpu" line of /proc/stat (man 5 proc).
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> Optional[dict]:
    """Cumulative CPU time by kind, in clock ticks, over all CPUs."""
    try:
        with open("/proc/stat") as stat:
            values = stat.readline().split()[1:1 + len(_FIELDS)]
    except OSError:
        return None
    return dict(zip(_FIELDS, map(int, values)))


def steal_percent(before: Optional[dict], after: Optional[dict]) -> Optional[float]:
    """Steal time as a share of all CPU time between two readings."""
    if not before or not after:
        return None
    total = sum(after[k] - before[k] for k in _FIELDS)
    return 100.0 * (after["steal"] - before["steal"]) / total if total > 0 else None
