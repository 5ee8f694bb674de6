from workers.entries import Entry
SCHEDULE = [Entry("both", "workers.jobs:log_time", cron="* * * * *", every=60)]
