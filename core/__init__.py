"""munggoggo: a message-based asyncio agent framework on RabbitMQ.

from munggoggo import Agent, Behaviour, expose, run
"""

__version__ = "0.1.0"

from .agent import Agent, AgentConfig, IdentityInUse
from .behaviour import Behaviour, OneShotBehaviour, PeriodicBehaviour, RestartPolicy
from .message import Message
from .rpc import RpcError, RpcTimeout, expose
from .runner import run, serve
from .template import Template

__all__ = [
    "Agent",
    "AgentConfig",
    "Behaviour",
    "IdentityInUse",
    "Message",
    "OneShotBehaviour",
    "PeriodicBehaviour",
    "RestartPolicy",
    "RpcError",
    "RpcTimeout",
    "Template",
    "__version__",
    "expose",
    "run",
    "serve",
]
