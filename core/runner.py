"""`run()`: host agents in a process until SIGTERM/SIGINT, then drain them.

Installs uvloop when available, configures logging if nobody did, starts every agent,
and on the first signal stops them (each drains within its grace period), even in the
middle of a start: the start is cancelled and what it had started drains. A second
signal during the drain exits at once (status 1). A `HealthServer` (core/health.py), if
given, answers probes about the agents from the first moment to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from ._speedups import MunggoggoError
from .client import install_uvloop

if TYPE_CHECKING:
    from .agent import Agent
    from .health import HealthServer

log = logging.getLogger("munggoggo.run")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A cancelled start undoes itself within its agent's drain_timeout, closing its connection
# after that: how much longer it is waited for before the process exits without it.
START_ABORT_MARGIN = 5.0


def log_level_of(level: str | int) -> int:
    """The logging level for a name in any case ("info", "INFO") or a number.

    Args:
        level: a level name, or a number (returned as it is).

    Returns:
        The level's number.

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, int):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ValueError(
            f"unknown log level {level!r}: one of debug, info, warning, error, critical"
        )
    return number


def run(*agents: Agent, log_level: str | int = "INFO", health: HealthServer | None = None) -> None:
    """Run agents until SIGTERM/SIGINT (blocking), then drain them and return.

    Configures logging at `log_level` unless the program already did, installs uvloop
    when available, and makes stdout line-buffered so that what agents print reaches a
    pipe (a container log, a supervisor) line by line.

    Args:
        agents: the agents to start, in order (they stop in reverse order).
        log_level: a level name in any case, or a number.
        health: a bound `HealthServer`, served while the agents run.

    Raises:
        ValueError: an unknown log level.
        Exception: whatever an agent's start raised (the agents started before it are
            stopped first).
        AgentStoppedByItself: an agent stopped without being asked (the others are
            stopped first).
    """
    level = log_level_of(log_level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
    line_buffer_stdout()
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(*agents, health=health))


def line_buffer_stdout() -> None:
    """Flush stdout at every newline (Python block-buffers it when it is a pipe)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and not getattr(sys.stdout, "line_buffering", True):
        with contextlib.suppress(ValueError, OSError):
            reconfigure(line_buffering=True)


async def serve(
    *agents: Agent, stop: asyncio.Event | None = None, health: HealthServer | None = None
) -> None:
    """Start agents, wait for a signal (or `stop`), stop them. Usable from async code.

    A stop during start-up does not wait for the start: the start is cancelled (the setup()
    running sees CancelledError), the agent being started drains what it had started, the
    agents already running drain as usual, and this returns (within `drain_timeout`).

    Args:
        agents: the agents to start, in order (they stop in reverse order).
        stop: set it to stop the agents (outside the main thread there are no signals).
        health: a bound `HealthServer`, served while this runs (and closed at the end).

    Raises:
        Exception: whatever an agent's start raised, after the started ones stopped.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("received %s: draining %d agent(s)", signal.Signals(signum).name, len(agents))
            stop.set()
        else:
            log.warning("second signal: exiting without finishing the drain")
            sys.exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread there are no signal handlers: the caller uses `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
    started: list[Agent] = []
    if health is not None:
        await health.start(agents)  # before they start: /readyz says "starting", /livez 200
    # Starting races the stop: a signal during a long setup() cancels the start (the agent
    # undoes it, see Agent.start) instead of waiting for it to finish.
    starting = loop.create_task(start_in_order(agents, started))
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a start that failed raises (the started ones stop below)
            await until_stop_or_self_stop(stopping, agents)
    finally:
        stopping.cancel()
        await shut_down(starting, started, agents)
        if health is not None:
            health.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    if starting.done() and not starting.cancelled():
        starting.result()  # a start the stop cut short ended with an error of its own


class AgentStoppedByItself(MunggoggoError, RuntimeError):
    """An agent stopped without being asked (another process took its identity): the
    others are stopped too, and `run()` raises this (a `Worker` exits 1).
    """


async def until_stop_or_self_stop(stopping: asyncio.Task[Any], agents: tuple[Agent, ...]) -> None:
    """Wait for the stop event, or for an agent to stop by itself.

    Args:
        stopping: the task waiting for the stop event.
        agents: the agents that run.

    Raises:
        AgentStoppedByItself: an agent stopped by itself (its `stop_reason` says why).
    """
    ended = [asyncio.ensure_future(agent.wait_stopped()) for agent in agents]
    try:
        await asyncio.wait((stopping, *ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in ended:
            task.cancel()
    if stopping.done():
        return
    gone = [agent for agent in agents if agent.state == "stopped"]
    reasons = "; ".join(f"{a.identity}: {a.stop_reason or 'stopped'}" for a in gone)
    raise AgentStoppedByItself(f"agent stopped by itself ({reasons})")


async def start_in_order(agents: tuple[Agent, ...], started: list[Agent]) -> None:
    """Start `agents` one after the other, appending each to `started` once it runs.

    Args:
        agents: the agents, in order.
        started: where each started agent is appended.
    """
    for agent in agents:
        await agent.start()
        started.append(agent)


async def shut_down(
    starting: asyncio.Task[None], started: list[Agent], agents: tuple[Agent, ...]
) -> None:
    """Stop everything at once: cancel a start still under way (its agent drains what it
    had started: behaviours, consumers, connection) and drain the agents that run.

    A start that does not end once cancelled (its setup() swallowed the cancellation) is
    waited for only the longest `drain_timeout` plus `START_ABORT_MARGIN`, so the process
    still exits.

    Args:
        starting: the task starting the agents (`start_in_order`).
        started: the agents that run, stopped in reverse order.
        agents: every agent, for the longest `drain_timeout`.
    """
    waits = [stop_and_wait(agent) for agent in reversed(started)]
    if not starting.done():
        log.info("stopping during start-up: cancelling the start")
        starting.cancel()
        waits.append(wait_start_ended(starting, agents))
    await asyncio.gather(*waits, return_exceptions=True)


async def stop_and_wait(agent: Agent) -> None:
    """Stop `agent` and wait until it has stopped: a stop it began by itself (its identity
    taken) may still be draining when asked again, and returns at once then.

    Args:
        agent: the agent to stop.
    """
    await agent.stop()
    limit = agent.config.drain_timeout + START_ABORT_MARGIN
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.wait_stopped(), limit)


async def wait_start_ended(starting: asyncio.Task[None], agents: tuple[Agent, ...]) -> None:
    """Wait for the cancelled start to undo itself, for a bounded time.

    Args:
        starting: the cancelled start's task.
        agents: every agent, for the longest `drain_timeout`.
    """
    limit = max((a.config.drain_timeout for a in agents), default=0.0) + START_ABORT_MARGIN
    await asyncio.wait((starting,), timeout=limit)
    if not starting.done():
        log.error("the cancelled start did not end within %gs: exiting without it", limit)
    elif starting.cancelled():
        log.info("start cancelled: what it had started is stopped")
