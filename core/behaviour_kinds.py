"""The behaviour kinds that run their steps on a schedule: once, or every `period` seconds.

`OneShotBehaviour` and `PeriodicBehaviour` differ from the cyclic `Behaviour` only in their
step loop; everything else (mailbox, consumer, lifecycle) is the base class's.
"""

from __future__ import annotations

import time
from typing import Any

from .behaviour import DONE, FAILED, RUNNING, AgentT, Behaviour

__all__ = ["OneShotBehaviour", "PeriodicBehaviour"]


class OneShotBehaviour(Behaviour[AgentT]):
    """Runs `run()` once, then is done."""

    kind = "one-shot"

    async def _loop(self) -> None:
        while not self._stop:
            await self._step()
            if self.failures == 0 or self.state == FAILED:
                break
        if self.state == RUNNING:
            self.state = DONE


class PeriodicBehaviour(Behaviour[AgentT]):
    """Runs `run()` every `period` seconds, first at `start_at` (epoch seconds) if given.

    A step that overruns its period skips the missed slots instead of running in a burst.

    Args:
        agent: the agent that hosts it.
        period: seconds between the starts of two steps.
        start_at: when the first step runs, in epoch seconds (None: at once).
        **kwargs: the arguments of `Behaviour` (`binding_keys`, `template`, `name`, ...).

    Raises:
        ValueError: a period that is not positive, or an invalid `Behaviour` argument.
    """

    kind = "periodic"

    def __init__(
        self, agent: AgentT, period: float, *, start_at: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(agent, **kwargs)
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self.start_at = start_at

    async def _loop(self) -> None:
        if self.start_at is not None:
            await self._sleep(self.start_at - time.time())
        loop = self.agent.loop
        next_run = loop.time()
        while not self._stop:
            if not await self._step():
                return
            next_run += self.period
            now = loop.time()
            if next_run < now:  # a step overran: skip the missed slots instead of bursting
                next_run = now + self.period - (now - next_run) % self.period
            await self._sleep(next_run - now)

    def describe(self) -> dict[str, Any]:
        """What `Behaviour.describe` reports, and its period.

        Returns:
            The description, with `period` in seconds.
        """
        info = super().describe()
        info["period"] = self.period
        return info
