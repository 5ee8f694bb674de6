"""The lease as stored in ``{prefix}:lease`` — a Redis hash — read back as a value."""

from __future__ import annotations

from dataclasses import dataclass

# Fields every well-formed lease hash has; a hash missing one is reported as junk.
REQUIRED_FIELDS = ("holder", "site", "token", "acquired_at", "renewed_at", "ttl_ms")


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds the lease, under which fencing token, since when.

    Times are milliseconds since the epoch on the Redis server's clock.
    ``pttl_ms`` is the time the lease had left when it was read.
    """

    holder: str
    site: str
    token: int
    acquired_at: int
    renewed_at: int
    ttl_ms: int
    pttl_ms: int

    @property
    def expires_at(self) -> int:
        """When the lease runs out unless renewed (server clock, ms since epoch)."""
        return self.renewed_at + self.ttl_ms

    @classmethod
    def from_fields(cls, fields: dict, pttl_ms: int) -> "LeaseRecord":
        """Build from HGETALL's answer; raises ValueError if a field is missing or not a number."""
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        if missing:
            raise ValueError("missing fields: " + ",".join(missing))
        try:
            return cls(
                holder=fields["holder"],
                site=fields["site"],
                token=int(fields["token"]),
                acquired_at=int(fields["acquired_at"]),
                renewed_at=int(fields["renewed_at"]),
                ttl_ms=int(fields["ttl_ms"]),
                pttl_ms=int(pttl_ms),
            )
        except ValueError as exc:
            raise ValueError(f"non-numeric field: {exc}") from None

    def as_dict(self) -> dict:
        return {
            "holder": self.holder,
            "site": self.site,
            "token": self.token,
            "acquired_at": self.acquired_at,
            "renewed_at": self.renewed_at,
            "ttl_ms": self.ttl_ms,
            "pttl_ms": self.pttl_ms,
            "expires_at": self.expires_at,
        }
