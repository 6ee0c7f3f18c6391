"""Shared fixtures: the real RabbitMQ at MUNGGOGGO_URL (default 127.0.0.1:5672), on uvloop.

Tests never mock the broker. If RabbitMQ does not answer, the broker tests fail loudly
(CI starts it first); they are not skipped.

Brokers: broker_url, mesh_url (RabbitMQ and memory://), vhost_url, isolated_mesh_url,
connection, unique_name. Gateway: calc (a running mesh_tools.Calc), gateway (the app in
process, behind an httpx client), gateway_state (a factory of started GatewayStates).
Helpers that are no fixtures live in the *_tools.py modules next to this file:
broker_tools (rabbitmqctl, throwaway vhosts, wait_until/eventually), mesh_tools (uid,
collecting behaviours, Calc), fault_tools (confirmed streams and counting consumers for
the fault tests), gateway_tools (the gateway in process or as a server, WsClient),
dashboard_tools (the browser harness); munggoggo.testing has the fault proxy, the broker
fault lock, the local cluster and free_port.
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


# The layers above the engine (gateway, dashboard, CLI and `munggoggo run` processes, bench
# harness, the examples): they reach the speedups only through the engine, whose own tests
# cover both builds, so CI's pure-Python twins pass leaves them out (`-m "not surface"`).
# Marked by file name, so a new file of one of these layers is marked too.
SURFACE_FILES = (
    "test_gateway_",
    "test_dashboard",
    "test_bench_",
    "test_cli.py",
    "test_cli_",
    "test_agent_process.py",
)
SURFACE_SUFFIXES = ("_example.py",)


def pytest_collection_modifyitems(config, items):
    """Mark `surface` (see SURFACE_FILES, SURFACE_SUFFIXES) and `browser` (*_chromium.py)."""
    for item in items:
        name = item.path.name
        if name.startswith(SURFACE_FILES) or name.endswith(SURFACE_SUFFIXES):
            item.add_marker(pytest.mark.surface)
        if name.endswith("_chromium.py"):
            item.add_marker(pytest.mark.browser)


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
    """The same test on RabbitMQ and on a fresh memory:// broker (the conformance pattern).
    It overrides munggoggo's pytest plugin's `mesh_url` (memory:// only, unless given
    --munggoggo-url) for this suite, as a conftest fixture overrides a plugin's."""
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


# -- the gateway ---------------------------------------------------------------------------


@pytest.fixture
async def calc(broker_url):
    """A running mesh_tools.Calc on RabbitMQ: the agent the gateway tests call."""
    from mesh_tools import Calc

    async with Calc(f"calc-{uuid.uuid4().hex[:8]}", url=broker_url) as agent:
        yield agent


@pytest.fixture
async def gateway(broker_url):
    """The gateway app in process with its lifespan run (calls time out after 3 s)."""
    from gateway_tools import running_gateway

    from munggoggo.gateway.state import GatewaySettings

    async with running_gateway(GatewaySettings(url=broker_url, call_timeout=3.0)) as gw:
        yield gw


@pytest.fixture
async def gateway_state(broker_url):
    """A factory of started GatewayStates: `await gateway_state(**settings_overrides)`; their
    meshes are stopped after the test."""
    from munggoggo.gateway.mesh import Mesh
    from munggoggo.gateway.state import GatewaySettings, GatewayState

    meshes: list[Mesh] = []

    async def make(**overrides):
        chosen = GatewaySettings(url=broker_url, **overrides)
        mesh = Mesh(
            broker_url,
            identity=f"gateway-test-{uuid.uuid4().hex[:8]}",
            publish_timeout=chosen.publish_timeout,
            publish_buffer=chosen.publish_buffer,
            publish_buffer_bytes=chosen.publish_buffer_bytes,
        )
        await mesh.start()
        meshes.append(mesh)
        return GatewayState(chosen, mesh)

    yield make
    for mesh in meshes:
        await mesh.stop()


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium under selenium (dashboard_tools.open_browser); quit after."""
    from dashboard_tools import open_browser

    with open_browser(tmp_path) as driver:
        yield driver
