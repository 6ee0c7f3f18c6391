"""Inbox routing: what arrives in an agent's inbox `<identity>` goes where it belongs.

One batch of deliveries at a time, each message on its own (one message's failure is that
message's alone); an AMQP message that is a batch of messages (core/batch_format.py) is
routed item by item (core/batch_consume.py):
- an RPC or control reply carrying one of our call ids (and no `reply_to`) answers the
  waiting call (core/rpc_client.py);
- any other RPC or control message is a request for an `@expose`d method
  (core/rpc_server.py);
- a presence announcement goes to the agent's presence tracker (core/presence.py), never
  to a behaviour;
- a direct message goes to the first running behaviour whose template matches it; a
  broadcast nobody wants is acked; anything else is dead-lettered (core/handoff.py).
  While the agent starts, direct messages wait (unsettled) until its behaviours run: what
  waited in the inbox during a restart finds the behaviour it was meant for. So do
  requests for a method nobody serves yet (a behaviour's `@expose`d method).
"""

from __future__ import annotations

from typing import Any

from . import envelope
from .agent_base import AgentBase
from .batch_format import BATCH_CONTENT_TYPE
from .message import Message, Settler
from .undecodable import reject_undecodable
from .wire import FANOUT_EXCHANGE


class InboxRouter(AgentBase):
    """The agent's inbox dispatch: replies, requests and direct messages."""

    def _on_inbox(self, batch: list[Any]) -> None:
        sub = self._sub
        batch = reject_undecodable(batch, sub, self.identity, self._count_inbox_rejected)
        self._route_inbox(batch, sub)

    def _route_inbox(self, batch: list[Any], channel: Settler) -> None:
        """Route deliveries of the inbox: those of the inbox channel, or the items of a
        batch (`channel` is then the batch's settler, and a batch inside is not unpacked).
        """
        sub = self._sub
        identity = self.identity
        consumed = self.stats.consumed
        batch_type = BATCH_CONTENT_TYPE
        for d in batch:
            if d.properties.content_type == batch_type and channel is sub:
                settler = self.read_batch_guarded(d, sub, identity, "")
                if settler is not None:
                    self._route_inbox(settler.items, settler)
                continue
            msg = Message(d, channel, identity)
            try:
                kind = d.properties.type
                if kind == envelope.KIND_PRESENCE:
                    # The mesh's own bookkeeping, not traffic: not counted as consumed.
                    msg.ack()
                    self._receive_presence(msg)
                    continue
                key = ("", kind or envelope.KIND_MESSAGE)
                consumed[key] = consumed.get(key, 0) + 1
                if kind == envelope.KIND_RPC or kind == envelope.KIND_CONTROL:
                    call_id = d.properties.correlation_id
                    # A reply carries our call id and no reply_to; a request carrying our
                    # call id is one we sent ourselves (a call to our own method, our own
                    # broadcast).
                    if (
                        call_id is not None
                        and d.properties.reply_to is None
                        and call_id.startswith(self._call_prefix)
                    ):
                        # The waiting call resumes before this ack is written: a
                        # caller that calls again at once sends the ack with its next
                        # request, in one write, instead of waiting for the ack's own.
                        self._take_reply(call_id, d)
                        msg.ack()
                        continue
                    self._serve_rpc(msg)
                    continue
                self._route_direct(msg)
            except Exception as exc:  # one message's failure is that message's alone
                self.reject_failed(msg, exc)

    def _count_inbox_rejected(self) -> None:
        self.stats.count(self.stats.dead_lettered, "")

    def release_held(self) -> None:
        """The agent's behaviours run: route the direct messages held while it started,
        and serve the requests held for a behaviour's method.
        """
        held, self._held_direct = self._held_direct, None
        for msg in held or ():
            try:
                kind = msg.delivery.properties.type
                if kind == envelope.KIND_RPC or kind == envelope.KIND_CONTROL:
                    self._serve_rpc(msg)
                else:
                    self._route_direct(msg)
            except Exception as exc:  # one message's failure is that message's alone
                self.reject_failed(msg, exc)

    def hold_while_starting(self, msg: Message) -> bool:
        """Keep a request for a method nobody serves yet, while the agent starts.

        A behaviour's `@expose`d methods are served once it runs; a request for one that
        waited in the inbox across a restart must not be answered "method not found"
        before the behaviour had its chance.

        Args:
            msg: the request, unsettled.

        Returns:
            True when it is held (served by `release_held`); False once the agent runs.
        """
        held = self._held_direct
        if held is None:
            return False
        held.append(msg)
        return True

    def _route_direct(self, msg: Message) -> None:
        held = self._held_direct
        if held is not None:
            held.append(msg)
            return
        for behaviour in self.behaviours.values():
            template = behaviour.template
            if template is not None and behaviour.state == "running" and template.match(msg):
                if self.records_traces:
                    self.trace.record_in(msg, behaviour.short_name)
                behaviour.deliver_batch([msg])
                return
        if msg.exchange == FANOUT_EXCHANGE:
            msg.ack()  # a broadcast nobody here wants is not an error
            return
        self._dead_letter(msg, "no behaviour template matches this message", None)
