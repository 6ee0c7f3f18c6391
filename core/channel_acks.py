"""Settling deliveries on a channel: ack, nack, reject, and coalesced acks.

A delivery tag belongs to one channel generation (the channel's life between two opens on
the wire): a tag from an earlier generation is void, the broker requeued that message when
the old channel died. `ack_later` coalesces: the channel asks its connection to call
`emit_acks()` right before its next write, which acks the contiguous prefix of settled tags
with one multiple-ack and anything settled above a gap singly. Coalesced acks are held
across loop ticks, for at most `ACK_HOLD_SECONDS` and at most half the channel's prefetch:
they ride along with whatever the connection writes first (a publish, an RPC reply), and a
busy consumer writes one ack frame per millisecond instead of one per tick (docs/decisions.md).

`ChannelAcks` is a part of `channel.Channel` (a mixin): the attributes it names below are the
channel's own, set up in `Channel.__init__` and reset by `ChannelRecovery.open_on_wire`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import _speedups

if TYPE_CHECKING:
    from .client import Connection

__all__ = ["ACK_HOLD_SECONDS", "ACK_HOLD_UNLIMITED", "ChannelAcks"]

# How long coalesced acks may wait for a write to ride along with.
ACK_HOLD_SECONDS = 0.001
# Acks held at most on a channel without a prefetch limit (one with a prefetch: half of it).
ACK_HOLD_UNLIMITED = 128


class ChannelAcks:
    """ack / nack / reject of a channel's deliveries, and its coalesced acks."""

    # The channel's attributes this part reads (set up by Channel.__init__).
    connection: Connection
    id: int
    generation: int
    acked: int
    nacked: int
    _wire_open: bool
    _acks: _speedups.AckTracker
    _acks_pending: bool
    _qos: tuple[int, int] | None
    _loop: asyncio.AbstractEventLoop
    # The window of held acks: how many, the most it may hold; the timer that ends it.
    _acks_held = 0
    _acks_hold_limit = 1
    _acks_timer: asyncio.TimerHandle | None = None

    def ack(
        self, delivery_tag: int, multiple: bool = False, *, generation: int | None = None
    ) -> bool:
        """Ack on the wire (coalesced into this tick's write). False if the tag is void.

        A tag from an earlier channel generation is void: the broker requeued that message
        when the old channel died and will deliver it again.
        """
        if not self._valid_tag(generation):
            return False
        if not multiple:
            self._acks.forget(delivery_tag)  # settled: no longer blocks the coalesced prefix
        self.connection.protocol.ack(self.id, delivery_tag, multiple)
        self.connection.schedule_flush()
        return True

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack, coalesced: one ack with multiple=true covers the contiguous prefix of
        settled tags, and tags above a still unsettled one are acked singly, so a slow
        delivery never holds back the acks of later ones.

        The acks go out with the connection's next write, at the latest
        `ACK_HOLD_SECONDS` after the first of them, or at the end of the loop tick once
        half the prefetch is held (at the end of the tick with a prefetch below 4).

        Args:
            delivery_tag: the delivery's tag.
            generation: the channel generation it was delivered on.

        Returns:
            False if the tag is void (an earlier generation, or the channel is closed).
        """
        if generation != self.generation or not self._wire_open:
            return False
        self._acks.done(delivery_tag)
        self.acked += 1
        if self._acks_pending:
            held = self._acks_held + 1
            self._acks_held = held
            if held == self._acks_hold_limit:
                self.connection.schedule_flush()
            return True
        # The first ack of a window.
        self._acks_pending = True
        self._acks_held = 1
        qos = self._qos
        limit = qos[0] // 2 if qos is not None and qos[0] else ACK_HOLD_UNLIMITED
        self._acks_hold_limit = limit
        if limit <= 1:
            self.connection.acks_due(self)  # a prefetch below 4 waits for every ack
        else:
            self.connection.acks_held(self)
            # One timer at a time, never cancelled: a busy channel's acks mostly ride along
            # with a write long before it fires, and a timer per window would cost more
            # than the write it saves. A window that starts while one runs ends earlier.
            if self._acks_timer is None:
                self._acks_timer = self._loop.call_later(ACK_HOLD_SECONDS, self._release_acks)
        return True

    def _release_acks(self) -> None:
        """The hold is over: write the held acks (if any are left) at the end of this tick."""
        self._acks_timer = None
        if self._acks_pending:
            self.connection.schedule_flush()

    def emit_acks(self) -> None:
        """Queue the coalesced acks on the wire: one multiple-ack for the settled prefix,
        one single ack per tag that finished above a gap.

        Called by the connection right before it writes (after `acks_due` or
        `acks_held`), and by the channel itself before any method it sends and before
        Channel.Close: a refused method closes the channel, and the broker drops what
        follows it or a close.
        """
        self._acks_pending = False
        if not self._wire_open:
            return
        acks = self._acks
        tag = acks.take()
        amqp = self.connection.protocol
        if tag:
            amqp.ack(self.id, tag, True)
        for single in acks.take_singles():  # empty unless something settled out of order
            amqp.ack(self.id, single, False)

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = False,
        requeue: bool = True,
        *,
        generation: int | None = None,
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        if not multiple:
            self._acks.forget(delivery_tag)  # settled: no longer blocks the coalesced prefix
        self.nacked += 1
        self.connection.protocol.nack(self.id, delivery_tag, multiple, requeue)
        self.connection.schedule_flush()
        return True

    def reject(
        self, delivery_tag: int, requeue: bool = True, *, generation: int | None = None
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        self._acks.forget(delivery_tag)
        self.nacked += 1
        self.connection.protocol.reject(self.id, delivery_tag, requeue)
        self.connection.schedule_flush()
        return True

    def _valid_tag(self, generation: int | None) -> bool:
        if generation is not None and generation != self.generation:
            return False
        return self._wire_open
