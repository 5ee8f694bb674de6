from workers.entries import Entry

SCHEDULE = [
    Entry("failing", "tests.support.jobs:always_fails", every=1),
]
