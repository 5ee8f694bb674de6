from workers.entries import Entry
SCHEDULE = [Entry("ghost", "workers.jobs:no_such_job", every=60)]
