"""Helpers for tests that poke the real broker: rabbitmqctl, forced closes, polling."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import quote

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


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()
