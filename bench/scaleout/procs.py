"""The processes of `python -m bench scaleout`: one producer, N competing consumers.

Each runs in its own interpreter (multiprocessing, spawn) with its own event loop on uvloop
and its own agent and connection, the way agents are deployed (one pod, one process). They
talk to the parent only through shared memory: a counter per process that the parent reads
when it samples, and an Event that tells them to stop. Nothing per message crosses
processes except the counter store (a few ns).

- `consume`: an agent whose behaviour subscribes the work topic through the shared queue
  (`Behaviour(queue=...)`), decodes each Reading and, when `work_us` > 0, spins the CPU
  that long, as a handler with real work would;
- `produce`: an agent publishing Readings on the work topic at full speed (confirmed, the
  unconfirmed window is the only brake) until told to stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from munggoggo import Agent, AgentConfig, Behaviour, OneShotBehaviour
from munggoggo.client import install_uvloop
from munggoggo.perf_agents import spin  # the CPU work of `munggoggo bench -L`

from ..mesh import NOTE, Reading

# Queues vanish 30 s after the last consumer left; no metrics, like the throughput scenarios.
CONFIG = AgentConfig(behaviour_queue_expires_ms=30_000, metrics=False)


async def _until_stopped(stop: Any) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.05)


class Work(Behaviour):
    counts: Any  # multiprocessing Array, one slot per process
    slot: int
    work: float  # seconds of CPU per message

    async def setup(self) -> None:
        self.done = 0

    async def run(self) -> None:
        msg = await self.receive(timeout=0.5)
        if msg is None:
            return
        msg.decode(Reading)
        if self.work:
            spin(self.work)
        self.done += 1
        self.counts[self.slot] = self.done


async def _consume(spec: dict[str, Any], slot: int, counts: Any, ready: Any, stop: Any) -> None:
    config = dataclasses.replace(CONFIG, queue_type=spec["queue_type"])
    agent = Agent(f"scaleout-{spec['rid']}-c{slot}", url=spec["url"], config=config)
    async with agent:
        work = Work(agent, binding_keys=[spec["key"]], queue=spec["queue"])
        work.counts, work.slot, work.work = counts, slot, spec["work_us"] / 1e6
        await agent.add_behaviour(work)
        ready.set()
        await _until_stopped(stop)


def consume(spec: dict[str, Any], slot: int, counts: Any, ready: Any, stop: Any) -> None:
    install_uvloop()
    asyncio.run(_consume(spec, slot, counts, ready, stop))


class Flood(OneShotBehaviour):
    counts: Any
    slot: int
    halt: Any  # the parent's stop Event (`stop` is Behaviour's own method)
    key: str

    async def run(self) -> None:
        key, counts, slot, stop = self.key, self.counts, self.slot, self.halt
        reading = Reading("sensor-0042", 0, 21.5, "celsius", NOTE)
        sent = 0
        while not stop.is_set():
            for _ in range(1000):
                await self.publish(reading, key)
            sent += 1000
            counts[slot] = sent


async def _produce(spec: dict[str, Any], slot: int, counts: Any, ready: Any, stop: Any) -> None:
    config = dataclasses.replace(CONFIG, queue_type=spec["queue_type"])
    agent = Agent(f"scaleout-{spec['rid']}-producer", url=spec["url"], config=config)
    async with agent:
        flood = Flood(agent)
        flood.counts, flood.slot, flood.halt, flood.key = counts, slot, stop, spec["key"]
        ready.set()
        await agent.add_behaviour(flood)
        await _until_stopped(stop)
        await flood.stop(timeout=10)


def produce(spec: dict[str, Any], slot: int, counts: Any, ready: Any, stop: Any) -> None:
    install_uvloop()
    asyncio.run(_produce(spec, slot, counts, ready, stop))
