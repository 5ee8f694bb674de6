from workers.entries import Entry

SCHEDULE = [
    Entry("broken", "workers.jobs:log_time", every=60)
    Entry("oops", "workers.jobs:log_time", every=60),
]
