"""Which sites may lead, and why not, as /status and the dashboard show it
(workers/sites.py, app/state.py), on real gunicorn sites with real RQ
workers: a site without any worker is listed as not eligible, with the
setting that explains it."""

from __future__ import annotations

import json

from tests.support.cdp import open_dashboard
from tests.support.lease import leader_site
from tests.support.waiting import wait_until

SCHEDULE = "tests.support.schedule_empty"

# a serves the web alone: no embedded worker, and no worker process either.
NO_WORKER = {"BATON_EMBEDDED_WORKER": "false"}


def _status(site) -> dict:
    status, body = site.get("/status")
    assert status == 200, body
    return json.loads(body)


def _by_site(status: dict) -> dict:
    return {record["site"]: record for record in status["sites"]}


def test_status_and_dashboard_say_which_site_may_lead_and_why_not(web, shared_redis, r, prefix, browser):
    a = web("a", shared_redis.url, prefix, SCHEDULE, extra_env=NO_WORKER)
    b = web("b", shared_redis.url, prefix, SCHEDULE)
    # b's workers mark it ready, so b takes the lease whoever had it first.
    wait_until(lambda: leader_site(r, prefix) == "b", timeout=30, what="b to lead")

    def both_listed(site):
        status = _status(site)
        by_site = _by_site(status)
        names = {w["name"] for w in by_site.get("b", {}).get("workers", [])}
        settled = {"a", "b"} <= set(by_site) and by_site["b"].get("ready_workers") and set(
            by_site["b"]["ready_workers"]) <= names
        return status if settled else None

    for site in (a, b):  # every site tells the same story
        status = wait_until(lambda: both_listed(site), timeout=20, what=f"both sites in {site.name}'s /status")
        by_site = _by_site(status)
        assert by_site["b"]["eligible"] is True and "why_not" not in by_site["b"]
        assert by_site["b"]["ready_workers"] == sorted(by_site["b"]["ready_workers"])
        assert by_site["a"]["eligible"] is False and by_site["a"]["ready_workers"] == []
        assert by_site["a"]["why_not"] == ("no worker runs for this site: BATON_EMBEDDED_WORKER=false and no worker "
                                           "process (Procfile `worker`) with BATON_SITE=a")
        assert set(status["ready"]) == {"b"} and status["ready"]["b"]
        assert status["ready_problem"] is None
    # Each master's own view (its state file) follows at its next renewal or attempt.
    wait_until(lambda: _status(b)["process"]["ready"] is True, timeout=10, what="b's master to see itself ready")
    assert _status(a)["process"]["ready"] is False

    page = browser.page()
    open_dashboard(page, a, leader="b")
    cells = page.wait_for('[...document.querySelectorAll("#sites tr")].map(row => row.innerText)',
                          lambda rows: any(row.startswith("a\t") and "no — no worker runs" in row for row in rows),
                          timeout=10)
    assert any(row.startswith("b\t") and "\tyes\t" in row for row in cells), cells


def test_junk_at_the_ready_key_is_reported_and_left_alone(web, shared_redis, r, prefix):
    a = web("a", shared_redis.url, prefix, SCHEDULE)
    wait_until(lambda: leader_site(r, prefix) == "a", timeout=30, what="a to lead")
    key = f"{prefix}:lease:ready"
    r.set(key, "junk")
    status = _status(a)
    assert status["ready_problem"]["key"] == key
    assert status["ready_problem"]["problem"] and "redis-cli" in status["ready_problem"]["fix"]
    assert status["ready"] is None
    # Nothing is claimed either way while the marks cannot be read.
    assert all("eligible" not in record and "why_not" not in record for record in status["sites"])
    assert r.get(key) == "junk"
