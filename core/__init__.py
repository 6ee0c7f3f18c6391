"""munggoggo: a message-based asyncio agent framework on RabbitMQ.

from munggoggo import Agent, Behaviour, expose, run

The original munggoggo's names are kept: `Core` is `Agent`, and
`Worker(agent, loglevel="info").execute_from_commandline()` runs agents like `run()`.
"""

__version__ = "0.1.0"

from ._speedups import PropertiesTooLarge
from .agent import Agent, IdentityInUse
from .behaviour import Behaviour, OneShotBehaviour, PeriodicBehaviour, RestartPolicy
from .config import AgentConfig
from .message import Message
from .rpc import AgentUnreachable, RpcError, RpcTimeout, expose
from .runner import run, serve
from .template import Template
from .worker import Worker

Core = Agent  # the original munggoggo's name for the agent base class

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentUnreachable",
    "Behaviour",
    "Core",
    "IdentityInUse",
    "Message",
    "OneShotBehaviour",
    "PeriodicBehaviour",
    "PropertiesTooLarge",
    "RestartPolicy",
    "RpcError",
    "RpcTimeout",
    "Template",
    "Worker",
    "__version__",
    "expose",
    "run",
    "serve",
]
