"""munggoggo.testing.fault_proxy against a local echo server: forwarding, cut, freeze, slow, refuse.

No broker here: the proxy knows no AMQP, so plain sockets show what it does. Waits are
bounded and fail with pytest.fail; the only clock checks are lower bounds on delays the
proxy was told to add (a slow machine can only make them longer).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from munggoggo.testing import FaultProxy


class EchoServer:
    """Echoes everything; remembers how many bytes it got and how many peers ended."""

    def __init__(self) -> None:
        self.received = 0
        self.ended = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.ended += 1
            writer.close()

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()  # type: ignore[union-attr]


@pytest.fixture
async def echo():
    server = await EchoServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo):
    p = await FaultProxy(upstream=("127.0.0.1", echo.port)).start()
    yield p
    await p.stop()


async def within(awaitable, seconds: float, what: str):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"{what}: nothing within {seconds:g}s")


async def connect(proxy: FaultProxy):
    return await within(asyncio.open_connection("127.0.0.1", proxy.port), 5, "connect")


async def roundtrip(reader, writer, data: bytes, seconds: float = 10) -> bytes:
    writer.write(data)
    return await within(reader.readexactly(len(data)), seconds, "echo")


async def nothing_arrives(reader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


async def ends(reader, seconds: float = 5) -> bool:
    """True when the connection ends (EOF or reset) within `seconds`."""
    try:
        data = await asyncio.wait_for(reader.read(65536), seconds)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return data == b""


async def test_forwards_both_ways_in_order(proxy, echo):
    payload = os.urandom(3 * 2**20)  # more than socket buffers: backpressure must hold
    pairs = [await connect(proxy) for _ in range(3)]
    results = await asyncio.gather(*(roundtrip(r, w, payload, 30) for r, w in pairs))
    assert all(result == payload for result in results)
    assert proxy.connections == 3 and proxy.accepted == 3
    assert proxy.bytes_up == proxy.bytes_down == 3 * len(payload)
    for _, w in pairs:
        w.close()


async def test_cut_drops_every_connection_and_keeps_accepting(proxy, echo):
    pairs = [await connect(proxy) for _ in range(2)]
    for r, w in pairs:
        assert await roundtrip(r, w, b"before") == b"before"
    assert proxy.cut() == 2
    for r, _ in pairs:
        assert await ends(r), "a cut connection stayed open on the client side"
    for _ in range(500):  # the upstream side is dropped too
        if echo.ended == 2:
            break
        await asyncio.sleep(0.01)
    assert echo.ended == 2
    assert proxy.connections == 0 and proxy.cuts == 2
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"after") == b"after"
    w.close()


async def test_cut_one_client_only(proxy):
    (r1, w1), (r2, w2) = await connect(proxy), await connect(proxy)
    assert await roundtrip(r1, w1, b"x") == b"x"
    assert await roundtrip(r2, w2, b"y") == b"y"
    assert proxy.cut(client_port=w1.get_extra_info("sockname")[1]) == 1
    assert await ends(r1)
    assert await roundtrip(r2, w2, b"still") == b"still"
    w2.close()


async def test_freeze_holds_bytes_without_closing_and_thaw_delivers_them(proxy, echo):
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"warm") == b"warm"
    received = echo.received
    proxy.freeze()
    w.write(b"held-1")
    assert await nothing_arrives(r, 0.5)
    assert echo.received == received, "bytes went upstream while frozen"
    # A connection made while frozen is accepted but silent as well.
    r2, w2 = await connect(proxy)
    w2.write(b"new")
    assert await nothing_arrives(r2, 0.3)
    assert proxy.connections == 2  # nothing was closed
    w.write(b"held-2")
    proxy.thaw()
    assert await within(r.readexactly(12), 5, "held bytes after thaw") == b"held-1held-2"
    assert await within(r2.readexactly(3), 5, "new connection after thaw") == b"new"
    w.close()
    w2.close()


async def test_freeze_also_holds_what_the_upstream_sends(proxy, echo):
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"warm") == b"warm"
    proxy.freeze()
    echo.writers[0].write(b"from-upstream")
    assert await nothing_arrives(r, 0.5)
    proxy.thaw()
    assert await within(r.readexactly(13), 5, "after thaw") == b"from-upstream"
    w.close()


async def test_slow_delay_adds_latency_each_way_then_normal(proxy):
    r, w = await connect(proxy)
    proxy.slow(delay=0.2)
    started = time.perf_counter()
    assert await roundtrip(r, w, b"slow") == b"slow"
    assert time.perf_counter() - started >= 0.4  # two proxied directions, 0.2 s each
    proxy.normal()
    assert proxy.mode == "normal"
    assert await roundtrip(r, w, b"fast again") == b"fast again"
    w.close()


async def test_slow_byte_rate_caps_throughput_and_keeps_data_intact(proxy):
    r, w = await connect(proxy)
    payload = os.urandom(20_000)
    proxy.slow(bytes_per_second=40_000)
    started = time.perf_counter()
    assert await roundtrip(r, w, payload, 20) == payload
    # 20 kB at 40 kB/s is 0.5 s in each direction (pipelined); allow one slice less.
    assert time.perf_counter() - started >= 0.45
    proxy.normal()
    w.close()


async def test_normal_while_bytes_wait_sends_them_first_in_order(proxy):
    r, w = await connect(proxy)
    proxy.slow(delay=5.0)
    w.write(b"first")
    await asyncio.sleep(0.1)
    proxy.normal()  # the delayed bytes must not wait their 5 s any longer, nor be overtaken
    w.write(b"second")
    assert await within(r.readexactly(11), 3, "released bytes") == b"firstsecond"
    w.close()


async def test_refuse_then_accept_on_the_same_port(proxy):
    r, w = await connect(proxy)
    port = proxy.port
    proxy.refuse()
    assert proxy.refusing
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert await roundtrip(r, w, b"existing") == b"existing"
    await proxy.accept()
    assert proxy.port == port
    r2, w2 = await connect(proxy)
    assert await roundtrip(r2, w2, b"again") == b"again"
    w.close()
    w2.close()


async def test_a_closing_client_is_passed_on_as_a_close(proxy, echo):
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"bye") == b"bye"
    w.close()
    for _ in range(500):
        if echo.ended == 1 and proxy.connections == 0:
            break
        await asyncio.sleep(0.01)
    assert echo.ended == 1 and proxy.connections == 0
    assert proxy.cuts == 0


async def test_upstream_close_delivers_its_last_bytes_first(proxy, echo):
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"hi") == b"hi"
    upstream = echo.writers[0]
    upstream.write(b"last words")
    upstream.close()
    assert await within(r.readexactly(10), 5, "last bytes") == b"last words"
    assert await ends(r)
    w.close()


async def test_dead_upstream_closes_the_client():
    async with FaultProxy(upstream=("127.0.0.1", 1)) as proxy:  # nothing listens on port 1
        r, w = await connect(proxy)
        assert await ends(r)
        assert proxy.connections == 0
        w.close()


async def test_stop_drops_connections_and_stops_listening(echo):
    proxy = await FaultProxy(upstream=("127.0.0.1", echo.port)).start()
    r, w = await connect(proxy)
    assert await roundtrip(r, w, b"x") == b"x"
    await proxy.stop()
    assert await ends(r)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    w.close()
