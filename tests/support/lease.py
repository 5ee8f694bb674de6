"""Who leads, as a test or a benchmark asks it."""

from __future__ import annotations

from election import read_lease


def leader_site(client, prefix: str):
    """The site holding the lease, or None when nobody does."""
    record = read_lease(client, prefix)
    return record.site if record else None
