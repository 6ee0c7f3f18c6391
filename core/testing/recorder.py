"""`MessageRecorder`: a behaviour that keeps what it receives, for tests to wait on.

A test adds one to an agent (its own probe agent, or the agent under test) with the topics
or the template it wants to see, makes something happen, then `await recorder.wait(n)`:
the first `n` messages, or `RecorderTimeout` carrying what did arrive. Nothing is polled:
each delivery wakes the waiters whose count it completes.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from .._speedups import MunggoggoError
from ..behaviour import Behaviour
from ..message import Message

if TYPE_CHECKING:
    from ..agent import Agent

DEFAULT_WAIT_TIMEOUT = 5.0


class RecorderTimeout(MunggoggoError, TimeoutError):
    """`MessageRecorder.wait(n)` ran out of time before `n` messages arrived.

    Args:
        message: what happened, for the test report.
        received: the messages that did arrive, in order.
        expected: how many were waited for.

    Attributes:
        received: the messages that did arrive, in order (fewer than `expected`).
        expected: how many were waited for.
    """

    def __init__(
        self, message: str, received: list[Message] | None = None, expected: int = 0
    ) -> None:
        super().__init__(message)
        self.received: list[Message] = list(received or ())
        self.expected = expected

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt with its fields, not from `args` alone (which hold only the text). The
        # messages travel without their channel (a connection does not pickle): copies
        # with the same delivery, settled as far as the copy knows.
        detached = [Message(msg.delivery, None, msg.queue) for msg in self.received]
        return (type(self), (str(self), detached, self.expected))


class MessageRecorder(Behaviour):
    """A behaviour that records every message it receives, in arrival order.

    It receives what any behaviour would: the topics of `binding_keys` (its own queue on
    `munggoggo.topic`), and the direct messages of its agent that `template` matches. Each
    message is acked once recorded, so the broker sees it handled.

    Example:
        ```python
        recorder = await probe.add_behaviour(MessageRecorder(probe, binding_keys=["ping"]))
        await other.publish("hello", "ping")
        [msg] = await recorder.wait(1, timeout=5)
        assert msg.body == b"hello"
        ```

    Args:
        agent: the agent that hosts it.
        binding_keys: topic patterns to record (`*` one word, `#` zero or more).
        template: which direct messages of the agent's inbox it records.
        name: its short name within the agent (default `MessageRecorder`); give each
            recorder of one agent its own.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        binding_keys: list[str] | None = None,
        template: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(agent, binding_keys=binding_keys, template=template, name=name)
        self._received: list[Message] = []
        # (count, future) of each wait() in progress: resolved when that many arrived.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def messages(self) -> list[Message]:
        """Every message recorded so far, in arrival order (a copy)."""
        return list(self._received)

    def __len__(self) -> int:
        return len(self._received)

    async def run(self) -> None:
        """Record the next message; waits for one (returns None only when stopping)."""
        msg = await self.receive(timeout=math.inf)
        while msg is not None:
            self._record(msg)
            msg = await self.receive()  # the rest of the mailbox, without a loop cycle each

    def _record(self, msg: Message) -> None:
        self._received.append(msg)
        count = len(self._received)
        waiting = []
        for wanted, fut in self._waiters:
            if fut.done():
                continue
            if count >= wanted:
                fut.set_result(None)
            else:
                waiting.append((wanted, fut))
        self._waiters = waiting

    async def wait(
        self, n: int = 1, *, timeout: float | None = DEFAULT_WAIT_TIMEOUT
    ) -> list[Message]:
        """The first `n` messages recorded, once they have arrived.

        Returns at once if `n` are already there. Messages after the `n`th stay recorded
        (see `messages`), so a later `wait(n + k)` sees them too.

        Args:
            n: how many messages to wait for (at least 1).
            timeout: seconds to wait at most; None waits without limit.

        Returns:
            The first `n` messages, in arrival order.

        Raises:
            RecorderTimeout: fewer than `n` arrived within `timeout`; its `received` holds
                those that did.
            ValueError: `n` below 1, or a negative or NaN timeout.
        """
        if n < 1:
            raise ValueError(f"wait for at least one message, not {n!r}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        if len(self._received) < n:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                got = self.messages
                raise RecorderTimeout(
                    f"{self.name}: {len(got)} of {n} message(s) within {timeout:g}s; "
                    f"received: {_summary(got)}",
                    got,
                    n,
                ) from None
            finally:
                if not fut.done():
                    fut.cancel()
        return self._received[:n]

    def clear(self) -> None:
        """Forget what was recorded: the next `wait(n)` counts from here."""
        self._received.clear()

    def describe(self) -> dict[str, Any]:
        """The behaviour's description, with how many messages it recorded.

        Returns:
            `Behaviour.describe()`'s dict plus `recorded`, the number of messages kept.
        """
        info = super().describe()
        info["recorded"] = len(self._received)
        return info


def _summary(messages: list[Message], limit: int = 5) -> str:
    """A short list of what arrived, for the timeout's text."""
    if not messages:
        return "nothing"
    shown = ", ".join(f"{m.routing_key or m.queue!r}: {m.body[:40]!r}" for m in messages[:limit])
    more = len(messages) - limit
    return f"[{shown}{f', and {more} more' if more > 0 else ''}]"
