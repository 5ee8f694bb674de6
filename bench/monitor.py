"""Counting the commands clients send, with MONITOR on its own connection.

Each command a client sends is passed to ``on_command(address, text)``;
commands a Lua script runs inside the server are not round trips and are
skipped. MONITOR counts each command of a MULTI block.
"""

from __future__ import annotations

import threading

import redis


class CommandMonitor:
    def __init__(self, url: str, on_command):
        self._client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
        self._on_command = on_command
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-monitor", daemon=True)

    def start(self) -> "CommandMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            # redis-py drops a connection whose read timed out, so a quiet
            # spell (no command for socket_timeout) means a new MONITOR.
            with self._client.monitor() as monitor:
                while not self._stop.is_set():
                    try:
                        command = monitor.next_command()
                    except redis.TimeoutError:
                        break
                    if command.get("client_type") == "lua":
                        continue
                    self._on_command(f"{command['client_address']}:{command['client_port']}", command["command"])
