"""Which Redis server a connection reached, from its INFO.

A failover replaces the primary with a replica that may have missed the last
writes — a lease, a fencing token, a tick claim — since replication is
asynchronous. Baton tells the servers apart by their ``run_id`` (a random id
each server process picks at start): a connection that reconnects and finds a
different ``run_id`` than before has reached another server, either a
promoted replica or a restarted primary, and both can have lost writes. The
elector then steps down and quarantines the election (elector.py).

INFO also tells a Redis Cluster endpoint (``cluster_enabled:1``), which Baton
refuses at start: RQ does not support Cluster, and its multi-key commands
would fail later with CROSSSLOT.
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_info(text) -> dict:
    """INFO's ``key:value`` lines as a dict of strings (sections ignored)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    fields = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


@dataclass(frozen=True)
class ServerFacts:
    run_id: str
    role: str  # master | slave
    cluster: bool
    server: str  # redis | valkey
    version: str

    @classmethod
    def from_info(cls, text) -> "ServerFacts":
        info = parse_info(text)
        server = info.get("server_name") or "redis"
        version = info.get("valkey_version") if server == "valkey" else info.get("redis_version")
        return cls(run_id=info.get("run_id", ""), role=info.get("role", "master"),
                   cluster=info.get("cluster_enabled") == "1", server=server, version=version or "unknown")


class PrimaryChanged(Exception):
    """A reconnect reached a different server process than before: a
    failover, or a restart. Writes made on the previous one may be lost."""

    def __init__(self, previous: ServerFacts, current: ServerFacts):
        self.previous, self.current = previous, current
        super().__init__(f"Redis run_id changed from {previous.run_id} to {current.run_id}")
