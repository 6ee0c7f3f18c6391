"""A fault-injecting TCP proxy on loopback: for fault tests (ours and your agents') and the soak.

It owns the network between a client and the broker and nothing else: it knows no AMQP.
Every accepted connection gets its own upstream connection; bytes are forwarded both ways
as they arrive, with TCP backpressure passed through (a side whose peer cannot keep up
stops being read). Faults apply to every connection, current and new:

- `cut()`: drop every current connection at once, both ways (the sockets are aborted);
  new connections are still accepted.
- `freeze()` / `thaw()`: stop moving bytes in both directions without closing anything, as
  a dead peer or a partitioned network would: heartbeats are lost, TCP keeps the
  connections "up". New connections are accepted but stay silent too. `thaw()` forwards
  what was held, in order (like a healed partition).
- `slow(delay=..., bytes_per_second=...)` / `normal()`: add latency to every chunk and/or
  cap each direction of each connection to a byte rate.
- `refuse()` / `await accept()`: stop listening (connects get ECONNREFUSED) / listen again
  on the same port. Existing connections are not touched.

Usage:

    proxy = FaultProxy(upstream=("127.0.0.1", 5672))
    await proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    ...
    proxy.cut()
    await proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

# A slowed direction holds at most this many bytes before it stops reading its source.
_QUEUE_LIMIT = 1 << 20
# A rate-limited direction sends at most this share of a second's bytes at once.
_RATE_SLICE = 0.02


class _Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the upstream one)."""

    def __init__(self, link: _Link, name: str) -> None:
        self.link = link
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.out: _Pipe | None = None  # the direction this side's received bytes take
        self.into: _Pipe | None = None  # the direction that writes into this side
        self._paused_for: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.name == "client":
            self.link.client_made(self)

    def data_received(self, data: bytes) -> None:
        if self.out is not None:
            self.out.forward(data)

    def eof_received(self) -> bool:
        # The other side gets the EOF too, once what this side sent before it went through.
        if self.out is not None:
            self.out.finish()
        return False  # and this socket closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.link.side_lost(self)

    # A peer that cannot keep up stops us reading this side.
    def pause_writing(self) -> None:
        if self.into is not None:
            self.into.src.pause("backpressure")

    def resume_writing(self) -> None:
        if self.into is not None:
            self.into.src.resume("backpressure")

    def pause(self, reason: str) -> None:
        if not self._paused_for and self.transport is not None:
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._paused_for:
            return
        self._paused_for.discard(reason)
        if not self._paused_for and self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close after writing what is buffered (a graceful end, not a fault)."""
        if self.transport is not None:
            self.transport.close()


class _Pipe:
    """One direction of one connection. Bytes go straight through in normal mode; while
    slowed or frozen (or while older bytes still wait) they queue, in order, for a pump.
    """

    def __init__(self, link: _Link, src: _Side, dst: _Side, up: bool) -> None:
        self.link = link
        self.proxy = link.proxy
        self.src = src
        self.dst = dst
        self.up = up  # client -> upstream
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.eof = False  # the source ended: close the destination once the queue is sent
        self.pump: asyncio.Task[None] | None = None

    def forward(self, data: bytes) -> None:
        proxy = self.proxy
        if not self.queue and proxy.mode == "normal":
            self.dst.write(data)
            self._count(len(data))
            return
        # A fresh clock, not the loop's (cached since the start of this loop iteration):
        # a chunk must be held for the whole delay after it really arrived.
        self.queue.append((time.monotonic(), data))
        self.queued += len(data)
        if self.queued > _QUEUE_LIMIT:
            self.src.pause("queue")
        if self.pump is None or self.pump.done():
            self.pump = self.link.loop.create_task(self._pump())

    def finish(self) -> None:
        self.eof = True
        if not self.queue:
            self.dst.close()

    def kick(self) -> None:
        """The mode changed: start the pump for bytes that still wait."""
        if self.queue and (self.pump is None or self.pump.done()):
            self.pump = self.link.loop.create_task(self._pump())

    async def _pump(self) -> None:
        proxy = self.proxy
        changed = self.link.wait_change
        queue = self.queue
        while queue:
            if proxy.mode == "frozen":
                await changed(None)
                continue
            arrived, data = queue[0]
            if proxy.delay:
                wait = arrived + proxy.delay - time.monotonic()
                if wait > 0:
                    await changed(wait)
                    continue
            rate = proxy.bytes_per_second
            if rate:
                piece = data[: max(1, int(rate * _RATE_SLICE))]
                if len(piece) < len(data):
                    queue[0] = (arrived, data[len(piece) :])
                else:
                    queue.popleft()
                self._sent(piece)
                await changed(len(piece) / rate)
                continue
            queue.popleft()
            self._sent(data)
        self.src.resume("queue")
        if self.eof:
            self.dst.close()

    def _sent(self, data: bytes) -> None:
        self.queued -= len(data)
        self.dst.write(data)
        self._count(len(data))
        if self.queued <= _QUEUE_LIMIT // 2:
            self.src.resume("queue")

    def _count(self, n: int) -> None:
        if self.up:
            self.proxy.bytes_up += n
        else:
            self.proxy.bytes_down += n

    def cancel(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.queue.clear()
        self.queued = 0


class _Link:
    """One proxied connection: the client's socket, its upstream socket, two pipes.

    The proxy hands each link what its pieces share (the loop, the set of live links, the
    wait for a mode change) rather than have them reach into the proxy's own state.
    """

    def __init__(
        self,
        proxy: FaultProxy,
        loop: asyncio.AbstractEventLoop,
        links: set[_Link],
        wait_change: Callable[[float | None], Awaitable[None]],
    ) -> None:
        self.proxy = proxy
        self.loop = loop
        self.links = links
        self.wait_change = wait_change
        self.client = _Side(self, "client")
        self.upstream: _Side | None = None
        self.pipes: list[_Pipe] = []
        self.closed = False
        self._connecting: asyncio.Task[None] | None = None

    @property
    def client_port(self) -> int | None:
        """The client's own port: what the client sees as its local port."""
        transport = self.client.transport
        if transport is None:
            return None
        peer = transport.get_extra_info("peername")
        return peer[1] if peer else None

    def client_made(self, side: _Side) -> None:
        self.links.add(self)
        self.proxy.accepted += 1
        side.pause("connecting")  # nothing to forward to yet
        self._connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        upstream = _Side(self, "upstream")
        try:
            await self.loop.create_connection(lambda: upstream, *proxy.upstream)
        except OSError:
            self.abort()  # the client sees its connection closed, as with a dead upstream
            return
        if self.closed:
            upstream.abort()
            return
        self.upstream = upstream
        up = _Pipe(self, self.client, upstream, up=True)
        down = _Pipe(self, upstream, self.client, up=False)
        self.client.out, upstream.into = up, up
        upstream.out, self.client.into = down, down
        self.pipes = [up, down]
        if proxy.mode == "frozen":
            upstream.pause("frozen")
            self.client.pause("frozen")
        self.client.resume("connecting")

    def side_lost(self, side: _Side) -> None:
        """One socket is gone: the other one ends after what was sent to it (a peer that
        closed or died is passed on as a close, not as a cut).
        """
        if self.upstream is None:  # the client left while we were connecting upstream
            self.abort()
            return
        other = self.upstream if side is self.client else self.client
        if other.transport is None:
            self._forget()
            return
        if side.into is not None:
            side.into.cancel()  # nobody left to receive what waits for this side
        inbound = other.into
        if inbound is not None and not inbound.eof:
            inbound.finish()

    def abort(self) -> None:
        """Drop both sockets at once (abort: no flushing of what was held)."""
        if self.closed:
            return
        self._forget()
        if self._connecting is not None and self._connecting is not asyncio.current_task():
            self._connecting.cancel()
        for pipe in self.pipes:
            pipe.cancel()
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def _forget(self) -> None:
        self.closed = True
        self.links.discard(self)

    def sides(self) -> list[_Side]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]


class FaultProxy:
    """A TCP proxy from `host:port` (port 0: any free one) to `upstream`, with faults.

    Use it as `async with FaultProxy(...) as proxy:`, or `start()` and `stop()` it.

    Args:
        upstream: (host, port) of the broker behind it.
        host: the address to listen on.
        port: the port to listen on (0: any free one; `port` says which once started).
    """

    def __init__(
        self,
        upstream: tuple[str, int] = ("127.0.0.1", 5672),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.mode = "normal"  # normal, slow or frozen
        self.delay = 0.0
        self.bytes_per_second = 0.0
        self.accepted = 0  # connections accepted so far
        self.cuts = 0  # connections dropped by cut()
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0
        self._links: set[_Link] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._change: asyncio.Future[None] | None = None
        self._frozen_before: str = "normal"

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> FaultProxy:
        """Listen (on the running event loop).

        Returns:
            The proxy itself, its `port` set.

        Raises:
            OSError: the address cannot be listened on.
        """
        self._loop = asyncio.get_running_loop()
        await self._listen()
        return self

    async def _listen(self) -> None:
        self._server = await self._loop.create_server(
            lambda: _Link(self, self._loop, self._links, self._changed).client,
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        self.refuse()
        cuts = self.cuts
        self.cut()
        self.cuts = cuts  # stop() is not a fault
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def connections(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    def client_ports(self) -> list[int]:
        """The local ports of the clients connected now (their `sockname` port).

        Returns:
            The ports.
        """
        return [p for link in self._links if (p := link.client_port) is not None]

    # -- faults --------------------------------------------------------------------

    def cut(self, client_port: int | None = None) -> int:
        """Drop every current connection (or only the one from `client_port`) both ways.

        New connections are still accepted.

        Args:
            client_port: the client's local port (None: every connection).

        Returns:
            How many connections were dropped.
        """
        dropped = 0
        for link in list(self._links):
            if client_port is None or link.client_port == client_port:
                link.abort()
                dropped += 1
        self.cuts += dropped
        return dropped

    def freeze(self) -> None:
        """Stop forwarding in both directions on every connection, keep them open."""
        if self.mode == "frozen":
            return
        self._frozen_before = self.mode
        self.mode = "frozen"
        for link in list(self._links):
            for side in link.sides():
                side.pause("frozen")
        self._changed_now()

    def thaw(self) -> None:
        """Forward again (what was held first); the mode before `freeze()` returns."""
        if self.mode != "frozen":
            return
        self.mode = self._frozen_before
        for link in list(self._links):
            for side in link.sides():
                side.resume("frozen")
        self._changed_now()

    def slow(self, delay: float = 0.0, bytes_per_second: float = 0.0) -> None:
        """Delay every chunk by `delay` seconds and/or cap each direction of each
        connection to `bytes_per_second` (0: no cap). Replaces an earlier slow().

        Args:
            delay: seconds each chunk is held.
            bytes_per_second: the rate cap of each direction (0: none).

        Raises:
            ValueError: a negative value, or neither a delay nor a rate.
        """
        if delay < 0 or bytes_per_second < 0:
            raise ValueError("delay and bytes_per_second must not be negative")
        if not delay and not bytes_per_second:
            raise ValueError("slow() needs a delay or a byte rate (normal() undoes it)")
        self.delay = delay
        self.bytes_per_second = bytes_per_second
        if self.mode == "frozen":
            self._frozen_before = "slow"
        else:
            self.mode = "slow"
        self._changed_now()

    def normal(self) -> None:
        """No delay, no rate cap, not frozen: bytes that were held go first, in order."""
        self.delay = 0.0
        self.bytes_per_second = 0.0
        if self.mode == "frozen":
            self.thaw()
        self.mode = "normal"
        self._changed_now()

    def refuse(self) -> None:
        """Stop listening: new connects are refused. Current connections go on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def accept(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            await self._listen()

    @property
    def refusing(self) -> bool:
        """Whether it refuses new connections (not listening)."""
        return self._server is None

    # -- internals -----------------------------------------------------------------

    def _changed_now(self) -> None:
        """Wake the pumps waiting for a mode change and restart idle ones."""
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)
        for link in list(self._links):
            for pipe in link.pipes:
                pipe.kick()

    async def _changed(self, timeout: float | None = None) -> None:
        """Wait for the next mode change (at most `timeout` seconds)."""
        if self._change is None:
            self._change = self._loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._change), timeout)
