"""Agent classes that tests/test_agent_process.py runs in subprocesses:
`munggoggo run process_agents:Worker --identity w-1234` with tests/ on PYTHONPATH.

Topics derive from the identity, so a test picks unique topics by picking a unique identity
and a successor started with the same identity works on the same queue:

* `Worker` consumes topic `jobs.<identity>` (queue `<identity>.Work`); for each message it
  sleeps a little, publishes `done <body>` on topic `done.<identity>`, waits until the broker
  confirmed that, and only then lets the message be acked (end of the step). A message is
  therefore acked only after its result is safely in the broker: at-least-once.
* `Idle` has no behaviours: it only holds its identity (the exclusive inbox).
* `SlowSetup`'s setup() adds a `Work` behaviour, prints `SETUP_WAITING` and waits a minute:
  a SIGTERM meets it in the middle of its start. It prints `SETUP_CANCELLED` when its
  setup() is cancelled.
* `StubbornSetup` is a `SlowSetup` whose setup() ignores the first cancellation (it prints
  `SETUP_CANCELLED` and waits on), with a drain_timeout of a minute: only a second signal
  ends it soon.
* `SlowBehaviourStart` is a `Worker` with a second behaviour whose setup() prints
  `SETUP_WAITING` and waits a minute (cancelled once the 3 s drain_timeout is over): a
  SIGTERM meets the agent while `Work` already consumes and the start still waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from munggoggo import Agent, Behaviour, expose

WORK_SECONDS = float(os.environ.get("WORKER_SECONDS_PER_MESSAGE", "0.005"))
SETUP_WAITING = "setup waiting"
SETUP_CANCELLED = "setup cancelled"


def jobs_topic(identity: str) -> str:
    return f"jobs.{identity}"


def done_topic(identity: str) -> str:
    return f"done.{identity}"


WORK_BEHAVIOUR = "Work"


class Worker(Agent):
    class Work(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.5)
            if msg is None:
                return
            await asyncio.sleep(WORK_SECONDS)
            await self.publish(b"done " + msg.body, done_topic(self.agent.identity))
            await self.agent.flush(timeout=30)
            # the step ends here: the runtime acks `msg`

    async def setup(self) -> None:
        await self.add_behaviour(self.Work(self, binding_keys=[jobs_topic(self.identity)]))

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b


class Idle(Agent):
    @expose
    def hello(self) -> str:
        return f"hello from {self.identity}"


async def wait_a_minute() -> None:
    """Print SETUP_WAITING, wait a minute; print SETUP_CANCELLED if cancelled meanwhile."""
    print(SETUP_WAITING, flush=True)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        print(SETUP_CANCELLED, flush=True)
        raise


class SlowSetup(Agent):
    async def setup(self) -> None:
        await self.add_behaviour(Worker.Work(self, binding_keys=[jobs_topic(self.identity)]))
        await wait_a_minute()


class StubbornSetup(Agent):
    def __init__(self, identity: str | None = None, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs, config={"drain_timeout": 60})

    async def setup(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await wait_a_minute()
        await asyncio.sleep(60)


class SlowBehaviourStart(Worker):
    class Stuck(Behaviour):
        async def setup(self) -> None:
            await wait_a_minute()

    def __init__(self, identity: str | None = None, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs, config={"drain_timeout": 3})

    async def setup(self) -> None:
        await super().setup()  # Work starts first
        await self.add_behaviour(self.Stuck(self))
