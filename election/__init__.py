"""Leader election on a shared Redis: one TTL lease, fenced and self-fencing.

Imports only redis-py and the standard library. Typical use::

    lease = Lease.from_url(url, Identity.from_env(), ttl_ms=config.ttl_ms)
    elector = Elector(lease, config, Callbacks(on_elected=..., on_demoted=...)).start()
    ...
    elector.stop()   # releases the lease; a waiting site takes over at once
"""

from .callbacks import Callbacks
from .config import ElectionConfig
from .elector import Elector, Term
from .errors import LeaseCorrupt, RedisFull
from .identity import Identity
from .keys import Keys
from .lease import Acquired, Lease, NotReady, Renewed, Woken, read_lease, request_step_down
from .readiness import clear_ready, mark_ready, ready_sites
from .record import LeaseRecord

__all__ = [
    "Acquired",
    "Callbacks",
    "ElectionConfig",
    "Elector",
    "Identity",
    "Keys",
    "Lease",
    "LeaseCorrupt",
    "RedisFull",
    "LeaseRecord",
    "NotReady",
    "Renewed",
    "Term",
    "Woken",
    "clear_ready",
    "mark_ready",
    "read_lease",
    "ready_sites",
    "request_step_down",
]
