from workers.entries import Entry

SCHEDULE = [Entry("nine-am", "tests.support.jobs:record_tick", cron="0 9 * * *")]
