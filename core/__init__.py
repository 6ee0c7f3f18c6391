"""munggoggo: a message-based asyncio agent framework on RabbitMQ.

from munggoggo import Agent, Behaviour, expose, run

The original munggoggo's names are kept: `Core` is `Agent`, and
`Worker(agent, loglevel="info").execute_from_commandline()` runs agents like `run()`.

The names below are resolved on first use (PEP 562), so that importing a layer that needs no
event loop (`munggoggo.amqp`, the sans-IO protocol) does not import the agent and asyncio.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._speedups import MunggoggoError, PropertiesTooLarge
    from .agent import Agent, IdentityInUse
    from .agent import Agent as Core
    from .amqp.errors import (
        AccessRefused,
        AMQPConnectError,
        AMQPError,
        AuthenticationError,
        BrokerError,
        ConnectionLost,
        NotFound,
        PreconditionFailed,
        ResourceLocked,
    )
    from .batching import Batching
    from .behaviour import Behaviour, RestartPolicy
    from .behaviour_kinds import OneShotBehaviour, PeriodicBehaviour
    from .config import AgentConfig
    from .durable import QueueMismatch
    from .engine import DrainTimeout, PublishError, PublishNacked
    from .envelope import DecodeError, EncodeError
    from .extras import MissingExtra
    from .fsm import FSMBehaviour, State
    from .message import Message
    from .rpc import AgentUnreachable, RpcError, RpcTimeout, expose
    from .runner import AgentStoppedByItself, run, serve
    from .template import Template
    from .timed import TimeoutBehaviour
    from .url import URLError
    from .worker import Worker

# Public name -> (module, its name there). `Core` is the original munggoggo's name for the
# agent base class.
_LAZY: dict[str, tuple[str, str]] = {
    "AMQPConnectError": (".amqp.errors", "AMQPConnectError"),
    "AMQPError": (".amqp.errors", "AMQPError"),
    "AccessRefused": (".amqp.errors", "AccessRefused"),
    "Agent": (".agent", "Agent"),
    "AgentConfig": (".config", "AgentConfig"),
    "AgentStoppedByItself": (".runner", "AgentStoppedByItself"),
    "AgentUnreachable": (".rpc", "AgentUnreachable"),
    "AuthenticationError": (".amqp.errors", "AuthenticationError"),
    "Batching": (".batching", "Batching"),
    "Behaviour": (".behaviour", "Behaviour"),
    "BrokerError": (".amqp.errors", "BrokerError"),
    "ConnectionLost": (".amqp.errors", "ConnectionLost"),
    "Core": (".agent", "Agent"),
    "DecodeError": (".envelope", "DecodeError"),
    "DrainTimeout": (".engine", "DrainTimeout"),
    "EncodeError": (".envelope", "EncodeError"),
    "FSMBehaviour": (".fsm", "FSMBehaviour"),
    "IdentityInUse": (".agent", "IdentityInUse"),
    "Message": (".message", "Message"),
    "MissingExtra": (".extras", "MissingExtra"),
    "MunggoggoError": ("._speedups", "MunggoggoError"),
    "NotFound": (".amqp.errors", "NotFound"),
    "OneShotBehaviour": (".behaviour_kinds", "OneShotBehaviour"),
    "PeriodicBehaviour": (".behaviour_kinds", "PeriodicBehaviour"),
    "PreconditionFailed": (".amqp.errors", "PreconditionFailed"),
    "PropertiesTooLarge": ("._speedups", "PropertiesTooLarge"),
    "PublishError": (".engine", "PublishError"),
    "PublishNacked": (".engine", "PublishNacked"),
    "QueueMismatch": (".durable", "QueueMismatch"),
    "ResourceLocked": (".amqp.errors", "ResourceLocked"),
    "RestartPolicy": (".behaviour", "RestartPolicy"),
    "RpcError": (".rpc", "RpcError"),
    "RpcTimeout": (".rpc", "RpcTimeout"),
    "State": (".fsm", "State"),
    "Template": (".template", "Template"),
    "TimeoutBehaviour": (".timed", "TimeoutBehaviour"),
    "URLError": (".url", "URLError"),
    "Worker": (".worker", "Worker"),
    "expose": (".rpc", "expose"),
    "run": (".runner", "run"),
    "serve": (".runner", "serve"),
}

__all__ = [
    "AMQPConnectError",
    "AMQPError",
    "AccessRefused",
    "Agent",
    "AgentConfig",
    "AgentStoppedByItself",
    "AgentUnreachable",
    "AuthenticationError",
    "Batching",
    "Behaviour",
    "BrokerError",
    "ConnectionLost",
    "Core",
    "DecodeError",
    "DrainTimeout",
    "EncodeError",
    "FSMBehaviour",
    "IdentityInUse",
    "Message",
    "MissingExtra",
    "MunggoggoError",
    "NotFound",
    "OneShotBehaviour",
    "PeriodicBehaviour",
    "PreconditionFailed",
    "PropertiesTooLarge",
    "PublishError",
    "PublishNacked",
    "QueueMismatch",
    "ResourceLocked",
    "RestartPolicy",
    "RpcError",
    "RpcTimeout",
    "State",
    "Template",
    "TimeoutBehaviour",
    "URLError",
    "Worker",
    "__version__",
    "expose",
    "run",
    "serve",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines a public name on its first use, and keep the name.

    A submodule is imported on first use too: `import munggoggo` used to import most of them
    along the way, so `munggoggo.rpc.RpcError` after a bare `import munggoggo` still works.

    Raises:
        AttributeError: `name` is neither a public name of the package nor a submodule.
    """
    if name not in _LAZY:
        if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
