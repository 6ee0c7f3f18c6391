"""The gateway's shared type aliases: the ASGI callables and the two handler contracts.

ASGI (Starlette's `types.py` names): a `Scope` describes a connection, a `Message` is one
event either way, `Receive` and `Send` move them, an `ASGIApp` takes all three.

Handlers get the worker's `GatewayState` (gateway/state.py):
    Handler:  async def handler(request, state) -> Response      (HTTP, the router answers)
    Endpoint: async def endpoint(scope, receive, send, state)     (sends for itself: the
              WebSocket and the dashboard's files)
A route served before the worker has a state (probes, docs) gets None for it.

The state types live in gateway/state.py (which imports the mesh, the guard, the limits):
here they are named for type checkers and resolved on first use at run time (PEP 562), so
that any gateway module, state.py's own imports included, can take these aliases without an
import cycle. Annotate with `if TYPE_CHECKING: from .types import GatewayState`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .http import Request, Response
    from .state import GatewaySettings, GatewayState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Handler = Callable[["Request", "GatewayState"], Awaitable["Response"]]
Endpoint = Callable[[Scope, Receive, Send, "GatewayState"], Awaitable[None]]


def __getattr__(name: str) -> Any:
    """`GatewayState` and `GatewaySettings`, imported from gateway/state.py on first use.

    Raises:
        AttributeError: any other name.
    """
    if name in ("GatewayState", "GatewaySettings"):
        return getattr(importlib.import_module(".state", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ASGIApp",
    "Endpoint",
    "GatewaySettings",
    "GatewayState",
    "Handler",
    "Message",
    "Receive",
    "Scope",
    "Send",
]
