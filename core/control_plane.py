"""The control plane: the `@expose`d methods every agent answers.

`ping`, `describe`, `status`, `list_behaviours`, `start_behaviour`, `stop_behaviour` and
`traces` are callable over RPC like any exposed method (the CLI, the gateway and
`peers()` use them). A subclass may override them; one overridden without `@expose` is
no longer callable.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .agent_base import AgentBase
from .rpc import RpcError, expose

if TYPE_CHECKING:
    from .behaviour import Behaviour


class ControlPlane(AgentBase):
    """The agent's exposed control methods."""

    @expose
    def ping(self) -> str:
        """Liveness over the mesh.

        Returns:
            "pong".
        """
        return "pong"

    @expose
    def describe(self) -> dict[str, Any]:
        """Identity, state, behaviours, exposed methods with their contracts and start
        time (what `peers()` collects).

        Returns:
            `identity`, `state`, `behaviours` (each one's `Behaviour.describe()`),
            `methods` (the names of the exposed ones: the agent's and its running
            behaviours'), `schemas` (method name -> `params`, the JSON Schema of its
            parameters; `result`, that of its return type; `doc`, its docstring) and
            `started_at` (epoch seconds, or None).
        """
        methods = self._methods
        return {
            "identity": self.identity,
            "state": self.state,
            "behaviours": [b.describe() for b in self.behaviours.values()],
            "methods": methods.names(),
            "schemas": methods.schemas(),
            "started_at": self.started_at,
        }

    @expose
    def status(self) -> dict[str, Any]:
        """`describe()` plus the connection, uptime, counters, calls waiting for a reply
        and publishes waiting for a confirm.

        Returns:
            `describe()` with `url`, `connected`, `reconnects`, `uptime` (seconds),
            `counters` (published, consumed, rpc_served, dead_lettered, returned),
            `pending_calls` and `unconfirmed`.
        """
        info = self.describe()
        conn = self.connection
        info.update(
            {
                "url": str(self.url),
                "connected": bool(conn is not None and conn.is_open),
                "reconnects": getattr(conn, "reconnects", 0),
                "uptime": time.time() - self.started_at if self.started_at else 0.0,
                "counters": self._counters(),
                "pending_calls": len(self._pending_calls),
                "unconfirmed": self._pub.unconfirmed if self._pub is not None else 0,
            }
        )
        return info

    def _counters(self) -> dict[str, int]:
        stats = self.stats
        return {
            "published": sum(stats.published.values()),
            "consumed": sum(stats.consumed.values()),
            "rpc_served": sum(stats.rpc_served.values()),
            "dead_lettered": sum(stats.dead_lettered.values()),
            "returned": stats.returned,
        }

    @expose
    def list_behaviours(self) -> list[dict[str, Any]]:
        """Each behaviour's `describe()`.

        Returns:
            One description per behaviour.
        """
        return [b.describe() for b in self.behaviours.values()]

    @expose
    async def start_behaviour(self, name: str) -> dict[str, Any]:
        """Start a behaviour that is not running (its consumer too).

        Args:
            name: its short name, or its full name `<identity>.<short name>`.

        Returns:
            Its `describe()` afterwards.

        Raises:
            RpcError: -32004, no behaviour of that name.
        """
        behaviour = self._behaviour_or_error(name)
        if not behaviour.is_running:
            await self._start_behaviour(behaviour)
        return behaviour.describe()

    @expose
    async def stop_behaviour(self, name: str) -> dict[str, Any]:
        """Stop a behaviour; its queue keeps what arrives until it is started again.

        Args:
            name: its short name, or its full name `<identity>.<short name>`.

        Returns:
            Its `describe()` afterwards.

        Raises:
            RpcError: -32004, no behaviour of that name.
        """
        behaviour = self._behaviour_or_error(name)
        await self._stop_behaviour(behaviour)
        return behaviour.describe()

    async def _stop_behaviour(self, behaviour: Behaviour[Any]) -> None:
        """Stop consuming its queue first, so new messages wait there (ready, not held in a
        mailbox) until it is started again.
        """
        await self.release_consumer(behaviour)
        await behaviour.stop(timeout=self.config.drain_timeout)

    @expose
    def traces(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` messages in and out (empty when `trace_size` is 0).

        Args:
            limit: how many to return at most.

        Returns:
            One record per message, oldest first.
        """
        return self.trace.last(limit)

    def _behaviour_or_error(self, name: str) -> Behaviour[Any]:
        """The behaviour by short name, or by full name `<identity>.<short name>`."""
        behaviour = self.behaviours.get(name)
        if behaviour is None and name.startswith(self.identity + "."):
            behaviour = self.behaviours.get(name[len(self.identity) + 1 :])
        if behaviour is None:
            raise RpcError(-32004, f"agent {self.identity!r} has no behaviour {name!r}")
        return behaviour
