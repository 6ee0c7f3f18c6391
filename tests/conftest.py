"""Shared fixtures: the real RabbitMQ at MUNGGOGGO_URL (default 127.0.0.1:5672), on uvloop.

Tests never mock the broker. If RabbitMQ does not answer, the broker tests fail loudly
(CI starts it first); they are not skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
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


@contextlib.contextmanager
def memory_broker(request) -> Iterator[str]:
    """A fresh memory:// broker named after the test module, reset afterwards."""
    from munggoggo.memory import MemoryBroker

    name = f"{request.module.__name__.removeprefix('test_')}-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    MemoryBroker.reset(name)


@pytest.fixture(params=["rabbitmq", "memory"])
def mesh_url(request, broker_url):
    """The same test on RabbitMQ and on a fresh memory:// broker (the conformance pattern)."""
    if request.param == "memory":
        with memory_broker(request) as url:
            yield url
    else:
        yield broker_url


@pytest.fixture
def vhost_url(broker_url):
    """The broker's URL in a throwaway vhost: for tests whose agents use fixed names that
    a demo, an example or another run may hold on the shared vhost."""
    from broker_tools import throwaway_vhost

    with throwaway_vhost(broker_url) as url:
        yield url


@pytest.fixture(params=["rabbitmq", "memory"])
def isolated_mesh_url(request, broker_url):
    """Like mesh_url, with RabbitMQ in a throwaway vhost (see vhost_url)."""
    if request.param == "memory":
        with memory_broker(request) as url:
            yield url
    else:
        from broker_tools import throwaway_vhost

        with throwaway_vhost(broker_url) as url:
            yield url


@pytest.fixture
async def connection(broker_url):
    conn = await Connection(broker_url).connect()
    yield conn
    await conn.close()


@pytest.fixture
def unique_name(request) -> str:
    """A queue/exchange name no other test (or earlier run) uses."""
    return f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}"
