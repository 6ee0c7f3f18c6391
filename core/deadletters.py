"""Dead letters: list, inspect (`get`), requeue and purge what the mesh gave up on.

Agents dead-letter a message to `munggoggo.dlx` after `max_redeliveries` failed attempts (or
when nothing can handle it) with the reason, the retry count and where it came from in
headers; `munggoggo.dead-letters` (bound with `#`) keeps them. RabbitMQ's own dead letters
(a rejected or expired message of a queue whose `x-dead-letter-exchange` is the DLX) land
there too and are read from their `x-death` header.

AMQP has no peek: messages are taken with basic.get and held unacknowledged while we look
at them; what we do not remove goes back with a requeueing nack, which puts it back in its
place in the queue. Requeue republishes each dead letter, with publisher confirms and
`mandatory`, to the queue it was consumed from, and acks the dead letter only once the broker
confirmed the copy: an interruption leaves at worst a duplicate, never a loss. A copy the
broker returned (its queue is gone) leaves its dead letter where it was.

Works on any connection with the client's channel API: a RabbitMQ `Connection`, a memory://
connection, or `agent.connection`.

Every operation holds the queue's broker-wide lock (`deadletter_lock`): one scan at a time
across processes, so no reader hides letters from another. A scan reads at most the letters
the queue held when it began and stops after `scan_timeout`; an operation cut short raises
`DeadLettersTimeout` (what a requeue or purge did so far in its `result`). No printing
here: `munggoggo ctl dead-letters` formats, the gateway's `/dead-letters` routes
(gateway/deadletters.py) answer JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _speedups
from ._speedups import Delivery, MunggoggoError, Properties
from .deadletter_lock import DeadLettersBusy as DeadLettersBusy  # re-exported
from .deadletter_lock import scan_lock
from .durable import declare_dead_letter_queue, normalize_queue_type
from .engine import ChannelProtocol, ConnectionProtocol, PublishError
from .header_copy import copy_headers
from .message import copy_properties
from .wire import (
    AGENT_HEADER,
    BEHAVIOUR_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED_AT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    REQUEUED_FROM_HEADER,
    RETRIES_HEADER,
)

# Headers that describe a death, not the message: a requeued copy starts clean (its retry
# count at zero) and says which dead letter it came from instead.
_DEATH_HEADERS = frozenset(
    {
        REASON_HEADER,
        RETRIES_HEADER,
        DEAD_LETTER_ID_HEADER,
        DEAD_LETTERED_AT_HEADER,
        AGENT_HEADER,
        BEHAVIOUR_HEADER,
        QUEUE_HEADER,
        ORIGINAL_EXCHANGE_HEADER,
        ORIGINAL_ROUTING_KEY_HEADER,
        REQUEUED_FROM_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
_CONFIRM_BATCH = 256  # copies in flight before we wait for their confirms and ack
CONFIRM_TIMEOUT = 30.0
# Letters a scan reads beyond the count the queue declared when it began: a quorum queue's
# count lags behind letters it already confirmed, and a scan must not miss those.
_LATE_ARRIVALS = 100
LOCK_TIMEOUT = 10.0
SCAN_TIMEOUT = 60.0


@dataclass(frozen=True)
class DeadLetter:
    """One message in the dead-letter queue, as far as its headers tell."""

    id: str  # the agent's dead-letter id, else a digest of the message (stable across reads)
    queue: str | None  # the queue it was consumed from: where requeue sends it
    agent: str | None
    behaviour: str | None
    exchange: str | None  # where it was originally published
    routing_key: str | None
    reason: str
    retries: int
    dead_lettered_at: float | None  # seconds since the epoch
    sender: str | None
    kind: str | None
    content_type: str | None
    size: int
    body: bytes = field(repr=False)
    headers: dict[str, Any] = field(repr=False)

    def age(self, now: float | None = None) -> float | None:
        if self.dead_lettered_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.dead_lettered_at)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-friendly, without the body (it may be large or binary)."""
        return {
            "id": self.id,
            "queue": self.queue,
            "agent": self.agent,
            "behaviour": self.behaviour,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "reason": self.reason,
            "retries": self.retries,
            "dead_lettered_at": self.dead_lettered_at,
            "age": self.age(now),
            "sender": self.sender,
            "kind": self.kind,
            "content_type": self.content_type,
            "size": self.size,
        }


@dataclass
class RequeueResult:
    requeued: list[str] = field(default_factory=list)  # ids now back in their queue
    kept: dict[str, str] = field(default_factory=dict)  # id -> why it is still a dead letter
    missing: list[str] = field(default_factory=list)  # ids asked for and not found


@dataclass
class PurgeResult:
    purged: int = 0
    ids: list[str] = field(default_factory=list)  # empty when the whole queue was purged
    missing: list[str] = field(default_factory=list)
    # After purging the whole queue: how many it still holds (dead letters that arrived
    # meanwhile, or held by a reader that does not take the lock). None otherwise.
    left: int | None = None


class DeadLettersTimeout(MunggoggoError, TimeoutError):
    """A dead-letter operation was cut short: its scan ran out of time, or the broker did
    not confirm requeued copies in time.

    Args:
        message: what happened.
        result: what a requeue or purge did before it stopped (None for list and get).

    Attributes:
        result: what a requeue or purge did before it stopped (None for list and get).
    """

    def __init__(self, message: str, result: RequeueResult | PurgeResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def parse_dead_letter(delivery: Delivery) -> DeadLetter:
    """Read a dead letter's story from its headers; tolerant of any client's headers."""
    props = delivery.properties
    headers = props.headers if isinstance(props.headers, dict) else {}
    death = _last_death(headers)
    queue = _text(headers.get(QUEUE_HEADER)) or _text(death.get("queue"))
    routing_keys = death.get("routing-keys")
    routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER))
    if routing_key is None and isinstance(routing_keys, list) and routing_keys:
        routing_key = _text(routing_keys[0])
    reason = _text(headers.get(REASON_HEADER))
    if reason is None:
        reason = f"broker: {_text(death.get('reason')) or 'unknown'}"
    retries = _int(headers.get(RETRIES_HEADER))
    if retries is None:
        retries = _int(death.get("count")) or 0
    at = headers.get(DEAD_LETTERED_AT_HEADER, death.get("time"))
    return DeadLetter(
        id=_text(headers.get(DEAD_LETTER_ID_HEADER)) or _digest(delivery),
        queue=queue,
        agent=_text(headers.get(AGENT_HEADER)),
        behaviour=_text(headers.get(BEHAVIOUR_HEADER)),
        exchange=_text(headers.get(ORIGINAL_EXCHANGE_HEADER, death.get("exchange"))),
        routing_key=routing_key,
        reason=reason,
        retries=retries,
        dead_lettered_at=float(at) if isinstance(at, int | float) else None,
        sender=props.app_id,
        kind=props.type,
        content_type=props.content_type,
        size=len(delivery.body),
        body=delivery.body,
        headers=headers,
    )


def _last_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]  # RabbitMQ keeps the most recent death first
    return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _digest(delivery: Delivery) -> str:
    """An id for a dead letter no agent named (RabbitMQ's own): the same message, the same
    id on every read, since body and properties (x-death with its time) do not change."""
    raw = delivery.properties_raw  # as received: re-encoding may change it, or fail
    h = hashlib.sha256(raw if raw is not None else _speedups.encode_properties(delivery.properties))
    h.update(delivery.body)
    return h.hexdigest()[:16]


def requeue_properties(delivery: Delivery, dead_letter_id: str) -> Properties:
    """The properties of a requeued copy: the original ones without the death headers."""
    headers = copy_headers(delivery, {REQUEUED_FROM_HEADER: dead_letter_id}, drop=_DEATH_HEADERS)
    return copy_properties(delivery, headers, expiration=delivery.properties.expiration)


# Requeued copies awaiting their confirm: (dead letter's delivery, dead letter, copy's seq).
# Named here: inside DeadLetters, `list` is its method.
_Copies = list[tuple[Delivery, DeadLetter, int]]


class DeadLetters:
    """The dead-letter queue of a mesh, through one connection.

    Args:
        connection: the connection to work through.
        queue: the dead-letter queue (`munggoggo.dead-letters`, declared as agents do;
            another name is used as it is).
        lock_timeout: seconds an operation waits at most for another reader to finish
            (`DeadLettersBusy` then); None: `LOCK_TIMEOUT`.
        scan_timeout: seconds a scan reads at most (`DeadLettersTimeout` then); None:
            `SCAN_TIMEOUT`.
        confirm_timeout: seconds a requeue waits at most for the broker to confirm a batch
            of copies (`DeadLettersTimeout` then, the letters kept); None: `CONFIRM_TIMEOUT`.
    """

    def __init__(
        self,
        connection: ConnectionProtocol,
        queue: str = DEAD_LETTER_QUEUE,
        *,
        lock_timeout: float | None = None,
        scan_timeout: float | None = None,
        confirm_timeout: float | None = None,
    ) -> None:
        self.connection = connection
        self.queue = queue
        # None: the module's setting as it is now (LOCK_TIMEOUT, ...), read here.
        self.lock_timeout = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
        self.scan_timeout = SCAN_TIMEOUT if scan_timeout is None else scan_timeout
        self.confirm_timeout = CONFIRM_TIMEOUT if confirm_timeout is None else confirm_timeout

    async def list(self, limit: int = 100, *, agent: str | None = None) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first (of `agent` only, if given). The queue
        is left as it was.

        Raises:
            DeadLettersBusy: another reader kept the queue longer than `lock_timeout`.
            DeadLettersTimeout: the scan took longer than `scan_timeout`.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        found: list[DeadLetter] = []
        # A full list stops reading: the scan is closed before the reader hands back.
        async with _Reader(self) as reader, contextlib.aclosing(reader.scan()) as letters:
            async for _, letter in letters:
                if agent is None or letter.agent == agent:
                    found.append(letter)
                    if len(found) >= limit:
                        break
            reader.check()
        return found

    async def get(self, letter_id: str) -> DeadLetter | None:
        """One dead letter, with its body and headers, by its id. The queue is left as it
        was: the scan stops at the letter, and every message it took goes back in its place.

        Args:
            letter_id: the dead letter's id (`DeadLetter.id`).

        Returns:
            The dead letter, or None when none in the queue has that id.

        Raises:
            DeadLettersBusy: another reader kept the queue longer than `lock_timeout`.
            DeadLettersTimeout: the scan took longer than `scan_timeout`.
        """
        async with _Reader(self) as reader, contextlib.aclosing(reader.scan()) as letters:
            async for _, letter in letters:
                if letter.id == letter_id:
                    return letter
            reader.check()
        return None

    async def requeue(
        self,
        ids: Iterable[str] | None = None,
        *,
        agent: str | None = None,
        all: bool = False,
    ) -> RequeueResult:
        """Send dead letters back to the queue each came from, with a fresh retry count.

        Choose them by `ids`, or `all=True` (both narrowed by `agent` if given). A dead letter
        is acked only after the broker confirmed its copy.

        Raises:
            DeadLettersBusy: another reader kept the queue longer than `lock_timeout`.
            DeadLettersTimeout: the scan ran out of time, or copies were not confirmed in
                time (their letters are in `result.kept`: a copy may have been delivered
                all the same); `result` tells what was done.
        """
        wanted = _selection(ids, all)
        result = RequeueResult()
        async with _Reader(self) as reader:
            ch = reader.channel
            returned: dict[str, str] = {}

            def on_return(d: Delivery) -> None:
                origin = (d.properties.headers or {}).get(REQUEUED_FROM_HEADER)
                if isinstance(origin, str):
                    returned[origin] = f"{d.reply_code} {d.reply_text}"

            ch.on_return = on_return
            batch: list[tuple[Delivery, DeadLetter, int]] = []
            unconfirmed = False

            def stop() -> bool:
                return wanted.done or unconfirmed

            async for delivery, letter in reader.scan(stop=stop):
                if not wanted.take(letter, agent):
                    continue
                if letter.queue is None:
                    result.kept[letter.id] = "it does not say which queue it came from"
                    continue
                seq = ch.publish(
                    delivery.body,
                    "",
                    letter.queue,
                    requeue_properties(delivery, letter.id),
                    mandatory=True,  # a queue that is gone returns the copy: keep the letter
                )
                batch.append((delivery, letter, seq))
                if len(batch) >= _CONFIRM_BATCH:
                    unconfirmed = not await self._settle(reader, batch, returned, result)
                    batch = []
            if not unconfirmed:
                unconfirmed = not await self._settle(reader, batch, returned, result)
        if not (unconfirmed or reader.stopped):
            # Cut short, an id not reached may well exist: only a full scan says missing.
            result.missing = wanted.missing()
        if unconfirmed:
            raise DeadLettersTimeout(
                f"the broker did not confirm requeued copies within {self.confirm_timeout:g}s: "
                "their dead letters were kept (a copy may have been delivered too)",
                result,
            )
        if reader.stopped:
            raise DeadLettersTimeout(reader.timeout_message(), result)
        return result

    async def _settle(
        self,
        reader: _Reader,
        batch: _Copies,
        returned: dict[str, str],
        result: RequeueResult,
    ) -> bool:
        """Wait for the copies' confirms; ack the dead letters whose copy arrived. False
        when the confirms did not come in time: the batch's letters are kept."""
        if not batch:
            return True
        ch = reader.channel
        nacked: set[int] = set()
        try:
            await ch.wait_confirms(batch[-1][2], timeout=self.confirm_timeout)
        except PublishError as exc:
            nacked = {seq for seq, _ in exc.failures}
        except TimeoutError:
            # Each copy may still arrive: keeping its letter risks a duplicate, never a loss.
            for _, letter, _ in batch:
                result.kept[letter.id] = (
                    f"the broker did not confirm its copy within {self.confirm_timeout:g}s: "
                    "the copy may have been delivered all the same"
                )
            return False
        # memory:// hands returns over from the event loop: let them in before deciding.
        await asyncio.sleep(0)
        for delivery, letter, seq in batch:
            if seq in nacked:
                result.kept[letter.id] = "the broker did not confirm its copy"
            elif letter.id in returned:
                result.kept[letter.id] = (
                    f"queue {letter.queue!r} no longer exists ({returned[letter.id]})"
                )
            elif reader.ack(delivery):
                result.requeued.append(letter.id)
            else:
                result.kept[letter.id] = (
                    "its copy was delivered, but the connection dropped before the dead letter "
                    "was removed: it is in both places now"
                )
        return True

    async def purge(
        self,
        ids: Iterable[str] | None = None,
        *,
        agent: str | None = None,
        all: bool = False,
    ) -> PurgeResult:
        """Delete dead letters for good: by `ids`, or `all=True` (narrowed by `agent`).

        Raises:
            DeadLettersBusy: another reader kept the queue longer than `lock_timeout`.
            DeadLettersTimeout: the scan ran out of time; `result` tells what was purged.
        """
        wanted = _selection(ids, all)
        if all and agent is None:
            async with _Reader(self) as reader:
                purged = await reader.channel.queue_purge(self.queue)
                # queue.purge leaves what a reader without the lock holds unacked, and
                # what arrived meanwhile: say so rather than claim the queue is empty.
                left = await reader.channel.queue_declare(self.queue, passive=True)
                return PurgeResult(purged=purged, left=left.message_count)
        result = PurgeResult()
        async with _Reader(self) as reader:
            async for delivery, letter in reader.scan(stop=lambda: wanted.done):
                if wanted.take(letter, agent) and reader.ack(delivery):
                    result.ids.append(letter.id)
        result.purged = len(result.ids)
        if not reader.stopped:
            # Cut short, an id not reached may well exist: only a full scan says missing.
            result.missing = wanted.missing()
        if reader.stopped:
            raise DeadLettersTimeout(reader.timeout_message(), result)
        return result


class _Selection:
    """Which dead letters an operation takes: the ids asked for (each once), or all."""

    def __init__(self, ids: list[str] | None) -> None:
        self._ids = None if ids is None else dict.fromkeys(ids, False)

    def take(self, letter: DeadLetter, agent: str | None) -> bool:
        if agent is not None and letter.agent != agent:
            return False
        if self._ids is None:
            return True
        if letter.id not in self._ids:
            return False
        self._ids[letter.id] = True
        return True

    @property
    def done(self) -> bool:
        return self._ids is not None and all(self._ids.values())

    def missing(self) -> list[str]:
        return [] if self._ids is None else [i for i, seen in self._ids.items() if not seen]


def _selection(ids: Iterable[str] | None, all: bool) -> _Selection:
    chosen = None if ids is None else list(ids)
    if all == bool(chosen):
        raise ValueError("choose dead letters either by id or with all=True")
    return _Selection(None if all else chosen)


class _Reader:
    """A confirm channel on the dead-letter queue that holds what it took until the end,
    under the queue's broker-wide lock.

    Leaving returns every message not acked to the queue (a requeueing nack each, in
    order: basic.nack, which RabbitMQ 4.3+ does not count toward a quorum queue's delivery
    limit, where closing the channel would) and closes the channel, so an error or a cancel
    halfway loses nothing; then it releases the lock.
    """

    def __init__(self, owner: DeadLetters) -> None:
        self.owner = owner
        self.channel: ChannelProtocol = None  # type: ignore[assignment]  # from __aenter__
        self.stopped = False  # the scan ran out of time before it read every letter
        self._held: dict[int, tuple[int, bool]] = {}  # tag -> (channel generation, acked)
        self._read = 0
        self._count = 0
        self._lock = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _Reader:
        owner = self.owner
        await self._lock.enter_async_context(
            scan_lock(owner.connection, owner.queue, owner.lock_timeout)
        )
        try:
            self.channel = ch = await owner.connection.channel(confirms=True)
            if owner.queue == DEAD_LETTER_QUEUE:
                # The same declarations as every agent's: a mesh with no agent yet has none.
                await ch.exchange_declare(DEAD_LETTER_EXCHANGE, "topic", durable=True)
                # Of whichever type it already has (quorum on a mesh of durable-mode agents).
                queue_type = normalize_queue_type(os.environ.get("MUNGGOGGO_QUEUE_TYPE"))
                await declare_dead_letter_queue(ch, queue_type)
                await ch.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, "#")
        except BaseException:
            if self.channel is not None:
                with contextlib.suppress(Exception):
                    await self.channel.close()
            await self._lock.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        ch = self.channel
        try:
            for tag, (generation, acked) in sorted(self._held.items()):
                if not acked:
                    ch.nack(tag, requeue=True, generation=generation)
        finally:
            try:
                await ch.close()  # the broker requeues whatever is still unacked
            finally:
                await self._lock.aclose()

    async def scan(self, stop: Callable[[], bool] | None = None) -> Any:
        """Each message in the queue once (we hold what we read: none comes twice), until
        the queue has no more to give; at most as many as it held when we began plus
        `_LATE_ARRIVALS`, so dead letters arriving meanwhile cannot keep us going forever.
        Stops early, setting `stopped`, after `scan_timeout`."""
        ch = self.channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.owner.scan_timeout
        self._count = (await ch.queue_declare(self.owner.queue, passive=True)).message_count
        for _ in range(self._count + _LATE_ARRIVALS):
            if stop is not None and stop():
                return
            if loop.time() >= deadline:
                self.stopped = True
                return
            delivery = await ch.get(self.owner.queue)
            if delivery is None:
                return
            self._read += 1
            self._held[delivery.delivery_tag] = (ch.generation, False)
            yield delivery, parse_dead_letter(delivery)

    def check(self) -> None:
        """Raise DeadLettersTimeout if the scan stopped before it read every letter."""
        if self.stopped:
            raise DeadLettersTimeout(self.timeout_message())

    def timeout_message(self) -> str:
        """What to say when the scan ran out of time."""
        return (
            f"the dead-letter scan stopped after {self.owner.scan_timeout:g}s, having read "
            f"{self._read} letters (the queue held {self._count} when it began); every letter "
            "it did not remove is back in its place"
        )

    def ack(self, delivery: Delivery) -> bool:
        """Remove one dead letter; False if its channel died since (the broker kept it)."""
        generation, _ = self._held[delivery.delivery_tag]
        if not self.channel.ack(delivery.delivery_tag, generation=generation):
            return False
        self._held[delivery.delivery_tag] = (generation, True)
        return True
