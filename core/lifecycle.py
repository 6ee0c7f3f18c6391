"""What an agent does when its life does not go as planned: a start that fails half way,
and telling a method cut short by the agent's own stop from one that failed.

It owns these decisions only; the agent (core/agent.py) calls them from `start()` and from
its RPC server, through the agent's public interface.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .amqp.errors import AMQPError
from .metrics import COLLECTOR
from .rpc import UNAVAILABLE, RpcError

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("munggoggo.agent")


async def abort_start(agent: Agent) -> None:
    """Undo a start() that failed half way: cancel the consumers of the behaviours already
    started and stop them, so nothing keeps running, then close the connection.

    Args:
        agent: the agent whose start() is raising.
    """
    behaviours = list(agent.behaviours.values())
    grace = agent.config.drain_timeout
    try:
        for behaviour in behaviours:
            await asyncio.wait_for(agent.release_consumer(behaviour), grace)
    except (AMQPError, TimeoutError) as exc:  # the connection goes anyway, consumers too
        log.warning("agent %s: could not cancel consumers: %s", agent.identity, exc)
    await asyncio.gather(*(b.stop(timeout=grace) for b in behaviours))
    if agent.connection is not None:
        await agent.connection.close()
    COLLECTOR.remove(agent)


def refused_by_stopping(exc: BaseException) -> bool:
    """Whether an RPC method that raised `exc` while its agent stops was cut short by the
    stop rather than failing: cancelled, or a call it made refused as unavailable (the stop
    fails the agent's pending calls).

    Args:
        exc: what the method raised.

    Returns:
        True when its request should go back to the inbox instead of being answered.
    """
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, RpcError) and exc.code == UNAVAILABLE
