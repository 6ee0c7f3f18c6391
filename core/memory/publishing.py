"""Publishing on a memory:// channel: publish, mandatory returns, drain, publisher confirms.

`PublishMethods` is `MemoryChannel`'s publishing API (a mixin). A publish is routed at once
(broker.py); consumers see it from the next loop tick. A publish the broker refuses
(missing exchange, ...) returns normally and closes the channel a tick later, as the
broker's Channel.Close would arrive; an unroutable mandatory one comes back through
`on_return` from the loop.

`PublishLedger` keeps the confirm side. In process a routed publish is confirmed at once,
so only two kinds of publish are ever unconfirmed, always the newest ones: those made
while the broker is closing the channel (`doomed`: the broker discards them and they fail
when the close lands) and those made while the channel reopens (`buffered`: they go out
after the reopen, as the real client republishes). A publish a queue refused
(`x-overflow: reject-publish`) is nacked: its failure goes to its waiters at once and to
the publisher's `on_publish_failure` from the loop, never from inside `publish()`.
Sequence numbers never restart. The waiting itself is `confirm_waiters.ConfirmWaiters`,
shared with the real channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import _speedups
from .._speedups import RETURN, Delivery, Properties
from ..amqp.errors import BrokerError, ConnectionLost, LocalProtocolError
from ..confirm_waiters import ConfirmWaiters, Failures
from ..confirm_waiters import report as report_failures
from ..engine import PublishError, PublishNacked
from ..metrics import CONFIRM_SAMPLE_MASK, FastHistogram
from .content import EMPTY_PROPERTIES, Content, decode

if TYPE_CHECKING:
    from .broker import MemoryBroker
    from .channel import MemoryChannel
    from .connection import MemoryConnection
    from .queue import Subscription

log = logging.getLogger("munggoggo.memory")

# A content header frame: frame header, class, weight, body size, properties, frame end.
_HEADER_OVERHEAD = 20
# In-process publishing has no socket buffer to fill; `writable` turns False after this
# many publishes without a drain(), so a publishing loop still lets consumers run.
_PUBLISHES_PER_YIELD = 1024

# A publish kept while the channel reopens: seq, exchange, routing key, body, encoded
# properties, decoded properties (or None), mandatory.
Buffered = tuple[int, str, str, bytes, bytes, Properties | None, bool]


class PublishLedger:
    """The confirm state of one channel's publishes (see the module docstring)."""

    def __init__(self, channel: MemoryChannel) -> None:
        self.channel = channel  # whose on_publish_failure hears of failures
        self.last_seq = 0
        self.doomed: list[int] = []
        self.buffered: list[Buffered] = []
        self._loop = channel.connection.loop
        self._to_notify: Failures = []
        self._waiters = ConfirmWaiters(PublishError)

    @property
    def unconfirmed(self) -> int:
        """Publishes not confirmed yet: refused ones waiting for the close, and buffered ones."""
        return len(self.doomed) + len(self.buffered)

    def next_seq(self) -> int:
        """The next publish's sequence number (0 on a channel without confirms)."""
        if not self.channel.confirms:
            return 0
        self.last_seq += 1
        return self.last_seq

    def confirmed_through(self) -> int:
        # Doomed and buffered publishes are always the newest ones.
        """The sequence number up to which every publish is settled."""
        return self.last_seq - len(self.doomed) - len(self.buffered)

    def take_lost(self) -> list[int]:
        """The publishes that can never be confirmed now (the channel closed for good)."""
        lost = self.doomed + [item[0] for item in self.buffered]
        self.doomed, self.buffered = [], []
        return lost

    def take_doomed(self) -> list[int]:
        """Take the publishes the broker discarded when it closed the channel."""
        doomed, self.doomed = self.doomed, []
        return doomed

    def take_buffered(self) -> list[Buffered]:
        """Take the publishes held while the channel reopens, to publish them now."""
        buffered, self.buffered = self.buffered, []
        return buffered

    def nacked(self, failure: tuple[int, Exception]) -> None:
        """A queue refused the publish: its waiters fail now, the publisher hears of it
        from the loop (one call for the failures of a tick).
        """
        self._waiters.add([failure])
        if not self._to_notify:
            self._loop.call_soon(self._notify_failures)
        self._to_notify.append(failure)

    def _notify_failures(self) -> None:
        failures, self._to_notify = self._to_notify, []
        report_failures(failures, self.channel.on_publish_failure)

    def record(self, failures: Failures) -> None:
        """Failed publishes: kept for their waiters, reported to on_publish_failure now."""
        self._waiters.record(failures, self.channel.on_publish_failure)

    def wake(self) -> None:
        """Wake the waiters the confirmed watermark has passed."""
        self._waiters.wake(self.confirmed_through())

    async def wait(self, upto: int, timeout: float | None) -> None:
        """See `MemoryChannel.wait_confirms`."""
        await self._waiters.wait(self._loop, upto, self.confirmed_through(), timeout)

    async def wait_one(self, seq: int, timeout: float | None) -> None:
        """See `MemoryChannel.wait_confirm_of`."""
        await self._waiters.wait_one(self._loop, seq, self.confirmed_through(), timeout)


class PublishMethods:
    """The client's publishing API of `MemoryChannel` (a mixin)."""

    if TYPE_CHECKING:  # what the mixin uses of MemoryChannel
        connection: MemoryConnection
        id: int
        confirms: bool
        on_return: Callable[[Delivery], None] | None
        sample_confirms: bool
        confirm_seconds: FastHistogram
        _loop: asyncio.AbstractEventLoop
        _broker: MemoryBroker
        _ledger: PublishLedger
        _live: bool
        _closed_by_user: bool
        _unyielded: int
        reply_consumer: Subscription | None

        @property
        def is_open(self) -> bool:
            """Declared for the mixin; defined by MemoryChannel."""

        def _close_async(self, error: BrokerError) -> None: ...

    def publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | bytes | None = None,
        *,
        mandatory: bool = False,
    ) -> int:
        """Publish; returns the confirm sequence number (0 without confirms).

        Routing happens now; consumers see the message from the next loop tick. A publish
        the broker refuses (missing exchange, ...) returns normally and closes the channel
        a tick later; `wait_confirms()` then raises PublishError.

        Raises PropertiesTooLarge, as the client does, when the encoded properties would
        not fit one content header frame of the URL's frame_max (nothing is published).
        """
        props: Properties | None = None
        if properties is None:
            raw = EMPTY_PROPERTIES
        elif isinstance(properties, bytes):
            raw = properties
            props = decode(raw)  # validates, and RabbitMQ decodes every publish too
        else:
            raw = _speedups.encode_properties(properties)  # a snapshot, raising like the client
        frame_max = self.connection.frame_max
        if frame_max and len(raw) + _HEADER_OVERHEAD > frame_max:
            _speedups.check_header_fits(len(raw), frame_max)  # raises PropertiesTooLarge
        for value in (exchange, routing_key):
            if len(value) > 85 and len(value.encode("utf-8", "surrogateescape")) > 255:
                raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
        if type(body) is not bytes:
            body = bytes(body)
        self._unyielded += 1
        if self.is_open:
            seq = self._ledger.next_seq()
            self._publish_now(seq, exchange, routing_key, body, raw, props, mandatory)
            if seq and not seq & CONFIRM_SAMPLE_MASK and self.sample_confirms:
                self.confirm_seconds.observe(0.0)
        elif self.confirms and not self._closed_by_user and not self.connection.is_closed:
            seq = self._ledger.next_seq()
            self._ledger.buffered.append((seq, exchange, routing_key, body, raw, props, mandatory))
        else:
            raise ConnectionLost(f"cannot publish on channel {self.id}: it is not open")
        return seq

    def _publish_now(
        self,
        seq: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        mandatory: bool,
    ) -> None:
        if not self._live:  # the broker is closing this channel and discards the publish
            if seq:
                self._ledger.doomed.append(seq)
            return
        try:
            refused = self._broker.publish(self, exchange, routing_key, body, raw, props, mandatory)
        except BrokerError as exc:
            self._close_async(exc)
            if seq:
                self._ledger.doomed.append(seq)
            return
        if refused and seq:
            # Reported from the loop, never from inside publish().
            self._ledger.nacked((seq, PublishNacked(f"broker nacked publish on channel {self.id}")))

    def schedule_return(self, content: Content) -> None:
        """The broker could not route a mandatory publish of this channel: Basic.Return
        reaches `on_return` from the loop, never from inside publish().

        Args:
            content: the message returned.
        """
        d = content.delivery(self.id, RETURN)
        d.reply_code = 312
        d.reply_text = "NO_ROUTE"
        self._loop.call_soon(self._on_return, d)

    def _on_return(self, delivery: Delivery) -> None:
        if self.on_return is not None:
            self.on_return(delivery)
        else:
            log.warning(
                "message returned by broker: %d %s (exchange %r, routing key %r)",
                delivery.reply_code,
                delivery.reply_text,
                delivery.exchange,
                delivery.routing_key,
            )

    @property
    def writable(self) -> bool:
        """True when publishing may go on without waiting (see `drain`)."""
        return self.connection.is_open and self._unyielded < _PUBLISHES_PER_YIELD

    async def drain(self, timeout: float | None = None) -> None:
        """No flow control in process, but it yields once so a publishing loop lets
        consumers run, as socket back-pressure would (so `timeout`, taken for parity with
        `Channel.drain`, never runs out).
        """
        if self.connection.is_closed:
            raise ConnectionLost(f"connection to {self.connection.url} is closed")
        await asyncio.sleep(0)
        self._unyielded = 0

    async def wait_confirms(self, upto: int | None = None, timeout: float | None = None) -> None:
        """Wait until every publish with seq <= `upto` (default: all so far) is settled.

        Raises PublishError listing those that were nacked or lost (each failure is reported
        to one such waiter only: the first whose range covers it; a failure that a
        `wait_confirm_of` waiting for that very publish got is not reported here).
        """
        if not self.confirms:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        if upto is None:
            upto = self._ledger.last_seq
        await self._ledger.wait(upto, timeout)

    async def wait_confirm_of(self, seq: int, timeout: float | None = None) -> None:
        """Wait until the publish with sequence number `seq` is settled.

        Args:
            seq: what `publish()` returned.
            timeout: seconds, or None to wait as long as it takes.

        Raises:
            PublishError: that publish was nacked or lost (its failure only).
            TimeoutError: not settled within `timeout`.
            LocalProtocolError: the channel has publisher confirms off.
        """
        if not self.confirms:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        await self._ledger.wait_one(seq, timeout)
