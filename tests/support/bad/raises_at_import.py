from workers.entries import Entry

SETTINGS = {"interval": 60}
SCHEDULE = [Entry("report", "workers.jobs:log_time", every=SETTINGS["intervall"])]
