"""`python -m bench recovery [--rounds 5] [--url URL]`: how fast agents recover.

Three probes against a real broker (memory:// runs the two restore probes), each repeated
`--rounds` times, reported as min/median/max milliseconds:
- `behaviour_restore_ms`: a behaviour's queue is deleted under a running agent; from the
  delete to the first message published after it that reaches the behaviour (the agent
  declared, bound and consumed the queue again).
- `inbox_restore_ms`: the same for the agent's inbox and a direct message.
- `inflight_call_fail_ms`: the caller's connection is cut (fault proxy) while its call (timeout
  40 s) waits for a 2 s method; from the cut to the call failing with AgentUnreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import statistics
import time
import uuid
from typing import Any

from ..common import broker_url, environment, positive_int, run_loop, use_uvloop

CALL_TIMEOUT = 40.0
SLOW_METHOD_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=positive_int, default=5, help="rounds per probe")
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "min": round(ms[0], 2),
        "median": round(statistics.median(ms), 2),
        "max": round(ms[-1], 2),
    }


async def _until_arrives(arrived: asyncio.Event, send: Any) -> None:
    """Send every millisecond until one arrives: each is a message sent after the delete."""
    while not arrived.is_set():
        with contextlib.suppress(Exception):  # unroutable while the queue is gone: again
            await send()
        try:
            await asyncio.wait_for(arrived.wait(), 0.001)
        except TimeoutError:
            continue


async def _restore(url: str, inbox: bool) -> float:
    from munggoggo import Agent, Behaviour, Template

    class Keep(Behaviour):
        """Notes when the first message arrives (the clock is read at arrival)."""

        async def setup(self) -> None:
            self.arrived = asyncio.Event()
            self.arrived_at = 0.0

        async def run(self) -> None:
            if await self.receive(timeout=math.inf) is not None and not self.arrived.is_set():
                self.arrived_at = time.perf_counter()
                self.arrived.set()

    topic = f"bench.recovery.{uuid.uuid4().hex[:8]}"
    agent, other = Agent(_uid("rec-agent"), url=url), Agent(_uid("rec-other"), url=url)
    async with agent, other:
        if inbox:
            keep = await agent.add_behaviour(Keep(agent, template=Template()))
            queue = agent.identity
        else:
            keep = await agent.add_behaviour(Keep(agent, binding_keys=[topic]))
            queue = keep.queue
        ch = await other.connection.channel()
        started = time.perf_counter()
        await ch.queue_delete(queue)
        if inbox:
            await _until_arrives(keep.arrived, lambda: other.send(agent.identity, b"x"))
        else:
            await _until_arrives(keep.arrived, lambda: other.publish(b"x", topic))
        await ch.close()
        return keep.arrived_at - started


async def _inflight_call(url: str) -> float:
    from munggoggo import Agent, AgentUnreachable, expose
    from munggoggo.testing import FaultProxy
    from munggoggo.url import parse_url

    class Slow(Agent):
        @expose
        async def slow(self) -> str:
            await asyncio.sleep(SLOW_METHOD_SECONDS)
            return "done"

    upstream = parse_url(url)
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        # The same broker and credentials, through the proxy.
        proxied = dataclasses.replace(upstream, host="127.0.0.1", port=proxy.port)
        target, caller = Slow(_uid("rec-slow"), url=url), Agent(_uid("rec-caller"), url=proxied)
        async with target, caller:
            call = asyncio.ensure_future(caller.call(target.identity, "slow", timeout=CALL_TIMEOUT))
            await asyncio.sleep(0.2)  # the request is with the target
            started = time.perf_counter()
            proxy.cut()
            try:
                await call
            except AgentUnreachable:
                return time.perf_counter() - started
            raise RuntimeError("the call in flight did not fail as unreachable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = broker_url(args.url)
    # Sends to an inbox that is gone come back unroutable, by design: not worth a log line.
    logging.getLogger("munggoggo.agent").setLevel(logging.ERROR)

    async def measure() -> dict[str, Any]:
        result: dict[str, Any] = {"scenario": "recovery", "rounds": args.rounds}
        result["behaviour_restore_ms"] = _summary(
            [await _restore(url, inbox=False) for _ in range(args.rounds)]
        )
        result["inbox_restore_ms"] = _summary(
            [await _restore(url, inbox=True) for _ in range(args.rounds)]
        )
        if not url.startswith("memory://"):  # memory:// has no connection to cut
            result["inflight_call_fail_ms"] = _summary(
                [await _inflight_call(url) for _ in range(args.rounds)]
            )
            result["call_timeout_s"] = CALL_TIMEOUT
        return result

    uvloop = use_uvloop(not args.no_uvloop)
    result = run_loop(measure)
    result.update(environment(uvloop))
    return result
