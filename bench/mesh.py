"""What the agent-level scenarios share: the message type and the two behaviours.

The behaviours are written the way the README teaches users to write them: the publisher
awaits `self.publish(Reading(...), key)` in a loop inside `run()`; the receiver's `run()`
step is `msg = await self.receive(timeout=math.inf)` (wait for the next message) followed
by `msg.decode(Reading)` (the message is acked by the runtime when the step ends).
Counting is a few integer operations per message; the clock is read once at the start of
the publishing loop and once when the last expected message was decoded.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

import msgspec

from munggoggo import Agent, AgentConfig, Behaviour, OneShotBehaviour, RestartPolicy

from .common import broker_cpu_seconds, check

# Bench queues vanish 30 s after their agent stopped consuming them.
CONFIG = AgentConfig(behaviour_queue_expires_ms=30_000)
WARMUP = 2000


class Reading(msgspec.Struct, gc=False):
    sensor: str
    seq: int
    value: float
    unit: str
    note: str


NOTE = "n" * 30
# {"sensor":"sensor-0042","seq":12345,"value":21.5,"unit":"celsius","note":"nnn..."}
BODY_BYTES = len(msgspec.json.encode(Reading("sensor-0042", 12345, 21.5, "celsius", NOTE)))


def run_id() -> str:
    return uuid.uuid4().hex[:8]


class Tally:
    """Shared by the receiving behaviours of one phase: counts, a checksum, the end time."""

    __slots__ = ("done", "end_ns", "received", "seq_sum", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.received = 0
        self.seq_sum = 0
        self.end_ns = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Receive(Behaviour):
    """Counts decoded Readings into the agent-wide tally."""

    tally: Tally

    async def setup(self) -> None:
        self.count = 0

    async def run(self) -> None:
        msg = await self.receive(timeout=math.inf)
        if msg is None:  # stopping
            return
        reading = msg.decode(Reading)
        self.count += 1
        tally = self.tally
        tally.seq_sum += reading.seq
        tally.received += 1
        if tally.received == tally.target:
            tally.end_ns = time.perf_counter_ns()
            tally.done.set_result(None)


class Publish(OneShotBehaviour):
    """Publishes `count` Readings over `keys` (round robin) in one run() step."""

    restart_policy = RestartPolicy(max_failures=1)  # a failed run is reported, not repeated

    def __init__(self, agent: Agent, keys: list[str], count: int, name: str) -> None:
        super().__init__(agent, name=name)
        self.keys = keys
        self.count = count
        self.start_ns = 0
        self.cpu0 = 0.0
        self.broker0: float | None = None
        self.failed: asyncio.Future[None] = agent.loop.create_future()

    async def run(self) -> None:
        keys = self.keys
        n_keys = len(keys)
        self.broker0 = broker_cpu_seconds()
        self.cpu0 = time.process_time()
        self.start_ns = time.perf_counter_ns()
        try:
            if n_keys == 1:
                key = keys[0]
                for i in range(self.count):
                    await self.publish(Reading("sensor-0042", i, 21.5, "celsius", NOTE), key)
            else:
                for i in range(self.count):
                    await self.publish(
                        Reading("sensor-0042", i, 21.5, "celsius", NOTE), keys[i % n_keys]
                    )
        except Exception as exc:
            if not self.failed.done():
                self.failed.set_exception(exc)
            raise


async def phase(
    sender: Agent, receivers: list[Receive], keys: list[str], count: int, name: str, limit: float
) -> dict[str, Any]:
    """Publish `count` Readings from a new behaviour of `sender`; wait until `receivers`
    decoded all of them. Returns the wall seconds and the figures (seconds, client and
    broker CPU per message); raises if the counts do not add up."""
    tally = Tally(count)
    for r in receivers:
        r.tally = tally
    publisher = Publish(sender, keys, count, name)
    await sender.add_behaviour(publisher)
    finished, _ = await asyncio.wait(
        [tally.done, publisher.failed], timeout=limit, return_when=asyncio.FIRST_COMPLETED
    )
    if publisher.failed.done():
        publisher.failed.result()  # raises the publisher's error
    check(
        tally.done in finished,
        f"{name}: received {tally.received:,} of {count:,} messages within {limit:g}s",
    )
    cpu = time.process_time() - publisher.cpu0
    broker = broker_cpu_seconds()
    wall = (tally.end_ns - publisher.start_ns) / 1e9
    await sender.flush(timeout=10)  # every publish confirmed by the broker
    await asyncio.sleep(0.2)  # anything beyond `count` (a duplicate) would show up now
    check(
        tally.received == count,
        f"{name}: received {tally.received:,} messages, published {count:,}",
    )
    check(
        tally.seq_sum == count * (count - 1) // 2,
        f"{name}: the sequence numbers received do not add up (lost or duplicated messages)",
    )
    figures: dict[str, Any] = {
        "seconds": round(wall, 3),
        "cpu_us_per_msg": round(cpu / count * 1e6, 2),
    }
    if broker is not None and publisher.broker0 is not None:
        figures["broker_cpu_us_per_msg"] = round((broker - publisher.broker0) / count * 1e6, 1)
    return {"wall": wall, "figures": figures}
