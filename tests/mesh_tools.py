"""What many agent tests share: names no other test or run uses, behaviours that keep what
they receive, a Message made by hand (`delivered`), a private queue that sees what is
dead-lettered (and the cleanup of the shared dead-letter queue), and `Calc`, the agent RPC
tests call.

`Calc` carries the methods of the examples in section 7 of the JSON-RPC 2.0 specification
(subtract, sum, update, notify_hello, get_data) for the gateway tests, what the runtime's
RPC tests call (mul, div, norm with a typed parameter, schedule whose parameter names are
also call()'s keywords, a method that is not exposed), what the limits tests need (a slow
method, one that fails with its own RpcError, one that raises, a non-finite result), and a
behaviour that records what it receives on topic `<identity>.events` (and can be started
and stopped).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec

from munggoggo import Agent, Behaviour, Message, RpcError, expose
from munggoggo._speedups import DELIVER, Delivery, Properties
from munggoggo.agent import DEAD_LETTER_EXCHANGE
from munggoggo.deadletters import DeadLetters

FAILURE_CODE = -32050


def uid(prefix: str) -> str:
    """`prefix` and 8 random hex digits: a queue, topic or identity of this test alone."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class BodyCollector(Behaviour):
    """Keeps the body of each message in `bodies`; a message is settled when the next one
    is received (or the step ends)."""

    async def setup(self) -> None:
        self.bodies: list[bytes] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            self.bodies.append(msg.body)


class MessageCollector(Behaviour):
    """Keeps each message it receives in `got`; acks by receiving the next one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.got: list[Message] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            self.got.append(msg)


def delivered(body: bytes = b"", routing_key: str = "", **properties: Any) -> Message:
    """A Message over a hand-made delivery of `body` with these AMQP properties, as a
    behaviour would receive it; it belongs to no channel (it counts as settled)."""
    delivery = Delivery(1, DELIVER)
    delivery.body = body
    delivery.routing_key = routing_key
    delivery.properties = Properties(**properties)
    return Message(delivery, None)


class Point(msgspec.Struct):
    x: int
    y: int


def events_topic(identity: str) -> str:
    """The topic `Calc`'s Recorder behaviour listens on."""
    return f"{identity}.events"


class Calc(Agent):
    class Recorder(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.agent.received.append((msg.routing_key, msg.decode()))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[list[Any]] = []
        self.hellos: list[Any] = []
        self.received: list[tuple[str, Any]] = []

    async def setup(self) -> None:
        await self.add_behaviour(self.Recorder(self, binding_keys=[events_topic(self.identity)]))

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b

    @expose
    def div(self, a: float, b: float) -> float:
        return a / b

    @expose
    def norm(self, p: Point) -> int:
        return p.x * p.x + p.y * p.y

    @expose
    def schedule(self, target: str, method: str, timeout: int) -> str:
        return f"{target}.{method} in {timeout}s"

    def not_exposed(self) -> str:
        return "secret"

    @expose
    def subtract(self, minuend: int, subtrahend: int) -> int:
        return minuend - subtrahend

    @expose
    def sum(self, a: int = 0, b: int = 0, c: int = 0, d: int = 0, e: int = 0) -> int:
        return a + b + c + d + e

    @expose
    def update(self, a: int, b: int, c: int, d: int, e: int) -> None:
        self.updates.append([a, b, c, d, e])

    @expose
    def notify_hello(self, value: int) -> None:
        self.hellos.append(value)

    @expose
    def get_data(self) -> list[Any]:
        return ["hello", 5]

    @expose
    def echo(self, value: Any = None) -> Any:
        return value

    @expose
    def non_finite(self, kind: str = "inf") -> Any:
        """A result JSON cannot carry: inf, -inf or NaN (alone or nested)."""
        values = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
        if kind in values:
            return values[kind]
        return {"nested": [1.0, {"deep": values[kind.removeprefix("nested-")]}]}

    @expose
    async def slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @expose
    def fail(self) -> None:
        raise RpcError(FAILURE_CODE, "calc refuses", {"why": "asked to"})

    @expose
    def crash(self) -> None:
        raise ZeroDivisionError("division by zero")


async def purge_dead_letters(agent: Agent, of: str) -> None:
    """Take a test's dead letters out of the shared munggoggo.dead-letters again (they are
    routed there together with the test's private queue, so they are there by now)."""
    assert (await DeadLetters(agent.connection).purge(all=True, agent=of)).purged >= 1


async def dead_letter_queue(agent: Agent, source_queue: str) -> list:
    """A private queue on munggoggo.dlx that sees what gets dead-lettered from `source_queue`."""
    ch = await agent.connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    await ch.queue_bind(q.queue, DEAD_LETTER_EXCHANGE, source_queue)
    got: list = []

    def on_batch(batch):
        got.extend(batch)
        ch.ack(batch[-1].delivery_tag, multiple=True)

    await ch.consume(q.queue, on_batch)
    return got
