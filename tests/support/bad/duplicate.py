from workers.entries import Entry
SCHEDULE = [Entry("dup", "workers.jobs:log_time", every=60), Entry("dup", "workers.jobs:heartbeat", every=30)]
