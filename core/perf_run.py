"""The queue-mode load run of `munggoggo bench`: producers and consumers on our engine.

Each producer and each consumer has a connection of its own (spread over the given URLs in
turn, as PerfTest does) and one channel. Producers publish PerfTest-layout bodies
(`perf_body`) with omq's identity headers, batched per loop tick, paced by `--rate` or
`--variable-rate`, inside the `--confirm` window (`Channel.drain`). Consumers receive in
batches, read latency and sequence from each body, and settle as asked (auto-ack, one
multiple ack every N, or the engine's coalesced acks).

The run ends at `--time`, when every producer sent `--pmessages` and every consumer got
`--cmessages`, or when cancelled. Then the producers wait for their last confirms and the
consumers drain what is still on its way, as long as it keeps coming: a message counts
as lost only when it never arrived. Figures live in `RunStats`; the per-second lines and
the summary are printed by `cli_bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ._speedups import Delivery
from .channel import Channel
from .client import Connection
from .perf_body import MIN_SIZE, PropertiesTemplate, read_identity, sent_at_ns
from .perf_stats import LatencyHistogram, OrderCheck, SequenceTracker
from .url import BrokerURL

__all__ = ["BenchConfig", "RunStats", "declare_topology", "run_bench"]

_HEAD = struct.Struct(">iq")
_MAX_BATCH = 100  # publishes per loop tick at most: one write, then deliveries get a turn
_DRAIN_STALL = 3.0  # seconds without a delivery that end the drain after the run
_DRAIN_MAX = 60.0


@dataclass
class BenchConfig:
    """What to run: PerfTest's queue-mode options.

    Attributes:
        urls: broker URLs; connections take them in turn.
        producers: publishing connections.
        consumers: consuming connections.
        size: body bytes (12 at least).
        rate: msgs/s per producer, 0 for as fast as possible.
        variable_rate: (rate, seconds) steps, cycled; overrides `rate` when given.
        duration: seconds to run, or None.
        pmessages: messages per producer (0: no limit).
        cmessages: messages per consumer (0: no limit).
        confirm: unconfirmed publishes in flight per producer (0: no confirms).
        multi_ack_every: ack with multiple=true every N messages (0: each message).
        qos: per-consumer prefetch (0: unlimited).
        autoack: consume without acks.
        exchange: exchange name ("" is the default exchange).
        exchange_type: type to declare it with (direct, topic, fanout).
        routing_key: the key producers publish with and queues are bound with.
        queues: queue names; empty means one generated queue.
        queue_pattern: True when `queues` came from a pattern (each bound with its name).
        quorum: declare quorum queues.
        persistent: publish with delivery_mode 2.
        mandatory: publish with the mandatory flag.
        consumer_latency_us: microseconds each consumer spends per message.
        producer_base: the first producer's number (--processes, --workers-expected: each
            process runs producers producer_base.. of the whole run's, ids unique).
        consumer_base: the first consumer's number, likewise.
    """

    urls: list[BrokerURL]
    producers: int = 1
    consumers: int = 1
    size: int = MIN_SIZE
    rate: float = 0.0
    variable_rate: list[tuple[float, float]] = field(default_factory=list)
    duration: float | None = None
    pmessages: int = 0
    cmessages: int = 0
    confirm: int = 0
    multi_ack_every: int = 0
    qos: int = 0
    autoack: bool = False
    exchange: str = ""
    exchange_type: str = ""
    routing_key: str | None = None
    queues: list[str] = field(default_factory=list)
    queue_pattern: bool = False
    quorum: bool = False
    persistent: bool = False
    mandatory: bool = False
    consumer_latency_us: int = 0
    # --processes / --workers-expected (perf_scale): this process's share of the run.
    producer_base: int = 0
    consumer_base: int = 0


@dataclass
class RunStats:
    """Counters and histograms of a run; `tick()` takes the per-second figures.

    Attributes:
        published: messages published.
        confirmed_by_producer: publishes the broker confirmed (acked), per producer;
            during the run as far as the sampled confirms tell, exact at the end.
        nacked: publishes the broker nacked (or lost with the channel).
        returned: mandatory publishes returned unroutable.
        consumed: messages received (duplicates included).
        latency_us: consumer latency (publish to receive) over the run, microseconds.
        confirm_latency_us: publish to confirm over the run, microseconds (sampled: the
            first publish of each loop tick's batch).
        tick_latency_us: consumer latency since the last `tick()`.
        tick_confirm_us: confirm latency since the last `tick()`.
        untimed: received messages without a usable timestamp.
        sequences: loss and duplicate accounting, one tracker per queue.
        order_checks: order accounting, one per consumer.
        sent_by_producer: messages each producer published.
        routes: the queues each producer's messages reach.
        started: perf_counter at the start of publishing.
        ended: perf_counter when publishing stopped.
        last_received: perf_counter of the last batch of deliveries.
        cpu_start: process CPU seconds at the start.
        cpu_end: process CPU seconds at the end.
    """

    published: int = 0
    confirmed_by_producer: dict[int, int] = field(default_factory=dict)
    nacked: int = 0
    returned: int = 0
    consumed: int = 0
    latency_us: LatencyHistogram = field(default_factory=LatencyHistogram)
    confirm_latency_us: LatencyHistogram = field(default_factory=LatencyHistogram)
    tick_latency_us: LatencyHistogram = field(default_factory=LatencyHistogram)
    tick_confirm_us: LatencyHistogram = field(default_factory=LatencyHistogram)
    untimed: int = 0
    sequences: dict[str, SequenceTracker] = field(default_factory=dict)
    order_checks: list[OrderCheck] = field(default_factory=list)
    sent_by_producer: dict[int, int] = field(default_factory=dict)
    routes: dict[int, list[str]] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    last_received: float = 0.0
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def tick(self) -> tuple[LatencyHistogram, LatencyHistogram]:
        """The last second's latency histograms (consumer, confirm); starts new ones.

        Returns:
            (consumer latency, confirm latency) since the previous tick.
        """
        out = (self.tick_latency_us, self.tick_confirm_us)
        self.tick_latency_us = LatencyHistogram()
        self.tick_confirm_us = LatencyHistogram()
        return out

    @property
    def confirmed(self) -> int:
        """Publishes the broker confirmed (acked), over all producers."""
        return sum(self.confirmed_by_producer.values())

    def lost(self) -> int:
        """Messages sent towards a consumed queue that never arrived there.

        Returns:
            The count, over all consumed queues.
        """
        total = 0
        for queue, tracker in self.sequences.items():
            sent = {p: n for p, n in self.sent_by_producer.items() if queue in self.routes[p]}
            total += tracker.lost(sent)
        return total

    def duplicates(self) -> int:
        """Messages received more than once.

        Returns:
            The count, over all consumed queues.
        """
        return sum(t.duplicates() for t in self.sequences.values())

    def out_of_order(self) -> int:
        """Messages a consumer got after a later one of the same producer.

        Returns:
            The count, over all consumers.
        """
        return sum(check.out_of_order for check in self.order_checks)


class _Stop:
    """Why and when the run stops; shared by every task of the run."""

    def __init__(self, config: BenchConfig) -> None:
        self.publishing = asyncio.Event()  # set: producers stop
        self.producers_left = config.producers
        self.consumers_left = config.consumers if config.cmessages else 0


async def _open(
    url: BrokerURL, name: str, confirms: bool, window: int
) -> tuple[Connection, Channel]:
    conn = Connection(url, reconnect=False, name=name)
    await conn.connect()
    try:
        ch = await conn.channel(confirms=confirms, max_unconfirmed=max(1, window))
    except BaseException:
        await conn.close()
        raise
    return conn, ch


async def declare_topology(config: BenchConfig) -> dict[int, list[str]]:
    """Declare the exchange and queues and bind them; decide where each producer publishes.

    Args:
        config: the run's options (a generated queue name is filled into `queues`).

    Returns:
        Each producer's queues, the ones its messages reach.

    Raises:
        BrokerError: the broker refused a declaration (406 PRECONDITION_FAILED for a
            queue that exists with other arguments, say).
    """
    if not config.queues:
        config.queues = [f"munggoggo-bench-{uuid.uuid4().hex[:8]}"]
    if config.exchange and config.routing_key is None and not config.queue_pattern:
        config.routing_key = f"munggoggo-bench-{uuid.uuid4().hex[:8]}"
    conn, ch = await _open(config.urls[0], "munggoggo-bench-setup", False, 1)
    try:
        if config.exchange and config.exchange_type:
            await ch.exchange_declare(config.exchange, config.exchange_type, durable=True)
        arguments = {"x-queue-type": "quorum"} if config.quorum else {}
        for queue in config.queues:
            # Durable even without --flag persistent: RabbitMQ 4 refuses transient queues
            # that are not exclusive, and ours are shared by several connections.
            await ch.queue_declare(
                queue, durable=True, auto_delete=not config.quorum, arguments=arguments
            )
            if config.exchange:
                key = queue if config.queue_pattern else config.routing_key or ""
                await ch.queue_bind(queue, config.exchange, key)
    finally:
        await conn.close()
    routes: dict[int, list[str]] = {}
    for p in range(config.producer_base, config.producer_base + config.producers):
        if not config.exchange or config.queue_pattern:
            routes[p] = [config.queues[p % len(config.queues)]]
        else:
            routes[p] = list(config.queues)  # every queue is bound with the one key
    return routes


def _rate_at(config: BenchConfig, elapsed: float) -> float:
    if not config.variable_rate:
        return config.rate
    cycle = sum(seconds for _, seconds in config.variable_rate)
    at = elapsed % cycle
    for rate, seconds in config.variable_rate:
        if at < seconds:
            return rate
        at -= seconds
    return config.variable_rate[-1][0]


async def _produce(
    pid: int, ch: Channel, config: BenchConfig, stats: RunStats, stop: _Stop, key: str
) -> None:
    confirms = config.confirm > 0
    template = PropertiesTemplate(pid, persistent=config.persistent)
    pad = bytes(max(0, config.size - MIN_SIZE))
    pack = _HEAD.pack
    publish = ch.publish
    exchange, mandatory = config.exchange, config.mandatory
    limit = config.pmessages
    samples: deque[tuple[int, int]] = deque()
    sampled = asyncio.Event()

    nacked = [0]

    def on_failure(failures: list[tuple[int, Exception]]) -> None:
        nacked[0] += len(failures)
        stats.nacked += len(failures)

    ch.on_publish_failure = on_failure
    watcher = None
    if confirms:
        watcher = asyncio.create_task(_watch_confirms(pid, ch, samples, sampled, stats, nacked))
    seq = 0
    start = time.perf_counter()
    # Pacing: the messages due at a rate are counted from when that rate began (a
    # --variable-rate step starts a new count), so each step's rate is met on average.
    paced_rate, paced_since, paced_from = -1.0, 0.0, 0
    try:
        while not stop.publishing.is_set() and (not limit or seq < limit):
            elapsed = time.perf_counter() - start
            rate = _rate_at(config, elapsed)
            if rate != paced_rate:
                paced_rate, paced_since, paced_from = rate, elapsed, seq
            batch = _MAX_BATCH if not confirms else min(_MAX_BATCH, config.confirm)
            if rate > 0:
                sent = seq - paced_from
                due = int(rate * (elapsed - paced_since)) + 1 - sent
                if due <= 0:
                    await asyncio.sleep(min(0.05, (sent + 1) / rate - (elapsed - paced_since)))
                    continue
                batch = min(batch, due)
            if limit:
                batch = min(batch, limit - seq)
            now_ns = time.time_ns()
            for _ in range(batch):
                body = pack(((seq + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000, now_ns) + pad
                last = publish(body, exchange, key, template.encode(seq), mandatory=mandatory)
                seq += 1
            if confirms:
                samples.append((last - batch + 1, time.perf_counter_ns()))
                sampled.set()
            stats.published += batch
            stats.sent_by_producer[pid] = seq
            await ch.drain()
            await asyncio.sleep(0)  # the tick's write goes out, deliveries come in
    finally:
        if watcher is not None:
            # Nacks are counted by on_failure; a timeout leaves the rest unconfirmed.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ch.wait_confirms(), 10.0)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            stats.confirmed_by_producer[pid] = seq - ch.unconfirmed - nacked[0]
        stop.producers_left -= 1
        if stop.producers_left == 0:
            stats.ended = time.perf_counter()


async def _watch_confirms(
    pid: int,
    ch: Channel,
    samples: deque[tuple[int, int]],
    sampled: asyncio.Event,
    stats: RunStats,
    nacked: list[int],
) -> None:
    """Time the sampled publishes from publish to confirm (or nack)."""
    while True:
        if not samples:
            sampled.clear()
            await sampled.wait()
            continue
        seq, sent = samples[0]
        with contextlib.suppress(Exception):  # a nack still ends the wait: its time counts
            await ch.wait_confirms(upto=seq)
        samples.popleft()
        stats.confirmed_by_producer[pid] = seq - nacked[0]
        us = (time.perf_counter_ns() - sent) // 1000
        stats.confirm_latency_us.record(us)
        stats.tick_confirm_us.record(us)


async def _consume(
    cid: int, ch: Channel, queue: str, config: BenchConfig, stats: RunStats, stop: _Stop
) -> None:
    tracker = stats.sequences.setdefault(queue, SequenceTracker())
    order = OrderCheck()
    stats.order_checks.append(order)
    limit = config.cmessages
    done = asyncio.Event()
    received = 0
    unacked = 0
    latency_s = config.consumer_latency_us / 1_000_000
    backlog: deque[Delivery] = deque()
    wake = asyncio.Event()

    def account(d: Delivery) -> None:
        nonlocal received, unacked
        received += 1
        stats.consumed += 1
        body = d.body
        if len(body) >= MIN_SIZE:
            now_ns = time.time_ns()
            _, raw = _HEAD.unpack_from(body)
            sent = sent_at_ns(raw, now_ns)
            if sent is None:
                stats.untimed += 1
            else:
                us = (now_ns - sent) // 1000
                stats.latency_us.record(us)
                stats.tick_latency_us.record(us)
        identity = read_identity(d.properties.headers)
        if identity is not None:
            tracker.observe(identity[0], identity[1])
            order.observe(identity[0], identity[1])
        if config.autoack:
            pass
        elif config.multi_ack_every:
            unacked += 1
            if unacked >= config.multi_ack_every:
                ch.ack(d.delivery_tag, multiple=True)
                unacked = 0
        else:
            ch.ack_later(d.delivery_tag, ch.generation)
        if limit and received >= limit:
            done.set()

    def on_batch(batch: list[Delivery]) -> None:
        stats.last_received = time.perf_counter()
        if done.is_set():
            return  # over --cmessages: left unacked, the broker requeues them at cancel
        if latency_s:
            backlog.extend(batch)
            wake.set()
            return
        for d in batch:
            account(d)
            if done.is_set():
                break

    async def slow_worker() -> None:
        while True:
            if not backlog:
                wake.clear()
                await wake.wait()
                continue
            if latency_s >= 0.001:
                await asyncio.sleep(latency_s)
            else:
                # Below a millisecond the loop's timers are too coarse: spin, as a consumer
                # doing that much CPU work would (it holds up this process's other tasks).
                until = time.perf_counter() + latency_s
                while time.perf_counter() < until:
                    pass
            if not done.is_set():
                account(backlog.popleft())

    worker = asyncio.create_task(slow_worker()) if latency_s else None
    tag = await ch.consume(queue, on_batch, no_ack=config.autoack)
    try:
        await done.wait()
    finally:
        if worker is not None:
            worker.cancel()
        if limit:
            stop.consumers_left -= 1
        with contextlib.suppress(Exception):
            await ch.cancel(tag)


async def _drain(stats: RunStats) -> None:
    """After publishing: wait while deliveries keep coming and some are still missing."""
    deadline = time.perf_counter() + _DRAIN_MAX
    last, quiet_since = stats.consumed, time.perf_counter()
    while time.perf_counter() < deadline and stats.lost() > 0:
        await asyncio.sleep(0.05)
        if stats.consumed != last:
            last, quiet_since = stats.consumed, time.perf_counter()
        elif time.perf_counter() - quiet_since > _DRAIN_STALL:
            return


async def run_bench(
    config: BenchConfig,
    stats: RunStats,
    on_second: Callable[[RunStats, float], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the load: declare, consume, publish until a stop condition, drain.

    Args:
        config: the options.
        stats: filled as the run goes (read it even when this raises).
        on_second: called about once a second with the stats and the seconds since start.
        before_start: awaited when every connection is open and the consumers are
            starting, before the first publish (a start barrier of several processes).

    Raises:
        BrokerError: the broker refused a declaration, a consume or a publish.
        AMQPConnectError: a broker could not be reached or refused the login.
    """
    stats.routes = await declare_topology(config)
    for p in range(config.producer_base, config.producer_base + config.producers):
        stats.sent_by_producer[p] = 0
    consumed_queues: set[str] = set()
    links: list[tuple[Connection, Channel]] = []
    stop = _Stop(config)
    tasks: list[asyncio.Task[None]] = []
    reporter: asyncio.Task[None] | None = None
    try:
        consumers = []
        for c in range(config.consumer_base, config.consumer_base + config.consumers):
            queue = config.queues[c % len(config.queues)]
            consumed_queues.add(queue)
            url = config.urls[(config.producer_base + config.producers + c) % len(config.urls)]
            conn, ch = await _open(url, f"munggoggo-bench-consumer-{c}", False, 1)
            links.append((conn, ch))
            if config.qos:
                await ch.basic_qos(config.qos)
            consumers.append((c, ch, queue))
        for queue in consumed_queues:
            stats.sequences[queue] = SequenceTracker()
        producers = []
        for p in range(config.producer_base, config.producer_base + config.producers):
            url = config.urls[p % len(config.urls)]
            confirms = config.confirm > 0
            conn, ch = await _open(url, f"munggoggo-bench-producer-{p}", confirms, config.confirm)

            def on_return(_: Delivery) -> None:
                stats.returned += 1

            ch.on_return = on_return
            links.append((conn, ch))
            if config.exchange and not config.queue_pattern:
                key = config.routing_key or ""
            else:
                key = stats.routes[p][0]
            producers.append((p, ch, key))
        consumer_tasks = [
            asyncio.create_task(_consume(c, ch, q, config, stats, stop)) for c, ch, q in consumers
        ]
        tasks.extend(consumer_tasks)
        if before_start is not None:  # --processes / --workers-expected: start together
            await before_start()
        stats.cpu_start = time.process_time()
        stats.started = time.perf_counter()
        producer_tasks = [
            asyncio.create_task(_produce(p, ch, config, stats, stop, key))
            for p, ch, key in producers
        ]
        tasks.extend(producer_tasks)
        if on_second is not None:
            reporter = asyncio.create_task(_report(stats, on_second))
        await _until_stop(config, stop, producer_tasks, consumer_tasks)
        stop.publishing.set()
        await asyncio.gather(*producer_tasks)
        if not config.cmessages:
            await _drain(stats)
    finally:
        stop.publishing.set()
        if not stats.ended:
            stats.ended = time.perf_counter()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        stats.cpu_end = time.process_time()
        for conn, _ in links:
            with contextlib.suppress(Exception):
                await conn.close()


async def _until_stop(
    config: BenchConfig,
    stop: _Stop,
    producer_tasks: list[asyncio.Task[None]],
    consumer_tasks: list[asyncio.Task[None]],
) -> None:
    """Return when the run is over; a failed task's error is raised here."""
    waiting: set[asyncio.Task[Any]] = set(producer_tasks) | set(consumer_tasks)
    deadline = None if config.duration is None else time.perf_counter() + config.duration
    while waiting:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        done, waiting = await asyncio.wait(
            waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if deadline is not None and time.perf_counter() >= deadline:
            return
        producers_done = all(t.done() for t in producer_tasks)
        consumers_done = config.cmessages and all(t.done() for t in consumer_tasks)
        if producers_done and (consumers_done or not config.cmessages):
            return
        if consumers_done and not config.pmessages:
            return


async def _report(stats: RunStats, on_second: Callable[[RunStats, float], None]) -> None:
    start = stats.started
    n = 1
    while True:
        await asyncio.sleep(max(0.0, start + n - time.perf_counter()))
        on_second(stats, time.perf_counter() - start)
        n += 1
