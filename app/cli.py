"""``flask --app app baton status|release|pause|resume|run|history`` for
operators on a one-off dyno (``heroku run flask --app app baton ...``)."""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone

import click
from flask.cli import with_appcontext

from election import request_step_down
from workers import controls
from workers.controls import UnknownEntry

from .state import status


def _when(ms_or_s) -> str:
    if ms_or_s is None:
        return "-"
    seconds = ms_or_s / 1000 if ms_or_s > 1e11 else ms_or_s
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group("baton")
def baton_cli():
    """Baton: who leads, hand the lease over, and operate entries."""


def _who(by) -> str:
    """Who acted: --by, or the shell's user and the dyno (a one-off dyno on Heroku)."""
    return by or f"{os.environ.get('USER') or 'unknown'}@{os.environ.get('DYNO') or socket.gethostname()} (cli)"


def _control(action):
    try:
        return action()
    except UnknownEntry as exc:
        raise click.ClickException(str(exc)) from None


@baton_cli.command("pause")
@click.argument("entry")
@click.option("--note", default="", help="Why, for whoever looks later.")
@click.option("--by", default=None, help="Who pauses (default: user@dyno).")
@with_appcontext
def pause_command(entry, note, by):
    """Pause an entry: its ticks are recorded as skipped until it is resumed."""
    from .state import redis_client, schedule_entries, settings

    record = _control(lambda: controls.pause(redis_client(), settings().core.prefix, schedule_entries(), entry,
                                             _who(by), note))
    click.echo(f"paused {entry} (by {record['by']}{', note: ' + record['note'] if record['note'] else ''})")


@baton_cli.command("resume")
@click.argument("entry")
@with_appcontext
def resume_command(entry):
    """Resume a paused entry: its next tick runs."""
    from .state import redis_client, schedule_entries, settings

    was = _control(lambda: controls.resume(redis_client(), settings().core.prefix, schedule_entries(), entry))
    click.echo(f"resumed {entry}" if was else f"{entry} was not paused")


@baton_cli.command("run")
@click.argument("entry")
@click.option("--by", default=None, help="Who asks (default: user@dyno).")
@with_appcontext
def run_command(entry, by):
    """Run an entry now, once, on the leading site (recorded as manual)."""
    from .state import raw_redis_client, schedule_entries, settings

    core = settings().core
    job_id = _control(lambda: controls.run_now(raw_redis_client(), core.prefix, schedule_entries(), core.timezone,
                                               entry, _who(by)))
    click.echo(f"enqueued {job_id}: the leading site's worker runs it (see: flask --app app baton history {entry})")


@baton_cli.command("history")
@click.argument("entry")
@click.option("--count", default=20, help="How many ticks, newest first.")
@with_appcontext
def history_command(entry, count):
    """What became of an entry's recent ticks."""
    from .state import redis_client, schedule_entries, settings

    ticks = _control(lambda: controls.history(redis_client(), settings().core.prefix, schedule_entries(), entry,
                                              count))
    if not ticks:
        click.echo(f"no tick of {entry} recorded yet")
    for t in ticks:
        what = t.get("outcome", "?") + (f" ({t['reason']})" if t.get("reason") else "")
        extra = [f"x{t['count']} to {_when(t['last'])}" if t.get("count") else "",
                 f"attempt {t['attempt']}" if t.get("attempt") else "",
                 f"manual by {t['manual']}" if t.get("manual") else "",
                 f"on {t['site']} token {t.get('token', '-')}" if t.get("site") else "",
                 f"{t['duration_ms']} ms" if t.get("duration_ms") not in (None, "") and t.get("site") else "",
                 t.get("error", "")]
        click.echo(f"  {_when(t.get('tick'))}  {what:24} " + "  ".join(x for x in extra if x))


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
        pause = s["paused"].get(name)
        click.echo(f"  {name:20} next {_when(next_at)}   last {_when(last.get('started_at'))} "
                   f"{last.get('outcome', '-')} on {last.get('site', '-')}"
                   + (f"   PAUSED by {pause.get('by')} {_when(pause.get('at'))} {pause.get('note', '')}" if pause else ""))
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
