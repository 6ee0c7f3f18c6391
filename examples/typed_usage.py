"""A typed user of munggoggo: passes `mypy --strict`, and runs in well under a second.

An agent subclass with `@expose` methods, a behaviour that reads its own agent's attributes
(`Behaviour[Thermostat]`), `async with` giving the subclass, a message body decoded into a
msgspec Struct, and an RPC call, all on the in-process broker (memory://). `assert_type`
states what a type checker must infer; at run time it returns its argument unchanged.

Run: python examples/typed_usage.py
Check: bash .ci/typecheck (runs `mypy --strict` on this file)
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import msgspec

from munggoggo import Agent, Behaviour, Message, OneShotBehaviour, expose

URL = "memory://typed-usage"


class Reading(msgspec.Struct, frozen=True):
    """One temperature reading, published as JSON on `readings.<room>`."""

    room: str
    celsius: float


class Thermostat(Agent):
    """Keeps the last reading of each room and answers questions about them by RPC."""

    def __init__(self, identity: str, *, url: str) -> None:
        super().__init__(identity, url=url)
        self.latest: dict[str, float] = {}
        self.got_reading = asyncio.Event()

    async def setup(self) -> None:
        """Subscribe to every room's readings."""
        collector = await self.add_behaviour(Collector(self, binding_keys=["readings.*"]))
        assert_type(collector, Collector)

    @expose
    def temperature(self, room: str) -> float | None:
        """The last reading of `room`, None before the first."""
        return self.latest.get(room)

    @expose
    async def warmest(self) -> str | None:
        """The room with the highest last reading, None before the first reading."""
        return max(self.latest, key=self.latest.__getitem__, default=None)


class Collector(Behaviour[Thermostat]):
    """Stores each reading in its agent's `latest` (a Thermostat attribute)."""

    async def run(self) -> None:
        """Take one reading, if one arrived within a second."""
        msg = await self.receive(timeout=1.0)
        if msg is None:
            return
        assert_type(msg, Message)
        reading = msg.decode(Reading)
        assert_type(reading, Reading)
        assert_type(self.agent, Thermostat)
        self.agent.latest[reading.room] = reading.celsius
        self.agent.got_reading.set()


class Sensor(OneShotBehaviour):
    """Publishes one reading, then is done (a bare behaviour: its agent is an `Agent`)."""

    async def run(self) -> None:
        """Publish the reading."""
        assert_type(self.agent, Agent)
        await self.publish(Reading("kitchen", 21.5), "readings.kitchen")


async def main() -> None:
    """Start a thermostat and a sensor agent, publish a reading, then ask about it."""
    async with (
        Thermostat("thermostat", url=URL) as thermostat,
        Agent("sensor", url=URL) as sensor,
    ):
        assert_type(thermostat, Thermostat)
        assert_type(sensor, Agent)
        # A direct call type-checks against the exposed method's own signature.
        assert_type(thermostat.temperature("kitchen"), float | None)
        await sensor.add_behaviour(Sensor(sensor))
        await asyncio.wait_for(thermostat.got_reading.wait(), timeout=5)
        celsius: Any = await sensor.call("thermostat", "temperature", "kitchen")
        warmest: Any = await sensor.call("thermostat", "warmest", timeout=5)
        print(f"kitchen: {celsius} °C; warmest room: {warmest}")
        assert celsius == 21.5 and warmest == "kitchen", (celsius, warmest)


if __name__ == "__main__":
    asyncio.run(main())
