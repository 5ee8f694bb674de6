"""The schedule: edit this list (or point BATON_SCHEDULE at a module of your
own with a SCHEDULE list). Each entry runs once per tick, on the leading site.

    Entry(name, func, cron="*/10 * * * *" | every=<seconds>,
          args=(), kwargs={}, queue="baton", timeout=180, timezone=None (BATON_TIMEZONE),
          missed="latest" | "catch_up" | "skip",
          grace=None (one period; for catch_up at least an hour),
          overlap="skip" | "buffer_one" | "allow", retries=0, retry_backoff=10, ping_url=None,
          on_lost_lease="finish" | "stop", on_interrupt="drop" | "rerun")
"""

from workers.entries import Entry

SCHEDULE = [
    # The seed's job: log the current time every 10 minutes (cron, BATON_TIMEZONE).
    Entry("log-time", "workers.jobs:log_time", cron="*/10 * * * *"),
    # A short-interval heartbeat that shows the schedule is alive.
    Entry("heartbeat", "workers.jobs:heartbeat", every=30, missed="skip"),
]
