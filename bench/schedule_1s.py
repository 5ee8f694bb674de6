"""make bench: one 1 s entry with the defaults (grace one period), running
the shipped heartbeat job (a fenced write)."""

from workers.entries import Entry

SCHEDULE = [Entry("every-second", "workers.jobs:heartbeat", every=1)]
