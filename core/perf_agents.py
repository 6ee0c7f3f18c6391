"""The agents mode of `munggoggo bench`: behaviours publishing and consuming through the mesh.

N agents (each with its own connection, the URLs taken in turn), M behaviours each, all in
this process. Behaviour j of agent i is publisher `i * M + j`: it publishes PerfTest-layout
bodies (`perf_body`: int32 sequence, int64 epoch-ns timestamp, padded to `--size`) to
`munggoggo.topic` with a routing key of its own, and subscribes to the key of behaviour j
of the next agent, so every message crosses from one agent to another (with one agent, to
its next behaviour). Each publisher's messages reach exactly one behaviour queue: the
deliveries expected are the messages published.

Latency is read where the user's code would read it: in the receiving behaviour's step,
after the runtime's consumer, mailbox and step loop. Loss and duplicates are counted per
receiving queue with `SequenceTracker`, the publisher told by the routing key and the
sequence by the body, as in queue mode; figures go to the same `RunStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from .agent import Agent
from .behaviour import FAILED, Behaviour, RestartPolicy
from .config import AgentConfig
from .perf_body import MIN_SIZE, sent_at_ns
from .perf_run import BenchConfig, RunStats, drain_deliveries
from .perf_stats import OrderCheck, SequenceTracker

__all__ = ["AgentsRun", "LoadBehaviour", "bench_agent_config", "report_seconds", "spin"]

_HEAD = struct.Struct(">iq")
_MAX_BATCH = 100  # publishes per step at most: then the deliveries get a turn
_IDLE_WAIT = 0.05  # seconds a behaviour waits for mail when it has nothing to publish
# --rate 0: a publisher keeps at most this many messages published and not yet received,
# so the run measures what the mesh carries, not a backlog growing in the broker.
_WINDOW = 1000
_WINDOW_WAIT = 0.001  # seconds a publisher with a full window waits for mail
_DRAIN_STALL = 3.0  # seconds without a delivery that end the drain after the run


def bench_agent_config() -> AgentConfig:
    """The agents' settings for a bench run: the runtime's hot path, none of its extras.

    Returns:
        No presence announcements, no trace recording, no step/RPC histograms; behaviour
        queues expire 30 s after the run.
    """
    return AgentConfig(
        presence=False, trace_size=0, metrics=False, behaviour_queue_expires_ms=30_000
    )


def spin(seconds: float) -> None:
    """Busy-wait: simulated CPU work of a consumer (`--consumer-latency`).

    Args:
        seconds: how long.
    """
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class _Shared:
    """What every behaviour of a run reads: the options, the stats, when to stop."""

    def __init__(self, config: BenchConfig, stats: RunStats, key_of: dict[str, int]) -> None:
        self.config = config
        self.stats = stats
        self.pid_of_key = key_of
        self.go = asyncio.Event()  # set: publishing starts
        self.publishing = True  # False: publishers stop
        self.publishers_left = 0
        self.pad = bytes(max(0, config.size - MIN_SIZE))
        self.work_s = config.consumer_latency_us / 1_000_000


class LoadBehaviour(Behaviour):
    """One publishing and consuming behaviour of the agents mode.

    Each step publishes what its rate makes due (a batch at most), then takes everything
    its mailbox holds; with nothing due it waits for mail until the next publish is due.

    Args:
        agent: the agent that hosts it.
        shared: the run's shared state.
        pid: its publisher id.
        key: the routing key it publishes with.
        subscribe: the key it consumes (another behaviour's).
        name: its short name within the agent.
    """

    # The step waits for mail itself, as long as its publishing allows.
    pace_idle_steps = False
    # A failing step is a bug of the run: it ends the run rather than being retried.
    restart_policy = RestartPolicy(max_failures=1)

    def __init__(
        self, agent: Agent, shared: _Shared, pid: int, key: str, subscribe: str, name: str
    ) -> None:
        super().__init__(agent, binding_keys=[subscribe], name=name)
        self.shared = shared
        self.pid = pid
        self.key = key
        self.sent = 0
        self.started = 0.0
        self.done_publishing = False
        self.tracker = SequenceTracker()
        self.order = OrderCheck()
        # The behaviour that consumes this one's messages (set when the run is wired).
        self.reader: LoadBehaviour | None = None
        self.full_since = 0.0  # perf_counter since the window is full (0: it is not)

    def _account(self, body: bytes, routing_key: str) -> None:
        shared = self.shared
        stats = shared.stats
        stats.consumed += 1
        if shared.work_s:
            spin(shared.work_s)
        if len(body) < MIN_SIZE:
            stats.untimed += 1
            return
        seq, raw = _HEAD.unpack_from(body)
        now_ns = time.time_ns()
        sent = sent_at_ns(raw, now_ns)
        if sent is None:
            stats.untimed += 1
        else:
            # Into the per-second histogram only: `RunStats.tick()` merges it into the run's.
            stats.tick_latency_us.record((now_ns - sent) // 1000)
        pid = shared.pid_of_key.get(routing_key)
        if pid is not None:
            self.tracker.observe(pid, seq)
            self.order.observe(pid, seq)

    async def _publish_due(self) -> float | None:
        """Publish what is due; the seconds until more is due (0: now, None: never)."""
        shared = self.shared
        config = shared.config
        if not shared.go.is_set():
            return _IDLE_WAIT
        if self.done_publishing:
            return None
        limit = config.pmessages
        if not shared.publishing or (limit and self.sent >= limit):
            self.done_publishing = True
            shared.publishers_left -= 1
            if shared.publishers_left == 0:
                shared.stats.ended = time.perf_counter()
            return None
        if not self.started:
            self.started = time.perf_counter()
        batch = _MAX_BATCH
        if config.rate <= 0 and self.reader is not None:
            # As fast as the mesh carries them: at most _WINDOW of ours not yet received.
            state = self.reader.tracker.producers.get(self.pid)
            room = _WINDOW - (self.sent - (state.received if state is not None else 0))
            if room > 0:
                self.full_since = 0.0
                batch = min(batch, room)
            elif not self.full_since:
                self.full_since = time.perf_counter()
                return _WINDOW_WAIT
            elif time.perf_counter() - self.full_since < _DRAIN_STALL:
                return _WINDOW_WAIT
            # Nothing of ours arrived for a while: lost, not late. Publish on, so a run
            # with --pmessages ends and reports the loss instead of waiting for ever.
            self.full_since = 0.0
        elif config.rate > 0:
            elapsed = time.perf_counter() - self.started
            due = int(config.rate * elapsed) + 1 - self.sent
            if due <= 0:
                return min(_IDLE_WAIT, (self.sent + 1) / config.rate - elapsed)
            batch = min(batch, due)
        if limit:
            batch = min(batch, limit - self.sent)
        now_ns = time.time_ns()
        pad, key, seq = shared.pad, self.key, self.sent
        pack, publish = _HEAD.pack, self.publish
        for _ in range(batch):
            await publish(
                pack(((seq + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000, now_ns) + pad, key
            )
            seq += 1
        self.sent = seq
        stats = shared.stats
        stats.published += batch
        stats.sent_by_producer[self.pid] = seq
        return 0.0

    async def run(self) -> None:
        """One step: publish what is due, then handle every message waiting."""
        wait = await self._publish_due()
        if wait == 0.0:
            # The batch goes out in this loop tick's write; deliveries come in meanwhile.
            await asyncio.sleep(0)
            msg = await self.receive()
        else:
            msg = await self.receive(timeout=_IDLE_WAIT if wait is None else wait)
        if msg is None:
            return
        while msg is not None:
            self._account(msg.body, msg.routing_key)
            msg = await self.receive()
        self.shared.stats.last_received = time.perf_counter()


class AgentsRun:
    """`--mode agents`: N agents with M `LoadBehaviour`s each.

    Args:
        agents: agents to start.
        behaviours: behaviours per agent.
    """

    def __init__(self, agents: int, behaviours: int) -> None:
        self.agents = agents
        self.behaviours = behaviours
        self._confirmed_agents: list[Agent] = []
        self._nacked: list[int] = []

    def figures(self, stats: RunStats) -> dict[str, Any]:
        """The mode's own `--json` keys.

        Args:
            stats: the finished run's stats.

        Returns:
            mode, agents, behaviours.
        """
        return {"mode": "agents", "agents": self.agents, "behaviours": self.behaviours}

    def _refresh_confirmed(self, stats: RunStats) -> None:
        # Per agent (its publish channel carries all its behaviours' publishes).
        for i, agent in enumerate(self._confirmed_agents):
            ch = agent.publish_channel
            if ch is None:
                continue
            sent = sum(
                stats.sent_by_producer.get(i * self.behaviours + j, 0)
                for j in range(self.behaviours)
            )
            stats.confirmed_by_producer[i] = max(0, sent - ch.unconfirmed - self._nacked[i])

    async def __call__(
        self,
        config: BenchConfig,
        stats: RunStats,
        on_second: Callable[[RunStats, float], None] | None = None,
    ) -> None:
        """Run the load: start the agents and behaviours, publish, drain, stop.

        Args:
            config: the shared options (urls, size, rate, duration, pmessages,
                consumer_latency_us).
            stats: filled as the run goes (read it even when this raises).
            on_second: called about once a second with the stats and the seconds since
                start.

        Raises:
            AMQPError: a broker refused the connection, the login or a declaration.
        """
        run = uuid.uuid4().hex[:8]
        n, m = self.agents, self.behaviours
        keys = {i * m + j: f"munggoggo-bench.{run}.{i * m + j}" for i in range(n) for j in range(m)}
        shared = _Shared(config, stats, {key: pid for pid, key in keys.items()})
        shared.publishers_left = n * m
        agents: list[Agent] = []
        behaviours: list[LoadBehaviour] = []
        reporter: asyncio.Task[None] | None = None

        def on_failure(i: int) -> Callable[[list[tuple[int, Exception]]], None]:
            def count(failures: list[tuple[int, Exception]]) -> None:
                self._nacked[i] += len(failures)
                stats.nacked += len(failures)

            return count

        try:
            for i in range(n):
                url = config.urls[i % len(config.urls)]
                agent = Agent(
                    f"munggoggo-bench-{run}-{i}",
                    url=cast(Any, [url]),
                    config=bench_agent_config(),
                )
                self._nacked.append(0)
                agent.on_publish_failure = on_failure(i)
                agents.append(agent)
                await agent.start()
            self._confirmed_agents = agents
            for i, agent in enumerate(agents):
                for j in range(m):
                    pid = i * m + j
                    # Behaviour j of the next agent's key: messages cross agents (with one
                    # agent, they go to its next behaviour).
                    source = ((i + 1) % n) * m + (j if n > 1 else (j + 1) % m)
                    behaviour = LoadBehaviour(agent, shared, pid, keys[pid], keys[source], f"b{j}")
                    behaviours.append(behaviour)
                    stats.routes[source] = [behaviour.name]
                    stats.sent_by_producer[pid] = 0
            by_pid = {b.pid: b for b in behaviours}
            for source, (name,) in stats.routes.items():
                by_pid[source].reader = next(b for b in behaviours if b.name == name)
            for behaviour in behaviours:
                stats.sequences[behaviour.name] = behaviour.tracker
                stats.order_checks.append(behaviour.order)
                await behaviour.agent.add_behaviour(behaviour)
            stats.cpu_start = time.process_time()
            stats.started = time.perf_counter()
            shared.go.set()
            if on_second is not None:

                def second(s: RunStats, elapsed: float) -> None:
                    self._refresh_confirmed(s)
                    on_second(s, elapsed)

                reporter = asyncio.create_task(report_seconds(stats, second))
            await _until_stop(config, shared, behaviours)
            shared.publishing = False
            await _until(lambda: shared.publishers_left == 0, 5.0)
            for agent in agents:
                with contextlib.suppress(Exception):
                    await agent.flush(timeout=10.0)
            await drain_deliveries(stats)
        finally:
            shared.publishing = False
            if not stats.ended:
                stats.ended = time.perf_counter()
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            stats.tick()  # what the last line did not take goes into the run's histograms
            self._refresh_confirmed(stats)
            stats.cpu_end = time.process_time()
            await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)


async def _until(predicate: Callable[[], bool], limit: float) -> None:
    deadline = time.perf_counter() + limit
    while not predicate() and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)


async def _until_stop(
    config: BenchConfig, shared: _Shared, behaviours: list[LoadBehaviour]
) -> None:
    """Return at --time, when every behaviour sent --pmessages, or when a behaviour failed."""
    deadline = None if config.duration is None else shared.stats.started + config.duration
    while True:
        if deadline is not None and time.perf_counter() >= deadline:
            return
        if shared.publishers_left == 0:
            return
        for behaviour in behaviours:
            if behaviour.state == FAILED:
                raise RuntimeError(f"behaviour {behaviour.name} failed: {behaviour.last_error}")
        await asyncio.sleep(0.01)


async def report_seconds(stats: RunStats, on_second: Callable[[RunStats, float], None]) -> None:
    """Call `on_second` about once a second from `stats.started` on, until cancelled.

    Cancelled, it calls `on_second` once more for the last, partial second, so the lines
    add up to the summary.

    Args:
        stats: the run's stats (`started` set).
        on_second: called with the stats and the seconds since start.
    """
    start = last = stats.started
    n = 1
    try:
        while True:
            await asyncio.sleep(max(0.0, start + n - time.perf_counter()))
            last = time.perf_counter()
            on_second(stats, last - start)
            n += 1
    except asyncio.CancelledError:
        if time.perf_counter() > last + 0.01:
            on_second(stats, time.perf_counter() - start)
        raise
