"""The Agent: identity, connection, behaviours, messaging patterns, RPC, control plane.

An agent owns one broker connection with a publish channel (with confirms), an RPC channel,
a channel consuming its inbox `<identity>` (exclusive: the identity lock) and one channel per
consuming behaviour, whose queue `<identity>.<behaviour>` is bound to `munggoggo.topic`.
Deliveries arrive in batches and go to behaviour mailboxes; the inbox dispatches RPC
replies to waiting calls, RPC/control requests to `@expose`d methods, and direct messages to
the behaviour whose template matches. What nobody can handle is dead-lettered to
`munggoggo.dlx` with the reason in a header.

This module holds the lifecycle (start, stop, adding behaviours); each other role is a
mixin in a module of its own (docs/decisions.md, "The agent's roles"):

    agent_base.py     constructor and shared state     publishing.py   publish surface, emit
    consumers.py      consumers, prefetch, restores    inbox.py        inbox routing
    rpc_client.py     call, peers                      rpc_server.py   serving @expose
    handoff.py        retry, dead letter, copies       control_plane.py  ping, status, ...
    batch_consume.py  batches read as items
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Self, TypeVar

from ._speedups import log_speedups_notice
from .agent_base import CREATED, RUNNING, STARTING, STOPPED, STOPPING, AgentBase
from .amqp.errors import AccessRefused, AMQPError, ResourceLocked
from .batch_consume import BatchReader
from .behaviour import Behaviour
from .config import AgentConfig
from .consumers import Consumers
from .control_plane import ControlPlane
from .delays import DelayQueues, delay_ms
from .durable import PERSISTENT, declare_dead_letter_queue, declare_inbox
from .engine import ChannelProtocol, ConnectionProtocol, PublishError
from .handoff import Handoff
from .inbox import InboxRouter
from .lifecycle import abort_start, undo_behaviour_start
from .mermaid import agent_diagram
from .message import Message
from .metrics import COLLECTOR
from .presence import Presence
from .publishing import Publisher, PublishSurface
from .rpc import UNAVAILABLE, AgentUnreachable, RpcError, RpcTimeout, expose
from .rpc_client import RpcClient
from .rpc_server import RpcServer
from .url import BrokerURL
from .wire import (
    AGENT_HEADER,
    BEHAVIOUR_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED_AT_HEADER,
    FANOUT_EXCHANGE,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    RETRIES_HEADER,
    TOPIC_EXCHANGE,
)

__all__ = [
    "AGENT_HEADER",
    "BEHAVIOUR_HEADER",
    "CREATED",
    "DEAD_LETTERED_AT_HEADER",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_ID_HEADER",
    "DEAD_LETTER_QUEUE",
    "FANOUT_EXCHANGE",
    "ORIGINAL_EXCHANGE_HEADER",
    "ORIGINAL_ROUTING_KEY_HEADER",
    "QUEUE_HEADER",
    "REASON_HEADER",
    "RETRIES_HEADER",
    "RUNNING",
    "STARTING",
    "STOPPED",
    "STOPPING",
    "TOPIC_EXCHANGE",
    "Agent",
    "AgentConfig",
    "AgentUnreachable",
    "Behaviour",
    "IdentityInUse",
    "Message",
    "PublishError",
    "RpcError",
    "RpcTimeout",
    "declare_inbox_or_fail",
    "expose",
    "identity_in_use",
    "open_connection",
]

log = logging.getLogger("munggoggo.agent")

BehaviourT = TypeVar("BehaviourT", bound="Behaviour[Any]")


class IdentityInUse(AMQPError):
    """Another running agent already holds this identity (it consumes the inbox)."""


def identity_in_use(identity: str, url: BrokerURL) -> IdentityInUse:
    """The error for an identity that another running agent holds.

    Args:
        identity: the agent identity in use.
        url: the broker it is in use on.

    Returns:
        The error, to raise.
    """
    return IdentityInUse(
        f"agent identity {identity!r} is already in use on {url}: another running agent "
        "consumes its inbox queue"
    )


async def declare_inbox_or_fail(
    channel: ChannelProtocol, identity: str, expires_ms: int | None, url: BrokerURL
) -> None:
    """declare_inbox, with an older version's exclusive inbox held by a running agent
    reported as the identity in use.

    Args:
        channel: the channel to declare on.
        identity: the agent identity (the inbox queue's name).
        expires_ms: how long the inbox outlives its consumer (None: forever).
        url: the broker, named in the error.

    Raises:
        IdentityInUse: a running agent holds the inbox exclusively.
    """
    try:
        await declare_inbox(channel, identity, expires_ms)
    except ResourceLocked:
        raise identity_in_use(identity, url) from None


async def open_connection(url: BrokerURL | tuple[BrokerURL, ...], name: str) -> ConnectionProtocol:
    """A connected client for the URL (or failover list): the real AMQP client, or the
    in-process broker.

    Args:
        url: the broker URL, or a failover list tried in order (memory:// uses the first).
        name: the connection's name, shown by the broker's management tools.

    Returns:
        The open connection.

    Raises:
        AMQPConnectError: no broker of the list could be reached or accepted the login.
    """
    urls = url if isinstance(url, tuple) else (url,)
    if urls[0].is_memory:
        from .memory import MemoryConnection

        return await MemoryConnection(urls[0]).connect()
    from .client import Connection

    return await Connection(urls, name=name).connect()


class Agent(
    PublishSurface,
    ControlPlane,
    RpcServer,
    RpcClient,
    InboxRouter,
    Presence,
    Handoff,
    BatchReader,
    Consumers,
    Publisher,
    AgentBase,
):
    """Subclass it, add behaviours in `setup()`, mark RPC methods with `@expose`.

    `Agent(identity=None, *, url=None, config=None)`: see `AgentBase` (core/agent_base.py)
    for the arguments. Messaging: `publish`, `send`, `broadcast`, `flush`; RPC: `call`,
    `call_params`, `peers`; the control plane's exposed methods (`ping`, `status`, ...);
    presence: `on_presence` (core/presence.py).
    """

    # -- hooks ---------------------------------------------------------------------

    async def setup(self) -> None:
        """Add behaviours here (runs after the agent is connected)."""

    async def teardown(self) -> None:
        """Runs when the agent stops, after its behaviours stopped."""

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start the agent for an `async with` block (see `start`).

        Returns:
            The agent itself, typed as its own class: `async with Calculator() as calc`
            gives a `Calculator`.

        Raises:
            RuntimeError: the agent was started before (agents start once).
            IdentityInUse: another running agent holds this identity.
            AMQPError: the broker refused the connection or a declaration.
        """
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the agent at the end of the `async with` block, however it ends (see `stop`).

        Args:
            *exc_info: the exception type, value and traceback the block raised (or three
                Nones); it is not suppressed.
        """
        await self.stop()

    async def start(self) -> None:
        """Connect, declare the mesh's exchanges, the dead-letter queue and the inbox,
        consume the inbox, run `setup()`, then start the behaviours it added.

        Raises:
            RuntimeError: the agent was started before (agents start once).
            IdentityInUse: another running agent holds this identity.
            AMQPError: the broker refused the connection or a declaration.
        """
        if self.state != CREATED:
            raise RuntimeError(f"agent {self.identity!r} is {self.state}; agents start once")
        self.state = STARTING
        log_speedups_notice()  # once per process, when the compiled speedups are not in use
        self.loop = asyncio.get_running_loop()
        try:
            await self._connect()
            self.state = RUNNING
            self.started_at = time.time()
            COLLECTOR.add(self)
            # Behaviours added in setup() start together afterwards, so the prefetch
            # budget is split knowing how many there are.
            self._setting_up = True
            try:
                await self.setup()
            finally:
                self._setting_up = False
            for behaviour in list(self.behaviours.values()):
                await self._start_behaviour(behaviour)
            self.release_held()
            self._announce_started()  # last: it runs, with its behaviours
        except BaseException:
            self.state = STOPPED
            if self.presence is not None:
                self.presence.cancel()
            await abort_start(self)
            raise
        log.info(
            "agent %s running on %s with %d behaviour(s)",
            self.identity,
            self.url,
            len(self.behaviours),
        )

    async def _connect(self) -> None:
        # Read here, not in __init__: `munggoggo run --queue-type` replaces the config.
        self._delivery_mode = PERSISTENT if self.config.durable else None
        self.connection = conn = await open_connection(self.urls, self.identity)
        # Fails the calls in flight when the connection drops; tells unroutable calls
        # after a recovery (unreachable) from calls to unknown agents.
        self._reachability.watch(conn, self.config.unreachable_grace)
        self._pub = await conn.channel()
        self._pub.on_return = self._on_return
        self._pub.on_publish_failure = self._on_publish_failure
        self._pub.sample_confirms = self.config.metrics
        self._batcher.attach(self._pub, self._on_publish_failure, self.loop)
        self._rpc = await conn.channel(confirms=False)
        self._rpc.on_return = self._on_return
        self._sub = sub = await conn.channel(
            confirms=False, prefetch_count=self.config.inbox_prefetch
        )
        await sub.exchange_declare(TOPIC_EXCHANGE, "topic", durable=True)
        await sub.exchange_declare(FANOUT_EXCHANGE, "fanout", durable=True)
        await sub.exchange_declare(DEAD_LETTER_EXCHANGE, "topic", durable=True)
        await declare_dead_letter_queue(sub, self.config.queue_type)
        await sub.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, "#")
        # Retries go out at once when they fail (core/handoff.py): their delay queues are
        # declared now; a delayed publish declares its own on first use.
        self._delays = DelayQueues(conn, self.config.queue_type)
        for seconds in self.config.retry_delays:
            if ms := delay_ms(seconds):
                await self._delays.ensure(ms, "")
        await declare_inbox_or_fail(sub, self.identity, self.config.inbox_expires_ms, self.url)
        await sub.queue_bind(self.identity, FANOUT_EXCHANGE, "")
        # The exclusive consumer is the identity lock: a second agent with this identity
        # is refused here (docs/decisions.md, "The inbox").
        try:
            await self._consume_inbox()
        except AccessRefused:
            holder = await sub.queue_declare(self.identity, passive=True)
            if holder.consumer_count:
                raise identity_in_use(self.identity, self.url) from None
            raise

    async def stop(self) -> None:
        """Drain: stop consuming, let behaviours finish their step and settle, flush
        confirms, close. Bounded by `config.drain_timeout`.
        """
        if self.state in (STOPPED, CREATED):
            self.state = STOPPED
            self._stopped.set()
            return
        if self.state == STOPPING:
            return
        self.state = STOPPING
        grace = self.config.drain_timeout
        await self._announce_stopped()  # first: the others stop sending to it
        await self._restorer.cancel_all(grace)
        for channel, tag in list(self._consumers.values()):
            try:
                await asyncio.wait_for(channel.cancel(tag), grace)
            except (AMQPError, TimeoutError) as exc:
                log.warning("agent %s: could not cancel consumer %s: %s", self.identity, tag, exc)
        self._consumers.clear()
        self._call_slots.hand_back()  # calls waiting for a slot (max_concurrent_calls)
        await asyncio.gather(*(b.stop(timeout=grace) for b in self.behaviours.values()))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        try:
            await self.teardown()
        except Exception:
            log.exception("agent %s: teardown failed", self.identity)
        for fut in self._pending_calls.values():
            if not fut.done():
                fut.set_exception(RpcError(UNAVAILABLE, f"agent {self.identity!r} is stopping"))
        # Batches being filled go out now, before the confirms are awaited and the channel
        # closes; publishes from here on go out one by one (core/batching.py).
        self._batcher.close()
        try:
            if self._pub is not None and self._pub.unconfirmed:
                await self._pub.wait_confirms(timeout=grace)
        except (PublishError, TimeoutError, AMQPError) as exc:
            log.error(
                "agent %s: not every publish was confirmed before closing: %s", self.identity, exc
            )
        if self._tasks:  # settle-after-confirm tasks woken by the flush above
            await asyncio.wait(list(self._tasks), timeout=grace)
        await self._release_inbox(grace)
        await self.connection.close()
        COLLECTOR.remove(self)
        self.state = STOPPED
        self._stopped.set()
        log.info("agent %s stopped", self.identity)

    async def wait_stopped(self) -> None:
        """Wait until the agent has stopped: by `stop()`, or by itself (see `stop_reason`)."""
        await self._stopped.wait()

    def _identity_taken(self) -> None:
        """Another process consumes our inbox: it holds our identity now. Two agents with
        one identity would split its messages and calls, so this one stops.
        """
        self.stop_reason = (
            f"another agent took identity {self.identity!r} while its inbox was restored"
        )
        log.critical("agent %s: %s; stopping", self.identity, self.stop_reason)
        # Not one of self._tasks: stop() waits for those, and would wait for itself.
        self._stopping_task = self.loop.create_task(self.stop())
        self._stopping_task.add_done_callback(_log_failure)

    async def _release_inbox(self, grace: float) -> None:
        """Delete the inbox when it is empty and unused, so that later sends to this
        identity are refused as unknown (NO_ROUTE) at once; an inbox still holding
        messages stays for a successor until it expires, and so does one that delayed
        retries of its messages are still to come back to (core/handoff.py).
        """
        if self._sub is None or not self.connection.is_open:
            return
        if self.loop.time() < self._inbox_retries_due:
            log.info("agent %s: inbox kept for delayed retries still to come", self.identity)
            return
        try:
            await asyncio.wait_for(
                self._sub.queue_delete(self.identity, if_unused=True, if_empty=True), grace
            )
        except (AMQPError, TimeoutError) as exc:
            log.info("agent %s: inbox kept (%s)", self.identity, exc)

    # -- behaviours ------------------------------------------------------------------

    async def add_behaviour(self, behaviour: BehaviourT) -> BehaviourT:
        """Add a behaviour: in setup() it starts with the others once setup() returns; on a
        running agent it starts now, and is added once its queue is declared and bound and
        its consumer set up; this returns once its setup() ran. One that could not start is
        not added and leaves nothing behind, so a corrected one can be added under the same
        name.

        Args:
            behaviour: a behaviour of this agent, its short name not taken.

        Returns:
            The behaviour (typed as given).

        Raises:
            ValueError: the agent already has (or is adding) a behaviour of that name.
            MethodNameClash: it `@expose`s a method under a name the agent or another of
                its behaviours exposes (a ValueError too).
            QueueMismatch: its queue exists with other properties (core/durable.py).
            AMQPError: the broker refused its queue, a binding or the consumer.
        """
        name = behaviour.short_name
        if name in self.behaviours or name in self._adding:
            raise ValueError(f"agent {self.identity!r} already has a behaviour named {name!r}")
        self._methods.add_behaviour(behaviour)  # its @expose'd methods (core/rpc_registry.py)
        if self.state != RUNNING or self._setting_up:
            self.behaviours[name] = behaviour
            return behaviour
        self._adding[name] = behaviour  # its name is taken while it starts
        try:
            await self._start_behaviour(behaviour)  # adds it once its consumer is set up
        except BaseException:
            self._methods.remove_behaviour(behaviour)
            await undo_behaviour_start(self, behaviour)
            raise
        finally:
            del self._adding[name]
        return behaviour

    add_runtime_dependency = add_behaviour  # the seed's spelling

    async def _start_behaviour(self, behaviour: Behaviour[Any]) -> None:
        """Consume its queue (if it subscribes and does not yet), then start its loop and
        wait for its setup().
        """
        if behaviour.binding_keys and behaviour.short_name not in self._consumers:
            await self._consume_behaviour(behaviour)
        # add_behaviour adds it here, its queue and consumer set up (a refused queue leaves
        # nothing behind); from now on direct messages its template matches reach it too.
        self.behaviours[behaviour.short_name] = behaviour
        behaviour.start()
        await behaviour.wait_set_up()

    def behaviour(self, name: str) -> Behaviour[Any]:
        """The behaviour of that short name.

        Args:
            name: the behaviour's short name.

        Returns:
            The behaviour.

        Raises:
            KeyError: the agent has none of that name.
        """
        try:
            return self.behaviours[name]
        except KeyError:
            raise KeyError(f"agent {self.identity!r} has no behaviour {name!r}") from None

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the agent: its behaviours (kind and state), the topics
        they subscribe to, and each FSM's states and transitions.

        Returns:
            The diagram's source (core/mermaid.py).
        """
        return agent_diagram(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity!r} {self.state}>"


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Done callback of a task nobody awaits: its error is logged, not lost."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
