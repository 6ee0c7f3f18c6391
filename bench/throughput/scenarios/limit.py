"""Scenario `limit`: the broker's own ceiling, measured with a near-zero-cost raw client.

Two sockets, each an asyncio Protocol. munggoggo.amqp.AMQPConnection does the handshake
and the few setup methods (channel, confirm mode, queue, qos, consume) and is then bypassed:

- the publisher writes pre-encoded publish frames (method + header + 100 B body, packed
  once) in batches of 100, keeping at most 500 unconfirmed, with publisher confirms on
  (Confirm.Select). Incoming bytes are all Basic.Ack frames of 21 bytes: one C-level
  `bytes.count` checks that a buffer holds nothing else (a nack or any other frame fails
  the run), and only the last frame's delivery tag is read: the confirm watermark.
- the consumer (basic.consume no_ack=false, prefetch 1000, the same settings as `engine`)
  counts deliveries by bytes: every delivery of this run is the same number of bytes
  (learnt by parsing the first one), so deliveries = bytes received // delivery size, and
  since delivery tags are 1, 2, 3, ... on the channel the count is also the tag to ack.
  One Basic.Ack with multiple=true per received buffer covers every complete delivery.

The clock runs from the first write until the last delivery arrived and the last publish
was confirmed. Afterwards the byte count must equal deliveries x size exactly, and the
confirm watermark must equal the publishes sent.

The pipe runs twice: through the default exchange straight to the queue (`msgs_per_s`,
the ceiling), and through `munggoggo.topic` with the queue bound to a key of its own
(`topic_msgs_per_s`, half as many messages): the ceiling for what agents do, since their
pub/sub goes through that topic exchange, where the broker also pays for topic matching
over every binding on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from pamqp import commands, frame

from munggoggo._speedups import (
    Properties,
    encode_properties,
    pack_ack,
    pack_publish,
    publish_method_frame,
)
from munggoggo.amqp import events as ev
from munggoggo.amqp.connection import AMQPConnection
from munggoggo.url import BrokerURL, parse_url

from ...common import Stopwatch, check, rate

DEFAULT_MESSAGES = 250_000
SIZE = 100
PREFETCH = 1000
WINDOW = 500
BATCH = 100
WARMUP = 2000

CHANNEL = 1
TOPIC_EXCHANGE = "munggoggo.topic"  # the agents' pub/sub exchange (wire contract)
ACK_FRAME = 21  # 7-byte frame header, class+method, 8-byte tag, bits, frame end
# frame type 1 (method), channel 1, payload size 13, class 60 (basic), method 80 (ack)
ACK_PREFIX = b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50"
CLOSE = frame.marshal(commands.Connection.Close(200, "Normal shutdown", 0, 0), 0)
CLOSE_OK = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce"


async def measure(url: str, messages: int) -> dict[str, Any]:
    broker = parse_url(url)
    if broker.tls:
        raise RuntimeError("the limit scenario speaks plain TCP only (amqp://)")
    result = await one_pipe(broker, messages, "")
    topic = await one_pipe(broker, max(1, messages // 2), TOPIC_EXCHANGE)
    result["topic_msgs_per_s"] = topic["msgs_per_s"]
    if "broker_cpu_us_per_msg" in topic:
        result["topic_broker_cpu_us_per_msg"] = topic["broker_cpu_us_per_msg"]
    return result


async def one_pipe(broker: BrokerURL, messages: int, exchange: str) -> dict[str, Any]:
    pub_link = await RawLink.open(broker, "bench-limit-publisher")
    try:
        con_link = await RawLink.open(broker, "bench-limit-consumer")
        try:
            return await pipe(pub_link, con_link, messages, exchange)
        finally:
            await con_link.close()
    finally:
        await pub_link.close()


async def pipe(
    pub_link: RawLink, con_link: RawLink, messages: int, exchange: str = ""
) -> dict[str, Any]:
    """The pipe through the default exchange (`exchange` ""), or through `exchange` (a
    topic exchange) with the queue bound to a routing key of its own."""
    await pub_link.call(commands.Confirm.Select())
    queue = (await con_link.call(commands.Queue.Declare(queue="", exclusive=True))).queue
    routing_key = queue
    if exchange:
        routing_key = f"bench.limit.{queue}"
        await con_link.call(
            commands.Exchange.Declare(exchange=exchange, exchange_type="topic", durable=True)
        )
        await con_link.call(
            commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key)
        )
    await con_link.call(commands.Basic.Qos(prefetch_count=PREFETCH))
    await con_link.call(commands.Basic.Consume(queue=queue, consumer_tag="limit", no_ack=False))

    props = encode_properties(Properties(content_type="application/octet-stream", app_id="bench"))
    frames = pack_publish(
        publish_method_frame(CHANNEL, exchange, routing_key, False),
        CHANNEL,
        props,
        b"x" * SIZE,
        pub_link.frame_max,
    )
    publisher = Publisher(pub_link, frames)
    counter = Counter(con_link)
    pub_link.fast = publisher.on_data
    pub_link.on_resume = publisher.pump
    con_link.fast = counter.on_data

    async def run(n: int) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        publisher.done = loop.create_future()
        counter.done = loop.create_future()
        publisher.target += n
        counter.target += n
        watch = Stopwatch()
        watch.start()
        start = time.perf_counter_ns()
        publisher.pump()
        await asyncio.wait_for(asyncio.gather(publisher.done, counter.done), 30 + n / 1000)
        end = max(publisher.end_ns, counter.end_ns)
        watch.stop()
        return end - start, watch

    warmup = min(WARMUP, messages)
    await run(warmup)
    wall_ns, watch = await run(messages)
    total = warmup + messages
    check(publisher.sent == total, f"sent {publisher.sent:,} publishes, expected {total:,}")
    check(
        publisher.confirmed == total,
        f"broker confirmed through {publisher.confirmed:,}, sent {total:,}",
    )
    check(
        counter.received == total * counter.size,
        f"consumed {counter.received:,} bytes: not {total:,} deliveries of {counter.size} B",
    )
    wall = wall_ns / 1e9
    return {
        "msgs_per_s": rate(messages, wall),
        "messages": messages,
        **watch.figures(messages),
        "seconds": round(wall, 3),
        "size": SIZE,
        "prefetch": PREFETCH,
        "window": WINDOW,
        "ack_mode": "no_ack=false, one multiple=true ack per received buffer",
        "delivery_bytes": counter.size,
    }


class Publisher:
    """Writes pre-encoded publishes within the confirm window; reads the ack watermark."""

    def __init__(self, link: RawLink, frames: bytes) -> None:
        self.link = link
        self.frames = frames
        self.full_batch = frames * BATCH
        self.sent = 0
        self.confirmed = 0
        self.target = 0
        self.end_ns = 0
        self.rest = b""
        self.done: asyncio.Future[None] | None = None

    def pump(self) -> None:
        link = self.link
        write = link.transport.write  # type: ignore[union-attr]
        sent, target = self.sent, self.target
        while sent < target and not link.paused:
            k = min(BATCH, target - sent)
            if sent + k - self.confirmed > WINDOW:
                break
            write(self.full_batch if k == BATCH else self.frames * k)
            sent += k
        self.sent = sent

    def on_data(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        end = len(buf) - len(buf) % ACK_FRAME
        if end:
            if buf.count(ACK_PREFIX, 0, end) != end // ACK_FRAME:
                self.fail(f"the broker sent something other than Basic.Ack: {buf[:64].hex()}")
                return
            tag = int.from_bytes(buf[end - 10 : end - 2], "big")
            if tag > self.confirmed:
                self.confirmed = tag
        self.rest = buf[end:]
        if self.confirmed >= self.target:
            done = self.done
            if done is not None and not done.done():
                self.end_ns = time.perf_counter_ns()
                done.set_result(None)
        else:
            self.pump()

    def fail(self, message: str) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(message))


class Counter:
    """Counts deliveries by bytes; acks every complete one with one frame per buffer."""

    def __init__(self, link: RawLink) -> None:
        self.link = link
        self.size = 0  # bytes of one delivery, learnt from the first
        self.head = b""
        self.received = 0
        self.acked = 0
        self.target = 0
        self.end_ns = 0
        self.done: asyncio.Future[None] | None = None

    def on_data(self, data: bytes) -> None:
        self.received += len(data)
        if not self.size:
            self.head += data
            size = delivery_size(self.head)
            if size is None:
                return
            self.size = size
        count = self.received // self.size
        if count > self.acked:
            self.link.transport.write(pack_ack(CHANNEL, count, True))  # type: ignore[union-attr]
            self.acked = count
        if count >= self.target:
            done = self.done
            if done is not None and not done.done():
                self.end_ns = time.perf_counter_ns()
                done.set_result(None)


def delivery_size(data: bytes) -> int | None:
    """Bytes of the first delivery (deliver, header and one body frame) in `data`; None
    while incomplete. Raises if `data` does not start with a Basic.Deliver of SIZE bytes."""
    pos = 0
    for expected_type in (1, 2, 3):
        if len(data) < pos + 7:
            return None
        frame_type = data[pos]
        size = int.from_bytes(data[pos + 3 : pos + 7], "big")
        if frame_type != expected_type:
            raise RuntimeError(f"expected frame type {expected_type}, got {frame_type}")
        if expected_type == 1 and data[pos + 7 : pos + 11] != b"\x00\x3c\x00\x3c":
            raise RuntimeError(f"expected Basic.Deliver, got method {data[pos + 7 : pos + 11]!r}")
        if expected_type == 3 and size != SIZE:
            raise RuntimeError(f"expected a {SIZE} B body frame, got {size} B")
        pos += 7 + size + 1
    return pos if len(data) >= pos else None


class RawLink(asyncio.Protocol):
    """A socket whose handshake and setup go through AMQPConnection (channel 1 only);
    once `fast` is set, every received buffer goes to it and nothing is parsed here."""

    def __init__(self, url: BrokerURL, name: str) -> None:
        self.amqp = AMQPConnection(
            username=url.username,
            password=url.password,
            vhost=url.vhost,
            heartbeat=0,  # nothing but acks or deliveries may arrive once bypassed
            frame_max=url.frame_max,
            connection_name=name,
        )
        self.transport: asyncio.Transport | None = None
        self.frame_max = url.frame_max
        self.events: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None
        self.paused = False
        self.fast: Any = None
        self.on_resume: Any = None

    @classmethod
    async def open(cls, url: BrokerURL, name: str) -> RawLink:
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(lambda: cls(url, name), url.host, url.port)
        await link.expect(ev.ConnectionOpened)
        link.frame_max = link.amqp.frame_max
        link.amqp.open_channel(CHANNEL)
        link.flush()
        await link.expect(ev.ChannelOpened)
        return link

    async def close(self) -> None:
        """Connection.Close; waits a moment for CloseOk so the broker logs no error."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        closed = asyncio.get_running_loop().create_future()

        def on_close_ok(data: bytes) -> None:
            if data.endswith(CLOSE_OK) and not closed.done():
                closed.set_result(None)

        self.fast = on_close_ok
        # Bypassed, the engine's state is stale; the Close frame does not depend on it.
        transport.write(CLOSE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed, 2)
        transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.amqp.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.fast is not None:
            self.fast(data)
            return
        try:
            self.events.extend(self.amqp.receive_data(data))
        except Exception as exc:
            self.lost = exc
        self.flush()
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("the broker closed the connection")
        self.transport = None
        self.wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()

    # -- setup helpers -------------------------------------------------------------------

    def flush(self) -> None:
        data = self.amqp.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def expect(self, kind: type) -> Any:
        while True:
            while self.events:
                event = self.events.popleft()
                if isinstance(event, ev.ConnectionClosed | ev.ChannelClosed):
                    raise RuntimeError(f"broker closed the link during setup: {event}")
                if isinstance(event, kind):
                    return event
            if self.lost is not None:
                raise RuntimeError(f"link lost during setup: {self.lost}")
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, 10)

    async def call(self, method: Any) -> Any:
        self.amqp.send_method(CHANNEL, method)
        self.flush()
        return (await self.expect(ev.MethodReply)).method
