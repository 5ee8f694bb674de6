from workers.entries import Entry

SCHEDULE = [
    Entry("slow", "tests.support.jobs:record_tick", kwargs={"sleep": 6}, every=3600, grace=3600,
          on_lost_lease="stop", timeout=60),
]
