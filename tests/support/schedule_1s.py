from workers.entries import Entry

SCHEDULE = [
    Entry("every-second", "tests.support.jobs:record_tick", every=1, missed="catch_up", grace=30),
]
