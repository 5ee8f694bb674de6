"""Real `python -m workers scheduler|worker` processes for one site, each run
as a Heroku dyno would run it (platform.Dyno)."""

from __future__ import annotations

import os
import sys

from tests.support.output import ROOT
from tests.support.platform import Dyno

__all__ = ["FAST_ENV", "ROOT", "Proc", "Site"]

FAST_ENV = {"BATON_LEASE_TTL": "1", "BATON_RENEW_INTERVAL": "0.2", "BATON_RENEW_DEADLINE": "0.7"}


class Proc(Dyno):
    """``python -m workers <args>`` as a dyno of its own (a Procfile process type)."""

    def __init__(self, args, env):
        super().__init__([sys.executable, "-m", "workers", *args], env)


class Site:
    def __init__(self, name, redis_url, prefix, schedule, extra_env=None, scheduler=True, worker=True):
        self.name = name
        self.env = {**os.environ, **FAST_ENV, "REDIS_URL": redis_url, "BATON_PREFIX": prefix,
                    "BATON_SCHEDULE": schedule, "BATON_SITE": name, "PYTHONUNBUFFERED": "1",
                    **(extra_env or {})}
        self.scheduler = Proc(["scheduler"], self.env) if scheduler else None
        self.worker = Proc(["worker"], self.env) if worker else None

    def procs(self):
        return [p for p in (self.scheduler, self.worker) if p is not None]

    def kill(self):
        """Every process of the site crashes at once."""
        for p in self.procs():
            p.crash()

    def stop(self):
        """A dyno stop of each process type; their StopReports."""
        return [p.stop() for p in self.procs()]

    def close(self):
        for p in self.procs():
            p.close()
