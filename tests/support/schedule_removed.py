from workers.entries import Entry

SCHEDULE = [
    # Once a year: a test that compares next run times must never see it fire.
    Entry("other", "tests.support.jobs:record_tick", cron="0 3 1 1 *"),
]
