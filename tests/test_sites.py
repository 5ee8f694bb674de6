"""Every site and process on one page (workers/sites.py, /status, the
dashboard): real gunicorn sites, a separate worker process, a site that
vanishes."""

from __future__ import annotations

import json
import time

from tests.conftest import wait_until
from tests.support.lease import leads_ready
from tests.support.sites import Proc
from workers.sites import GONE_AFTER_S, sites


def test_all_sites_with_a_separate_worker_and_a_vanished_site(web, shared_redis, r, prefix):
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_empty", {"BATON_RELEASE": "v42"})
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    b = web("b", shared_redis.url, prefix, "tests.support.schedule_empty",
            {"BATON_EMBEDDED_WORKER": "false", "HEROKU_RELEASE_VERSION": "v7"})
    b_worker = Proc(["worker"], {**b.env, "BATON_WORKER_CONCURRENCY": "1"})  # b's worker dyno
    try:
        def listed():
            listing = json.loads(a.get("/status")[1])["sites"]
            by_site = {s["site"]: s for s in listing}
            ready = {"a", "b"} <= set(by_site) and by_site["a"]["workers"] and by_site["b"]["workers"]
            return by_site if ready else None

        by_site = wait_until(listed, timeout=20, what="both sites and b's worker in /status")
        assert (by_site["a"]["state"], by_site["a"]["version"], by_site["a"]["process"]) == ("leader", "v42", "web")
        assert by_site["a"]["worker_concurrency"] == 2 and by_site["a"]["embedded_worker"] is True
        assert [w["state"] for w in by_site["a"]["workers"]] and all(
            w["state"] == "leading" for w in by_site["a"]["workers"])
        assert (by_site["b"]["state"], by_site["b"]["version"], by_site["b"]["embedded_worker"]) == (
            "follower", "v7", False)
        assert [w["state"] for w in by_site["b"]["workers"]] == ["waiting"]  # the separate worker dyno
        assert by_site["b"]["seen_s_ago"] < 40
        # b's web dyno vanishes (SIGKILL, no goodbye): it stays listed, as gone once not seen for GONE_AFTER_S.
        b.crash()
        b_worker.crash()
        later = time.time() + GONE_AFTER_S + 1
        gone = {s["site"]: s["state"] for s in sites(r, prefix, now=later)}
        assert gone["b"] == "gone"
        page = a.get("/")[1]
        assert 'id="sites"' in page
    finally:
        b_worker.close()


def test_a_site_that_stops_cleanly_says_stopped(web, shared_redis, r, prefix):
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_empty")
    wait_until(lambda: [s for s in sites(r, prefix) if s["site"] == "a" and s["state"] == "leader"], timeout=15,
               what="a listed as leader")
    assert a.stop().clean
    assert [s["state"] for s in sites(r, prefix, now=time.time() + GONE_AFTER_S + 1) if s["site"] == "a"] == [
        "stopped"]
