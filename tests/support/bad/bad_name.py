from workers.entries import Entry
SCHEDULE = [Entry("log time", "workers.jobs:log_time", every=60)]
