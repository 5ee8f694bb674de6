from workers.entries import Entry

SCHEDULE = [
    Entry("other", "tests.support.jobs:record_tick", cron="*/5 * * * *"),
]
