from workers.entries import Entry

# A 4 s job every 5 s: most of the time a job is running (the Redis-blip test
# hits it mid-run). Each run recorded to Redis at its end (record_tick).
SCHEDULE = [
    Entry("slow-tick", "tests.support.jobs:record_tick", kwargs={"sleep": 4}, every=5, missed="catch_up", grace=60),
]
