"""A loopback TCP proxy that stands in for the network between a process and
Redis, so real-process tests can cut it, restore it, or reset it.

Point one site's REDIS_URL at `proxy.url()` and let the other site talk to
Redis directly; then `blackhole()` partitions the first site only.

What it emulates:

* `blackhole()`: a cut cable / a silent network partition. Every connection
  stays open, but nothing is forwarded in either direction: bytes are read and
  dropped (not buffered, not replayed later), and neither side sees a FIN or
  an RST, even if its peer closes meanwhile. A client's reads therefore block
  until its own socket timeout (redis-py: TimeoutError, not ConnectionError),
  and Redis still lists the connection (CLIENT LIST) as if nothing happened.
  New connections are accepted (the TCP handshake succeeds, as the kernel does
  it) and then get nothing; no upstream connection is made for them.
* `blackhole(spare=b"baton:a:")`: a partition with some clients on the
  server's side. A connection whose handshake mentions the marker
  (redis-py names its connections in its handshake: `CLIENT SETNAME
  baton:a:elector`) keeps flowing both ways, and so do new ones that name it;
  every other connection is blackholed as above. `blackhole(only=...)` is the
  converse: only the connections that mention the marker are cut. See
  "Which connections a marker picks" below.
* `heal()`: the network is back. Connections that were open during the
  blackhole are *reset* at heal (RST to the client, RST to Redis), because
  their byte streams now have a hole in them and cannot be resumed honestly;
  clients reconnect; connections that were spared (never interrupted) stay
  open. New connections are forwarded normally.
* `reset_all()`: every proxied connection is closed at once with an RST on
  both sides (as a NAT/firewall dropping its state table, or a Redis-side
  connection kill would look to the client).

What it does not emulate:

* TCP retransmission across a short partition: in the real world a partition
  shorter than the retransmission timeout loses nothing and the connection
  survives; here every byte sent during the blackhole is gone and the
  connection is reset at heal.
* A SYN that goes unanswered: a new connection during the blackhole connects
  at once (it is the reads that hang), so `socket_connect_timeout` never fires.
* Redis being unreachable (connection refused) is seen by the client as an
  accepted connection that is then reset, not as ECONNREFUSED.
* Latency, bandwidth limits, reordering, partial loss, and half-open
  asymmetric partitions (one direction only).
* Bytes already handed to the kernel before `blackhole()` returns are still
  delivered (a few KB at most; as data already "on the wire").

Which connections a marker picks: the proxy keeps the first bytes each
client sends (`_SNIFF_LIMIT`) and reads them as Redis commands. The marker
must appear in the connection's handshake: the commands it sends before its
first other command, among AUTH, HELLO and CLIENT SETNAME / SETINFO /
MAINT_NOTIFICATIONS. So a redis-py client with `client_name="baton:a:elector"`
is picked (with or without a password, RESP2 or RESP3: CLIENT SETNAME, or
HELLO ... SETNAME), while a client without a name whose commands merely touch a
key named `baton:a:...` is not, and neither is one that sends PING before
naming itself (redis-py with a health_check_interval): its name comes too late.
While a connection made during a selective blackhole is undecided, its
handshake commands (and their replies) pass, since redis-py waits for the
AUTH/HELLO reply before it names itself; from the command that decides it on,
it flows or is dropped as decided. Sentinels (CLIENT SETNAME sentinel-...)
and replicas (PING, REPLCONF, PSYNC) are never picked by a "baton:..." marker.

Implementation: one selector thread (stdlib only) with non-blocking sockets
and per-direction buffers (bounded: a slow reader back-pressures the writer).
The control methods (`blackhole`, `heal`, `reset_all`, `close`,
`connections`) run on that thread and return once done, so after
`blackhole()` returns nothing more is forwarded.
"""

from __future__ import annotations

import collections
import errno
import selectors
import socket
import struct
import threading

from tests.support.redis_server import free_port

_CHUNK = 64 * 1024
_HIGH_WATER = 1024 * 1024  # stop reading a side while 1 MB waits for its peer
_CONTROL_TIMEOUT = 5.0
_JOIN_TIMEOUT = 5.0

_CLIENT, _UPSTREAM = 0, 1

# What a connection does now: forwarded, blackholed, or (during a selective
# blackhole) not yet known to be either.
_FLOW, _CUT, _PENDING = "flow", "cut", "pending"

# How much of each connection's opening bytes (client to server) is kept to
# decide whether a marker picks it: a handshake is well under 1 KB.
_SNIFF_LIMIT = 8 * 1024

# Commands that may come before a client names itself (redis-py's order:
# AUTH or HELLO, maintenance notifications, then CLIENT SETNAME, SETINFO).
_HANDSHAKE = {(b"AUTH",), (b"HELLO",), (b"CLIENT", b"SETNAME"), (b"CLIENT", b"SETINFO"),
              (b"CLIENT", b"MAINT_NOTIFICATIONS")}


def _commands(buf: bytes):
    """The complete commands at the start of a client's byte stream, as
    (end offset, [arg, ...]); RESP arrays of bulk strings or inline commands.
    Stops at an incomplete command; a malformed one is yielded with args None."""
    pos, size = 0, len(buf)
    while pos < size:
        if buf[pos:pos + 1] == b"*":
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return
            try:
                count = int(buf[pos + 1:eol])
            except ValueError:
                yield size, None
                return
            args, cur = [], eol + 2
            for _ in range(count):
                if cur >= size:
                    return
                if buf[cur:cur + 1] != b"$":
                    yield size, None
                    return
                eol = buf.find(b"\r\n", cur)
                if eol < 0:
                    return
                try:
                    length = int(buf[cur + 1:eol])
                except ValueError:
                    yield size, None
                    return
                start = eol + 2
                if start + length + 2 > size:
                    return
                args.append(bytes(buf[start:start + length]))
                cur = start + length + 2
            pos = cur
            if args:
                yield pos, args
        else:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                return
            args = bytes(buf[pos:eol]).split()
            pos = eol + 1
            if args:
                yield pos, args


def _is_handshake(args: list[bytes]) -> bool:
    head = args[0].upper()
    if head == b"CLIENT" and len(args) > 1:
        return (head, args[1].upper()) in _HANDSHAKE
    return (head,) in _HANDSHAKE


def _classify(sniff: bytes, markers: tuple[bytes, ...]) -> tuple[bool | None, int]:
    """Whether a connection's handshake mentions one of the markers:
    True, False, or None while it cannot tell yet; and where its leading
    handshake commands end (bytes that may pass while it cannot tell)."""
    handshake_end = 0
    for end, args in _commands(sniff):
        if args is None or not _is_handshake(args):
            return False, handshake_end
        if any(m in sniff[handshake_end:end] for m in markers):
            return True, end
        handshake_end = end
    if len(sniff) >= _SNIFF_LIMIT:
        return False, handshake_end
    return None, handshake_end


def _markers(value) -> tuple[bytes, ...]:
    if isinstance(value, (bytes, bytearray, str)):
        value = (value,)
    markers = tuple(m.encode() if isinstance(m, str) else bytes(m) for m in value)
    if not markers or not all(markers):
        raise ValueError("a marker must be a non-empty str or bytes (or a sequence of them)")
    return markers


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pair:
    """One proxied connection: the accepted client socket and its upstream."""

    __slots__ = ("socks", "out", "eof", "masks", "connecting", "closed", "fate", "sniff", "passed", "dialled")

    def __init__(self, client: socket.socket, fate: str):
        self.socks: list[socket.socket | None] = [client, None]
        self.out = [bytearray(), bytearray()]  # bytes waiting to be sent *to* that side
        self.eof = [False, False]  # that side has sent its FIN (while flowing only)
        self.masks = [0, 0]  # what the selector watches on that side
        self.connecting = False
        self.closed = False
        self.fate = fate
        # The client's first bytes (all of them while pending), and how many
        # of those have been passed upstream while pending.
        self.sniff = bytearray()
        self.passed = 0
        self.dialled = False  # an upstream connection was opened (it may be gone since)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to target_host:target_port until told otherwise."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None):
        self.target = (target_host, target_port)
        self._listener = self._bind(port)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._pairs: set[_Pair] = set()
        self._blackholed = False
        self._rule: tuple[tuple[bytes, ...], bool] | None = None  # (markers, True: spare them / False: cut them)
        self._stopping = False
        self._running = False
        self._closed = False
        self._lock = threading.Lock()
        self._ops: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _bind(port: int | None) -> socket.socket:
        for attempt in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port or free_port()))
                return sock
            except OSError as exc:
                sock.close()
                if port is not None or exc.errno != errno.EADDRINUSE or attempt == 19:
                    raise
        raise AssertionError("unreachable")

    # -- public API -------------------------------------------------------

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "TcpProxy":
        with self._lock:
            if self._closed:
                raise RuntimeError("TcpProxy is closed")
            if self._thread is not None:
                return self
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._sel.register(self._listener, selectors.EVENT_READ, ("accept", None, None))
            self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
            self._running = True
            self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
            self._thread.start()
        return self

    def blackhole(self, spare=None, only=None) -> None:
        """Partition: keep every connection open, forward (and signal) nothing.

        ``spare``: a marker (str or bytes, or a sequence of them); connections
        whose handshake mentions it (e.g. ``CLIENT SETNAME baton:a:elector``
        for ``spare="baton:a:"``) keep flowing, now and when made later.
        ``only``: the converse, only those connections are cut. Calling it again
        while blackholed applies the new rule; a connection already cut stays cut."""
        if spare is not None and only is not None:
            raise ValueError("blackhole(): give spare or only, not both")
        rule = None
        if spare is not None:
            rule = (_markers(spare), True)
        elif only is not None:
            rule = (_markers(only), False)
        self._call(lambda: self._do_blackhole(rule))

    def heal(self) -> None:
        """Forward again. Connections that were open during the blackhole are
        reset (RST on both sides) so clients reconnect; a no-op if not blackholed."""
        self._call(self._do_heal)

    def reset_all(self) -> None:
        """Close every proxied connection at once with an RST on both sides."""
        self._call(self._do_reset_all)

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy."""
        return self._call(lambda: sum(1 for p in self._pairs if p.socks[_CLIENT] is not None))

    @property
    def spared(self) -> int:
        """Client connections that flow through a selective blackhole (0 when not blackholed)."""
        return self._call(lambda: sum(1 for p in self._pairs if self._blackholed and p.fate == _FLOW
                                      and p.socks[_CLIENT] is not None))

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def close(self) -> None:
        """Stop listening, reset every connection, and join the thread (bounded)."""
        with self._lock:
            already = self._closed
            self._closed = True
        if already:
            return
        thread = self._thread
        if thread is not None:
            self._call(self._do_stop)
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"tcp proxy thread did not stop within {_JOIN_TIMEOUT}s")
        else:
            self._cleanup()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- control, run on the loop thread --------------------------------------

    def _call(self, fn):
        with self._lock:
            if not self._running:  # not started, or already finished: nothing runs concurrently
                return fn()
            item = [fn, threading.Event(), None, None]
            self._ops.append(item)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or finishing (it runs the queued ops on its way out)
        if not item[1].wait(_CONTROL_TIMEOUT):
            raise RuntimeError("tcp proxy thread did not answer")
        if item[3] is not None:
            raise item[3]
        return item[2]

    def _run_ops(self) -> None:
        while True:
            with self._lock:
                if not self._ops:
                    return
                item = self._ops.popleft()
            try:
                item[2] = item[0]()
            except BaseException as exc:  # handed to the caller
                item[3] = exc
            item[1].set()

    def _do_stop(self) -> None:
        self._stopping = True

    def _do_blackhole(self, rule) -> None:
        self._blackholed = True
        self._rule = rule
        for pair in list(self._pairs):
            if pair.fate == _CUT:
                continue
            verdict = False if rule is None else self._verdict(pair)[0]
            if verdict is None:
                if pair.fate == _FLOW:
                    pair.passed = len(pair.sniff)  # all it sent so far went through
                pair.fate = _PENDING
            else:
                self._decide(pair, verdict)
            if not pair.closed:
                self._update(pair)

    def _do_heal(self) -> None:
        if not self._blackholed:
            return
        self._blackholed = False
        self._rule = None
        for pair in list(self._pairs):
            if pair.fate == _FLOW:  # spared: its streams have no hole
                continue
            self._close_pair(pair, rst=True)

    def _verdict(self, pair: _Pair) -> tuple[bool | None, int]:
        """Whether the current rule lets this connection flow (True), cuts it
        (False) or cannot tell yet (None); and how far its handshake goes."""
        markers, spare = self._rule
        named, handshake_end = _classify(pair.sniff, markers)
        return (None if named is None else named == spare), handshake_end

    def _decide(self, pair: _Pair, flows: bool) -> None:
        if not flows:
            pair.fate = _CUT
            pair.out[_CLIENT].clear()  # dropped, not delivered later
            pair.out[_UPSTREAM].clear()
            return
        held = bytes(pair.sniff[pair.passed:]) if pair.fate == _PENDING else b""
        pair.fate = _FLOW
        if pair.socks[_CLIENT] is None or (pair.dialled and pair.socks[_UPSTREAM] is None):
            self._close_pair(pair, rst=True)  # one end went away while it was undecided
            return
        if not pair.dialled:
            self._dial(pair)
            if pair.closed:
                return
        if held:
            pair.out[_UPSTREAM] += held
            self._flush(pair, _UPSTREAM)

    def _do_reset_all(self) -> None:
        for pair in list(self._pairs):
            self._close_pair(pair, rst=True)

    # -- the loop ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._sel.select():  # blocks: no timeout, no busy loop
                    kind, pair, side = key.data
                    if kind == "wake":
                        self._drain_wake()
                        self._run_ops()
                    elif kind == "accept":
                        self._accept()
                    elif not pair.closed and pair.socks[side] is key.fileobj:
                        self._on_event(pair, side, mask)
        finally:
            self._cleanup()
            with self._lock:
                self._running = False
            self._run_ops()  # anything queued meanwhile runs (harmlessly) here

    def _cleanup(self) -> None:
        for pair in list(self._pairs):
            self._close_pair(pair, rst=True)
        for sock in (self._listener,):
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: try again on the next readiness
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._blackholed:
                fate = _FLOW
            else:  # no upstream connection for it yet (a pending one dials when it must)
                fate = _CUT if self._rule is None else _PENDING
            pair = _Pair(client, fate)
            self._pairs.add(pair)
            if fate == _FLOW:
                self._dial(pair)
            if not pair.closed:
                self._update(pair)

    def _dial(self, pair: _Pair) -> None:
        """Open the upstream connection (non-blocking; the loop sees it complete)."""
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.dialled = True
        err = upstream.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            upstream.close()
            if pair.fate == _FLOW:
                self._close_pair(pair, rst=True)
            return  # pending: the client hears nothing about it
        pair.socks[_UPSTREAM] = upstream
        pair.connecting = True

    def _on_event(self, pair: _Pair, side: int, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            if side == _UPSTREAM and pair.connecting:
                err = pair.socks[_UPSTREAM].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    if pair.fate != _FLOW:  # the client hears nothing about it
                        self._close_side(pair, _UPSTREAM)
                    else:
                        self._close_pair(pair, rst=True)
                    return
                pair.connecting = False
            self._flush(pair, side)
            if pair.closed:
                return
        if mask & selectors.EVENT_READ and pair.socks[side] is not None:
            self._read(pair, side)
        if not pair.closed:
            self._update(pair)

    def _read(self, pair: _Pair, side: int) -> None:
        sock = pair.socks[side]
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by that side
            if pair.fate != _FLOW:
                self._close_side(pair, side)
            else:
                self._close_pair(pair, rst=True)
            return
        if not data:  # FIN from that side
            if pair.fate != _FLOW:
                self._close_side(pair, side)  # the other side must not hear of it
            else:
                pair.eof[side] = True
                if not pair.out[1 - side]:
                    self._close_pair(pair, rst=False)
            return
        if pair.fate == _CUT:
            return  # dropped
        if side == _CLIENT and pair.fate == _PENDING:
            self._pending_read(pair, data)
            return
        if side == _CLIENT and len(pair.sniff) < _SNIFF_LIMIT:
            pair.sniff += data[:_SNIFF_LIMIT - len(pair.sniff)]
        other = 1 - side
        pair.out[other] += data
        self._flush(pair, other)

    def _pending_read(self, pair: _Pair, data: bytes) -> None:
        """Undecided: keep the bytes, pass its handshake, decide once it can."""
        pair.sniff += data
        verdict, handshake_end = self._verdict(pair)
        if verdict is not None:
            self._decide(pair, verdict)
            return
        if handshake_end > pair.passed:
            if not pair.dialled:
                self._dial(pair)
            if pair.socks[_UPSTREAM] is not None:
                pair.out[_UPSTREAM] += pair.sniff[pair.passed:handshake_end]
                self._flush(pair, _UPSTREAM)
            pair.passed = handshake_end

    def _flush(self, pair: _Pair, side: int) -> None:
        """Send what waits for `side`; close the pair once a finished peer is drained."""
        sock = pair.socks[side]
        buf = pair.out[side]
        if sock is None or (side == _UPSTREAM and pair.connecting):
            return
        while buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_pair(pair, rst=True)
                return
            del buf[:sent]
        if not buf and pair.eof[1 - side]:
            self._close_pair(pair, rst=False)

    def _update(self, pair: _Pair) -> None:
        """Watch each side for what it can do now."""
        for side in (_CLIENT, _UPSTREAM):
            sock = pair.socks[side]
            if sock is None:
                continue
            mask = 0
            if side == _UPSTREAM and pair.connecting:
                mask = selectors.EVENT_WRITE
            else:
                if not pair.eof[side] and (pair.fate == _CUT or len(pair.out[1 - side]) < _HIGH_WATER):
                    mask |= selectors.EVENT_READ
                if pair.out[side]:
                    mask |= selectors.EVENT_WRITE
            if mask == pair.masks[side]:
                continue
            if pair.masks[side] == 0:
                self._sel.register(sock, mask, ("conn", pair, side))
            elif mask == 0:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, ("conn", pair, side))
            pair.masks[side] = mask

    def _close_side(self, pair: _Pair, side: int) -> None:
        """Cut or pending: one end went away; the other end is left hanging, silently."""
        sock = pair.socks[side]
        if sock is not None:
            if pair.masks[side]:
                self._sel.unregister(sock)
            pair.masks[side] = 0
            sock.close()
            pair.socks[side] = None
            pair.out[side].clear()
        if pair.socks[_CLIENT] is None and pair.socks[_UPSTREAM] is None:
            pair.closed = True
            self._pairs.discard(pair)

    def _close_pair(self, pair: _Pair, rst: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.discard(pair)
        for side in (_CLIENT, _UPSTREAM):
            sock = pair.socks[side]
            if sock is None:
                continue
            if pair.masks[side]:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
            pair.masks[side] = 0
            pair.socks[side] = None
            if rst:
                _reset(sock)
            else:
                sock.close()
