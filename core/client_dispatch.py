"""Handing a connection's received events to their channels, in the order they arrived.

Each received buffer is parsed once (`amqp.AMQPConnection.receive_data`) into a list of
events. Deliveries for the same consumer that follow each other go to it as one batch (one
callback per consumer per buffer; a buffer of nothing but deliveries for one consumer, a
consuming connection's usual one, goes to it as it is, `AMQPConnection.one_consumer`);
everything else goes to its channel's `handle_*` method
one by one, or is the connection's own business (handshake, close, blocked/unblocked). A
channel the broker closed with an error is reopened in the background.

`ConnectionDispatch` is a part of `client.Connection` (a mixin): the attributes it names
below are the connection's own, set up in `Connection.__init__`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ._speedups import DELIVER, GET_OK, Delivery
from .amqp import events as ev
from .amqp.errors import AMQPError, BrokerError

if TYPE_CHECKING:
    from .channel import Channel
    from .transport import AMQPStream
    from .url import BrokerURL

__all__ = ["ConnectionDispatch"]

log = logging.getLogger("munggoggo.client")


class ConnectionDispatch:
    """Received events -> channels (deliveries batched per consumer), and the connection's
    own events."""

    # The connection's attributes this part reads (set up by Connection.__init__).
    url: BrokerURL
    loop: asyncio.AbstractEventLoop
    _state: str
    _channels: dict[int, Channel]
    _handshake: asyncio.Future[None] | None
    _close_reason: BaseException | None
    _stream: AMQPStream | None
    _blocked: bool

    if TYPE_CHECKING:  # the connection's own methods (client.Connection)

        def _flush(self) -> None: ...
        def _update_flow(self) -> None: ...
        @property
        def is_open(self) -> bool: ...

    def _dispatch(self, events: list[Any], one_consumer: bool = False) -> None:
        if one_consumer:  # all for one consumer (AMQPConnection.one_consumer): one batch
            first = events[0]
            self._deliver(first.channel, first.consumer_tag, events)
            return
        channels = self._channels
        # The batch being gathered: its deliveries, channel and consumer tag (compared
        # field by field: no key tuple per delivery).
        batch: list[Delivery] | None = None
        batch_channel = 0
        batch_tag = ""
        for e in events:
            if type(e) is Delivery:
                if e.kind == DELIVER:
                    if (
                        batch is not None
                        and e.consumer_tag == batch_tag
                        and (e.channel == batch_channel)
                    ):
                        batch.append(e)
                        continue
                    if batch is not None:
                        self._deliver(batch_channel, batch_tag, batch)
                    batch, batch_channel, batch_tag = [e], e.channel, e.consumer_tag
                    continue
                if batch is not None:
                    self._deliver(batch_channel, batch_tag, batch)
                    batch = None
                ch = channels.get(e.channel)
                if ch is not None:
                    if e.kind == GET_OK:
                        ch.handle_reply(e)
                    else:
                        ch.handle_return(e)
                continue
            if batch is not None:
                self._deliver(batch_channel, batch_tag, batch)
                batch = None
            self._event(e)
        if batch is not None:
            self._deliver(batch_channel, batch_tag, batch)

    def _deliver(self, channel_id: int, tag: str, batch: list[Delivery]) -> None:
        ch = self._channels.get(channel_id)
        if ch is not None:
            ch.handle_deliveries(tag, batch)

    def _event(self, e: Any) -> None:
        t = type(e)
        if t is ev.ConfirmsSettled:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch.handle_confirms(e.confirmed_through, e.failed)
        elif t is ev.MethodReply or t is ev.ChannelOpened:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch.handle_reply(getattr(e, "method", None))
        elif t is ev.GetEmpty:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch.handle_reply(None)
        elif t is ev.ChannelClosed:
            self._on_channel_closed(e.channel, e.error)
        elif t is ev.ConsumerCancelled:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch.handle_consumer_cancelled(e.consumer_tag)
        elif t is ev.ConnectionOpened:
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(None)
        elif t is ev.ConnectionClosed:
            if e.error is not None:
                self._close_reason = e.error
                # Only a debug line: a refusal during the handshake is the connect error its
                # caller reports (one line per URL), and the loss of an open connection gets
                # its one line (with the URL and what happens next) where it is handled.
                log.debug("broker closed the connection to %s: %s", self.url, e.error)
            self._flush()  # CloseOk
            if self._stream is not None:
                self._stream.close()
        elif t is ev.Blocked:
            log.warning("broker blocked publishing on %s: %s", self.url, e.reason)
            self._blocked = True
            self._update_flow()
        elif t is ev.Unblocked:
            log.info("broker unblocked publishing on %s", self.url)
            self._blocked = False
            self._update_flow()

    def _on_channel_closed(self, channel_id: int, error: BrokerError | None) -> None:
        ch = self._channels.get(channel_id)
        if ch is None:
            return
        if error is None:  # the CloseOk to our close
            ch.handle_reply(None)
            ch.handle_closed(None, by_broker=False)
            return
        # A refused method raises to its caller, who decides whether it matters (an agent
        # turns 405 on its inbox into IdentityInUse); otherwise nobody else would hear of it.
        level = logging.DEBUG if ch.awaiting_reply else logging.WARNING
        log.log(level, "channel %d: %s", channel_id, error)
        ch.handle_closed(error, by_broker=True)
        if self.is_open and not ch.closed_by_user and not ch.recovering:
            ch.reopen_task = self.loop.create_task(self._reopen_channel(ch))

    async def _reopen_channel(self, ch: Channel) -> None:
        try:
            # Republish only what was published while it was closed: what was unconfirmed
            # at the close was failed to the publisher.
            await ch.recover(republish=True)
        except AMQPError as exc:
            if self.is_open:  # while closing or recovering this is expected
                log.warning("channel %d could not be reopened: %s", ch.id, exc)
