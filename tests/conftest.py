"""Shared fixtures: the real RabbitMQ at MUNGGOGGO_URL (default 127.0.0.1:5672), on uvloop.

Tests never mock the broker. If RabbitMQ does not answer, the broker tests fail loudly
(CI starts it first); they are not skipped.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from munggoggo.client import Connection
from munggoggo.url import DEFAULT_URL

BROKER_URL = os.environ.get("MUNGGOGGO_URL") or DEFAULT_URL
# Behaviour queues of test agents (and of agent subprocesses, which inherit this) expire a
# minute after their last consumer: long enough for a crash test's successor, short enough
# that repeated runs do not pile up queues and bindings that slow the shared broker down.
os.environ.setdefault("MUNGGOGGO_QUEUE_EXPIRES_MS", "60000")


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, the loop munggoggo is built for."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def broker_url() -> str:
    parts = urlsplit(BROKER_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"RabbitMQ is not answering at {parts.hostname}:{parts.port}: {exc}")
    return BROKER_URL


@pytest.fixture(params=["rabbitmq", "memory"])
def mesh_url(request, broker_url):
    """The same test on RabbitMQ and on a fresh memory:// broker (the conformance pattern)."""
    if request.param == "memory":
        from munggoggo.memory import MemoryBroker

        name = f"{request.module.__name__.removeprefix('test_')}-{uuid.uuid4().hex[:8]}"
        yield f"memory://{name}"
        MemoryBroker.reset(name)
    else:
        yield broker_url


@pytest.fixture
async def connection(broker_url):
    conn = await Connection(broker_url).connect()
    yield conn
    await conn.close()


@pytest.fixture
def unique_name(request) -> str:
    """A queue/exchange name no other test (or earlier run) uses."""
    return f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
