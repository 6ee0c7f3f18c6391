"""`munggoggo bench --workers-expected N`: N instances meet over the broker and merge.

The instances (pods of a Job, hosts) share a run id (`--run-id`, by default a hash of
the options they were given, so instances started with the same command agree). Each
declares the exclusive queue `munggoggo.bench.<run id>`: the broker lets exactly one
succeed, the first, which leads; the others get RESOURCE_LOCKED and follow. Exclusive
queues are allowed by RabbitMQ 4.3's defaults and vanish with their connection, so a
crashed run leaves nothing behind. Each follower declares an exclusive server-named queue
for the leader's answers and sends `hello` to the leader's queue.

When N have joined, the leader numbers them (itself 0, then in the order of arrival):
instance i runs producers i*x.. and consumers i*y.. (ids unique over the run) on the
queue named after the run id. When every instance has its connections open it says
`ready`; the leader answers `go` to all at once. At the end each follower sends its
figures (`perf_scale.figures_of`, zlib-compressed JSON) to the leader, which prints one
merged summary; the followers print their own and where the merged one is.
Not all N within `--workers-timeout` seconds: one line, exit status 1, and the leader
tells the ones that came to give up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

from ._speedups import Delivery
from .amqp.errors import ResourceLocked
from .channel import Channel
from .client import Connection
from .perf_figures import figures_of, load_figures, merge_figures
from .perf_run import BenchConfig, RunStats, delete_generated_queues, run_bench
from .perf_scale import ScaleError, name_queues, run_processes

__all__ = ["default_run_id", "run_workers"]

_FIGURES_GRACE = 60.0  # seconds the leader waits for the followers' figures after its run


def default_run_id(config: BenchConfig, expected: int) -> str:
    """A run id derived from the options: instances started alike agree on it.

    Args:
        config: the options (before queue names are generated).
        expected: the number of instances.

    Returns:
        12 hex digits.
    """
    fields = {k: v for k, v in vars(config).items() if k != "urls"}
    fields["urls"] = [str(u) for u in config.urls]
    fields["expected"] = expected
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _encode(message: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(message).encode())


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError):
        return None  # not ours
    return message if isinstance(message, dict) else None


class _Link:
    """The rendezvous connection: an inbox of messages and a way to send."""

    def __init__(self, conn: Connection, ch: Channel, queue: str) -> None:
        self.conn, self.ch, self.queue = conn, ch, queue
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_batch(self, batch: list[Delivery]) -> None:
        for d in batch:
            message = _decode(d.body)
            if message is not None:
                self.inbox.put_nowait(message)

    async def send(self, queue: str, message: dict[str, Any]) -> None:
        self.ch.publish(_encode(message), "", queue)
        await self.ch.wait_confirms()

    async def receive(self, kind: str, deadline: float) -> dict[str, Any]:
        """The next message of a kind (others are dropped); TimeoutError at the deadline."""
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            message = await asyncio.wait_for(self.inbox.get(), timeout)
            if message.get("t") in (kind, "abort", "refused"):
                return message


async def _connect(config: BenchConfig, run_id: str) -> tuple[_Link, bool]:
    """Open the rendezvous; True when this instance leads."""
    name = f"munggoggo.bench.{run_id}"
    conn = Connection(config.urls[0], reconnect=False, name=f"munggoggo-bench-{run_id}")
    await conn.connect()
    try:
        ch = await conn.channel(confirms=True)
        try:
            await ch.queue_declare(name, exclusive=True, auto_delete=True)
            leader = True
            queue = name
        except ResourceLocked:
            leader = False
            ch = await conn.channel(confirms=True)  # the refusal closed the other
            queue = (await ch.queue_declare("", exclusive=True, auto_delete=True)).queue
        link = _Link(conn, ch, queue)
        await ch.consume(queue, link.on_batch, no_ack=True)
    except BaseException:
        await conn.close()
        raise
    return link, leader


async def run_workers(
    config: BenchConfig,
    stats: RunStats,
    expected: int,
    timeout: float,
    run_id: str,
    processes: int = 1,
    on_second: Callable[[RunStats, float], None] | None = None,
) -> str:
    """Meet the other instances, run this one's share together with them, merge.

    Args:
        config: this instance's options (the same on every instance).
        stats: this instance's figures; on the leader, replaced by the merged ones.
        expected: how many instances run together (2 or more).
        timeout: seconds to wait for all of them (and for each start step).
        run_id: the run's id; the queues are named after it.
        processes: child processes of this instance (`--processes`).
        on_second: called about once a second with this instance's figures.

    Returns:
        A line to print after the summary: the merged summary's origin, or where it is.

    Raises:
        ScaleError: not all instances showed up in time, the leader gave up, or this
            instance's run failed.
        AMQPError: the broker could not be reached or refused the rendezvous.
    """
    name_queues(config, run_id)
    link, leader = await _connect(config, run_id)
    me = f"{socket.gethostname()} pid {os.getpid()}"
    deadline = time.monotonic() + timeout
    followers: list[str] = []  # reply queues, in order of arrival
    leader_name = me
    error: BaseException | None = None
    try:
        if leader:
            index = 0
            followers = await _gather_hellos(link, expected, deadline, timeout, run_id)
            for i, reply in enumerate(followers, start=1):
                await link.send(reply, {"t": "index", "index": i, "leader": me})
        else:
            await link.send(f"munggoggo.bench.{run_id}", {"t": "hello", "reply": link.queue})
            try:
                answer = await link.receive("index", deadline)
            except TimeoutError:
                raise ScaleError(_timeout_line(None, expected, timeout, run_id)) from None
            _check_answer(answer, run_id)
            index, leader_name = answer["index"], answer["leader"]
        config.producer_base = index * config.producers
        config.consumer_base = index * config.consumers
        # Generated queues go once every instance is done: the first deletes them.
        config.owns_queues = False

        async def start_together() -> None:
            await _start_barrier(link, index, followers, run_id, timeout)

        try:
            if processes > 1:
                await run_processes(config, processes, stats, on_second, start_together, False)
            else:
                await run_bench(config, stats, on_second, start_together)
        except BaseException as exc:  # the figures of what ran still go to the leader
            error = exc
        if not leader:
            with contextlib.suppress(Exception):
                mine = {"t": "figures", "index": index, "figures": figures_of(stats)}
                mine["error"] = _text(error)
                await link.send(f"munggoggo.bench.{run_id}", mine)
            if error is not None:
                raise error
            return (
                f"merged summary of {expected} instances: printed by {leader_name} "
                f"(run id {run_id})"
            )
        parts: list[dict[str, Any]] = [figures_of(stats)]
        errors = [] if error is None else [f"instance 1: {_text(error)}"]
        grace = time.monotonic() + timeout + _FIGURES_GRACE
        while len(parts) < expected:
            try:
                message = await link.receive("figures", grace)
            except TimeoutError:
                errors.append(f"{expected - len(parts)} instances sent no figures")
                break
            if message.get("t") == "figures":
                parts.append(message["figures"])
                if message.get("error"):
                    errors.append(f"instance {message.get('index', 0) + 1}: {message['error']}")
        load_figures(merge_figures(parts), stats)
        await delete_generated_queues(config)
        if errors:
            raise ScaleError("; ".join(errors))
        return f"merged summary of {len(parts)} instances (run id {run_id})"
    finally:
        with contextlib.suppress(Exception):
            await link.conn.close()


def _text(error: BaseException | None) -> str | None:
    return None if error is None else (str(error) or type(error).__name__)


def _timeout_line(joined: int | None, expected: int, timeout: float, run_id: str) -> str:
    if joined is None:
        return (
            f"the first instance did not start run {run_id} within {timeout:g} s: "
            f"not all {expected} instances showed up"
        )
    return f"only {joined} of {expected} instances showed up within {timeout:g} s (run id {run_id})"


def _check_answer(answer: dict[str, Any], run_id: str) -> None:
    if answer.get("t") == "abort":
        raise ScaleError(f"the first instance gave up run {run_id}: {answer.get('reason')}")
    if answer.get("t") == "refused":
        raise ScaleError(f"run {run_id} already started without this instance")


async def _gather_hellos(
    link: _Link, expected: int, deadline: float, timeout: float, run_id: str
) -> list[str]:
    followers: list[str] = []
    while len(followers) < expected - 1:
        try:
            message = await link.receive("hello", deadline)
        except TimeoutError:
            line = _timeout_line(len(followers) + 1, expected, timeout, run_id)
            for reply in followers:
                with contextlib.suppress(Exception):
                    await link.send(reply, {"t": "abort", "reason": line})
            raise ScaleError(line) from None
        if message.get("t") == "hello" and message.get("reply") not in followers:
            followers.append(message["reply"])
    return followers


async def _start_barrier(
    link: _Link, index: int, followers: list[str], run_id: str, timeout: float
) -> None:
    """Every instance ready (connections open): the leader says go to all at once."""
    deadline = time.monotonic() + timeout
    if index == 0:
        ready: set[int] = set()
        while len(ready) < len(followers):
            try:
                message = await link.receive("ready", deadline)
            except TimeoutError:
                missing = len(followers) - len(ready)
                line = f"{missing} instances of run {run_id} were not ready within {timeout:g} s"
                for reply in followers:
                    with contextlib.suppress(Exception):
                        await link.send(reply, {"t": "abort", "reason": line})
                raise ScaleError(line) from None
            if message.get("t") == "ready":
                ready.add(message["index"])
            elif message.get("t") == "hello":
                await link.send(message["reply"], {"t": "refused"})
        for reply in followers:
            await link.send(reply, {"t": "go"})
        return
    await link.send(f"munggoggo.bench.{run_id}", {"t": "ready", "index": index})
    try:
        answer = await link.receive("go", deadline)
    except TimeoutError:
        raise ScaleError(
            f"the first instance did not start run {run_id} within {timeout:g} s"
        ) from None
    _check_answer(answer, run_id)
