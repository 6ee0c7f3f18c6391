"""Presence: agents announce that they run, and learn which other agents start and stop.

An agent announces itself on `munggoggo.fanout` with a message of kind `presence` (the AMQP
`type` property) when it has started, again every `AgentConfig.presence_interval` seconds,
and once more, as stopped, when it stops cleanly. The body is JSON:

    {"identity": "ping-1", "state": "started", "interval": 30.0, "reply": true}

`state` is "started" or "stopped"; `interval` the seconds until the sender's next
announcement (null: it sends none until it stops); `reply` is true on the first
announcement only, and asks every agent that hears it to answer with its own announcement,
sent straight to the newcomer's inbox, so that a new agent knows the running ones at once.
A listening-only agent (`AgentConfig(presence=False)`, a gateway worker) sends one
`{"identity": ..., "state": "query", "reply": true}` when it starts instead: it is answered
the same way and is never reported itself.

Every agent keeps the other agents it heard of and calls `agent.on_presence(identity,
state)` when one starts or stops (never for itself). An agent that announced an interval and
stays silent is checked: after one and a half intervals its inbox queue is looked up (a
passive declare); an inbox that is gone, or that nobody consumes any more, means the agent
is gone and it is reported "stopped". After `MISSED_ANNOUNCEMENTS` intervals of silence it
is reported "stopped" whatever its inbox says. Silence while this agent's own connection is
down does not count.

Presence messages are routed by the inbox before anything else (core/inbox.py): behaviours
never receive them, whatever their templates. docs/decisions.md ("Presence") says why the
wire format is what it is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from . import envelope
from ._speedups import Properties, encode_properties
from .agent_base import AgentBase
from .amqp.errors import AMQPError, NotFound
from .wire import FANOUT_EXCHANGE

if TYPE_CHECKING:
    from .engine import ChannelProtocol
    from .message import Message

__all__ = [
    "MISSED_ANNOUNCEMENTS",
    "STARTED",
    "STOPPED",
    "Announcement",
    "Presence",
    "PresenceCallback",
    "PresenceTracker",
]

log = logging.getLogger("munggoggo.presence")

STARTED = "started"
STOPPED = "stopped"
# A listening-only agent asks who runs (reply true); it is no agent to report itself.
QUERY = "query"
# Intervals of silence after which an agent is reported stopped, whatever its inbox says.
MISSED_ANNOUNCEMENTS = 3
# Silence, in the sender's intervals, after which its inbox is looked up.
_PROBE_AFTER = 1.5
# How often the silent agents are checked when none announced an interval (seconds).
_IDLE_CHECK = 1.0

PresenceCallback = Callable[[str, str], Awaitable[None] | None]
"""`on_presence(identity, state)`: sync, or async (then it runs as a task of its own)."""


class Announcement(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a presence message (JSON).

    Attributes:
        identity: the announcing agent.
        state: "started" or "stopped".
        interval: seconds until its next announcement; None: none until it stops.
        reply: asks the agents hearing it to answer with their own announcement.
    """

    identity: str
    state: str
    interval: float | None = None
    reply: bool = False


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Announcement).decode


@dataclass
class _Peer:
    """What this agent knows of another running agent."""

    last_seen: float  # loop time of its last announcement
    interval: float | None  # what it announced
    probed: float = 0.0  # loop time of the last look at its inbox


class PresenceTracker:
    """One agent's presence: its announcements and what it heard of the others.

    The agent (core/agent.py) makes one when it starts, feeds it the presence messages its
    inbox receives (`receive`), calls `announce_started()` once it runs and
    `announce_stopped()` when it stops.

    Args:
        identity: the agent's identity.
        interval: seconds between its announcements (None: start and stop only).
        announce: whether it announces itself at all (False: it only listens).
        channel: the channel announcements are published on (the agent's RPC channel: no
            confirms, so they take no sequence numbers from the agent's own publishes).
        connection_open: tells whether the agent's connection is up.
        open_channel: opens the channel inbox lookups run on (one, opened at first use).
        callback: what receives the events (read at each event: it may change any time).
    """

    def __init__(
        self,
        identity: str,
        *,
        interval: float | None,
        announce: bool,
        channel: ChannelProtocol,
        connection_open: Callable[[], bool],
        open_channel: Callable[[], Awaitable[ChannelProtocol]],
        callback: Callable[[], PresenceCallback | None],
    ) -> None:
        self.identity = identity
        self.interval = interval
        self.announce = announce
        self._channel = channel
        self._connection_open = connection_open
        self._open_channel = open_channel
        self._callback = callback
        self._peers: dict[str, _Peer] = {}
        self._probe_channel: ChannelProtocol | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._announced = False

    @property
    def peers(self) -> list[str]:
        """The identities of the other agents known to run, sorted."""
        return sorted(self._peers)

    # -- announcing ------------------------------------------------------------------

    def announce_started(self) -> None:
        """Announce this agent (asking the others to answer) and start the periodic
        announcements and the watch over the silent agents.
        """
        loop = asyncio.get_running_loop()
        if self.announce:
            self._publish(STARTED, FANOUT_EXCHANGE, "", reply=True)
            self._announced = True
            if self.interval:
                self._beat = loop.create_task(self._beat_loop(), name=f"{self.identity} presence")
        else:
            # Listening only (a gateway worker): ask who runs, so that it knows at once,
            # not only after each agent's next announcement.
            self._publish(QUERY, FANOUT_EXCHANGE, "", reply=True)
        self._watch = loop.create_task(self._watch_loop(), name=f"{self.identity} presence watch")

    async def announce_stopped(self) -> None:
        """Stop announcing and watching; tell the mesh this agent stops (if it announced
        that it started and its connection is up).
        """
        tasks = [t for t in (self._beat, self._watch, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._beat = self._watch = None
        if self._announced and self._connection_open():
            self._publish(STOPPED, FANOUT_EXCHANGE, "")
        self._announced = False

    def cancel(self) -> None:
        """Stop announcing and watching without a word (the agent gives its identity up, or
        its start failed).
        """
        self._announced = False
        for task in (self._beat, self._watch):
            if task is not None:
                task.cancel()

    def _publish(self, state: str, exchange: str, routing_key: str, reply: bool = False) -> None:
        """One announcement; lost when the connection is down (the next one follows)."""
        interval = self.interval if state == STARTED else None
        body = _encode(Announcement(self.identity, state, interval, reply))
        props = encode_properties(
            Properties(
                content_type=envelope.JSON,
                type=envelope.KIND_PRESENCE,
                app_id=self.identity,
                timestamp=int(time.time()),
            )
        )
        try:
            self._channel.publish(body, exchange, routing_key, props)
        except AMQPError as exc:
            log.debug("agent %s: presence announcement not sent: %s", self.identity, exc)

    async def _beat_loop(self) -> None:
        assert self.interval
        while True:
            await asyncio.sleep(self.interval)
            if self._connection_open():
                self._publish(STARTED, FANOUT_EXCHANGE, "")

    # -- listening -------------------------------------------------------------------

    def receive(self, msg: Message) -> None:
        """A presence message from the inbox (the inbox acks it). One that cannot be read
        is logged and dropped: presence is advisory.

        Args:
            msg: the message, of kind `presence`.
        """
        try:
            news = _decode(msg.body)
        except msgspec.DecodeError as exc:
            log.warning("agent %s: unreadable presence message: %s", self.identity, exc)
            return
        identity = news.identity
        if identity == self.identity or (msg.sender and msg.sender != identity):
            return  # our own announcement; or one that speaks for somebody else
        if news.state == QUERY:
            if news.reply and self._announced:
                self._publish(STARTED, "", identity)  # straight to the asker's inbox
            return
        if news.state == STARTED:
            known = self._peers.get(identity)
            now = asyncio.get_running_loop().time()
            if known is None:
                self._peers[identity] = _Peer(now, news.interval)
                self._notify(identity, STARTED)
            else:
                known.last_seen = now
                known.interval = news.interval
            if news.reply and self._announced:
                self._publish(STARTED, "", identity)  # straight to the newcomer's inbox
        elif news.state == STOPPED:
            self._gone(identity)

    def _gone(self, identity: str) -> None:
        if self._peers.pop(identity, None) is not None:
            self._notify(identity, STOPPED)

    def _notify(self, identity: str, state: str) -> None:
        """Call the callback; what it raises is logged. An async one runs as a task of its
        own, so a slow callback holds up neither the inbox nor the other events.
        """
        callback = self._callback()
        if callback is None:
            return
        try:
            result = callback(identity, state)
        except Exception:
            log.exception("agent %s: on_presence(%r, %r) failed", self.identity, identity, state)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent %s: on_presence failed", self.identity, exc_info=task.exception())

    # -- the silent ones ---------------------------------------------------------------

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._check_every())
            now = loop.time()
            if not self._connection_open():
                # Nothing reaches us while our connection is down: not their silence.
                for peer in self._peers.values():
                    peer.last_seen = now
                continue
            for identity, peer in list(self._peers.items()):
                if self._peers.get(identity) is not peer or not peer.interval:
                    continue
                silence = now - peer.last_seen
                if silence >= MISSED_ANNOUNCEMENTS * peer.interval:
                    self._gone(identity)
                elif silence >= _PROBE_AFTER * peer.interval and (
                    now - peer.probed >= peer.interval
                ):
                    peer.probed = now
                    consumed = await self._inbox_consumed(identity)
                    if not consumed and self._peers.get(identity) is peer:  # not back since
                        self._gone(identity)

    def _check_every(self) -> float:
        """Half the shortest interval announced (or ours), so that a silent agent is
        noticed within half an interval of the limit.
        """
        intervals = [p.interval for p in self._peers.values() if p.interval]
        if self.interval:
            intervals.append(self.interval)
        return max(0.02, min(intervals) / 2) if intervals else _IDLE_CHECK

    async def _inbox_consumed(self, identity: str) -> bool:
        """Whether the agent's inbox exists and somebody consumes it (True when it cannot
        be told: only silence decides then).
        """
        try:
            if self._probe_channel is None:
                self._probe_channel = await self._open_channel()
            ok = await asyncio.wait_for(
                self._probe_channel.queue_declare(identity, passive=True), 5.0
            )
        except NotFound:
            return False  # the client reopens the channel the refusal closed
        except (AMQPError, TimeoutError) as exc:
            log.debug("agent %s: could not look up %s's inbox: %s", self.identity, identity, exc)
            return True
        return bool(ok.consumer_count)


class Presence(AgentBase):
    """The agent's presence role: `on_presence`, and the tracker's hooks in its life.

    `agent.on_presence = callback` (or a method of that name on a subclass) receives
    `(identity, state)` for every other agent that starts ("started") or stops ("stopped");
    it may be set any time, before or after the agent starts.
    """

    on_presence: PresenceCallback | None = None
    _presence: PresenceTracker | None = None

    @property
    def presence(self) -> PresenceTracker | None:
        """This agent's presence tracker (None before it connected): `presence.peers` lists
        the other agents known to run.
        """
        return self._presence

    def _presence_tracker(self) -> PresenceTracker:
        tracker = self._presence
        if tracker is None:
            config = self.config
            tracker = self._presence = PresenceTracker(
                self.identity,
                interval=config.presence_interval,
                announce=config.presence,
                channel=self._rpc,
                connection_open=self._connection_is_open,
                open_channel=lambda: self.connection.channel(confirms=False),
                callback=lambda: self.on_presence,
            )
        return tracker

    def _connection_is_open(self) -> bool:
        conn = self.connection
        return conn is not None and conn.is_open

    def _receive_presence(self, msg: Message) -> None:
        """A presence message from the inbox, already acked."""
        self._presence_tracker().receive(msg)

    def _announce_started(self) -> None:
        """The agent runs: announce it, start the periodic announcements."""
        self._presence_tracker().announce_started()

    async def _announce_stopped(self) -> None:
        """The agent stops: leave `munggoggo.fanout`, then say so (unless another agent
        took its identity).

        Unbound first, so that neither its own announcement nor the others' (nor a
        broadcast) lands in its inbox after its consumer is cancelled: a clean stop deletes
        the inbox only when it is empty (core/agent.py, `_release_inbox`).
        """
        tracker = self._presence
        if tracker is None:
            return
        if self._connection_is_open() and self.stop_reason is None:
            try:
                await asyncio.wait_for(
                    self._sub.queue_unbind(self.identity, FANOUT_EXCHANGE, ""),
                    self.config.drain_timeout,
                )
            except (AMQPError, TimeoutError) as exc:
                log.info("agent %s: inbox still bound to the fanout: %s", self.identity, exc)
        if self.stop_reason is not None:
            tracker.cancel()  # the identity is somebody else's now: not ours to retire
            return
        await tracker.announce_stopped()
