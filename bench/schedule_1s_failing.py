"""make bench: one 1 s entry whose job always fails, with a traceback."""

from workers.entries import Entry


def fail() -> None:
    raise RuntimeError("this job always fails (make bench: memory of failing runs)")


SCHEDULE = [Entry("always-fails", "bench.schedule_1s_failing:fail", every=1)]
