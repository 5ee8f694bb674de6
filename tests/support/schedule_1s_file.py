from workers.entries import Entry

# Every second, each run written to a file (BATON_TEST_RUN_FILE), not to
# Redis: the failover tests count runs Redis itself may have lost.
SCHEDULE = [
    Entry("every-second", "tests.support.jobs:record_tick_to_file", every=1, missed="catch_up", grace=60),
]
