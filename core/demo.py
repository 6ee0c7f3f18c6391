"""The demo mesh behind `munggoggo demo`: the seed's two ping agents plus a calculator
agent with exposed methods, and a behaviour that calls it by RPC every second."""

from __future__ import annotations

import asyncio

import msgspec

from .agent import Agent
from .behaviour import Behaviour
from .behaviour_kinds import PeriodicBehaviour
from .rpc import RpcError, expose


class Reading(msgspec.Struct):
    """A typed message body: sent as JSON, decoded back with `msg.decode(Reading)`."""

    sensor: str
    value: float


class PingAgent(Agent):
    """The seed's example: publish a counter on topic 'ping', print what arrives."""

    class PingBehav(Behaviour):
        async def setup(self) -> None:
            self.counter = 0

        async def run(self) -> None:
            self.counter += 1
            msg = await self.receive(timeout=1.0)
            if msg:
                print(
                    f"{self.agent.identity}: ping #{msg.body.decode()} from {msg.sender}",
                    flush=True,
                )
            await self.publish(str(self.counter), "ping")
            await asyncio.sleep(0.9)

    async def setup(self) -> None:
        await self.add_runtime_dependency(self.PingBehav(self, binding_keys=["ping"]))


class CalculatorAgent(Agent):
    """Exposes methods callable by RPC from any agent, `munggoggo ctl call` or the gateway."""

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b

    @expose
    def add(self, a: float, b: float) -> float:
        return a + b

    @expose
    def mean(self, readings: list[Reading]) -> float:
        if not readings:
            raise ValueError("no readings")
        return sum(r.value for r in readings) / len(readings)


class AskingAgent(Agent):
    """Calls the calculator once a second and prints the answer."""

    class Ask(PeriodicBehaviour):
        async def setup(self) -> None:
            self.n = 0

        async def run(self) -> None:
            self.n += 1
            try:
                product = await self.call("calculator", "mul", self.n, 7, timeout=2.0)
                print(f"{self.agent.identity}: calculator.mul({self.n}, 7) = {product}", flush=True)
            except RpcError as exc:
                print(f"{self.agent.identity}: call failed: {exc}", flush=True)

    async def setup(self) -> None:
        await self.add_behaviour(self.Ask(self, period=1.0))


def demo_agents(url: str) -> list[Agent]:
    return [
        PingAgent("ping-1", url=url),
        PingAgent("ping-2", url=url),
        CalculatorAgent("calculator", url=url),
        AskingAgent("asker", url=url),
    ]
