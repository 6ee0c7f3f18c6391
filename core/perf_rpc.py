"""The rpc mode of `munggoggo bench`: concurrent callers of an `@expose`d method.

`--agents N` server agents (each its own connection, the URLs taken in turn) expose
`work()`, which spends `--consumer-latency` microseconds (a busy loop below a millisecond,
as CPU work would; a sleep from a millisecond on) and returns. One caller agent runs
`--concurrency C` callers, each a loop of `await agent.call(server, "work")` against the
servers in turn (caller k starts at server k mod N), paced by `--rate` (calls/s per
caller, 0 for as fast as possible), until `--time` or `--pmessages` calls per caller.

The figures go to the same `RunStats` as queue mode, read for calls: `published` = calls
made, `consumed` = replies, `latency_us` = call round trip (publish of the request to the
result in the caller's hands), and the mode's own keys: `lost` = calls that failed (an
error reply, a timeout, the server unreachable) and `errors`, their count by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from .agent import Agent
from .perf_agents import bench_agent_config, report_seconds, spin
from .perf_run import BenchConfig, RunStats
from .rpc import RpcError, expose

__all__ = ["RpcRun", "WorkServer", "error_kind"]


class WorkServer(Agent):
    """A server agent of the rpc mode: `work()` spends `work_us` microseconds.

    Attributes:
        work_us: microseconds each call spends (set before the agent starts).
    """

    work_us = 0

    @expose
    async def work(self) -> int:
        """Spend `work_us` microseconds.

        Returns:
            0.
        """
        seconds = self.work_us / 1_000_000
        if seconds >= 0.001:
            await asyncio.sleep(seconds)
        elif seconds:
            spin(seconds)
        return 0


def error_kind(exc: BaseException) -> str:
    """How a failed call is counted in `errors`.

    Args:
        exc: what the call raised.

    Returns:
        The exception's class name, with the JSON-RPC error code for RPC errors
        (`RpcTimeout -32002`, say).
    """
    name = type(exc).__name__
    return f"{name} {exc.code}" if isinstance(exc, RpcError) else name


class RpcRun:
    """`--mode rpc`: N `WorkServer`s, one caller agent with C concurrent callers.

    Args:
        servers: server agents.
        concurrency: concurrent callers.
    """

    def __init__(self, servers: int, concurrency: int) -> None:
        self.servers = servers
        self.concurrency = concurrency
        self.failed = 0
        self.errors: dict[str, int] = {}

    def figures(self, stats: RunStats) -> dict[str, Any]:
        """The mode's own `--json` keys (`lost` replaces queue mode's).

        Args:
            stats: the finished run's stats.

        Returns:
            mode, agents, concurrency, lost (failed calls), errors (by kind).
        """
        return {
            "mode": "rpc",
            "agents": self.servers,
            "concurrency": self.concurrency,
            "lost": self.failed,
            "errors": dict(sorted(self.errors.items())),
        }

    async def __call__(
        self,
        config: BenchConfig,
        stats: RunStats,
        on_second: Callable[[RunStats, float], None] | None = None,
    ) -> None:
        """Run the load: start the servers and the caller, call, stop.

        Args:
            config: the shared options (urls, rate, duration, pmessages,
                consumer_latency_us).
            stats: filled as the run goes (read it even when this raises).
            on_second: called about once a second with the stats and the seconds since
                start.

        Raises:
            AMQPError: a broker refused the connection, the login or a declaration.
        """
        run = uuid.uuid4().hex[:8]
        agents: list[Agent] = []
        callers: list[asyncio.Task[None]] = []
        reporter: asyncio.Task[None] | None = None
        stop = asyncio.Event()
        try:
            targets = []
            for i in range(self.servers):
                server = WorkServer(
                    f"munggoggo-bench-{run}-server-{i}",
                    url=cast(Any, [config.urls[i % len(config.urls)]]),
                    config=bench_agent_config(),
                )
                server.work_us = config.consumer_latency_us
                agents.append(server)
                await server.start()
                targets.append(server.identity)
            caller = Agent(
                f"munggoggo-bench-{run}-caller",
                url=cast(Any, [config.urls[self.servers % len(config.urls)]]),
                config=bench_agent_config(),
            )
            agents.append(caller)
            await caller.start()
            stats.cpu_start = time.process_time()
            stats.started = time.perf_counter()
            callers = [
                asyncio.create_task(self._caller(k, caller, targets, config, stats, stop))
                for k in range(self.concurrency)
            ]
            if on_second is not None:
                reporter = asyncio.create_task(report_seconds(stats, on_second))
            timeout = config.duration
            done, _ = await asyncio.wait(callers, timeout=timeout)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise cast(BaseException, task.exception())
            stats.ended = time.perf_counter()
            stop.set()
            # The calls in flight finish (or time out): each counts.
            await asyncio.gather(*callers)
        finally:
            stop.set()
            if not stats.ended:
                stats.ended = time.perf_counter()
            for task in callers:
                task.cancel()
            for task in callers:
                with contextlib.suppress(BaseException):
                    await task
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            stats.tick()  # what the last line did not take goes into the run's histograms
            stats.cpu_end = time.process_time()
            await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)

    async def _caller(
        self,
        k: int,
        agent: Agent,
        targets: list[str],
        config: BenchConfig,
        stats: RunStats,
        stop: asyncio.Event,
    ) -> None:
        call = agent.call
        limit = config.pmessages
        rate = config.rate
        perf = time.perf_counter_ns
        n = 0
        start = time.perf_counter()
        while not stop.is_set() and (not limit or n < limit):
            if rate > 0:
                wait = n / rate - (time.perf_counter() - start)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                    continue
            target = targets[(k + n) % len(targets)]
            n += 1
            stats.published += 1
            stats.sent_by_producer[k] = n
            t0 = perf()
            try:
                await call(target, "work")
            except Exception as exc:  # every failed call counts, whatever the kind
                self.failed += 1
                kind = error_kind(exc)
                self.errors[kind] = self.errors.get(kind, 0) + 1
                continue
            us = (perf() - t0) // 1000
            stats.consumed += 1
            stats.tick_latency_us.record(us)  # `RunStats.tick()` merges it into the run's
            stats.last_received = time.perf_counter()
