"""Consuming again after the broker cancelled one of an agent's consumers.

The broker cancels a consumer (Basic.Cancel) when its queue is deleted under it, and a
consumer that cannot be restored after a reconnect is dropped the same way. An agent that
let it go would say "running" and receive nothing, while its queue, re-declared by the
next recovery, filled up with nobody reading. So each cancelled consumer gets a task that
re-declares and consumes again, with backoff, until it works or the agent stops; while it
runs, the consumer's name is in `restoring` and the agent reports not ready.

What "re-declare and consume" means is the agent's business (an `attempt` callable); this
module owns the retrying, the backoff and the bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .amqp.errors import AMQPError

__all__ = ["RESTORE_DELAY_MAX", "RESTORE_DELAY_MIN", "ConsumerRestorer"]

log = logging.getLogger("munggoggo.agent")

RESTORE_DELAY_MIN = 0.1  # seconds before the second attempt, doubling up to:
RESTORE_DELAY_MAX = 5.0


class ConsumerRestorer:
    """Restores an agent's cancelled consumers, one task per consumer name.

    Args:
        owner: the agent identity, for log lines.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def restoring(self) -> frozenset[str]:
        """Names of the consumers being restored ("" is the inbox)."""
        return frozenset(self._tasks)

    def restore(self, name: str, what: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        """Start restoring consumer `name` (nothing new if it is being restored already).

        Args:
            name: the consumer's name (a behaviour's short name, "" for the inbox).
            what: how log lines call it ("inbox", "behaviour x").
            attempt: re-declares and consumes; returns True when done (consuming again, or
                nothing left to restore), False to be tried again later. Whatever it
                raises is logged, and it is tried again later too.
        """
        if name in self._tasks:
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(name, what, attempt), name=f"restore {what}")
        self._tasks[name] = task

    async def _run(self, name: str, what: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        delay = RESTORE_DELAY_MIN
        try:
            while True:
                try:
                    if await attempt():
                        return
                except AMQPError as exc:
                    log.debug("agent %s: %s not consumed again yet: %s", self.owner, what, exc)
                except Exception:  # a bug: keep trying, a consumer must not stay lost
                    log.exception("agent %s: restoring the %s consumer failed", self.owner, what)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTORE_DELAY_MAX)
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    def cancel(self, name: str) -> None:
        """Stop restoring consumer `name` (it is being stopped or consumed another way)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Stop every restore (the agent is stopping)."""
        for name in list(self._tasks):
            self.cancel(name)
