"""An operator's controls through the web process and the CLI, on real
gunicorn sites: pause, resume, run now and history as JSON endpoints, as
`flask --app app baton` commands, as dashboard buttons (headless Chromium) on
a follower's dashboard, and the tick counts in /metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import wait_until
from tests.support.cdp import open_dashboard
from tests.support.lease import leads_ready
from tests.support.operate_jobs import spans
from tests.support.sites import ROOT
from workers.controls import paused
from workers.runs import tick_history

SCHEDULE = "tests.support.schedule_operate"


@pytest.fixture
def two_sites(web, shared_redis, prefix):
    """a leads; b follows. Both serve the schedule of tests/support/schedule_operate.py."""
    r = shared_redis.client()
    a = web("a", shared_redis.url, prefix, SCHEDULE)
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    b = web("b", shared_redis.url, prefix, SCHEDULE)
    wait_until(b.bound, timeout=15, what="b to serve")
    yield r, a, b
    r.close()


def flask_cli(site, *args):
    env = {**site.env, "FLASK_APP": "app"}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "app", "baton", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def test_pause_run_now_history_over_http_and_the_cli(two_sites, prefix):
    r, a, b = two_sites
    status, body = b.get("/entries/beat/pause", method="POST")
    assert status == 200, body
    assert json.loads(body)["paused"]["by"] == "op@b (web)"
    assert json.loads(a.get("/status")[1])["paused"]["beat"]["by"] == "op@b (web)"  # every site sees it
    wait_until(lambda: any(t.get("reason") == "paused" for t in tick_history(r, prefix, "beat")), timeout=10,
               what="a paused tick of beat recorded")
    metrics = b.get("/metrics")[1]
    assert 'baton_entry_paused{entry="beat"} 1' in metrics
    assert 'baton_ticks_not_run_total{entry="beat",outcome="skipped",reason="paused"}' in metrics
    assert b.get("/entries/nope/pause", method="POST")[0] == 404
    assert b.get("/entries/beat/pause", method="POST", auth=None)[0] == 401

    # Run now, asked on the follower: a's worker runs it.
    status, body = b.get("/entries/daily/run", method="POST")
    assert status == 202, body
    assert "-daily-m" in json.loads(body)["job_id"]
    run = wait_until(lambda: [s for s in spans(r, prefix) if s["entry"] == "daily"], timeout=15,
                     what="the manual run")[0]
    assert run["site"] == "a"
    history = wait_until(lambda: json.loads(b.get("/entries/daily/history")[1])["ticks"], timeout=5,
                         what="its record")
    assert (history[0]["outcome"], history[0]["manual"], history[0]["site"]) == ("succeeded", "op@b (web)", "a")

    # The same controls from a one-off dyno.
    code, out = flask_cli(b, "resume", "beat")
    assert code == 0 and "resumed beat" in out, out
    assert "beat" not in paused(r, prefix)
    code, out = flask_cli(b, "pause", "daily", "--note", "db migration", "--by", "alice")
    assert code == 0 and "paused daily" in out, out
    assert paused(r, prefix)["daily"]["note"] == "db migration" and paused(r, prefix)["daily"]["by"] == "alice"
    code, out = flask_cli(b, "status")
    assert code == 0 and "PAUSED by alice" in out, out
    code, out = flask_cli(b, "history", "daily")
    assert code == 0 and "succeeded" in out and "manual by op@b (web)" in out, out
    code, out = flask_cli(b, "run", "nope")
    assert code != 0 and "no entry named 'nope'" in out, out


def test_the_dashboard_buttons_on_a_followers_dashboard(two_sites, prefix, browser):
    r, a, b = two_sites
    page = browser.page()
    open_dashboard(page, b, leader="a")
    page.wait_for('document.querySelector("button.entry-pause[data-entry=beat]") !== null')
    page.evaluate('document.getElementById("pause-note").value = "deploy in progress"')
    page.evaluate('document.querySelector("button.entry-pause[data-entry=beat]").click()')
    record = wait_until(lambda: paused(r, prefix).get("beat"), timeout=10, what="beat paused from the dashboard")
    assert record["note"] == "deploy in progress" and record["by"] == "op@b (web)"
    page.wait_for('document.querySelector("button.entry-resume[data-entry=beat]") !== null', timeout=10)
    page.evaluate('document.querySelector("button.entry-resume[data-entry=beat]").click()')
    wait_until(lambda: "beat" not in paused(r, prefix), timeout=10, what="beat resumed from the dashboard")
    page.evaluate('document.querySelector("button.entry-run[data-entry=daily]").click()')
    run = wait_until(lambda: [s for s in spans(r, prefix) if s["entry"] == "daily"], timeout=15,
                     what="the dashboard's manual run")[0]
    assert run["site"] == "a"  # asked on b's dashboard, run by the leader's site
    # The panel shows the history as it is when clicked: wait for the run's
    # record first (on a loaded machine the run may still be going).
    wait_until(lambda: json.loads(b.get("/entries/daily/history")[1])["ticks"], timeout=15, what="its record")
    page.wait_for('document.querySelector("button.entry-history[data-entry=daily]") !== null')
    page.evaluate('document.querySelector("button.entry-history[data-entry=daily]").click()')
    rows = page.wait_for('document.getElementById("history-list").innerText', lambda t: "succeeded" in t, timeout=10)
    assert "op@b (web)" in rows
    # The strip of recent ticks: one square per recorded tick of beat.
    page.wait_for('document.querySelectorAll("#entries tr .strip span").length', lambda n: n > 0, timeout=10)
    assert not b.has("event=csrf_refused")
