"""One entry whose job blocks (operate_jobs.blocks) and is stopped if its site loses the lease."""
from workers.entries import Entry

SCHEDULE = [Entry("blocker", "tests.support.operate_jobs:blocks", every=2, on_lost_lease="stop", timeout=120)]
