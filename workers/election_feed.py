"""A waiting worker's ear on the election: the elected channel, by push.

Every new term is published on ``Keys.elected_channel`` by the ACQUIRE
script itself, in the same atomic step that writes the lease. A worker that
waits for its site to lead subscribes, reads the lease, and then blocks on
the subscription: a term that starts after the read wakes it within a round
trip (the message was published after the subscription was confirmed, so it
is never missed), where polling the lease would cost one command per period
and up to a period of delay on the first tick after a handoff.

The subscription holds a connection of its own (a pool of one, named like
the worker's with ``-feed``: taken from the worker's pool it would leave a
second idle connection behind there), so a worker only keeps it while it
waits: ``close()`` once its site leads. If the connection breaks,
``wait`` raises the RedisError and the caller opens a new feed; its own
timeout (a re-read of the lease) covers a subscription that died silently.
"""

from __future__ import annotations

import time

import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from election import Keys

_PER_POOL_STATE = ("maint_notifications_pool_handler", "maint_notifications_config", "himport_registry",
                   "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout")

# How long opening a feed waits for Redis to confirm the subscription.
SUBSCRIBE_TIMEOUT_S = 5.0


class ElectionFeed:
    def __init__(self, connection, prefix: str):
        pool = connection.connection_pool
        # The worker's connection options, without the state redis-py keeps
        # per pool (maintenance-notification handlers and the like).
        options = {k: v for k, v in pool.connection_kwargs.items() if k not in _PER_POOL_STATE}
        if options.get("client_name"):
            options["client_name"] = f"{options['client_name']}-feed"
        self._pool = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=1, **options)
        self._pubsub = redis.client.PubSub(self._pool, ignore_subscribe_messages=False)
        self._pubsub.subscribe(Keys(prefix).elected_channel)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while True:  # confirmed: every term from now on reaches us
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise RedisConnectionError("no confirmation of the subscription to the elected channel")
            message = self._pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "subscribe":
                break

    def wait(self, timeout: float) -> bool:
        """Block until a term starts somewhere, or ``timeout`` s; True if one
        did. Drains everything pending: one re-read of the lease covers all."""
        message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=max(0.0, timeout))
        if message is None:
            return False
        while self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
            pass
        return True

    def close(self) -> None:
        try:
            self._pubsub.close()
            self._pool.disconnect()
        except Exception:  # closing a broken connection: nothing left to release
            pass
