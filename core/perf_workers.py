"""`munggoggo bench --workers-expected N`: N instances meet over the broker and merge.

The instances (pods of a Job, hosts) share a run id (`--run-id`, by default a hash of
the options they were given, so instances started with the same command agree). Each
declares the exclusive queue `munggoggo.bench.<run id>`: the broker lets exactly one
succeed, the first, which leads; the others get RESOURCE_LOCKED and follow. Exclusive
queues are allowed by RabbitMQ 4.3's defaults and vanish with their connection, so a
crashed run leaves nothing behind. The messages' run id header is not that id but a fresh
one the leader draws for each run and sends with the index (a re-run of one command must
not take the last run's leftovers for its own). Each follower declares an exclusive
server-named queue
for the leader's answers and sends `hello` to the leader's queue.

When N have joined, the leader numbers them (itself 0, then in the order of arrival):
instance i runs producers i*x.. and consumers i*y.. (ids unique over the run) on the
queue named after the run id. When every instance has its connections open it says
`ready`; the leader answers `go` to all at once. Every message the leader gets goes through
one dispatch, whenever it comes: a follower's figures with an error before `go` fail the
run at once (the others are told `abort`), a late `hello` gets `refused`. An interrupted
leader says `stop` (after `go`) or `abort` (before) to the followers, whose runs end too.
At the end each follower sends its figures (`perf_figures.figures_of`, zlib-compressed
JSON, in chunks under `CHUNK_BYTES` when large) as mandatory messages and waits for the
leader's `ack`: no ack in time, or the leader's queue gone, fails the follower with one
line. Once acknowledged, a follower exits 0 even when its share failed: the leader prints
the merged summary, reports the failure and exits non-zero (a Job's failed follower would
otherwise end the Job before the leader printed).
Not all N within `--workers-timeout` seconds: one line, exit status 1, and the leader
tells the ones that came to give up too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from ._speedups import Delivery
from .amqp.errors import ResourceLocked
from .channel import Channel
from .client import Connection
from .perf_figures import figures_of, load_figures, merge_figures, remeasure_depths
from .perf_run import BenchConfig, RunStats, delete_generated_queues, run_bench
from .perf_scale import ScaleError, name_queues, run_processes

__all__ = ["CHUNK_BYTES", "Chunks", "default_run_id", "figures_messages", "run_workers"]

_FIGURES_GRACE = 60.0  # seconds the leader waits for the followers' figures after its run
CHUNK_BYTES = 4 << 20  # figures messages stay well under RabbitMQ 4's 16 MiB default limit


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


def figures_messages(
    index: int, figures: dict[str, Any], error: str | None, limit: int = CHUNK_BYTES
) -> list[bytes]:
    """A follower's figures as message bodies, each about `limit` bytes at most.

    One `figures` message when it fits; else `chunk` messages carrying slices of it
    (RabbitMQ 4 refuses messages over 16 MiB by default; sequence gaps can be large).

    Args:
        index: the follower's index.
        figures: its `figures_of` form.
        error: its run's error, if any.
        limit: the size a body should stay under.

    Returns:
        The bodies to send, in order.
    """
    whole = _encode({"t": "figures", "index": index, "figures": figures, "error": error})
    if len(whole) <= limit:
        return [whole]
    step = max(1024, limit * 3 // 4 - 1024)  # base64 makes 4 bytes of 3
    slices = [whole[i : i + step] for i in range(0, len(whole), step)]
    return [
        _encode(
            {
                "t": "chunk",
                "index": index,
                "k": k,
                "n": len(slices),
                "data": base64.b64encode(piece).decode(),
            }
        )
        for k, piece in enumerate(slices)
    ]


class Chunks:
    """The leader's reassembly of chunked figures, per follower."""

    def __init__(self) -> None:
        """Nothing received yet."""
        self.parts: dict[int, dict[int, bytes]] = {}

    def add(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Take one `chunk` message.

        Args:
            message: a decoded `chunk` message.

        Returns:
            The whole `figures` message once every chunk arrived, else None.

        Raises:
            ValueError: the chunk or the whole is malformed.
        """
        try:
            index, k, n = int(message["index"]), int(message["k"]), int(message["n"])
            got = self.parts.setdefault(index, {})
            got[k] = base64.b64decode(message["data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a figures chunk: {exc!r}") from None
        if len(got) < n:
            return None
        del self.parts[index]
        whole = _decode(b"".join(got[i] for i in range(n)))
        if whole is None or whole.get("t") != "figures":
            raise ValueError("chunks that do not make up a figures message")
        return whole


class _Link:
    """The rendezvous connection: an inbox of messages and a way to send."""

    def __init__(self, conn: Connection, ch: Channel, queue: str) -> None:
        self.conn, self.ch, self.queue = conn, ch, queue
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ch.on_return = self.on_return

    def on_batch(self, batch: list[Delivery]) -> None:
        for d in batch:
            message = _decode(d.body)
            if message is not None:
                self.inbox.put_nowait(message)

    def on_return(self, delivery: Delivery) -> None:
        # A mandatory message nobody's queue took: the addressee is gone.
        self.inbox.put_nowait({"t": "returned"})

    async def send(self, queue: str, message: dict[str, Any]) -> None:
        await self.send_raw(queue, [_encode(message)])

    async def send_raw(self, queue: str, bodies: list[bytes]) -> None:
        for body in bodies:
            self.ch.publish(body, "", queue, mandatory=True)
            await self.ch.wait_confirms()

    async def receive(self, deadline: float) -> dict[str, Any]:
        """The next message, whatever its kind (the caller dispatches); TimeoutError at the
        deadline.
        """
        timeout = max(0.0, deadline - time.monotonic())
        return await asyncio.wait_for(self.inbox.get(), timeout)


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


class _Leader:
    """The leader's side of the meeting: every message it gets goes through `take`."""

    def __init__(self, link: _Link, run_id: str, expected: int, timeout: float) -> None:
        self.link, self.run_id, self.expected, self.timeout = link, run_id, expected, timeout
        self.followers: list[str] = []  # reply queues, in order of arrival
        self.gathering = True
        self.ready: set[int] = set()
        self.figures: dict[int, dict[str, Any]] = {}  # index -> figures message
        self.chunks = Chunks()
        self.went = False
        self.stopping = False
        self.late_errors: list[str] = []

    async def take(self, message: dict[str, Any]) -> None:
        """Dispatch one message, whenever it comes.

        Raises:
            ScaleError: a follower failed before the start (the others were told).
        """
        kind = message.get("t")
        if kind == "hello":
            reply = message.get("reply")
            if not isinstance(reply, str) or reply in self.followers:
                return
            if self.gathering:
                self.followers.append(reply)
            else:  # late: the run is under way without it
                with contextlib.suppress(Exception):
                    await self.link.send(reply, {"t": "refused"})
        elif kind == "ready":
            self.ready.add(int(message.get("index", 0)))
        elif kind in ("figures", "chunk"):
            if kind == "chunk":
                try:
                    whole = self.chunks.add(message)
                except ValueError as exc:
                    raise ScaleError(f"unreadable figures: {exc}") from None
                if whole is None:
                    return
                message = whole
            index = int(message.get("index", 0))
            self.figures[index] = message
            reply = self.followers[index - 1] if 0 < index <= len(self.followers) else None
            if reply is not None:  # the follower may exit: its figures are safe here
                with contextlib.suppress(Exception):
                    await self.link.send(reply, {"t": "ack"})
            if message.get("error") and not self.went:
                line = f"instance {index + 1}: {message['error']}"
                await self.tell_all({"t": "abort", "reason": line})
                raise ScaleError(line)

    async def until(self, condition: Callable[[], bool], deadline: float) -> None:
        """Take messages until the condition holds; TimeoutError at the deadline."""
        while not condition():
            await self.take(await self.link.receive(deadline))

    async def pump(self) -> None:
        """During the run: take messages (figures get their ack now) until `stopping`."""
        while not self.stopping:
            try:
                message = await asyncio.wait_for(self.link.inbox.get(), 0.2)
            except TimeoutError:
                continue
            try:
                await self.take(message)
            except ScaleError as exc:
                self.late_errors.append(str(exc))

    async def tell_all(self, message: dict[str, Any]) -> None:
        """Send to every follower, whatever fails."""
        for reply in self.followers:
            with contextlib.suppress(Exception):
                await self.link.send(reply, message)


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
    try:
        if leader:
            return await _lead(link, config, stats, expected, timeout, run_id, processes, on_second)
        return await _follow(link, config, stats, expected, timeout, run_id, processes, on_second)
    finally:
        with contextlib.suppress(Exception):
            await link.conn.close()


async def _run_share(
    config: BenchConfig,
    stats: RunStats,
    processes: int,
    on_second: Callable[[RunStats, float], None] | None,
    start_together: Callable[[], Awaitable[None]],
) -> None:
    if processes > 1:
        await run_processes(config, processes, stats, on_second, start_together, False)
    else:
        await run_bench(config, stats, on_second, start_together)


def _set_ids(config: BenchConfig, index: int) -> None:
    config.producer_base = index * config.producers
    config.consumer_base = index * config.consumers
    # Generated queues go once every instance is done: the leader deletes them.
    config.owns_queues = False


async def _lead(
    link: _Link,
    config: BenchConfig,
    stats: RunStats,
    expected: int,
    timeout: float,
    run_id: str,
    processes: int,
    on_second: Callable[[RunStats, float], None] | None,
) -> str:
    lead = _Leader(link, run_id, expected, timeout)
    try:
        return await _lead_run(lead, config, stats, processes, on_second)
    except (asyncio.CancelledError, KeyboardInterrupt):
        # Interrupted: the followers stop too (or never start), then the interruption goes on.
        await lead.tell_all({"t": "stop"} if lead.went else {"t": "abort", "reason": "interrupted"})
        raise


async def _lead_run(
    lead: _Leader,
    config: BenchConfig,
    stats: RunStats,
    processes: int,
    on_second: Callable[[RunStats, float], None] | None,
) -> str:
    link, expected, timeout, run_id = lead.link, lead.expected, lead.timeout, lead.run_id
    me = f"{socket.gethostname()} pid {os.getpid()}"
    deadline = time.monotonic() + timeout
    try:
        await lead.until(lambda: len(lead.followers) >= expected - 1, deadline)
    except TimeoutError:
        line = _timeout_line(len(lead.followers) + 1, expected, timeout, run_id)
        await lead.tell_all({"t": "abort", "reason": line})
        raise ScaleError(line) from None
    lead.gathering = False
    for i, reply in enumerate(lead.followers, start=1):
        await link.send(reply, {"t": "index", "index": i, "leader": me, "run": config.run_id})
    _set_ids(config, 0)

    async def start_together() -> None:
        ready_by = time.monotonic() + timeout
        try:
            await lead.until(lambda: len(lead.ready) >= len(lead.followers), ready_by)
        except TimeoutError:
            missing = len(lead.followers) - len(lead.ready)
            line = f"{missing} instances of run {run_id} were not ready within {timeout:g} s"
            await lead.tell_all({"t": "abort", "reason": line})
            raise ScaleError(line) from None
        await lead.tell_all({"t": "go"})
        lead.went = True
        pumps.append(asyncio.create_task(lead.pump()))

    pumps: list[asyncio.Task[None]] = []
    error: BaseException | None = None
    try:
        await _run_share(config, stats, processes, on_second, start_together)
    except ScaleError as exc:
        if not lead.went:  # the failure already told the followers, or did not: tell them
            await lead.tell_all({"t": "abort", "reason": _text(exc)})
            raise
        error = exc
    except Exception as exc:  # the figures of what ran are still merged
        if not lead.went:
            await lead.tell_all({"t": "abort", "reason": _text(exc)})
            raise
        error = exc
    finally:
        lead.stopping = True
        for task in pumps:
            with contextlib.suppress(Exception):
                await task
    parts: list[dict[str, Any]] = [figures_of(stats)]
    errors = [] if error is None else [f"instance 1: {_text(error)}"]
    errors += lead.late_errors
    grace = time.monotonic() + timeout + _FIGURES_GRACE
    with contextlib.suppress(TimeoutError):
        await lead.until(lambda: len(lead.figures) >= len(lead.followers), grace)
    missing = len(lead.followers) - len(lead.figures)
    for index in sorted(lead.figures):
        message = lead.figures[index]
        parts.append(message["figures"])
        if message.get("error"):
            errors.append(f"instance {index + 1}: {message['error']}")
    if missing:
        errors.append(f"{missing} instances sent no figures")
    load_figures(merge_figures(parts), stats)
    await remeasure_depths(config, stats)  # every instance has ended: the depths now
    await delete_generated_queues(config)
    if errors:
        raise ScaleError("; ".join(errors))
    return f"merged summary of {len(parts)} instances (run id {run_id})"


async def _follow(
    link: _Link,
    config: BenchConfig,
    stats: RunStats,
    expected: int,
    timeout: float,
    run_id: str,
    processes: int,
    on_second: Callable[[RunStats, float], None] | None,
) -> str:
    leader_queue = f"munggoggo.bench.{run_id}"
    deadline = time.monotonic() + timeout
    await link.send(leader_queue, {"t": "hello", "reply": link.queue})
    try:
        answer = await _answer(link, ("index",), deadline)
    except TimeoutError:
        raise ScaleError(_timeout_line(None, expected, timeout, run_id)) from None
    index, leader_name = int(answer["index"]), str(answer["leader"])
    # The messages carry the leader's fresh id for this run, the same on every instance.
    config.run_id = str(answer.get("run") or config.run_id)
    _set_ids(config, index)
    went = asyncio.Event()

    async def start_together() -> None:
        await link.send(leader_queue, {"t": "ready", "index": index})
        try:
            await _answer(link, ("go",), time.monotonic() + timeout)
        except TimeoutError:
            raise ScaleError(
                f"the first instance did not start run {run_id} within {timeout:g} s"
            ) from None
        went.set()

    run = asyncio.ensure_future(_run_share(config, stats, processes, on_second, start_together))
    error: BaseException | None = None
    try:
        error = await _watch(link, run, went, run_id)
    except _LeaderSaid:
        raise  # before the start: the leader has nothing to merge
    except asyncio.CancelledError:
        run.cancel()
        raise
    except Exception as exc:  # the figures of what ran still go to the leader
        error = exc
    bodies = figures_messages(index, figures_of(stats), _text(error))
    lost: str | None = None
    try:
        await link.send_raw(leader_queue, bodies)
        await _answer(link, ("ack",), time.monotonic() + timeout + _FIGURES_GRACE)
    except TimeoutError:
        lost = (
            f"the first instance did not acknowledge this instance's figures of run {run_id} "
            f"within {timeout + _FIGURES_GRACE:g} s: they are lost"
        )
    except ScaleError as exc:
        lost = f"{exc}: this instance's figures are lost"
    except Exception as exc:
        lost = f"cannot send the figures of run {run_id}: {_text(exc)}"
    if lost is not None:  # the run's own error first: it says why the run ended
        raise ScaleError(lost if error is None else f"{_text(error)}; {lost}")
    # The leader has the figures, reports this instance's failure and fails itself: this
    # instance's share is done (a Job's follower exiting 1 would end the Job early).
    return f"merged summary of {expected} instances: printed by {leader_name} (run id {run_id})" + (
        "" if error is None else f"; this instance failed: {_text(error)}"
    )


class _LeaderSaid(ScaleError):
    """The leader gave up the run, refused this instance, or is gone."""


async def _watch(
    link: _Link, run: asyncio.Future[None], went: asyncio.Event, run_id: str
) -> BaseException | None:
    """Await a follower's run; after `go`, a `stop` or `abort` of the leader ends it.

    Returns:
        The run's error, or the leader's stop, or None.
    """
    waiter = asyncio.ensure_future(went.wait())
    first: set[asyncio.Future[Any]] = {run, waiter}
    await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    error: BaseException | None = None
    while not run.done():  # only after `go`: before it the start barrier reads the inbox
        getter = asyncio.ensure_future(link.inbox.get())
        either: set[asyncio.Future[Any]] = {run, getter}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        message = getter.result()
        if message.get("t") in ("stop", "abort"):
            run.cancel()
            reason = message.get("reason") or "interrupted"
            error = ScaleError(f"the first instance stopped run {run_id}: {reason}")
    try:
        await run
    except asyncio.CancelledError:
        if error is None:
            raise
    return error


async def _answer(link: _Link, kinds: tuple[str, ...], deadline: float) -> dict[str, Any]:
    """The next message of the leader of a kind; others before it are of no use here.

    Raises:
        ScaleError: the leader gave up, refused this instance, or is gone.
        TimeoutError: nothing of the kind by the deadline.
    """
    while True:
        message = await link.receive(deadline)
        kind = message.get("t")
        if kind in kinds:
            return message
        if kind == "abort":
            raise _LeaderSaid(f"the first instance gave up: {message.get('reason')}")
        if kind == "refused":
            raise _LeaderSaid("the run already started without this instance")
        if kind == "returned":
            raise _LeaderSaid("the first instance is gone")


def _text(error: BaseException | None) -> str | None:
    return None if error is None else (str(error) or type(error).__name__)


def _timeout_line(joined: int | None, expected: int, timeout: float, run_id: str) -> str:
    if joined is None:
        return (
            f"the first instance did not start run {run_id} within {timeout:g} s: "
            f"not all {expected} instances showed up"
        )
    return f"only {joined} of {expected} instances showed up within {timeout:g} s (run id {run_id})"
