"""core/eager.py: coroutines run to completion synchronously when they can, else as Tasks."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from munggoggo.eager import run_eagerly

VAR = contextvars.ContextVar("VAR", default="outer")


def recorder():
    seen = []
    return seen, lambda result, exc: seen.append((result, exc))


async def test_a_coroutine_that_never_suspends_finishes_without_a_task():
    async def add(a, b):
        return a + b

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), add(2, 3), on_done)
    assert task is None
    assert seen == [(5, None)]


async def test_an_exception_before_any_await_is_reported_at_once():
    async def boom():
        raise ValueError("early")

    seen, on_done = recorder()
    assert run_eagerly(asyncio.get_running_loop(), boom(), on_done) is None
    assert isinstance(seen[0][1], ValueError) and str(seen[0][1]) == "early"


async def test_a_suspending_coroutine_continues_in_a_task():
    fut = asyncio.get_running_loop().create_future()

    async def wait_then(x):
        value = await fut
        await asyncio.sleep(0)  # a bare yield too
        return value + x

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), wait_then(1), on_done)
    assert isinstance(task, asyncio.Task) and seen == []
    fut.set_result(41)
    await task
    assert seen == [(42, None)]


async def test_a_failed_future_raises_inside_the_coroutine():
    fut = asyncio.get_running_loop().create_future()

    async def guarded():
        try:
            await fut
        except KeyError:
            return "handled"
        return "not reached"

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), guarded(), on_done)
    fut.set_exception(KeyError("x"))
    await task
    assert seen == [("handled", None)]


async def test_cancelling_the_task_throws_into_the_coroutine():
    cleaned = []

    async def long_running():
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), long_running(), on_done)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cleaned == [True]
    assert isinstance(seen[0][1], asyncio.CancelledError)


async def test_context_changes_stay_inside_the_coroutine():
    async def set_var():
        VAR.set("inner")
        await asyncio.sleep(0)
        return VAR.get()

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), set_var(), on_done)
    assert VAR.get() == "outer"  # the synchronous first step ran in a copied context
    await task
    assert seen == [("inner", None)]
    assert VAR.get() == "outer"


async def test_yielding_something_that_is_not_a_future_is_an_error_in_the_coroutine():
    class Odd:
        def __await__(self):
            yield "not a future"

    async def odd():
        await Odd()

    seen, on_done = recorder()
    task = run_eagerly(asyncio.get_running_loop(), odd(), on_done)
    await task
    assert isinstance(seen[0][1], RuntimeError)
    assert "not an asyncio future" in str(seen[0][1])


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_base_exceptions_are_reported_and_propagate(exc_type):
    async def die():
        raise exc_type()

    seen, on_done = recorder()
    with pytest.raises(exc_type):
        run_eagerly(asyncio.get_running_loop(), die(), on_done)
    assert isinstance(seen[0][1], exc_type)
