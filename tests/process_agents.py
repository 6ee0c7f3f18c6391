"""Agent classes that tests/test_agent_process.py runs in subprocesses:
`munggoggo run process_agents:Worker --identity w-1234` with tests/ on PYTHONPATH.

Topics derive from the identity, so a test picks unique topics by picking a unique identity
and a successor started with the same identity works on the same queue:

* `Worker` consumes topic `jobs.<identity>` (queue `<identity>.Work`); for each message it
  sleeps a little, publishes `done <body>` on topic `done.<identity>`, waits until the broker
  confirmed that, and only then lets the message be acked (end of the step). A message is
  therefore acked only after its result is safely in the broker: at-least-once.
* `Idle` has no behaviours: it only holds its identity (the exclusive inbox).
"""

from __future__ import annotations

import asyncio
import os

from munggoggo import Agent, Behaviour, expose

WORK_SECONDS = float(os.environ.get("WORKER_SECONDS_PER_MESSAGE", "0.005"))


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
