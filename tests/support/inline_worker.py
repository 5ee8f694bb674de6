"""RQ's SimpleWorker (the job runs in the test's own process, no fork),
stamping each job as Baton's LeaderGatedWorker does before it runs:
the site it runs on and the fencing token of that site's current term.

For tests of what happens between an enqueue and a run (orphans, claims)
without a worker process. The lease must name ``site``, as for a real
worker; the fenced claim (workers/claims.py) checks it."""

from __future__ import annotations

from rq import SimpleWorker

from election import read_lease


class InlineWorker(SimpleWorker):
    def __init__(self, queues, *, site: str, prefix: str, **kwargs):
        super().__init__(queues, **kwargs)
        self.baton_site, self.baton_prefix = site, prefix

    def execute_job(self, job, queue):
        record = read_lease(self.connection, self.baton_prefix)
        job.meta["baton_site"] = self.baton_site
        job.meta["baton_token"] = record.token if record is not None and record.site == self.baton_site else 0
        job.save_meta()
        return super().execute_job(job, queue)
