"""`munggoggo bench --processes N`: one run spread over child processes, figures merged.

Owns the split of producers and consumers over processes (`split`), the parent's side
(`run_processes`) and the child's (`child_main`, behind the hidden `bench --child`
option). The figures they exchange and merge are `perf_figures`'.

Each child is `python -m munggoggo bench --child`, a fresh interpreter with its own uvloop
loop (no fork of a running loop). The parent writes the child's share of the options as one
JSON line on its stdin; the child answers with JSON lines on its stdout: `ready` when its
connections are open and its consumers starting, then `second` (that second's counts and
latency histograms), `progress` (every 0.1 s while it changes) and a last `done` with its
figures and its error, if any. The parent writes `go` when every child is ready (they start
together), `abort` when one failed before that, and `stop` when the whole run is over but a
child cannot tell by itself (its consumers share a queue with another process's, or it has
consumers only). The parent prints one merged line per second and the merged summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .amqp.errors import AMQPError
from .perf_figures import figures_of, load_figures, merge_figures, remeasure_depths
from .perf_run import (
    BenchConfig,
    RunStats,
    delete_generated_queues,
    producer_routes,
    run_bench,
)
from .perf_stats import LatencyHistogram
from .url import BrokerURL

__all__ = [
    "ScaleError",
    "all_arrived",
    "child_main",
    "config_from_json",
    "config_to_json",
    "due_by_queue",
    "name_queues",
    "run_processes",
    "split",
]

_PROGRESS_EVERY = 0.1
_LINE_LIMIT = 1 << 30
_STOP_GRACE = 10.0  # seconds for stopped children to report before they are killed
_DRAIN_STALL = 3.0  # as perf_run's drain: seconds without a delivery that end the run
_DRAIN_MAX = 60.0


class ScaleError(Exception):
    """A process or an instance of a spread run failed, or they did not meet in time."""


# -- the split -------------------------------------------------------------------------------


def name_queues(config: BenchConfig, run_id: str | None = None) -> None:
    """Fix the generated queue name and routing key before the run is spread.

    Every process must use the same ones; `declare_topology` would draw its own in each.

    Args:
        config: the options (updated in place).
        run_id: name them after this run id (instances on other hosts derive the same
            names); None draws a random one. The messages' run id (`config.run_id`) is
            drawn afresh when empty, never this one.
    """
    tail = run_id or uuid.uuid4().hex[:8]
    if not config.queues:
        config.queues = [f"munggoggo-bench-{tail}"]
        config.generated_queues = True
    if not config.run_id:
        # Fresh for every run, whatever names the queues: a run id derived from the options
        # names the meeting, and a re-run of one command must not take the last one's
        # leftovers for its own messages.
        config.run_id = uuid.uuid4().hex
    if config.exchange and config.routing_key is None and not config.queue_pattern:
        config.routing_key = f"munggoggo-bench-{tail}"


def split(config: BenchConfig, processes: int) -> list[BenchConfig]:
    """Share producers and consumers out over processes.

    Contiguous blocks whose sizes differ by one at most (7 over 3: 3, 2, 2), numbered
    from the config's bases, so ids stay unique over the run. A process left with no
    producer and no consumer is dropped (fewer producers than processes is fine).

    Args:
        config: the whole run's options (queue names already fixed: `name_queues`).
        processes: how many processes, 1 or more.

    Returns:
        One configuration per process that has something to do.

    Raises:
        ValueError: processes is below 1.
    """
    if processes < 1:
        raise ValueError(f"--processes must be 1 or more: {processes}")

    def blocks(total: int) -> list[int]:
        return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]

    out = []
    p_base, c_base = config.producer_base, config.consumer_base
    for producers, consumers in zip(
        blocks(config.producers), blocks(config.consumers), strict=True
    ):
        if producers or consumers:
            out.append(
                dataclasses.replace(
                    config,
                    producers=producers,
                    consumers=consumers,
                    producer_base=p_base,
                    consumer_base=c_base,
                    queues=list(config.queues),
                    variable_rate=list(config.variable_rate),
                    owns_queues=False,  # the parent deletes generated queues at the end
                )
            )
        p_base += producers
        c_base += consumers
    return out


def config_to_json(config: BenchConfig) -> str:
    """One JSON line with every option, the URLs' credentials included (a pipe, not a log).

    Args:
        config: the options.

    Returns:
        The JSON text (no newline).
    """
    data = dataclasses.asdict(config)
    return json.dumps(data)


def config_from_json(text: str) -> BenchConfig:
    """Read `config_to_json`'s line back.

    Args:
        text: the JSON text.

    Returns:
        The configuration.

    Raises:
        ValueError: the text is not such a line.
    """
    try:
        data = json.loads(text)
        data["urls"] = [BrokerURL(**u) for u in data["urls"]]
        data["variable_rate"] = [(float(r), float(s)) for r, s in data["variable_rate"]]
        return BenchConfig(**data)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bench --child: not a configuration: {exc}") from None


# -- the child -------------------------------------------------------------------------------


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _Child:
    """One child's run: commands from stdin, events to stdout."""

    def __init__(self) -> None:
        self.go: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.stop = asyncio.Event()
        self.last = (0, 0, 0, 0, 0)
        self.seconds = 0  # per-second events sent

    async def read_commands(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = (await reader.readline()).decode().strip()
            if line in ("go", "abort") and not self.go.done():
                self.go.set_result(line == "go")
            elif line == "stop" or not line:  # not line: EOF, the parent is gone
                if not self.go.done():
                    self.go.set_result(False)
                self.stop.set()
                if not line:
                    return

    async def before_start(self) -> None:
        _emit({"t": "ready"})
        if not await self.go:
            raise ScaleError("aborted: another process failed before the start")

    def on_second(self, stats: RunStats, elapsed: float) -> None:
        now = (stats.published, stats.confirmed, stats.nacked, stats.returned, stats.consumed)
        counts = [a - b for a, b in zip(now, self.last, strict=True)]
        self.last = now
        latency, confirm = stats.tick()
        self.seconds += 1
        _emit(
            {
                "t": "second",
                # Numbered, not rounded: the last, partial second has a number of its own.
                "n": self.seconds,
                "elapsed": elapsed,
                "counts": counts,
                "lat": latency.to_dict(),
                "con": confirm.to_dict(),
            }
        )

    async def progress(self, config: BenchConfig, stats: RunStats) -> None:
        last: tuple[Any, ...] = ()
        while True:
            await asyncio.sleep(_PROGRESS_EVERY)
            if not stats.started:
                continue
            done = config.producers == 0 or bool(stats.ended)
            now = (stats.published, stats.consumed, stats.foreign, done)
            if now != last:
                last = now
                _emit(
                    {
                        "t": "progress",
                        "consumed": stats.consumed,
                        "sent_by_producer": {str(p): n for p, n in stats.sent_by_producer.items()},
                        "producers_done": done,
                        # Distinct messages of this run per queue: a previous run's
                        # leftovers (foreign) and duplicates do not count towards what is due.
                        "distinct": {
                            q: sum(p.received - p.duplicates for p in t.producers.values())
                            for q, t in list(stats.sequences.items())
                        },
                    }
                )


async def _child_run() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = config_from_json((await reader.readline()).decode())
    child = _Child()
    stats = RunStats()
    commands = asyncio.create_task(child.read_commands(reader))
    progress = asyncio.create_task(child.progress(config, stats))
    run = asyncio.create_task(run_bench(config, stats, child.on_second, child.before_start))
    stopper = asyncio.create_task(child.stop.wait())
    error = None
    try:
        await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            run.cancel()  # the parent says the whole run is over
        with contextlib.suppress(asyncio.CancelledError):
            await run
    except (AMQPError, OSError, ScaleError, ValueError) as exc:
        error = str(exc) or type(exc).__name__
    finally:
        for task in (commands, progress, stopper):
            task.cancel()
    _emit({"t": "done", "figures": figures_of(stats), "error": error})
    return 1 if error else 0


def child_main() -> int:
    """`munggoggo bench --child`: run one share of a spread run (see the module docstring).

    Returns:
        0 when the share ran, 1 when it failed (its error is in its `done` line).
    """
    from .client import install_uvloop

    # Ctrl-C goes to the whole process group: the parent decides, and says `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install_uvloop()
    return asyncio.run(_child_run())


# -- the parent ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Proc:
    index: int
    config: BenchConfig
    proc: asyncio.subprocess.Process
    ready: bool = False
    finished: bool = False
    producers_done: bool = False
    consumed: int = 0
    sent: dict[int, int] = dataclasses.field(default_factory=dict)
    distinct: dict[str, int] = dataclasses.field(default_factory=dict)
    figures: dict[str, Any] | None = None
    error: str | None = None


class _Parent:
    """The parent's view: merges the children's seconds and decides when the run is over."""

    def __init__(
        self, on_second: Callable[[RunStats, float], None] | None, view: RunStats | None = None
    ) -> None:
        self.on_second = on_second
        # Cumulative merged counters the per-second printer (and a metrics scrape) reads.
        self.view = view if view is not None else RunStats()
        self.view.confirmed_by_producer[0] = 0
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}
        self.changed = asyncio.Event()

    def second(self, procs: list[_Proc], flush: bool = False) -> None:
        active = {p.index for p in procs if p.ready and not p.finished}
        for n in sorted(self.pending):
            got = self.pending[n]
            if not flush and not active <= set(got):
                return
            del self.pending[n]
            view = self.view
            latency, confirm = LatencyHistogram(), LatencyHistogram()
            for event in got.values():
                sent, confirmed, nacked, returned, received = event["counts"]
                view.published += sent
                view.confirmed_by_producer[0] += confirmed
                view.nacked += nacked
                view.returned += returned
                view.consumed += received
                latency.merge(LatencyHistogram.from_dict(event["lat"]))
                confirm.merge(LatencyHistogram.from_dict(event["con"]))
            view.tick_latency_us, view.tick_confirm_us = latency, confirm
            if self.on_second is not None:
                self.on_second(view, max(e["elapsed"] for e in got.values()))

    async def read(self, p: _Proc, procs: list[_Proc]) -> None:
        assert p.proc.stdout is not None
        try:
            try:
                await self._read_lines(p, procs)
            except (ValueError, OSError, KeyError, TypeError) as exc:
                # A line over the limit or of the wrong shape: give up on the child.
                p.error = f"unreadable report: {exc!r}"
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
            code = await p.proc.wait()
            if p.figures is None and p.error is None:
                p.error = f"exited with status {code} before reporting its figures"
        finally:
            # Whatever happened, the run must not wait for this child any more.
            p.finished = True
            self.second(procs)
            self.changed.set()

    async def _read_lines(self, p: _Proc, procs: list[_Proc]) -> None:
        assert p.proc.stdout is not None
        while line := await p.proc.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours: a stray print in the child
            if not isinstance(event, dict):
                continue  # not ours either: a stray `[1]` or `5`
            kind = event.get("t")
            if kind == "ready":
                p.ready = True
            elif kind == "second":
                self.pending.setdefault(event["n"], {})[p.index] = event
                self.second(procs)
            elif kind == "progress":
                p.consumed = event["consumed"]
                p.sent = {int(k): v for k, v in event["sent_by_producer"].items()}
                p.producers_done = event["producers_done"]
                p.distinct = {str(q): int(n) for q, n in event.get("distinct", {}).items()}
            elif kind == "done":
                p.figures, p.error = event["figures"], event["error"]
            self.changed.set()


def due_by_queue(config: BenchConfig, sent: dict[int, int]) -> dict[str, int]:
    """Deliveries due to this run's consumers from this run's producers, per queue.

    Args:
        config: the whole run's options (queues, routes, the consumers' ids).
        sent: messages each producer sent, by producer id.

    Returns:
        Queue name -> messages due on it (consumed queues only).
    """
    consumed_queues = {
        config.queues[c % len(config.queues)]
        for c in range(config.consumer_base, config.consumer_base + config.consumers)
    }
    due = dict.fromkeys(consumed_queues, 0)
    for pid, n in sent.items():
        for queue in set(producer_routes(config, pid)) & consumed_queues:
            due[queue] += n
    return due


def all_arrived(due: dict[str, int], distinct: list[dict[str, int]]) -> bool:
    """Whether every queue received (distinct messages of this run) what is due on it.

    Args:
        due: `due_by_queue`'s answer.
        distinct: per process, queue -> distinct messages of this run received.

    Returns:
        True when nothing due is still on its way.
    """
    return all(sum(d.get(q, 0) for d in distinct) >= n for q, n in due.items())


async def run_processes(
    config: BenchConfig,
    processes: int,
    stats: RunStats,
    on_second: Callable[[RunStats, float], None] | None = None,
    before_start: Callable[[], Awaitable[None]] | None = None,
    alone: bool = True,
    view: RunStats | None = None,
) -> None:
    """Run `config` spread over child processes; fill `stats` with the merged figures.

    Args:
        config: the whole run's options (generated queue names are fixed here).
        processes: how many child processes.
        stats: filled with the merged figures, also when this raises.
        on_second: called with merged per-second figures (a RunStats whose counters are
            the run's totals so far and whose tick histograms are that second's).
        before_start: awaited when every child is ready, before they start.
        alone: True when no other instance consumes from these queues: the parent may
            then end the run as soon as every message sent was received.
        view: a RunStats to keep the merged figures so far in, as the run goes (what
            `--metrics-port` serves); its counters are the run's totals so far.

    Raises:
        ScaleError: a child failed (one line naming it and its error).
    """
    name_queues(config)
    shares = split(config, processes)
    procs: list[_Proc] = []
    parent = _Parent(on_second, view)
    readers = []
    try:
        for i, share in enumerate(shares):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "munggoggo",
                "bench",
                "--child",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # A `done` line holds sequence gaps: large when consumers of one queue sit
                # in several processes (each sees the other's messages as gaps).
                limit=_LINE_LIMIT,
            )
            p = _Proc(i, share, proc)
            procs.append(p)
            _send(p, config_to_json(share))
            readers.append(asyncio.create_task(parent.read(p, procs)))
        await _wait(parent, lambda: all(p.ready or p.finished for p in procs))
        failed = any(p.finished for p in procs)
        if not failed and before_start is not None:
            try:
                await before_start()
            except BaseException:
                for p in procs:
                    _send(p, "abort")
                raise
        for p in procs:
            _send(p, "abort" if failed else "go")
        await _until_over(config, parent, procs, alone)
        await asyncio.gather(*readers)
    finally:
        # Interrupted (Ctrl-C reaches the parent only: children ignore SIGINT) or failed:
        # the children stop and report what ran, within a grace; then they are killed.
        for p in procs:
            if not p.finished:
                _send(p, "stop")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), _STOP_GRACE)
        for p in procs:
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
                await p.proc.wait()
        for task in readers:
            task.cancel()
        parent.second(procs, flush=True)
        load_figures(merge_figures([p.figures for p in procs if p.figures is not None]), stats)
        if alone:  # with other instances, the leader looks once all of them ended
            with contextlib.suppress(Exception):
                await remeasure_depths(config, stats)
        if config.owns_queues:
            await delete_generated_queues(config)
    errors = [p for p in procs if p.error and not p.error.startswith("aborted")]
    if errors:
        p = errors[0]
        raise ScaleError(
            f"process {p.index + 1} of {len(procs)} ({p.config.producers} producers, "
            f"{p.config.consumers} consumers): {p.error}"
        )


def _send(p: _Proc, line: str) -> None:
    if p.proc.stdin is not None and not p.proc.stdin.is_closing():
        with contextlib.suppress(ConnectionError):
            p.proc.stdin.write(line.encode() + b"\n")


async def _wait(parent: _Parent, condition: Callable[[], bool], timeout: float = 1.0) -> None:
    while not condition():
        parent.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(parent.changed.wait(), timeout)


async def _until_over(
    config: BenchConfig, parent: _Parent, procs: list[_Proc], alone: bool
) -> None:
    """Wait for the children; stop them once every producer is done and all due arrived.

    Also when deliveries stalled for `_DRAIN_STALL` seconds (the rest is lost), or after
    `_DRAIN_MAX`; a child ending by itself (--time, --cmessages) needs no stop.
    """
    stopped = False
    quiet_since, last, started = time.perf_counter(), -1, None
    while not all(p.finished for p in procs):
        await asyncio.sleep(_PROGRESS_EVERY)
        if stopped or not all(p.producers_done or p.finished for p in procs):
            continue
        now = time.perf_counter()
        started = started or now
        consumed = sum(p.consumed for p in procs)
        if consumed != last:
            last, quiet_since = consumed, now
        sent = {pid: n for p in procs for pid, n in p.sent.items()}
        arrived = all_arrived(due_by_queue(config, sent), [p.distinct for p in procs])
        if (alone and arrived) or now - quiet_since > _DRAIN_STALL or now - started > _DRAIN_MAX:
            for p in procs:
                if not p.finished:
                    _send(p, "stop")
            stopped = True
