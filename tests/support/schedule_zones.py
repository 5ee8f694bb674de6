"""A cron entry in its own zone (one with DST) beside an interval entry, for
``python -m app check``'s schedule preview."""

from workers.entries import Entry

SCHEDULE = [
    Entry("nightly", "tests.support.jobs:record_tick", cron="30 2 * * *", timezone="Europe/Berlin"),
    Entry("minutely", "tests.support.jobs:record_tick", every=60),
]
