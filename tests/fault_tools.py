"""What the fault tests share: a numbered confirmed stream, a counting consumer, agent
behaviours that publish and collect numbers, deadlines that fail the test, cleanup.

The promise every fault test checks: each message the broker confirmed is consumed at
least once (counted by its number, duplicates counted and printed), each one it did not
confirm was reported to the publisher (on_publish_failure), and the connections or agents
recovered on their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from broker_tools import rabbitmqctl, wait_until

from munggoggo import Behaviour
from munggoggo._speedups import Properties
from munggoggo.channel import PublishError
from munggoggo.client import Connection


async def delete_queues(url: str, *names: str) -> None:
    """Delete test queues through a fresh connection (the test's own may be broken)."""
    async with Connection(url, reconnect=False) as admin:
        ch = await admin.channel(confirms=False)
        for name in names:
            await ch.queue_delete(name)


class ConfirmedStream:
    """Publishes numbered messages (body and message_id = the number) to `queue` through
    the default exchange on a confirm channel, in batches, until `finish()`."""

    def __init__(self, ch, queue: str, *, persistent: bool = False, batch: int = 100) -> None:
        self.ch = ch
        self.queue = queue
        self.batch = batch
        self.delivery_mode = 2 if persistent else None
        self.numbers: dict[int, int] = {}  # confirm sequence number -> message number
        self.failures: list[tuple[int, Exception]] = []
        ch.on_publish_failure = self.failures.extend
        self.sent = 0
        self.fault_batch: list[int] = []  # seqs published right before the injected fault
        self._fault: Callable[[], object] | None = None
        self._stop = False
        self._task: asyncio.Future[None] | None = None

    def start(self) -> ConfirmedStream:
        self._task = asyncio.ensure_future(self._run())
        return self

    def fault_after_next_batch(self, fault: Callable[[], object]) -> None:
        """Run `fault()` right after the next batch was queued, before it can be
        confirmed: that batch is certainly unconfirmed when the fault hits."""
        self._fault = fault

    async def _run(self) -> None:
        ch, queue, numbers = self.ch, self.queue, self.numbers
        while not self._stop:
            seqs = []
            for _ in range(self.batch):
                n = self.sent
                props = Properties(message_id=str(n), delivery_mode=self.delivery_mode)
                seq = ch.publish(str(n).encode(), "", queue, props)
                numbers[seq] = n
                seqs.append(seq)
                self.sent += 1
            if self._fault is not None:
                fault, self._fault = self._fault, None
                self.fault_batch = seqs
                fault()
            await ch.drain()
            await asyncio.sleep(0.002)  # keep the stream going while faults are made

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def finish(self, timeout: float = 30.0) -> None:
        """Stop publishing and wait until every publish is settled (confirmed or failed)."""
        self._stop = True
        assert self._task is not None
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            pytest.fail(f"the publisher did not stop within {timeout:g}s (stuck in drain?)")
        try:
            await self.ch.wait_confirms(timeout=timeout)
        except PublishError:
            pass  # reported through on_publish_failure as well: counted from there
        except TimeoutError:
            pytest.fail(
                f"{self.ch.unconfirmed} publishes neither confirmed nor failed within {timeout:g}s"
            )
        assert self.ch.unconfirmed == 0

    @property
    def failed_numbers(self) -> set[int]:
        return {self.numbers[seq] for seq, _ in self.failures}

    @property
    def confirmed_numbers(self) -> set[int]:
        return set(self.numbers.values()) - self.failed_numbers


class Consumed:
    """Counts the numbers a consumer received (a list: duplicates stay visible)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.channel = None

    async def start(self, conn: Connection, queue: str, prefetch: int = 500):
        ch = self.channel = await conn.channel(confirms=False, prefetch_count=prefetch)
        seen = self.seen

        def on_batch(batch):
            seen.extend(int(d.body) for d in batch)
            ch.ack(batch[-1].delivery_tag, multiple=True)

        await ch.consume(queue, on_batch)
        return ch

    def add(self, number: int) -> None:
        self.seen.append(number)

    async def wait_for(self, expected: set[int], timeout: float = 30.0) -> None:
        """Wait until every number in `expected` arrived, then a little longer so that
        duplicates still in flight are counted too."""

        def complete() -> bool:
            return len(self.seen) >= len(expected) and expected <= set(self.seen)

        if not await wait_until(complete, timeout=timeout, interval=0.05):
            missing = expected - set(self.seen)
            ch = self.channel
            state = "" if ch is None else f"; consumer {ch!r} consumers={list(ch._consumers)}"
            pytest.fail(
                f"{len(missing)} confirmed message(s) never consumed within {timeout:g}s, "
                f"e.g. {sorted(missing)[:10]}; {len(self.seen)} consumed{state}; broker: "
                + rabbitmqctl(
                    "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
                ).replace("\n", " | ")
            )
        await asyncio.sleep(0.3)

    def report(self, sent: int, confirmed: set[int], failed: set[int]) -> dict[str, int]:
        """The counts a fault test prints and checks."""
        unique = set(self.seen)
        duplicates = sum(c - 1 for c in Counter(self.seen).values() if c > 1)
        counts = {
            "sent": sent,
            "confirmed": len(confirmed),
            "failed_reported": len(failed),
            "consumed": len(unique),
            "duplicates": duplicates,
            "lost": len(confirmed - unique),
        }
        print(" ".join(f"{k}={v}" for k, v in counts.items()))
        return counts


class Producer(Behaviour):
    """Publishes 0, 1, 2, ... to `key` on munggoggo.topic, in small batches per step."""

    key = ""

    async def setup(self) -> None:
        self.sent = 0

    async def run(self) -> None:
        for _ in range(50):
            await self.publish(self.sent, self.key)
            self.sent += 1  # only after publish() took it: a refused publish is not sent
        await asyncio.sleep(0.002)


class Collector(Behaviour):
    """Records every number it receives into `consumed` (acked when the step ends)."""

    consumed: Consumed

    async def run(self) -> None:
        msg = await self.receive(timeout=0.5)
        if msg is not None:
            self.consumed.add(msg.decode(int))


class AgentPipe:
    """A receiver agent with a Collector on a fresh topic and a sender agent whose Producer
    publishes numbers on it; `async with` starts both (consuming before it returns) and at
    the end stops them and deletes the receiver's queue (through `admin_url`)."""

    def __init__(self, admin_url: str, url: str, name: str, config: Any = None) -> None:
        from munggoggo import Agent

        rid = uuid.uuid4().hex[:8]
        self.admin_url = admin_url
        self.key = f"test.{name}.{rid}"
        self.receiver = Agent(f"{name}-rx-{rid}", url=url, config=config)
        self.sender = Agent(f"{name}-tx-{rid}", url=url, config=config)
        self.consumed = Consumed()
        self.failures: list = []  # what the sender's on_publish_failure reported
        self.collector = Collector(self.receiver, binding_keys=[self.key])
        self.collector.consumed = self.consumed
        self.producer = Producer(self.sender)
        self.producer.key = self.key

    async def __aenter__(self) -> AgentPipe:
        try:
            await self.receiver.start()
            await self.receiver.add_behaviour(self.collector)
            await self.sender.start()
            self.sender.on_publish_failure = self.failures.extend
            await self.sender.add_behaviour(self.producer)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.sender.stop()
        await self.receiver.stop()
        if self.collector.queue:
            await delete_queues(self.admin_url, self.collector.queue)

    def both_reconnected(self) -> bool:
        return self.sender.connection.reconnects >= 1 and self.receiver.connection.reconnects >= 1
