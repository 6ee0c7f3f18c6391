"""Liveness and readiness over HTTP for orchestrators: `munggoggo run ... --health-port P`.

`GET /livez` answers 200 while the process's event loop turns: it is served by that loop,
so a loop wedged by blocking code fails the probe (a thread would answer regardless).
`GET /readyz` answers 200 only when every hosted agent is running, its broker connection is
open, each of its consumers (inbox and behaviour queues) is up and none of its behaviours
failed; otherwise 503 with a JSON body listing what is not ready. A tiny HTTP/1.0-style
server on asyncio streams: one request per connection, no dependency (docs/decisions.md).

The socket is bound when `HealthServer` is made, before any agent starts, so a port in use
or out of range fails the command at start-up with one line; it serves once `start()` runs
inside the agents' event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Sequence
from typing import Any

_MAX_REQUEST = 8192  # request line + headers; probes send ~100 bytes
_READ_TIMEOUT = 5.0  # a client that sends nothing does not hold a connection open


def agent_problems(agent: Any) -> list[str]:
    """Why `agent` is not ready (empty when it is): not running, connection not open, a
    consumer (inbox or behaviour) that is not consuming on an open channel, or a behaviour
    that failed (its setup raised, or its steps reached `restart_policy.max_failures`; a
    one-shot that is done is not a failure).

    Args:
        agent: the agent to check.

    Returns:
        One line per problem.
    """
    who = f"agent {agent.identity}"
    if agent.state != "running":
        return [f"{who} is {agent.state}"]
    conn = agent.connection
    if conn is None or not conn.is_open:
        state = getattr(conn, "state", "not connected") if conn is not None else "not connected"
        return [f"{who}: connection to {agent.url} is {state}"]
    problems = [
        f"{who}: behaviour {behaviour.short_name} failed: {behaviour.last_error}"
        for behaviour in list(agent.behaviours.values())
        if behaviour.state == "failed"
    ]
    for name, (channel, tag) in agent.consumers().items():
        what = f"behaviour {name}" if name else "inbox"
        if not channel.is_open:
            problems.append(f"{who}: {what} channel is not open")
        elif not channel.is_consuming(tag):  # the broker cancelled it (queue deleted, ...)
            problems.append(f"{who}: {what} consumer is not consuming")
    for name in sorted(agent.restoring_consumers):
        what = f"behaviour {name}" if name else "inbox"
        problems.append(f"{who}: {what} consumer was cancelled by the broker; consuming again")
    return problems


def readiness(agents: Sequence[Any]) -> dict[str, Any]:
    """The /readyz body: {"ready": bool, "agents": {identity: [problems]}}."""
    report = {agent.identity: agent_problems(agent) for agent in agents}
    return {"ready": not any(report.values()), "agents": report}


class HealthServer:
    """Binds at construction (errors are OSError/ValueError with one clear line), serves
    from `start(agents)` until `close()`."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"cannot serve health checks on port {port}: ports are 0-65535")
        sock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        try:
            # A restarted agent must not wait out TIME_WAIT; a live listener still conflicts.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot serve health checks on {addr}:{port}: {exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        self.addr = addr
        self.port: int = sock.getsockname()[1]
        self._sock: socket.socket | None = sock
        self._server: asyncio.AbstractServer | None = None
        self._agents: Sequence[Any] = ()

    async def start(self, agents: Sequence[Any]) -> None:
        """Serve probes about `agents` from the running loop (before they have started:
        readiness then says they are starting)."""
        if self._sock is None:
            raise RuntimeError("health server is closed")
        self._agents = agents
        self._server = await asyncio.start_server(self._serve, sock=self._sock, limit=_MAX_REQUEST)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body = self.answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body = 400, {"error": "bad request"}
        except ConnectionError:
            writer.close()
            return
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        if not head.startswith(b"HEAD "):
            writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def answer(self, head: bytes) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for a request head."""
        method, _, rest = head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if path not in (b"/livez", b"/readyz"):
            return 404, {"error": "not found: use /livez or /readyz"}
        if method not in (b"GET", b"HEAD"):
            return 405, {"error": "method not allowed"}
        if path == b"/livez":
            return 200, {"alive": True}
        report = readiness(self._agents)
        return (200 if report["ready"] else 503), report


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
