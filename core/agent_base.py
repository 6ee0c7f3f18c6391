"""The agent's constructor and the state its roles share.

`Agent` (core/agent.py) is assembled from role mixins, one module each: publishing
(core/publishing.py), consumers and the prefetch budget (core/consumers.py), inbox routing
(core/inbox.py), the RPC client and server (core/rpc_client.py, core/rpc_server.py), retry /
dead-letter handoff (core/handoff.py), reading batches (core/batch_consume.py) and the
control plane (core/control_plane.py). Every role subclasses `AgentBase`, so the attributes
set here are what a role may read of its agent, and the few role methods one role calls on
another are declared here for readers and type checkers (the real ones live in their
role's module).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .batching import Batcher, BatchLane
from .config import AgentConfig, agent_config
from .consumer_restore import ConsumerRestorer
from .control import TraceStore
from .delays import DelayQueues
from .engine import ChannelProtocol, ConnectionProtocol
from .metrics import AgentStats
from .reachability import Reachability
from .rpc import exposed_methods
from .rpc_limits import CallSlots
from .rpc_registry import MethodRegistry
from .url import BrokerURL, parse_urls

if TYPE_CHECKING:
    from .batch_consume import BatchSettler
    from .behaviour import Behaviour
    from .message import Message

CREATED, STARTING, RUNNING, STOPPING, STOPPED = (
    "created",
    "starting",
    "running",
    "stopping",
    "stopped",
)


class AgentBase:
    """Identity, settings and shared state of an agent (see `Agent` for the public API).

    Args:
        identity: the agent's name on the mesh, its inbox queue's name (default: a
            generated `agent-<hex>`).
        url: broker URL, or a failover list tried in order (default `MUNGGOGGO_URL`).
        config: an `AgentConfig`, or a mapping of its fields.

    Raises:
        ValueError: an identity that is empty, over 200 bytes or contains whitespace; an
            invalid URL or config.
    """

    def __init__(
        self,
        identity: str | None = None,
        *,
        url: str | list[str] | None = None,
        config: AgentConfig | Mapping[str, Any] | None = None,
    ):
        self.identity = identity or f"agent-{uuid.uuid4().hex[:8]}"
        if (
            not self.identity
            or len(self.identity.encode()) > 200
            or any(c.isspace() for c in self.identity)
        ):
            raise ValueError(
                f"invalid agent identity {self.identity!r}: 1-200 bytes, no whitespace"
            )
        self.urls = parse_urls(url)  # several: failover, tried in order (README)
        self.config = agent_config(config)
        self.state = CREATED
        self.behaviours: dict[str, Behaviour[Any]] = {}
        self.trace = TraceStore(self.config.trace_size)
        # Whether messages in and out are recorded in `trace` (read on every message).
        self.records_traces = self.config.trace_size > 0
        self.connection: ConnectionProtocol = None  # type: ignore[assignment]  # until connected
        # Called with [(sequence number, error)] for publishes the broker will never
        # confirm (publish/send/broadcast return the sequence number; a batched message's
        # is its own, from 2**48 on: core/batching.py); they are logged too.
        self.on_publish_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.started_at: float | None = None
        self.stats = AgentStats()  # read by the Prometheus collector at scrape time
        # The publish surface (core/publishing.py): the agent publishes as itself, unlabelled.
        self._publisher = self
        self._publish_label = ""
        # Micro-batching of publish() (core/batching.py): the agent's batcher, and the lane
        # of its own setting (None: its own publishes go out one by one).
        self._batcher = Batcher(self)
        self._batch_lane: BatchLane | None = (
            self._batcher.lane(self.config.batching) if self.config.batching else None
        )
        self._exposed = exposed_methods(type(self))
        # What requests may call: the agent's exposed methods and its running behaviours'.
        self._methods = MethodRegistry(self._exposed)
        # AgentConfig.max_concurrent_calls (core/rpc_limits.py)
        self._call_slots = CallSlots(self.config.max_concurrent_calls, self._start_waiting_call)
        # The three channels exist from connect on (None before).
        # Confirmed publishes: pub/sub, direct, broadcast, handoffs.
        self._pub: ChannelProtocol = None  # type: ignore[assignment]
        # RPC requests and replies: no confirms, the caller's timeout covers a lost
        # request or reply, and mandatory still reports unknown agents.
        self._rpc: ChannelProtocol = None  # type: ignore[assignment]
        self._sub: ChannelProtocol = None  # type: ignore[assignment]
        # behaviour name ("" for the inbox) -> (channel, consumer tag). Each consuming
        # behaviour has its own channel, so its delivery tags are contiguous and one
        # coalesced multiple-ack per tick covers what it finished.
        self._consumers: dict[str, tuple[ChannelProtocol, str]] = {}
        self._behaviour_channels: dict[str, ChannelProtocol] = {}
        self._setting_up = False
        self._adding: dict[str, Behaviour[Any]] = {}  # behaviours add_behaviour is starting
        self._pending_calls: dict[str, asyncio.Future[bytes]] = {}
        self._call_targets: dict[str, str] = {}  # call id -> the agent called
        self._reachability = Reachability(self._pending_calls, self._call_targets)
        self._collectors: dict[str, list[bytes]] = {}
        # Marks our call ids (a late reply is recognised and dropped); the random part of
        # each id (`_new_call_id`) is what keeps a reply from being forged.
        self._call_prefix = f"{self.identity}.{uuid.uuid4().hex[:6]}."
        # Encoded properties of plain messages by content type, for the wall-clock second
        # `_props_second`, which ends at `_props_until` on the monotonic clock
        # (core/publishing.py).
        self._props_second = -1
        self._props_until = 0.0
        self._props_cache: dict[str, bytes] = {}
        self._delivery_mode: int | None = None  # PERSISTENT in durable mode, set on connect
        # The delay queues delayed publishes and retries go through (core/delays.py),
        # per connection: set on connect.
        self._delays: DelayQueues = None  # type: ignore[assignment]
        # Loop time until which delayed retries of inbox messages may still come back:
        # a stop before then keeps the (empty) inbox for them.
        self._inbox_retries_due = 0.0
        # Direct messages that reach the inbox while the agent starts (one waiting there
        # since its last run, a delayed retry) wait here until its behaviours run, rather
        # than being dead-lettered as unwanted; None once started (core/inbox.py).
        self._held_direct: list[Message] | None = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restorer = ConsumerRestorer(self.identity)
        # Why the agent stopped by itself (its identity taken), None when it did not.
        self.stop_reason: str | None = None
        self._stopping_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def delivery_mode(self) -> int | None:
        """The delivery mode of the agent's own messages: 2 (persistent) in durable mode,
        None otherwise (known once connected).
        """
        return self._delivery_mode

    @property
    def url(self) -> BrokerURL:
        """The broker URL in use (the first of a failover list before connecting)."""
        conn = self.connection
        return conn.url if conn is not None else self.urls[0]

    if TYPE_CHECKING:
        # Role methods another role calls; each is defined in the module named.

        async def emit_message(  # publishing.py
            self,
            body: Any,
            exchange: str,
            routing_key: str,
            headers: dict[str, Any] | None,
            content_type: str | None,
            origin: str = "",
            delay: float | None = None,
        ) -> int:
            """Declared for the roles; defined in core/publishing.py."""
            raise NotImplementedError

        def publish_now(  # publishing.py
            self,
            body: Any,
            exchange: str,
            routing_key: str,
            headers: dict[str, Any] | None,
            content_type: str | None,
            origin: str = "",
            route: str | None = None,
            mandatory: bool | None = None,
        ) -> tuple[int, bool]:
            """Declared for the roles; defined in core/publishing.py."""
            raise NotImplementedError

        @property
        def publish_channel(self) -> ChannelProtocol:
            """Declared for the roles; defined in core/publishing.py."""
            raise NotImplementedError

        def _identity_taken(self) -> None: ...  # core/agent.py

        async def _start_behaviour(self, behaviour: Behaviour[Any]) -> None: ...  # core/agent.py

        async def release_consumer(self, behaviour: Behaviour[Any]) -> None:  # consumers.py
            """Declared for the roles; defined in core/consumers.py."""

        def _on_inbox(self, batch: list[Any]) -> None: ...  # inbox.py

        def _unbatch(  # batch_consume.py
            self, channel: ChannelProtocol, queue: str, behaviour: str, batch: list[Any]
        ) -> list[Message]: ...

        def read_batch_guarded(  # batch_consume.py
            self, delivery: Any, channel: ChannelProtocol, queue: str, behaviour: str
        ) -> BatchSettler | None:
            """Declared for the roles; defined in core/batch_consume.py."""
            raise NotImplementedError

        def hold_while_starting(self, msg: Message) -> bool:  # inbox.py
            """Declared for the roles; defined in core/inbox.py."""
            raise NotImplementedError

        def _take_reply(self, call_id: str, delivery: Any) -> None: ...  # rpc_client.py

        def _serve_rpc(self, msg: Message) -> None: ...  # rpc_server.py

        def _receive_presence(self, msg: Message) -> None: ...  # presence.py

        def _start_waiting_call(self, msg: Message) -> None: ...  # rpc_server.py

        def reject_failed(  # handoff.py
            self, msg: Message, exc: BaseException, behaviour: str = ""
        ) -> None:
            """Declared for the roles; defined in core/handoff.py."""

        def _dead_letter(  # handoff.py
            self, msg: Message, reason: str, behaviour: str | None, retries: int = 0
        ) -> None: ...
