from workers.entries import Entry

# schedule_1s.py after an edit: "every-second" now runs every 2 s, "other" is new.
SCHEDULE = [
    Entry("every-second", "tests.support.jobs:record_tick", every=2, missed="catch_up", grace=30),
    # Once a year: a test that compares next run times must never see it fire.
    Entry("other", "tests.support.jobs:record_tick", cron="0 3 1 1 *"),
]
