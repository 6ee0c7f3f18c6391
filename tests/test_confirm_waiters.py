"""ConfirmWaiters (core/confirm_waiters.py), shared by the real and the memory:// channel.

A waiter for one publish (`wait_one`) gets that publish's failure and no other; a waiter
for a range (`wait`, behind `wait_confirms`) gets every failure up to its bound that no
other range waiter got; failures nobody waits for are kept in a bounded number.
"""

from __future__ import annotations

import asyncio

import pytest

from munggoggo.channel import PublishError
from munggoggo.confirm_waiters import ConfirmWaiters

NACK = RuntimeError("nacked")
LOST = RuntimeError("lost")


def seqs(error: PublishError) -> list[int]:
    return [seq for seq, _ in error.failures]


async def test_one_publish_waiter_ignores_an_earlier_failure():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    waiters.add([(3, NACK)])
    waiters.wake(5)
    await waiters.wait_one(loop, 5, 5, timeout=1)  # seq 5 itself was confirmed
    with pytest.raises(PublishError) as info:
        await waiters.wait(loop, 5, 5, timeout=1)  # the range still reports seq 3
    assert seqs(info.value) == [3]


async def test_one_publish_waiter_gets_its_own_failure_while_waiting():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    task = asyncio.ensure_future(waiters.wait_one(loop, 4, 2, timeout=1))
    await asyncio.sleep(0)
    waiters.add([(3, NACK), (4, NACK)])
    waiters.wake(4)
    with pytest.raises(PublishError) as info:
        await task
    assert seqs(info.value) == [4]
    assert info.value.failures[0][1] is NACK


async def test_one_publish_waiter_arriving_after_its_failure_still_gets_it():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    waiters.add([(7, NACK)])
    waiters.wake(7)
    with pytest.raises(PublishError) as info:
        await waiters.wait_one(loop, 7, 7, timeout=1)
    assert seqs(info.value) == [7]
    await waiters.wait_one(loop, 7, 7, timeout=1)  # reported once to its owner
    assert waiters.kept == 0


async def test_a_range_waiter_cannot_take_a_failure_its_owner_waits_for():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    own = asyncio.ensure_future(waiters.wait_one(loop, 2, 0, timeout=1))
    everything = asyncio.ensure_future(waiters.wait(loop, 3, 0, timeout=1))
    await asyncio.sleep(0)
    waiters.add([(1, LOST), (2, LOST), (3, LOST)])
    waiters.wake(3)
    with pytest.raises(PublishError) as own_info:
        await own
    with pytest.raises(PublishError) as range_info:
        await everything
    assert seqs(own_info.value) == [2]
    assert seqs(range_info.value) == [1, 3]


async def test_the_owner_gets_its_failure_even_after_a_range_waiter_reported_it():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    waiters.add([(5, NACK)])
    waiters.wake(5)
    with pytest.raises(PublishError):
        await waiters.wait(loop, 5, 5, timeout=1)
    with pytest.raises(PublishError) as info:
        await waiters.wait_one(loop, 5, 5, timeout=1)
    assert seqs(info.value) == [5]


async def test_a_range_waiter_gets_every_failure_up_to_its_bound_once():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    waiters.add([(2, NACK), (9, NACK)])
    waiters.add([(4, LOST)])
    waiters.wake(9)
    with pytest.raises(PublishError) as info:
        await waiters.wait(loop, 5, 9, timeout=1)
    assert seqs(info.value) == [2, 4]
    with pytest.raises(PublishError) as info:
        await waiters.wait(loop, 9, 9, timeout=1)
    assert seqs(info.value) == [9]
    await waiters.wait(loop, 9, 9, timeout=1)  # each reported to one range waiter


async def test_failures_nobody_waits_for_are_bounded():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError, keep=100)
    for seq in range(1, 10_001):
        waiters.add([(seq, NACK)])
    waiters.wake(10_000)
    assert waiters.kept == 100
    with pytest.raises(PublishError) as info:
        await waiters.wait(loop, 10_000, 10_000, timeout=1)
    assert seqs(info.value) == list(range(9_901, 10_001))  # the newest are kept


async def test_waiters_already_waiting_get_a_burst_larger_than_the_bound():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError, keep=10)
    everything = asyncio.ensure_future(waiters.wait(loop, 500, 0, timeout=1))
    own = asyncio.ensure_future(waiters.wait_one(loop, 1, 0, timeout=1))
    await asyncio.sleep(0)
    waiters.add([(seq, LOST) for seq in range(1, 501)])  # a connection lost, all at once
    waiters.wake(500)
    with pytest.raises(PublishError) as own_info:
        await own
    with pytest.raises(PublishError) as range_info:
        await everything
    assert seqs(own_info.value) == [1]
    assert seqs(range_info.value) == list(range(2, 501))
    assert waiters.kept <= 10


async def test_a_timed_out_range_waiter_leaves_its_failures_to_the_next():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    with pytest.raises(TimeoutError):
        await waiters.wait(loop, 3, 0, timeout=0.01)
    waiters.add([(1, NACK)])
    waiters.wake(1)  # seq 2 and 3 still open
    with pytest.raises(PublishError) as info:
        await waiters.wait(loop, 1, 1, timeout=1)
    assert seqs(info.value) == [1]


async def test_a_timed_out_owner_leaves_its_failure_kept():
    loop = asyncio.get_running_loop()
    waiters = ConfirmWaiters(PublishError)
    task = asyncio.ensure_future(waiters.wait_one(loop, 2, 0, timeout=None))
    await asyncio.sleep(0)
    waiters.add([(2, NACK)])
    task.cancel()  # gave up in the same tick its failure arrived
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(PublishError) as info:
        await waiters.wait_one(loop, 2, 2, timeout=1)
    assert seqs(info.value) == [2]
