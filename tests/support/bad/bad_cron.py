from workers.entries import Entry
SCHEDULE = [Entry("nightly", "workers.jobs:log_time", cron="0 25 * * *")]
