"""Run a coroutine eagerly: to completion right now if it never suspends, else in a Task.

Most `@expose`d async methods return without ever waiting on anything. Creating a Task
for each costs a loop iteration before the reply can even be written, which is visible
in sequential RPC latency. Python 3.12's eager task factory does this for every task; we
run on 3.11, so this module does it for the one place that pays: serving RPC requests.

Semantics match a Task: the coroutine runs in its own copy of the context, a suspension
on an asyncio future resumes when that future is done, and cancelling the driving Task
throws CancelledError into the coroutine at its await point.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

DoneCallback = Callable[[Any, BaseException | None], None]


def run_eagerly(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    on_done: DoneCallback,
    context: contextvars.Context | None = None,
) -> asyncio.Task[None] | None:
    """Start `coro` now; `on_done(result, exception)` runs when it ends.

    It runs in `context` (default: a copy of the current one). Returns None when it
    finished synchronously, else the Task driving the rest.
    """
    if context is None:
        context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as stop:
        on_done(stop.value, None)
        return None
    except BaseException as exc:
        on_done(None, exc)
        if not isinstance(exc, Exception):
            raise
        return None
    return loop.create_task(_resume(coro, yielded, on_done), context=context)


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any, on_done: DoneCallback) -> None:
    """Drive a coroutine that suspended, the way asyncio.Task would."""
    while True:
        step: Callable[..., Any] = coro.send
        arg: Any = None
        try:
            if yielded is None:  # a bare yield, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                if getattr(yielded, "_asyncio_future_blocking", None) is None:
                    raise RuntimeError(f"coroutine yielded {yielded!r}, not an asyncio future")
                # private: asyncio's own future protocol flag, cleared as Task.__step does
                yielded._asyncio_future_blocking = False
                await _until_done(yielded)
        except asyncio.CancelledError as cancel:
            step, arg = coro.throw, cancel
        except RuntimeError as exc:
            step, arg = coro.throw, exc
        try:
            yielded = step(arg)
        except StopIteration as stop:
            on_done(stop.value, None)
            return
        except BaseException as exc:
            on_done(None, exc)
            return


async def _until_done(future: asyncio.Future[Any]) -> None:
    """Wait for a future to finish without taking its result: the coroutine reads it."""
    if future.done():
        return
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        future.remove_done_callback(wake)
