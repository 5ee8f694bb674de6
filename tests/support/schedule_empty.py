from workers.entries import Entry  # noqa: F401

# No entry: the test enqueues the tick jobs it needs itself.
SCHEDULE = []
