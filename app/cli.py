"""``flask --app app baton status|release`` for operators on a one-off dyno."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click
from flask.cli import with_appcontext

from election import request_step_down

from .state import status


def _when(ms_or_s) -> str:
    if ms_or_s is None:
        return "-"
    seconds = ms_or_s / 1000 if ms_or_s > 1e11 else ms_or_s
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group("baton")
def baton_cli():
    """Baton: who leads, and hand the lease over."""


@baton_cli.command("status")
@with_appcontext
def status_command():
    """The same facts as /status, for a person."""
    s = status()
    leader = s["leader"]
    if leader:
        click.echo(f"leader:   {leader['site']}  ({leader['holder']})  token {leader['token']}")
        click.echo(f"lease:    {leader['pttl_ms'] / 1000:.1f} s left, renewed {_when(leader['renewed_at'])}")
    elif s["lease_problem"]:
        p = s["lease_problem"]
        click.echo(f"leader:   unknown — {p['key']}: {p['problem']} ({p['fix']})")
    else:
        click.echo("leader:   nobody holds the lease")
    t = s["timings"]
    click.echo(f"timings:  ttl {t['ttl_s']} s, renew every {t['renew_interval_s']} s, deadline {t['renew_deadline_s']} s")
    click.echo(f"schedule ({s['timezone']}):")
    for name, next_at in sorted(s["next_runs"].items()):
        last = s["last_runs"].get(name, {})
        click.echo(f"  {name:20} next {_when(next_at)}   last {_when(last.get('started_at'))} "
                   f"{last.get('outcome', '-')} on {last.get('site', '-')}")
    click.echo("history:")
    for h in s["history"][:10]:
        click.echo(f"  {_when(h['at'])}  {h['event']:13} {h.get('holder', '')} token {h.get('token', '')}")


@baton_cli.command("release")
@click.option("--wait", default=10.0, help="Seconds to wait for the handoff.")
@with_appcontext
def release_command(wait):
    """Ask the leading site to step down (honoured at its next renewal)."""
    from .state import redis_client, settings

    client, prefix = redis_client(), settings().core.prefix
    record = request_step_down(client, prefix)
    if record is None:
        click.echo("nobody holds the lease")
        raise SystemExit(1)
    click.echo(f"asked {record.site} ({record.holder}, token {record.token}) to step down")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        s = status()
        if not s["leader"] or s["leader"]["holder"] != record.holder:
            click.echo(f"now leading: {s['leader']['site'] if s['leader'] else 'nobody yet'}")
            return
        time.sleep(0.1)
    click.echo("the leader has not stepped down yet")
    raise SystemExit(1)
