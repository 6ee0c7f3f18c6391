"""A smoke test of an installed munggoggo, run by the interpreter it is installed in.

An agent with an `@expose`d method called over memory://, and a publish received by a
behaviour of that agent. Exits non-zero when either fails; prints one JSON line with what it
saw (the version, whether the compiled speedups are loaded and from where, the lines the
`munggoggo` logger received) for tests/test_wheel.py. The release workflow's cibuildwheel
runs it against every wheel it builds (`--compiled`: the compiled speedups must be loaded).

    python -I tests/wheel_smoke.py [--compiled]     (from any folder but the repository)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import munggoggo
import munggoggo._speedups as speedups
from munggoggo import Agent, Behaviour, expose

URL = "memory://wheel-smoke"


class Notices(logging.Handler):
    """Keeps what the `munggoggo` logger itself receives (not its children)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "munggoggo":
            self.lines.append([record.levelname, record.getMessage()])


class Listener(Behaviour):
    """Hands the first message published on smoke.* to its agent's future."""

    async def run(self) -> None:
        msg = await self.receive(timeout=1.0)
        if msg is not None and not self.agent.received.done():
            self.agent.received.set_result(msg.decode(dict))


class Calculator(Agent):
    async def setup(self) -> None:
        self.received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.add_behaviour(Listener(self, binding_keys=["smoke.*"]))

    @expose
    def mul(self, a: int, b: int) -> int:
        return a * b


async def main() -> dict[str, Any]:
    async with Calculator("calc", url=URL) as calc, Agent("caller", url=URL) as caller:
        product = await caller.call("calc", "mul", 6, 7)
        await caller.publish({"n": 1}, "smoke.one")
        received = await asyncio.wait_for(calc.received, 10)
    return {"product": product, "received": received}


if __name__ == "__main__":
    notices = Notices()
    logging.getLogger("munggoggo").addHandler(notices)
    seen = asyncio.run(main())
    seen |= {
        "version": munggoggo.__version__,
        "compiled": speedups.USING_EXTENSIONS,
        "speedups_file": speedups.__file__,
        "notices": notices.lines,
    }
    print(json.dumps(seen))
    ok = seen["product"] == 42 and seen["received"] == {"n": 1}
    if "--compiled" in sys.argv[1:] and not speedups.USING_EXTENSIONS:
        print(speedups.speedups_notice(), file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)
