"""`python -m bench idle [--seconds 5] [--url URL] [--no-pacing]`: what an idle polling
behaviour costs.

One agent with one cyclic behaviour whose step is the seed's `msg = await self.receive()`
(no timeout: returns at once) and nothing else, on a topic nobody publishes to. Reports
the process CPU seconds and the steps run over the window. `--no-pacing` turns the idle
pacing of the step loop off (each step then follows the last at once, as a plain loop
would), to show what the pacing saves.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from ..common import broker_url, environment, run_loop, use_uvloop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="idle window (default 5)")
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument("--no-pacing", action="store_true", help="turn the idle pacing off")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from munggoggo import Agent, Behaviour

    class Poller(Behaviour):
        async def run(self) -> None:
            await self.receive()

    if args.no_pacing:
        Poller.pace_idle_steps = False

    async def measure() -> dict[str, Any]:
        url = broker_url(args.url)
        async with Agent(f"bench-idle-{uuid.uuid4().hex[:8]}", url=url) as agent:
            topic = f"bench.idle.{uuid.uuid4().hex[:8]}"
            poller = await agent.add_behaviour(Poller(agent, binding_keys=[topic]))
            await asyncio.sleep(0.2)
            cpu0, steps0 = time.process_time(), poller.steps
            await asyncio.sleep(args.seconds)
            cpu = time.process_time() - cpu0
            steps = poller.steps - steps0
        return {
            "scenario": "idle",
            "pacing": not args.no_pacing,
            "seconds": args.seconds,
            "cpu_seconds": round(cpu, 3),
            "cpu_share": round(cpu / args.seconds, 3),
            "steps": steps,
        }

    uvloop = use_uvloop(not args.no_uvloop)
    result = run_loop(measure)
    result.update(environment(uvloop))
    return result
