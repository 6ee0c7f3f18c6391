"""What an agent does when its life does not go as planned: a start that fails half way or
is cancelled by a stop, a behaviour whose start fails while it is being added, and telling
a method cut short by the agent's own stop from one that failed.

It owns these decisions only; the agent (core/agent.py) calls them from `start()`,
`add_behaviour()` and its RPC server, through the agent's public interface.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .amqp.errors import AMQPError
from .metrics import COLLECTOR
from .rpc import UNAVAILABLE, RpcError

if TYPE_CHECKING:
    from .agent import Agent
    from .behaviour import Behaviour

log = logging.getLogger("munggoggo.agent")


async def abort_start(agent: Agent) -> None:
    """Undo a start() that failed half way, or was cancelled because the agent is asked to
    stop: cancel the consumers of the behaviours already started and let those behaviours
    finish their step, wait for what was published to be confirmed, close the connection.
    All of it within `drain_timeout` (then closing the connection).

    Args:
        agent: the agent whose start() is raising.
    """
    loop = asyncio.get_running_loop()
    grace = agent.config.drain_timeout
    deadline = loop.time() + grace
    behaviours = list(agent.behaviours.values())
    # Stop consuming first: what is ready stays in the queues while the behaviours finish.
    try:
        released = await asyncio.wait_for(
            asyncio.gather(
                *(agent.release_consumer(b) for b in behaviours), return_exceptions=True
            ),
            grace,
        )
        failures = [exc for exc in released if isinstance(exc, BaseException)]
    except TimeoutError as exc:
        failures = [exc]
    if failures:  # the connection goes anyway, and the consumers with it
        log.warning("agent %s: could not cancel consumers: %s", agent.identity, failures[0])
    await asyncio.gather(*(b.stop(timeout=_remaining(loop, deadline)) for b in behaviours))
    conn = agent.connection
    if conn is not None and conn.is_open:
        try:
            await agent.flush(timeout=_remaining(loop, deadline))
        except (TimeoutError, AMQPError) as exc:
            log.warning("agent %s: not every publish was confirmed: %s", agent.identity, exc)
    if conn is not None:
        await conn.close()
    COLLECTOR.remove(agent)


async def undo_behaviour_start(agent: Agent, behaviour: Behaviour[Any]) -> None:
    """Undo add_behaviour's start of `behaviour` on a running agent, which raised (its queue
    refused, say) or was cancelled: cancel its consumer if it got one, cancel its task if it
    was started, and take it out of `agent.behaviours` if it got there. The agent then has
    nothing of it, so a corrected behaviour can be added under the same name.

    What stays is on the broker (its queue and bindings: the queue may be shared or hold
    messages; unused, it expires) and its channel, which the next behaviour added under
    that name uses.

    Args:
        agent: the agent whose add_behaviour is raising.
        behaviour: the behaviour it was starting.
    """
    grace = agent.config.drain_timeout
    try:
        await asyncio.wait_for(agent.release_consumer(behaviour), grace)
    except (AMQPError, TimeoutError) as exc:  # a closed channel has no consumers left
        log.warning(
            "agent %s: could not cancel the consumer of %s: %s",
            agent.identity,
            behaviour.short_name,
            exc,
        )
    if behaviour.task is not None:
        # Cancelled while its setup() ran (the add waits for that): it was never added, so
        # it is not drained either; a step it began meanwhile hands its messages back.
        await behaviour.stop(timeout=0)
    if agent.behaviours.get(behaviour.short_name) is behaviour:
        del agent.behaviours[behaviour.short_name]


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    """Seconds left until `deadline` on `loop`'s clock (never negative)."""
    return max(0.0, deadline - loop.time())


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
