"""Readiness: whether a site can do the work its leadership is for.

A lease says who leads; it cannot say whether the leader's site has anything
that runs jobs. So each member that does a site's work (Baton's RQ workers)
marks itself ready every ``beat`` and the mark lasts ``live_ms`` on the
server's clock (``Keys.ready``: a zset '<site>/<member>' -> until when). A
:class:`~election.lease.Lease` made with ``require_ready`` reads the marks
inside its ACQUIRE and RENEW scripts (scripts.py: no extra command, no
second clock): a site with no live mark is not noted as waiting, leaves a
free lease to a ready site that waits, and its leader hands the lease over
when a ready site waits (elector.py). A deployment in which no site is ready
still elects a leader.

A member that stops on purpose clears its mark at once (:func:`clear_ready`);
one that dies drops out when its mark runs out.
"""

from __future__ import annotations

import redis

from . import scripts
from .errors import LeaseCorrupt, RedisFull
from .keys import Keys
from .lease import Script, eval_script

_MARK_READY = Script(scripts.MARK_READY)
_READY_MEMBERS = Script(scripts.READY_MEMBERS)


def member_of(site: str, name: str) -> str:
    return f"{site}/{name}"


def mark_ready(client: redis.Redis, prefix: str, site: str, name: str, live_ms: int) -> tuple:
    """Say that ``name`` of ``site`` can work for the next ``live_ms``.
    Returns (until when in server ms, the site that holds the lease — ''
    when nobody does, or the lease is junk: a reader that needs more asks
    read_lease). Raises LeaseCorrupt for junk at the ready key (left as it
    is), RedisFull when Redis refuses the write (a new member on a full
    Redis), redis errors."""
    keys = Keys(prefix)
    reply = eval_script(client, _MARK_READY, [keys.ready, keys.lease], [member_of(site, name), int(live_ms)])
    if reply[0] == "corrupt":
        raise LeaseCorrupt.from_reply(reply)
    if reply[0] == "refused":
        raise RedisFull(reply[1])
    return int(reply[1]), reply[2]


def clear_ready(client: redis.Redis, prefix: str, site: str, name: str) -> None:
    """``name`` stops working now (a stop, not a death): its mark goes."""
    try:
        client.zrem(Keys(prefix).ready, member_of(site, name))
    except redis.ResponseError:
        pass  # junk at the key: reported by the markers, never touched here


def ready_sites(client: redis.Redis, prefix: str) -> dict:
    """Every site with a live mark: ``{site: {member name: ms left}}``.
    Raises LeaseCorrupt for junk at the key."""
    reply = eval_script(client, _READY_MEMBERS, [Keys(prefix).ready], [])
    if reply[0] == "corrupt":
        raise LeaseCorrupt.from_reply(reply)
    now = int(reply[1])
    out: dict = {}
    for member, until in zip(reply[2::2], reply[3::2]):
        site, _, name = member.partition("/")
        out.setdefault(site, {})[name] = max(0, int(float(until)) - now)
    return out
