"""Misuses of the typed API that `mypy --strict` must reject (tests/test_typing.py).

Every line marked `# rejected` must get an error, and no other line may: had a signature
gone back to Any (an `@expose` that erases its method, a `decode` that returns Any, an
untyped `Behaviour.agent`), its line would pass and the test would fail. Never run.
"""

from __future__ import annotations

import msgspec

from munggoggo import Agent, Behaviour, Message, expose


class Point(msgspec.Struct):
    x: int
    y: int


class Label(msgspec.Struct):
    text: str


class Calculator(Agent):
    unit: str = "m"

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b


class Doubler(Behaviour[Calculator]):
    async def run(self) -> None:
        await self.agent.mul("x", 2)  # rejected
        self.agent.no_such_attribute = 1  # rejected
        self.agent.unit = 3  # rejected


class NotAnAgent(Behaviour[int]):  # rejected
    pass


async def use(msg: Message) -> None:
    async with Calculator(url="memory://misuse") as calc:
        await calc.mul("x", 2)  # rejected
        text: str = await calc.mul(2, 3)  # rejected
        print(text)
    point: Point = msg.decode(Label)  # rejected
    print(point, msg.decode(Point).z)  # rejected
    Doubler(Agent())  # rejected
