"""Reopening a channel: on the wire with its qos and confirm mode, its consumers restored, then
what the broker never confirmed republished (or failed to the publisher).

The connection drives these steps for all its channels after a reconnect
(`client_recovery.ConnectionRecovery._restore`: open every channel, replay the topology,
restore consumers, then hand each channel back); a channel the broker closed with an error
goes through the same steps alone (`recover`). Users wait meanwhile: a channel is theirs
again only after `mark_ready()`, so nothing they send interleaves with the restore.

`ChannelRecovery` is a part of `channel.Channel` (a mixin): the attributes it names below are
the channel's own, set up in `Channel.__init__`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pamqp import commands

from . import _speedups
from ._speedups import PropertiesTooLarge
from .amqp.errors import AMQPError, BrokerError, ConnectionLost
from .republish import fit_to_frame_max

if TYPE_CHECKING:
    from .channel import Consumer, FlagEvent
    from .client import Connection

__all__ = ["ChannelRecovery"]

log = logging.getLogger("munggoggo.channel")


class ChannelRecovery:
    """(Re)opening a channel, restoring its consumers, republishing its unconfirmed publishes."""

    # The channel's attributes this part reads (set up by Channel.__init__).
    connection: Connection
    id: int
    generation: int
    _open_event: asyncio.Event
    _wire_open: bool
    _wire: _speedups.ChannelPublisher | None
    _acks: _speedups.AckTracker
    _acks_pending: bool
    _qos: tuple[int, int] | None
    _tracker: _speedups.ConfirmTracker | None
    _consumers: dict[str, Consumer]
    _capacity: FlagEvent
    _recovering: bool

    if TYPE_CHECKING:  # the channel's own methods (channel.Channel)

        def _expect_reply(self) -> asyncio.Future[Any]: ...
        async def _call(self, method: Any) -> Any: ...
        def _record_failures(self, failures: list[tuple[int, Exception]]) -> None: ...
        def _wake_confirm_waiters(self, confirmed_through: int) -> None: ...

    @property
    def recovering(self) -> bool:
        """Whether a reopen after a channel error (`recover`) is under way."""
        return self._recovering

    async def open_on_wire(self) -> None:
        """(Re)open this channel on the wire with its qos and confirm mode.

        Users still wait: the channel is theirs again only after `mark_ready()`, once its
        consumers are restored, so nothing they send can interleave with the restore.

        Raises:
            AMQPError: the connection was lost or the broker refused (ConnectionLost,
                BrokerError).
        """
        self._open_event.clear()
        self._wire = None
        self._wire_open = False
        fut = self._expect_reply()
        conn = self.connection
        conn.protocol.open_channel(self.id)
        conn.schedule_flush()
        await fut
        self._wire_open = True
        self.generation += 1
        self._acks.reset()
        self._acks_pending = False
        if self._qos is not None:
            await self._call(
                commands.Basic.Qos(prefetch_size=self._qos[1], prefetch_count=self._qos[0])
            )
        if self._tracker is not None:
            fut = self._expect_reply()
            conn.protocol.enable_confirms(self.id, self._tracker)
            conn.schedule_flush()
            await fut

    def mark_ready(self) -> None:
        """The channel is open and restored: user calls and publishes go to the wire."""
        try:
            self._wire = self.connection.protocol.channel_publisher(self.id)
        except AMQPError:  # lost meanwhile: publishes are kept (confirms) or refused
            self._wire = None
        self._open_event.set()

    async def restore_consumers(self) -> None:
        """Consume again with every recorded consumer (the channel is open on the wire).

        A consumer the broker refuses (its queue is gone, say) is dropped and told through
        on_cancel; the refusal closed the channel and with it the consumers restored before,
        so the channel is reopened and restoring starts over with the rest.

        Raises:
            AMQPError: the connection was lost meanwhile.
        """
        while True:
            for consumer in list(self._consumers.values()):
                try:
                    await self._call(
                        commands.Basic.Consume(
                            queue=consumer.queue,
                            consumer_tag=consumer.tag,
                            no_ack=consumer.no_ack,
                            exclusive=consumer.exclusive,
                            arguments=consumer.arguments or {},
                        )
                    )
                except BrokerError as exc:
                    log.error(
                        "consumer %s on queue %r could not be restored: %s",
                        consumer.tag,
                        consumer.queue,
                        exc,
                    )
                    self._consumers.pop(consumer.tag, None)
                    if consumer.on_cancel is not None:
                        consumer.on_cancel(consumer.tag)
                    await self.open_on_wire()
                    break
            else:
                return

    async def recover(self, republish: bool) -> None:
        """Reopen after the broker closed this channel: one recovery at a time.

        Args:
            republish: send again what was published while the channel was closed (else
                fail it to the publisher).

        Raises:
            AMQPError: the channel could not be reopened.
        """
        if self._recovering:
            return
        self._recovering = True
        try:
            await self.open_on_wire()
            await self.restore_consumers()
            self.mark_ready()
            self.republish_or_fail(republish)
        finally:
            self._recovering = False

    def republish_or_fail(self, republish: bool) -> None:
        """Settle the publishes kept while the channel was closed (confirm channels only).

        Args:
            republish: send them again now, re-split for this connection's frame_max; else
                fail them with ConnectionLost (to `on_publish_failure` and the confirm
                waiters) and wake the publishers waiting for room in the window.
        """
        if self._tracker is None:
            return
        if republish:
            pending = self._tracker.restart()
            if pending:
                fitted = self._fit_for_republish(pending)
                if fitted is None:
                    return
                amqp = self.connection.protocol
                for data in fitted:
                    amqp.send_raw(data)
                self.connection.schedule_flush()
                log.info("channel %d: republished %d unconfirmed message(s)", self.id, len(pending))
        else:
            failed = self._tracker.fail_all()
            if failed:
                reason = ConnectionLost(
                    f"connection to {self.connection.url} lost before the broker confirmed"
                )
                self._record_failures([(seq, reason) for seq, _ in failed])
            # Settled by failing: wake whoever waits for confirms or for room in the window
            # (a publisher blocked on a full window would otherwise wait forever).
            self._wake_confirm_waiters(self._tracker.confirmed_through)
            self._capacity.set()

    def _fit_for_republish(self, pending: list[tuple[int, bytes]]) -> list[bytes] | None:
        """The kept publishes' frames, re-split for this connection's frame_max.

        Returns None when one of them no longer fits at all (its properties exceed the new
        frame_max): then every kept publish is failed, that one with PropertiesTooLarge,
        since skipping one would shift the broker's delivery tags under the others.
        """
        frame_max = self.connection.frame_max
        fitted: list[bytes] = []
        refused: dict[int, Exception] = {}
        for seq, data in pending:
            try:
                fitted.append(fit_to_frame_max(data, frame_max))
            except PropertiesTooLarge as exc:
                refused[seq] = exc
        if not refused:
            return fitted
        failed = self._tracker.fail_all()  # type: ignore[union-attr]
        other = ConnectionLost(
            f"not republished after the reconnect to {self.connection.url}: another "
            f"unconfirmed publish on channel {self.id} no longer fits frame_max {frame_max}"
        )
        log.error(
            "channel %d: %d unconfirmed publish(es) exceed frame_max %d after the reconnect; "
            "failing all %d kept publishes",
            self.id,
            len(refused),
            frame_max,
            len(failed),
        )
        self._record_failures([(seq, refused.get(seq, other)) for seq, _ in failed])
        self._wake_confirm_waiters(self._tracker.confirmed_through)  # type: ignore[union-attr]
        self._capacity.set()
        return None
