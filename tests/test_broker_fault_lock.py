"""munggoggo.testing.BrokerFaultLock on a throwaway lock file: exclusive vs shared,
bounded waits that name the holder, a shared holder's own exclusive section.
flock locks belong to open files, so two lock objects in one process exclude each other
just as two processes would."""

from __future__ import annotations

import os

import pytest

from munggoggo.testing import BrokerFaultLock


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "fault.lock")


def test_exclusive_holders_exclude_each_other_and_the_waiter_learns_who(path):
    with BrokerFaultLock(path, holder="first test"):
        with pytest.raises(TimeoutError) as info:
            BrokerFaultLock(path, timeout=0.2).acquire()
        assert f"pid {os.getpid()} (exclusive)" in str(info.value)
        assert "first test" in str(info.value)
    with BrokerFaultLock(path, timeout=0.2):  # free again
        pass


def test_shared_holders_coexist_and_keep_exclusive_ones_out(path):
    with (
        BrokerFaultLock(path, shared=True),
        BrokerFaultLock(path, shared=True, timeout=0.2),
        pytest.raises(TimeoutError),
    ):
        BrokerFaultLock(path, timeout=0.2).acquire()


async def test_a_shared_holder_goes_exclusive_for_its_own_fault(path):
    async with BrokerFaultLock(path, shared=True) as lock:
        async with lock.exclusive():
            with pytest.raises(TimeoutError):
                BrokerFaultLock(path, shared=True, timeout=0.2).acquire()
        other = BrokerFaultLock(path, shared=True, timeout=0.2)
        other.acquire()  # shared again
        other.release()
