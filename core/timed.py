"""A behaviour that runs once at a given time (SPADE's TimeoutBehaviour).

`PeriodicBehaviour` (core/behaviour.py) runs again and again from an epoch-seconds
`start_at`; `TimeoutBehaviour` runs its `run()` once, at a `datetime`, then is done.
The wait is an interruptible sleep of the behaviour: `kill()` or `stop()` during it ends the
behaviour without running `run()`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .behaviour_kinds import OneShotBehaviour

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["TimeoutBehaviour"]


class TimeoutBehaviour(OneShotBehaviour):
    """Runs `run()` once, at `start_at` (at once when that has passed), then is done.

    Args:
        agent: the agent that hosts it.
        start_at: when to run: an aware datetime, or a naive one in local time (as
            `datetime.now()` gives).
        **kwargs: the other `Behaviour` arguments (`binding_keys`, `template`, `name`, ...).

    Raises:
        TypeError: `start_at` is no datetime.
    """

    kind = "timeout"

    def __init__(self, agent: Agent, *, start_at: datetime, **kwargs: Any) -> None:
        if not isinstance(start_at, datetime):
            raise TypeError(f"start_at must be a datetime, got {type(start_at).__name__}")
        super().__init__(agent, **kwargs)
        self.start_at = start_at

    def describe(self) -> dict[str, Any]:
        """`Behaviour.describe()` plus when it runs (ISO 8601).

        Returns:
            What `list_behaviours`, `describe` and `status` show of it.
        """
        info = super().describe()
        info["start_at"] = self.start_at.isoformat()
        return info

    async def _loop(self) -> None:
        # Wall-clock time: start_at is a point in calendar time. The loop's timers round to
        # milliseconds and may wake a little early: wait again for what is left.
        target = self.start_at.timestamp()
        while not self._stop and (left := target - time.time()) > 0:
            await self._sleep(left)
        if not self._stop:
            await super()._loop()
