"""Who leads, as a test or a benchmark asks it."""

from __future__ import annotations

from election import read_lease, ready_sites


def leader_site(client, prefix: str):
    """The site holding the lease, or None when nobody does."""
    record = read_lease(client, prefix)
    return record.site if record else None


def leads_ready(client, prefix: str, site: str) -> bool:
    """``site`` leads and one of its workers has marked it ready: it keeps
    the lease when another site joins (a site leading before its workers are
    up hands over to a ready one; election/readiness.py)."""
    return leader_site(client, prefix) == site and site in ready_sites(client, prefix)
