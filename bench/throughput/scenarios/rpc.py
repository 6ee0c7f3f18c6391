"""Scenario `rpc`: agent-to-agent `await caller.call(target, "echo", x)`.

Agent `bench-echo-*` exposes `async def echo(self, x: int) -> int` with `@expose` (as the
README's tutorial does); a second agent calls it. Two measurements, each call timed with
perf_counter_ns into a preallocated list:

- sequential: one call at a time, `p50_us` / `p99_us` (the latency figures of the report);
- under load: `messages` calls with 256 in flight (256 coroutines sharing one iterator of
  call numbers): `calls_per_s`, and `load_p50_us` / `load_p99_us` per call.

Every result is checked against its argument.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from munggoggo import Agent, expose

from ...common import Stopwatch, check, percentiles_us, rate
from ...mesh import CONFIG, run_id

DEFAULT_MESSAGES = 50_000  # calls under load
SEQUENTIAL = 2000
IN_FLIGHT = 256
WARMUP = 200


class Echo(Agent):
    @expose
    async def echo(self, x: int) -> int:
        return x


async def measure(url: str, messages: int) -> dict[str, Any]:
    rid = run_id()
    target = f"bench-echo-{rid}"
    sequential = min(SEQUENTIAL, messages)
    async with (
        Echo(target, url=url, config=CONFIG),
        Agent(f"bench-caller-{rid}", url=url, config=CONFIG) as caller,
    ):
        call = caller.call
        for i in range(WARMUP):
            check(await call(target, "echo", i) == i, "echo returned a different value")

        seq_ns = [0] * sequential
        perf = time.perf_counter_ns
        for i in range(sequential):
            t0 = perf()
            result = await call(target, "echo", i)
            seq_ns[i] = perf() - t0
            if result != i:
                raise RuntimeError(f"echo({i}) returned {result!r}")

        load_ns = [0] * messages
        numbers = iter(range(messages))
        completed = 0

        async def worker() -> None:
            nonlocal completed
            for i in numbers:
                t0 = perf()
                result = await call(target, "echo", i)
                load_ns[i] = perf() - t0
                if result != i:
                    raise RuntimeError(f"echo({i}) returned {result!r}")
                completed += 1

        watch = Stopwatch()
        watch.start()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        watch.stop()
        check(completed == messages, f"{completed:,} of {messages:,} calls completed")
    p50, p99 = percentiles_us(seq_ns)
    load_p50, load_p99 = percentiles_us(load_ns)
    return {
        "calls_per_s": rate(messages, watch.wall),
        "p50_us": p50,
        "p99_us": p99,
        "load_p50_us": load_p50,
        "load_p99_us": load_p99,
        "sequential_calls": sequential,
        "calls": messages,
        "in_flight": IN_FLIGHT,
        **watch.figures(messages, "call"),
        "sequential_calls_per_s": rate(sequential, sum(seq_ns) / 1e9),
    }
