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
        self._attempting: set[str] = set()  # names whose attempt is under way
        self._abandoned: set[str] = set()  # names to try no more

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
        self._abandoned.discard(name)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(name, what, attempt), name=f"restore {what}")
        self._tasks[name] = task

    async def _run(self, name: str, what: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        delay = RESTORE_DELAY_MIN
        attempts = 0
        try:
            while name not in self._abandoned:
                attempts += 1
                self._attempting.add(name)
                try:
                    if await attempt():
                        return
                except AMQPError as exc:
                    # Said once in a while, not at every attempt: a broker that refuses for
                    # minutes must not flood the log.
                    level = logging.WARNING if attempts % 10 == 0 else logging.DEBUG
                    log.log(level, "agent %s: %s not consumed again yet (%d attempts): %s",
                            self.owner, what, attempts, exc)  # fmt: skip
                except Exception:  # a bug: keep trying, a consumer must not stay lost
                    log.exception("agent %s: restoring the %s consumer failed", self.owner, what)
                finally:
                    self._attempting.discard(name)
                if name in self._abandoned:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTORE_DELAY_MAX)
        finally:
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]
            self._abandoned.discard(name)

    async def cancel(self, name: str, timeout: float | None = None) -> None:
        """Stop restoring consumer `name` (it is being released or stopped).

        An attempt under way is let finish rather than cancelled: cancelled between its
        Basic.Consume and the broker's answer, it would leave a consumer the broker delivers
        to and nobody owns. What it consumed is then among the agent's consumers, for the
        caller to release.

        Args:
            name: the consumer's name.
            timeout: seconds to wait for an attempt under way (None: no limit); after that
                it is cancelled anyway.
        """
        task = self._tasks.get(name)
        if task is None:
            return
        self._abandoned.add(name)
        if name not in self._attempting:
            task.cancel()
        done, _ = await asyncio.wait((task,), timeout=timeout)
        if not done:
            task.cancel()
            await asyncio.wait((task,))

    async def cancel_all(self, timeout: float | None = None) -> None:
        """Stop every restore (the agent is stopping); see `cancel`."""
        await asyncio.gather(*(self.cancel(name, timeout) for name in list(self._tasks)))
