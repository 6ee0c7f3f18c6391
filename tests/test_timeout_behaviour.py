"""core/timed.py: TimeoutBehaviour runs once at a datetime, on RabbitMQ and memory://.

It runs no earlier than `start_at` (naive local or aware), at once when that has passed,
exactly once, then is done; killed while it waits, it never runs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import Agent, TimeoutBehaviour

pytestmark = pytest.mark.timeout(60)


class Alarm(TimeoutBehaviour):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rang_at: list[float] = []
        self.ended = 0

    async def run(self) -> None:
        self.rang_at.append(time.time())

    async def on_end(self) -> None:
        self.ended += 1


@pytest.mark.parametrize("clock", ["naive local", "aware UTC"])
async def test_it_runs_once_no_earlier_than_start_at(mesh_url, clock):
    now = datetime.now() if clock == "naive local" else datetime.now(UTC)
    start_at = now + timedelta(seconds=0.5)
    async with Agent(uid("alarm"), url=mesh_url) as agent:
        alarm = await agent.add_behaviour(Alarm(agent, start_at=start_at))
        assert alarm.describe()["kind"] == "timeout"
        assert alarm.describe()["start_at"] == start_at.isoformat()
        await alarm.join(timeout=5)
        assert len(alarm.rang_at) == 1
        assert alarm.rang_at[0] >= start_at.timestamp()
        assert alarm.rang_at[0] < start_at.timestamp() + 1.0  # and not long after
        assert alarm.state == "done" and alarm.exit_code == 0 and alarm.ended == 1


async def test_a_start_at_in_the_past_runs_at_once(mesh_url):
    async with Agent(uid("alarm"), url=mesh_url) as agent:
        started = time.time()
        alarm = await agent.add_behaviour(
            Alarm(agent, start_at=datetime.now(UTC) - timedelta(hours=1))
        )
        await alarm.join(timeout=5)
        assert len(alarm.rang_at) == 1 and alarm.rang_at[0] - started < 1.0


async def test_killed_while_it_waits_it_never_runs(mesh_url):
    async with Agent(uid("alarm"), url=mesh_url) as agent:
        alarm = await agent.add_behaviour(
            Alarm(agent, start_at=datetime.now(UTC) + timedelta(minutes=10))
        )
        assert await wait_until(lambda: alarm.state == "running")
        alarm.kill(exit_code="cancelled")
        await alarm.join(timeout=5)
        assert alarm.rang_at == [] and alarm.state == "stopped"
        assert alarm.exit_code == "cancelled" and alarm.ended == 1


def test_start_at_must_be_a_datetime():
    agent = Agent(uid("alarm"), url="memory://alarm-types")
    with pytest.raises(TypeError, match="datetime"):
        TimeoutBehaviour(agent, start_at=time.time() + 5)  # type: ignore[arg-type]
