"""`Worker`: the original munggoggo's way to run agents, spelled as `mode.Worker` was.

`Worker(agent, loglevel="info").execute_from_commandline()` does what `run()` does
(logging at that level, uvloop, SIGTERM/SIGINT drain the agents, during start-up too) and
then ends the process: exit status 0 after a clean stop, 1 when an agent could not start
(or a second signal cut the drain short).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from .agent import Agent
from .amqp.errors import AMQPError
from .runner import AgentStoppedByItself, log_level_of, run
from .url import URLError

if TYPE_CHECKING:
    from .health import HealthServer

log = logging.getLogger("munggoggo.worker")

# Start failures a user can act on from one line (broker, URL, identity); anything else
# is a bug in the agent's own code and gets its traceback.
EXPECTED_START_ERRORS = (AMQPError, OSError, URLError)


class Worker:
    """Hosts agents in this process until SIGTERM/SIGINT, then drains them.

    Args:
        agents: agents, or lists of agents, in start order (`Worker(a)`, `Worker(a, b)`,
            `Worker([a, b])`).
        loglevel: a logging level name in any case ("info"), or a number.
        health: a bound `HealthServer` answering probes while the agents run.

    Raises:
        TypeError: something that is not an agent.
        ValueError: no agents, or an unknown log level.
    """

    def __init__(
        self,
        *agents: Agent | Iterable[Agent],
        loglevel: str | int = "info",
        health: HealthServer | None = None,
    ) -> None:
        self.agents: list[Agent] = []
        for item in agents:
            group = [item] if isinstance(item, Agent) else _agents_in(item)
            self.agents.extend(group)
        if not self.agents:
            raise ValueError("Worker needs at least one agent")
        self.loglevel = log_level_of(loglevel)
        self.health = health

    def execute(self) -> int:
        """Run the agents until a signal stops them.

        Returns:
            The process exit status: 0 after a clean stop (a signal during start-up
            cancels the start and drains what it had started: also 0), 1 when an agent
            could not start or stopped by itself (another process took its identity;
            logged).
        """
        try:
            run(*self.agents, log_level=self.loglevel, health=self.health)
        except EXPECTED_START_ERRORS as exc:
            log.error("agents could not start: %s", exc)
            return 1
        except AgentStoppedByItself as exc:
            log.error("%s", exc)
            return 1
        except Exception:
            log.exception("agents could not start")
            return 1
        return 0

    def execute_from_commandline(self) -> NoReturn:
        """Run the agents (see `execute`) and end the process with its exit status.

        Raises:
            SystemExit: always, with 0 after a clean stop and 1 when an agent failed to
                start.
        """
        sys.exit(self.execute())


def _agents_in(item: object) -> list[Agent]:
    if isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
        raise TypeError(f"Worker takes agents or lists of agents, got {type(item).__name__}")
    group = list(item)
    for agent in group:
        if not isinstance(agent, Agent):
            raise TypeError(f"Worker takes agents or lists of agents, got {type(agent).__name__}")
    return group
