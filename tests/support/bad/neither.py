from workers.entries import Entry
SCHEDULE = [Entry("neither", "workers.jobs:log_time")]
