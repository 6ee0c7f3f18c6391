"""Helpers for tests that poke the real broker (rabbitmqctl, throwaway vhosts, forced
closes) and for waiting on what follows: wait_until (a bool to assert) and eventually
(fails the test itself)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from munggoggo.client import Connection
from munggoggo.testing import broker_faults


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run the broker under test's rabbitmqctl (MUNGGOGGO_RABBITMQCTL, else the machine's;
    we are root on the test machines) and return its stdout."""
    return broker_faults.rabbitmqctl(*args, timeout=timeout)


@contextlib.contextmanager
def throwaway_vhost(broker_url: str, prefix: str = "mg-test") -> Iterator[str]:
    """A fresh vhost (guest may do anything in it) for the duration: yields the URL of
    `broker_url`'s broker in that vhost, and deletes the vhost with all it holds after.
    A test in its own vhost shares no queue or identity with demos, examples or other
    runs on the same broker."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield broker_url.rstrip("/") + "/" + quote(vhost, safe="")
    finally:
        rabbitmqctl("delete_vhost", vhost)


def close_broker_connection(local_port: int, reason: str = "test fault") -> None:
    """Force-close the broker side of the connection whose client port is `local_port`."""
    out = rabbitmqctl("list_connections", "pid", "peer_port")
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) == 2 and fields[1].strip() == str(local_port):
            rabbitmqctl("close_connection", fields[0].strip(), reason)
            return
    raise AssertionError(f"no broker connection from local port {local_port}:\n{out}")


def local_port(conn: Connection) -> int:
    return conn._stream.transport.get_extra_info("sockname")[1]


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> bool:
    """Poll `predicate()` (a plain or an async callable) until it is true or `timeout`
    seconds passed; the last answer, as a bool. A bound against hanging, not a speed claim:
    callers assert the result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await _answer(predicate):
            return True
        await asyncio.sleep(interval)
    return await _answer(predicate)


async def eventually(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Wait until `condition()` holds; fail the test naming `what` if it does not within
    `timeout` seconds."""
    if not await wait_until(condition, timeout=timeout, interval=interval):
        pytest.fail(f"{what}: not within {timeout:g}s")


async def _answer(predicate: Callable[[], object]) -> bool:
    result = predicate()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
