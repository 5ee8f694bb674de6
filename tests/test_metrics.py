"""GET /metrics on a real site, parsed back with prometheus_client's parser;
and the example alert rules (monitoring/prometheus-rules.yml) checked with
promtool and against the names the site exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.support.lease import leads_ready
from tests.support.operate_jobs import spans
from tests.support.sites import ROOT

RULES = os.path.join(ROOT, "monitoring", "prometheus-rules.yml")


def families(site) -> dict:
    status, text = site.get("/metrics")
    assert status == 200, text
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metric_names_types_and_values_parse_back(web, shared_redis, r, prefix):
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_alerts")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    wait_until(lambda: len([s for s in spans(r, prefix) if s["entry"] == "beat"]) >= 3, timeout=20,
               what="a few runs of beat")
    assert a.get("/lease/release", method="POST")[0] == 200  # a handoff (to itself: one site), a gap measured
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead again")
    got = families(a)
    expected = {  # the name the parser gives (no _total / _bucket suffix) -> type
        "baton_is_leader": "gauge", "baton_token": "gauge", "baton_redis_up": "gauge", "baton_site_ready": "gauge",
        "baton_renewals": "counter", "baton_elected": "counter", "baton_released": "counter",
        "baton_job_runs": "counter", "baton_ticks_not_run": "counter", "baton_alerts": "counter",
        "baton_job_lateness_seconds": "histogram", "baton_job_duration_seconds": "histogram",
        "baton_leaderless_gap_seconds": "histogram",
        "baton_entry_seconds_since_success": "gauge", "baton_entry_period_seconds": "gauge",
        "baton_entry_paused": "gauge", "baton_lease_seconds_left": "gauge",
    }
    assert {name: got[name].type for name in expected if name in got} == expected
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in got.values() for s in f.samples}
    assert samples[("baton_is_leader", (("site", "a"),))] == 1
    assert samples[("baton_job_runs_total", (("entry", "beat"), ("outcome", "succeeded")))] >= 3
    assert samples[("baton_job_runs_total", (("entry", "failing"), ("outcome", "failed")))] >= 1
    assert samples[("baton_job_lateness_seconds_count", (("entry", "beat"),))] >= 3
    assert samples[("baton_job_lateness_seconds_bucket", (("entry", "beat"), ("le", "+Inf")))] == \
        samples[("baton_job_lateness_seconds_count", (("entry", "beat"),))]
    assert samples[("baton_entry_seconds_since_success", (("entry", "beat"),))] < 10
    assert ("baton_entry_seconds_since_success", (("entry", "failing"),)) not in samples  # never succeeded
    assert samples[("baton_entry_period_seconds", (("entry", "beat"),))] == 1
    assert samples[("baton_leaderless_gap_seconds_count", ())] >= 1
    assert 0 < samples[("baton_lease_seconds_left", ())] <= 1  # tests' lease TTL: 1 s


def test_the_example_alert_rules_pass_promtool_and_name_real_metrics(web, shared_redis, r, prefix):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make test installs it)"
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout, checked.stdout
    a = web("a", shared_redis.url, prefix, "tests.support.schedule_alerts")
    wait_until(lambda: leads_ready(r, prefix, "a"), timeout=15, what="a to lead")
    wait_until(lambda: spans(r, prefix), timeout=20, what="a run")
    # A family is exposed even before its first sample (no tick has been skipped yet, say).
    exposed = {f"{f.name}_total" if f.type == "counter" else f.name for f in families(a).values()}
    with open(RULES) as f:
        named = set(re.findall(r"\bbaton_[a-z_]+", f.read()))
    assert named - exposed == set(), f"the rules name metrics the site does not expose: {named - exposed}"
