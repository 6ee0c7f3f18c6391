"""Presence on RabbitMQ and memory://: agents announce their start and stop on
`munggoggo.fanout` and `agent.on_presence(identity, state)` hears the others; an agent that
crashed is reported stopped once its inbox is gone or unconsumed, or after three silent
intervals; what a callback raises breaks nothing; behaviours never see the announcements.

The shared RabbitMQ broker carries other runs' agents too, so every assertion looks only at
the identities of its own test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import msgspec
import pytest
from broker_tools import eventually
from mesh_tools import MessageCollector, uid

from munggoggo import Agent, AgentConfig, Template
from munggoggo._speedups import Properties, encode_properties
from munggoggo.agent import FANOUT_EXCHANGE

INTERVAL = 0.3  # short for the tests, long enough for a busy 2-core machine
FAST = AgentConfig(presence_interval=INTERVAL, drain_timeout=2.0)


# The event loop's clock grain (uvloop counts milliseconds), for the timing checks.
LOOP_CLOCK_GRAIN = 0.002


class Events:
    """An on_presence callback that keeps (identity, state) pairs of the identities asked
    about, with the loop time of each."""

    def __init__(self, *identities: str) -> None:
        self.watched = set(identities)
        self.seen: list[tuple[str, str]] = []
        self.at: dict[tuple[str, str], float] = {}

    def __call__(self, identity: str, state: str) -> None:
        if identity in self.watched:
            self.seen.append((identity, state))
            self.at.setdefault((identity, state), time.monotonic())

    def watch(self, identity: str) -> None:
        self.watched.add(identity)


def announcement(identity: str, state: str, interval: float | None) -> tuple[bytes, bytes]:
    """A presence message as the wire contract describes it (docs/reference/wire.md)."""
    body = msgspec.json.encode({"identity": identity, "state": state, "interval": interval})
    props = encode_properties(
        Properties(content_type="application/json", type="presence", app_id=identity)
    )
    return body, props


async def test_start_and_clean_stop_are_reported_to_the_others(mesh_url):
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    other_id = uid("pres-other")
    events = Events(other_id, watcher.identity)
    watcher.on_presence = events
    async with watcher:
        other = Agent(other_id, url=mesh_url, config=FAST)
        heard = Events(watcher.identity)
        other.on_presence = heard
        async with other:
            await eventually(lambda: (other_id, "started") in events.seen, what="started")
            # The newcomer knows the running agent at once, from the answer to its own
            # announcement (well before a periodic one could tell it).
            await eventually(lambda: heard.seen == [(watcher.identity, "started")], timeout=5)
            await asyncio.sleep(3 * INTERVAL)  # periodic announcements are no new events
        await eventually(lambda: (other_id, "stopped") in events.seen, timeout=5, what="stopped")
        assert events.seen == [(other_id, "started"), (other_id, "stopped")]  # never itself
        assert watcher.presence is not None and other_id not in watcher.presence.peers


async def test_a_crashed_agent_is_reported_stopped(mesh_url):
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    victim = Agent(uid("pres-crash"), url=mesh_url, config=FAST)
    events = Events(victim.identity)
    watcher.on_presence = events
    async with watcher:
        await victim.start()
        try:
            await eventually(lambda: (victim.identity, "started") in events.seen)
            # A crash: the connection goes without the clean stop (no announcement).
            crashed_at = time.monotonic()
            await victim.connection.close()
            await eventually(
                lambda: (victim.identity, "stopped") in events.seen,
                timeout=10,
                what="the crash reported",
            )
            # Its inbox is unconsumed, which is looked at after 1.5 silent intervals: well
            # within the three intervals of silence.
            assert events.at[(victim.identity, "stopped")] - crashed_at < 3 * INTERVAL + 1.0
        finally:
            await victim.stop()


async def test_silence_alone_reports_an_agent_stopped(mesh_url):
    """A (wire-level) agent that announced itself and whose inbox exists and is consumed
    is reported stopped after three silent intervals, and not before its silence lasted
    one and a half; one without an inbox as soon as that is looked at."""
    interval = 0.5  # theirs: wide windows, the two ways must not overlap
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    silent, ghost = uid("pres-silent"), uid("pres-ghost")
    events = Events(silent, ghost)
    watcher.on_presence = events
    async with watcher:
        ch = await watcher.connection.channel(confirms=False)
        await ch.queue_declare(silent, exclusive=True)
        await ch.consume(silent, lambda batch: None, no_ack=True)
        sent = time.monotonic()
        for identity in (silent, ghost):
            body, props = announcement(identity, "started", interval)
            ch.publish(body, FANOUT_EXCHANGE, "", props)
        await eventually(lambda: (ghost, "stopped") in events.seen, timeout=5, what="ghost")
        await eventually(lambda: (silent, "stopped") in events.seen, timeout=5, what="silent")
        assert events.seen.index((ghost, "started")) < events.seen.index((ghost, "stopped"))
        ghost_after = events.at[(ghost, "stopped")] - sent
        silent_after = events.at[(silent, "stopped")] - sent
        # uvloop's clock (and so its timers) moves in whole milliseconds: a timer may fire
        # up to a millisecond before the same span has passed on time.monotonic().
        assert 1.5 * interval - LOOP_CLOCK_GRAIN <= ghost_after < 3 * interval
        assert 3 * interval - LOOP_CLOCK_GRAIN <= silent_after < 3 * interval + 1.0
        await ch.close()


async def test_callback_failures_break_nothing_and_a_later_callback_hears_on(mesh_url, caplog):
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    first, second = uid("pres-first"), uid("pres-second")
    calls: list[tuple[str, str]] = []

    def failing(identity: str, state: str) -> None:
        if identity in (first, second):
            calls.append((identity, state))
            raise RuntimeError("a broken callback")

    watcher.on_presence = failing
    async with watcher:
        async with Agent(first, url=mesh_url, config=FAST):
            await eventually(lambda: (first, "started") in calls)
        await eventually(lambda: (first, "stopped") in calls, timeout=5)
        assert "on_presence" in caplog.text
        assert await watcher.call(watcher.identity, "ping") == "pong"  # still serving

        heard: list[tuple[str, str]] = []
        done = asyncio.Event()

        async def async_failing(identity: str, state: str) -> None:
            if identity == second:
                heard.append((identity, state))
                if state == "stopped":
                    done.set()
                raise RuntimeError("an async broken callback")

        watcher.on_presence = async_failing  # set while it runs: it hears what follows
        async with Agent(second, url=mesh_url, config=FAST):
            await eventually(lambda: heard == [(second, "started")])
        await asyncio.wait_for(done.wait(), 5)
        assert heard == [(second, "started"), (second, "stopped")]
        assert watcher.state == "running"
        assert await watcher.call(watcher.identity, "ping") == "pong"


async def test_behaviours_never_receive_presence_announcements(mesh_url):
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    other = uid("pres-other")
    events = Events(other)
    watcher.on_presence = events
    async with watcher:
        # Takes every direct message and broadcast from `other`, whatever its kind.
        collector = await watcher.add_behaviour(
            MessageCollector(watcher, template=Template(sender=other))
        )
        async with Agent(other, url=mesh_url, config=FAST) as agent:
            await eventually(lambda: (other, "started") in events.seen)
            await asyncio.sleep(3 * INTERVAL)  # some periodic announcements too
            await agent.broadcast({"hello": "all"})
            await eventually(lambda: len(collector.got) == 1)
        await eventually(lambda: (other, "stopped") in events.seen, timeout=5)
        await asyncio.sleep(0.3)
        assert [m.decode() for m in collector.got] == [{"hello": "all"}]
        assert collector.got[0].kind == "message"


async def test_an_agent_with_presence_off_announces_nothing_but_listens(mesh_url):
    watcher = Agent(uid("pres-watch"), url=mesh_url, config=FAST)
    quiet = Agent(uid("pres-quiet"), url=mesh_url, config=AgentConfig(presence=False))
    talker = uid("pres-talker")
    events = Events(quiet.identity, talker)
    heard = Events(talker)
    watcher.on_presence = events
    quiet.on_presence = heard
    async with watcher, quiet:
        async with Agent(talker, url=mesh_url, config=FAST):
            await eventually(lambda: (talker, "started") in heard.seen)
            await eventually(lambda: (talker, "started") in events.seen)
        await eventually(lambda: (talker, "stopped") in heard.seen, timeout=5)
    await asyncio.sleep(0.2)
    assert (quiet.identity, "started") not in events.seen
    assert (quiet.identity, "stopped") not in events.seen


def test_presence_interval_must_be_positive():
    with pytest.raises(ValueError, match="presence_interval"):
        AgentConfig(presence_interval=0)
    assert AgentConfig(presence_interval=None).presence_interval is None
    assert AgentConfig().presence_interval == 30.0


CRASHING_AGENT = """
import asyncio, sys
from munggoggo import Agent, AgentConfig

async def main():
    agent = Agent(sys.argv[1], url=sys.argv[2], config=AgentConfig(presence_interval=0.3))
    await agent.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.rabbitmq
async def test_a_killed_agent_process_is_reported_stopped(broker_url):
    """The real crash: a process agent killed with SIGKILL (RabbitMQ only: memory:// lives in
    one process)."""
    watcher = Agent(uid("pres-watch"), url=broker_url, config=FAST)
    victim = uid("pres-killed")
    events = Events(victim)
    watcher.on_presence = events
    async with watcher:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CRASHING_AGENT, victim, broker_url
        )
        try:
            await eventually(lambda: (victim, "started") in events.seen, timeout=30)
            proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
            await eventually(lambda: (victim, "stopped") in events.seen, timeout=10)
            assert events.at[(victim, "stopped")] - killed_at < 3 * INTERVAL + 1.0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_the_example_runs():
    """examples/presence.py, as a program on its default memory:// broker."""
    example = Path(__file__).resolve().parent.parent / "examples" / "presence.py"
    env = {k: v for k, v in os.environ.items() if k != "MUNGGOGGO_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(example), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert out.decode().splitlines() == [
        "presence-worker started",
        "presence-worker stopped",
        "presence-crasher started",
        "presence-crasher stopped",
    ]


async def test_a_listening_only_agent_learns_the_running_agents_when_it_starts(mesh_url):
    # The running agent announces once a minute: the listener hears of it through its
    # query, not through a later announcement.
    slow = AgentConfig(presence_interval=60.0, drain_timeout=2.0)
    runner = uid("pres-runner")
    async with Agent(runner, url=mesh_url, config=slow):
        watcher = Agent(uid("pres-listen"), url=mesh_url, config=AgentConfig(presence=False))
        heard = Events(runner)
        watcher.on_presence = heard
        async with watcher:
            await eventually(lambda: (runner, "started") in heard.seen, timeout=5)
            assert runner in watcher.presence.peers
