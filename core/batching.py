"""Micro-batching of publishes: logical messages to one topic travel as one AMQP message.

RabbitMQ routes, stores and delivers per AMQP message, so N small messages published to the
same routing key within a short window cost the broker about 1/N of their cost one by one
when they travel together (the wire format: core/batch_format.py). Batching is opt-in:
`AgentConfig(batching=Batching())` for an agent, `Behaviour.batching` per behaviour.

Only `publish()` (pub/sub on `munggoggo.topic`, no delay) is batched. Direct messages
(`send`) are mandatory: a return would name the whole batch, not the message that had no
inbox; broadcasts, RPC and delayed publishes keep their own properties and routes.

`Batcher` is the agent's part: the logical sequence numbers, the batches in flight (the
channel's sequence number of each, mapped to its items' logical numbers until the broker
confirmed it), and sending what is pending (`send_all`, on `flush()` and `stop()`).
`BatchLane` is one `Batching` setting of it: the batches being filled, one per routing key,
each sent when full (`max_items`, `max_bytes`) or `linger` seconds after its first item
(one loop timer per batch).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from . import tracing
from ._speedups import Properties, check_header_fits, encode_properties, encode_table
from .amqp.errors import ConnectionLost
from .batch_format import (
    BATCH_CONTENT_TYPE,
    BATCH_COUNT_HEADER,
    ITEM_OVERHEAD,
    MAX_ITEMS,
    Item,
    pack_items,
)
from .envelope import KIND_MESSAGE, encode_body
from .topics import TopicPattern, compile_topic
from .tracing import TRACEPARENT, outgoing_headers
from .wire import TOPIC_EXCHANGE

if TYPE_CHECKING:
    from .agent_base import AgentBase
    from .engine import ChannelProtocol

__all__ = [
    "FIRST_BATCHED_SEQ",
    "MAX_BATCH_BYTES",
    "BatchLane",
    "Batcher",
    "Batching",
    "batching_setting",
]

log = logging.getLogger("munggoggo.agent")

# Batched messages are numbered from here, +1 per logical message: above any sequence
# number a channel reaches (2**48 publishes), so the two ranges never meet.
FIRST_BATCHED_SEQ = 1 << 48
# The largest `max_bytes`: RabbitMQ 4's default max_message_size (16 MiB).
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_LINGER = 60.0
# The msgspec encoder that measures an item's headers when it is added (what they add to
# the batch body, exactly).
_headers_encoder = msgspec.msgpack.Encoder()
# Content types whose properties' length `check_properties` remembers, at most.
_OTHERS_CACHE = 64
# A content type up to this many characters fits AMQP's 255 bytes whatever its UTF-8 form.
_SURE_SHORTSTR = 63
# Routing keys whose topic match a lane remembers, at most (then it starts afresh).
_TAKEN_CACHE = 4096
# The msgpack array header of the batch body, counted against `max_bytes` from above.
_ARRAY_HEADER = 5


def _invalid(field: str, expected: str, value: object) -> ValueError:
    return ValueError(f"Batching.{field} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Batching:
    """Micro-batching of an agent's (or a behaviour's) `publish()` calls.

    Logical messages published to one routing key within `linger` travel as one AMQP
    message (docs/reference/wire.md, "Batches"); subscribers get them one by one. Set it as
    `AgentConfig(batching=Batching())`, or per behaviour as its `batching` class attribute.

    Attributes:
        linger: seconds the first item of a batch waits for company; 0: until the end of
            the current loop tick.
        max_items: items per batch at most (up to `batch_format.MAX_ITEMS`, what a reader
            accepts); a full batch is sent at once.
        max_bytes: body size of a batch at most (items' bodies, content types and encoded
            headers, trace headers included, counted from above); a batch is sent when the
            next item would exceed it. An item larger than this goes alone, as a batch of
            one: only then is a body larger than `max_bytes`.
        topics: AMQP topic patterns (`*` one word, `#` zero or more): only publishes whose
            routing key matches one are batched, the others go out as they are.

    Raises:
        ValueError: a value out of range or of the wrong type (the message names the field).
    """

    linger: float = 0.001
    """Seconds the first item of a batch waits for more (0: the end of this loop tick)."""
    max_items: int = 256
    """Items per batch at most (1 to `batch_format.MAX_ITEMS`, 4096)."""
    max_bytes: int = 65536
    """Bytes per batch body at most (1 to 16 MiB); a larger item goes alone."""
    topics: tuple[str, ...] = ("#",)
    """Topic patterns whose publishes are batched (default: all)."""

    def __post_init__(self) -> None:
        linger = self.linger
        if (
            isinstance(linger, bool)
            or not isinstance(linger, int | float)
            or not math.isfinite(linger)
            or not 0 <= linger <= MAX_LINGER
        ):
            raise _invalid("linger", f"seconds from 0 to {MAX_LINGER:g}", linger)
        object.__setattr__(self, "linger", float(linger))
        for field, top in (("max_items", MAX_ITEMS), ("max_bytes", MAX_BATCH_BYTES)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise _invalid(field, f"an int from 1 to {top}", value)
        topics = self.topics
        if isinstance(topics, str) or not isinstance(topics, tuple | list):
            raise _invalid("topics", "a tuple of topic patterns", topics)
        # A list from a mapping (JSON, YAML) is as good as a tuple; frozen: set once here.
        topics = tuple(topics)
        if not topics:
            raise _invalid("topics", "at least one topic pattern", topics)
        for pattern in topics:
            if not isinstance(pattern, str) or len(pattern.encode()) > 255:
                raise _invalid("topics", "topic patterns (str of at most 255 bytes)", pattern)
        object.__setattr__(self, "topics", topics)


def batching_setting(value: Any) -> Batching | None:
    """`AgentConfig.batching` as given (a mapping from JSON or YAML, True, ...) checked.

    Args:
        value: None or False (off), True (`Batching()`), a `Batching`, or a mapping of its
            field names (any case).

    Returns:
        The setting, None when off.

    Raises:
        ValueError: anything else, or a mapping with a bad field or value.
    """
    if value is None or value is False:
        return None
    if value is True:
        return Batching()
    if isinstance(value, Batching):
        return value
    if isinstance(value, Mapping):
        fields = {f.name for f in dataclasses.fields(Batching)}
        settings = {str(k).lower(): v for k, v in value.items()}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ValueError(
                f"unknown AgentConfig.batching key(s) {unknown}; accepted keys (any case): "
                + ", ".join(sorted(fields))
            )
        return Batching(**settings)
    raise ValueError(
        "AgentConfig.batching must be a Batching, a dict of its fields, True or None, "
        f"got {value!r}"
    )


class _Batch:
    """One batch being filled: its items, their size and their logical numbers."""

    __slots__ = ("first_seq", "items", "key", "last_seq", "seqs", "size", "timer")

    def __init__(self, key: str, first_seq: int) -> None:
        self.key = key
        self.items: list[Item] = []
        self.size = _ARRAY_HEADER
        self.first_seq = first_seq
        self.last_seq = first_seq - 1
        # The items' logical numbers, kept only once they stop being consecutive (another
        # batch of the agent took a number in between): else first_seq..last_seq.
        self.seqs: list[int] | None = None
        self.timer: asyncio.Handle | None = None

    def logical_seqs(self) -> list[int] | range:
        """The logical sequence numbers of the items, in order."""
        return self.seqs if self.seqs is not None else range(self.first_seq, self.last_seq + 1)


class BatchLane:
    """The batches of one `Batching` setting of an agent: one per routing key, being filled.

    Args:
        batcher: the agent's batcher.
        setting: the limits and topics.
    """

    __slots__ = ("_batcher", "_batches", "_patterns", "_taken", "must_drain", "setting")

    def __init__(self, batcher: Batcher, setting: Batching) -> None:
        self._batcher = batcher
        self.setting = setting
        # A batch went out: the next publish waits (`drain`) before it returns.
        self.must_drain = False
        self._patterns: list[TopicPattern] = [compile_topic(p) for p in setting.topics]
        self._taken: dict[str, bool] = {}
        self._batches: dict[str, _Batch] = {}

    def takes(self, routing_key: str) -> bool:
        """Whether a publish to `routing_key` is batched (its topics match, it fits AMQP's
        255 bytes, and the agent is connected and not stopping).

        Args:
            routing_key: the publish's routing key.

        Returns:
            True when `add` should take it.
        """
        taken = self._taken.get(routing_key)
        if taken is None:
            # A key AMQP cannot carry (over 255 bytes) goes the plain way, which refuses it
            # to the caller rather than fail a batch later.
            taken = len(routing_key.encode("utf-8", "surrogateescape")) <= 255 and any(
                p.matches(routing_key) for p in self._patterns
            )
            if len(self._taken) >= _TAKEN_CACHE:
                self._taken.clear()
            self._taken[routing_key] = taken
        return taken and self._batcher.open

    def add(
        self,
        body: Any,
        routing_key: str,
        headers: dict[str, Any] | None,
        content_type: str | None,
        origin: str,
    ) -> int | None:
        """Add one logical message to the batch of its routing key (sending that batch
        first when this item would make it exceed `max_bytes`, and afterwards when it is
        full).

        Its properties are checked as a plain publish checks them (the AMQP encoder, the
        content header's `frame_max` bound): every copy a consumer makes of the item
        (retry, requeue, dead letter) travels with them as AMQP headers. Headers AMQP
        carries but a batch item cannot (a name that is no str, a value msgpack has no
        form for) make it go alone: the batch of its routing key is sent first, so the
        order of the key's messages holds, and None is returned.

        Args:
            body: what `publish()` was given.
            routing_key: the topic.
            headers: AMQP headers of this message, or None.
            content_type: overrides the content type chosen for the body, or None.
            origin: the publishing behaviour's short name ("" for the agent).

        Returns:
            The message's logical sequence number (from `FIRST_BATCHED_SEQ` on), or None
            when it must be published alone.

        Raises:
            EncodeError: a body the content type cannot carry; nothing is added.
            ValueError: headers or a content type AMQP cannot carry, as a plain publish.
            PropertiesTooLarge: properties over one content header frame (`frame_max`),
                as a plain publish.
            ConnectionLost: the connection closed for good, as a plain publish.
        """
        data, ctype = encode_body(body, content_type)
        if TRACEPARENT.get() is not None or tracing.hooks is not None:
            headers = outgoing_headers(headers, KIND_MESSAGE)
        batcher = self._batcher
        # batch_format.item_overhead, inlined: the per-item path stays one call deep.
        size = len(data) + ITEM_OVERHEAD + len(ctype)
        if not ctype.isascii():
            size += len(ctype.encode("utf-8", "surrogateescape")) - len(ctype)
        if headers or len(ctype) > _SURE_SHORTSTR:
            batcher.check_properties(ctype, headers)
            if headers:
                encoded = _encoded_headers(headers)
                if encoded is None:
                    batch = self._batches.get(routing_key)
                    if batch is not None:
                        self._send(batch)
                    return None
                size += encoded - 1  # in place of the nil ITEM_OVERHEAD counts
        setting = self.setting
        batch = self._batches.get(routing_key)
        if batch is not None and batch.size + size > setting.max_bytes:
            self._send(batch)
            batch = None
        if batch is None:
            batcher.check_open()
        seq = batcher.next_seq
        batcher.next_seq = seq + 1
        if batch is None:
            batch = self._batches[routing_key] = _Batch(routing_key, seq)
            loop = batcher.loop
            if setting.linger:
                batch.timer = loop.call_later(setting.linger, self._linger_over, batch)
            else:
                batch.timer = loop.call_soon(self._linger_over, batch)
        elif seq != batch.last_seq + 1 and batch.seqs is None:
            batch.seqs = list(range(batch.first_seq, batch.last_seq + 1))
        if batch.seqs is not None:
            batch.seqs.append(seq)
        batch.last_seq = seq
        items = batch.items
        # The caller's dict may change before the batch is packed (up to `linger` later).
        items.append((data, ctype, dict(headers) if headers else None))
        batch.size += size
        published = batcher.published
        key = (origin, KIND_MESSAGE)
        published[key] = published.get(key, 0) + 1
        if batcher.records_traces:
            batcher.trace.record_out(KIND_MESSAGE, TOPIC_EXCHANGE, routing_key, len(data), None)
        if len(items) >= setting.max_items or batch.size >= setting.max_bytes:
            self._send(batch)
        return seq

    async def drain(self) -> None:
        """What `publish()` does when `must_drain` is set: yield to the loop (the batch is
        written), or wait until publishing may go on (flow control, the unconfirmed
        window) as a plain publish that found the channel full does.
        """
        self.must_drain = False
        await self._batcher.drain()

    @property
    def pending(self) -> int:
        """Items waiting in this lane's batches, not sent yet."""
        return sum(len(b.items) for b in self._batches.values())

    def send_all(self) -> None:
        """Send every batch being filled, now."""
        for batch in list(self._batches.values()):
            self._send(batch)

    def _linger_over(self, batch: _Batch) -> None:
        batch.timer = None
        if self._batches.get(batch.key) is batch:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        del self._batches[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        self._batcher.send(batch)
        # The publisher yields before it goes on (`publish()` awaits `drain`): the batch
        # is written while it fills the next, and a full socket or window stops it.
        self.must_drain = True


class Batcher:
    """An agent's batching: logical sequence numbers, lanes, batches in flight.

    Args:
        publisher: the agent whose publish channel, identity and counters it uses.
    """

    def __init__(self, publisher: AgentBase) -> None:
        self._publisher = publisher
        self.next_seq = FIRST_BATCHED_SEQ
        self.open = False  # batches are made while connected and not stopping
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # on attach
        self.published = publisher.stats.published
        self.records_traces = False  # as the agent's, on attach
        self.trace = publisher.trace
        self._stats = publisher.stats
        self._channel: ChannelProtocol = None  # type: ignore[assignment]  # on attach
        self._on_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        self._lanes: dict[Batching, BatchLane] = {}
        # Batches sent and not known confirmed: channel seq -> the batch (its items'
        # logical numbers); `_order` holds the channel seqs in the order sent, for pruning.
        self._inflight: dict[int, _Batch] = {}
        self._order: deque[int] = deque()
        self._last_channel_seq = 0
        self._prune_due = False
        self._props_second = -1
        self._props: dict[int, bytes] = {}
        self._others_len: dict[str, int] = {}  # content type -> its properties' length

    def lane(self, setting: Batching) -> BatchLane:
        """The lane of a setting (one per distinct setting: equal ones share batches).

        Args:
            setting: the batching setting.

        Returns:
            Its lane.
        """
        lane = self._lanes.get(setting)
        if lane is None:
            lane = self._lanes[setting] = BatchLane(self, setting)
        return lane

    def attach(
        self,
        channel: ChannelProtocol,
        on_failure: Callable[[list[tuple[int, Exception]]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Start batching on the agent's confirmed publish channel (when it connected).

        Args:
            channel: the publish channel.
            on_failure: reports publishes that will never be confirmed (logical numbers).
            loop: the agent's event loop (the linger timers run on it).
        """
        self._channel = channel
        self._on_failure = on_failure
        self.loop = loop
        self.records_traces = self._publisher.records_traces
        self.open = True

    def close(self) -> None:
        """Send what is pending and stop batching: later publishes go out one by one (and
        fail as any publish of a stopped agent does).
        """
        self.send_all()
        self.open = False

    def send_all(self) -> None:
        """Send every pending batch now (what `flush()` and `stop()` do first)."""
        for lane in self._lanes.values():
            lane.send_all()

    @property
    def pending(self) -> int:
        """Logical messages waiting in batches, not sent yet."""
        return sum(lane.pending for lane in self._lanes.values())

    async def drain(self) -> None:
        """Yield once (a batch went out: it is written now), or wait until the publish
        channel takes more.
        """
        channel = self._channel
        if channel.writable:
            await asyncio.sleep(0)
        else:
            await channel.drain()

    def check_properties(self, content_type: str, headers: dict[str, Any] | None) -> None:
        """Check what a plain publish of a message with these properties checks.

        Args:
            content_type: the message's content type.
            headers: its headers (trace headers included), or None.

        Raises:
            ValueError: a property AMQP cannot carry (a header value, a name or content
                type over 255 bytes, an int beyond 64 bits, ...).
            PropertiesTooLarge: the properties do not fit one content header frame.
        """
        # The encoded properties are the other fields (their length is fixed per content
        # type: the timestamp always takes 8 bytes) followed by the header table.
        others = self._others_len.get(content_type)
        if others is None:
            publisher = self._publisher
            others = len(
                encode_properties(
                    Properties(
                        content_type=content_type,
                        type=KIND_MESSAGE,
                        app_id=publisher.identity,
                        timestamp=int(time.time()),
                        delivery_mode=publisher.delivery_mode,
                    )
                )
            )
            if len(self._others_len) >= _OTHERS_CACHE:
                self._others_len.clear()
            self._others_len[content_type] = others
        size = others + len(encode_table(headers)) if headers else others
        check_header_fits(size, self._channel.connection.frame_max)

    def check_open(self) -> None:
        """Raise as a plain publish does when the publish channel can never take one again
        (checked when a batch starts: cheap, and a batch being filled fails as a whole
        through `on_publish_failure` when it cannot be sent).

        Raises:
            ConnectionLost: the channel is not open and its connection closed for good.
        """
        channel = self._channel
        if not channel.is_open and channel.connection.is_closed:
            raise ConnectionLost(f"cannot publish on channel {channel.id}: it is not open")

    def _properties(self, count: int) -> bytes:
        """The batch's properties: the agent's usual ones and the item count (cached per
        second, the timestamp's resolution).
        """
        now = int(time.time())
        if now != self._props_second:
            self._props_second = now
            self._props.clear()
        props = self._props.get(count)
        if props is None:
            publisher = self._publisher
            props = self._props[count] = encode_properties(
                Properties(
                    content_type=BATCH_CONTENT_TYPE,
                    type=KIND_MESSAGE,
                    app_id=publisher.identity,
                    timestamp=now,
                    headers={BATCH_COUNT_HEADER: count},
                    delivery_mode=publisher.delivery_mode,
                )
            )
        return props

    def send(self, batch: _Batch) -> None:
        """Publish a batch on the confirmed channel; a batch that cannot be published is
        reported as failed, item by item.

        Args:
            batch: the batch, no longer being filled.
        """
        try:
            body = pack_items(batch.items)
            seq = self._channel.publish(
                body, TOPIC_EXCHANGE, batch.key, self._properties(len(batch.items))
            )
        except Exception as exc:  # the connection closed for good, ...: those items are lost
            log.error(
                "agent %s: a batch of %d message(s) to %r could not be published: %s",
                self._publisher.identity,
                len(batch.items),
                batch.key,
                exc,
            )
            if self._on_failure is not None:
                self._on_failure([(s, exc) for s in batch.logical_seqs()])
            return
        self._stats.batches_published += 1
        batch.items = []  # the body holds them now
        self._inflight[seq] = batch
        self._order.append(seq)
        self._last_channel_seq = seq
        if not self._prune_due:
            # Pruned from the loop, and only up to this batch: a memory:// nack of a batch
            # published later in this tick is reported from the loop after this runs.
            self._prune_due = True
            self.loop.call_soon(self._prune_soon, seq)

    def _prune_soon(self, limit: int) -> None:
        self._prune_due = False
        self._prune(limit)

    def _prune(self, limit: int) -> None:
        """Forget the batches up to channel seq `limit` the broker confirmed (their
        numbers are needed no more).
        """
        # The channel's own watermark: after a reconnect the broker may confirm publishes
        # out of order, so "last seq - unconfirmed" would pass a batch still unconfirmed.
        confirmed = min(limit, self._channel.confirmed_through)
        order, inflight = self._order, self._inflight
        while order and order[0] <= confirmed:
            inflight.pop(order.popleft(), None)

    def prune_all_confirmed(self) -> None:
        """Forget every batch the broker confirmed (after waiting for confirms): from the
        loop, after a memory:// nack's report still due.
        """
        if self._order:
            self.loop.call_soon(self._prune, self._last_channel_seq)

    def logical(self, failures: list[tuple[int, Exception]]) -> list[tuple[int, Exception]]:
        """Failures of the publish channel with each batch's channel seq replaced by the
        logical sequence numbers of its items.

        Args:
            failures: (channel seq, error) pairs the channel reported.

        Returns:
            (sequence number, error) pairs naming logical messages.
        """
        inflight = self._inflight
        if not inflight:
            return failures
        named: list[tuple[int, Exception]] = []
        for seq, exc in failures:
            batch = inflight.pop(seq, None)
            if batch is None:
                named.append((seq, exc))
            else:
                named.extend((s, exc) for s in batch.logical_seqs())
        return named


def _encoded_headers(headers: dict[str, Any]) -> int | None:
    """The length of `headers` encoded as msgpack; None when a batch item cannot carry
    them (see `BatchLane.add`).
    """
    for name in headers:
        if type(name) is not str:
            return None
    try:
        return len(_headers_encoder.encode(headers))
    except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
        return None
