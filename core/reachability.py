"""What a call learns when its target cannot be reached: retry, or no such agent.

Two moments decide it, both seen from the caller's connection:

- **The connection is lost with calls in flight.** The RPC channel has no publisher
  confirms, so the caller cannot tell whether a request reached the broker before the drop
  (what the socket had not sent yet is gone), and a reply may or may not come back. Each
  such call fails at once with `AgentUnreachable` (-32005, `may_have_run=True`) instead of
  waiting out its timeout for a reply that may never come (docs/decisions.md).
- **A request comes back unroutable (NO_ROUTE) shortly after the connection recovered.**
  The target's inbox is a durable queue that outlives its agent's reconnects, so an agent
  that is merely reconnecting still takes requests and the call waits for it. No inbox at
  all right after our own recovery means the broker lost it (a node restarted without its
  data, a failover to another broker): its agent declares it again when it reconnects, so
  for `grace` seconds after a recovery the call fails as `AgentUnreachable`
  (`may_have_run=False`: the request reached nobody) rather than as unknown (-32001).
  Outside that window an unroutable call is to an unknown agent, as before.

memory:// never loses its connection: there, neither happens.
"""

from __future__ import annotations

import asyncio
import time

from .engine import ConnectionProtocol
from .rpc import UNKNOWN_AGENT, AgentUnreachable, RpcError


class Reachability:
    """Watches an agent's connection for losses and recoveries on behalf of its calls.

    Args:
        pending: call id -> future of the calls waiting for a reply (the agent's own dict,
            read here, never changed: the caller removes its entry when the call ends).
        targets: call id -> the agent called.
    """

    def __init__(self, pending: dict[str, asyncio.Future[bytes]], targets: dict[str, str]) -> None:
        self.grace = 0.0
        self._pending = pending
        self._targets = targets
        self._recovered_at: float | None = None

    def watch(self, connection: ConnectionProtocol, grace: float) -> None:
        """Follow `connection` (its `on_lost` and `on_reconnect` callbacks).

        Args:
            connection: the agent's connection, just opened.
            grace: seconds after a recovery during which an unroutable call fails as
                unreachable rather than unknown.
        """
        self.grace = grace
        connection.on_lost.append(self._lost)
        connection.on_reconnect.append(self._recovered)

    def _lost(self, connection: ConnectionProtocol, reason: BaseException) -> None:
        """Fail every call in flight: each one went out on the connection just lost."""
        for call_id, fut in self._pending.items():
            if not fut.done():
                target = self._targets.get(call_id, "?")
                fut.set_exception(
                    AgentUnreachable(
                        f"call to agent {target!r} cut off: the connection was lost with the "
                        f"call in flight ({reason}); it may or may not have run, retry",
                        may_have_run=True,
                    )
                )

    def _recovered(self, connection: ConnectionProtocol) -> None:
        self._recovered_at = time.monotonic()

    @property
    def recently_recovered(self) -> bool:
        """Whether the connection recovered less than `grace` seconds ago."""
        at = self._recovered_at
        return at is not None and time.monotonic() - at < self.grace

    def no_route(self, target: str) -> RpcError:
        """The error for a call that came back unroutable: `target` has no inbox.

        Returns:
            AgentUnreachable (-32005, nothing ran) within the grace window after a
            recovery, else RpcError -32001 (unknown agent).
        """
        if self.recently_recovered:
            return AgentUnreachable(
                f"agent {target!r} is unreachable right now: it has no inbox, and this agent's "
                f"connection recovered less than {self.grace:g}s ago (the agent may still be "
                "reconnecting); retry",
                may_have_run=False,
            )
        return RpcError(UNKNOWN_AGENT, f"unknown agent {target!r}: no inbox queue of that name")
