"""core/engine.py: the engine contract, and both engines holding to it.

`.ci/typecheck` runs mypy over this file: `_engines_satisfy_the_protocols` fails to type
check as soon as RabbitMQ's or memory://'s connection or channel drifts from the protocols
(a method missing, a parameter renamed, a return type changed). The tests check the same
at run time on open connections of both engines, and that the shared errors and records
have one home, still importable from where they were first defined.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from munggoggo import channel as rabbit_channel_module
from munggoggo import engine
from munggoggo.channel import Channel
from munggoggo.client import Connection
from munggoggo.engine import ChannelProtocol, ConnectionProtocol
from munggoggo.memory import MemoryBroker, MemoryChannel, MemoryConnection


def _engines_satisfy_the_protocols(
    rabbit: Connection,
    memory: MemoryConnection,
    rabbit_channel: Channel,
    memory_channel: MemoryChannel,
) -> list[object]:
    """Never called: mypy checks these assignments (see the module docstring)."""
    connections: list[ConnectionProtocol] = [rabbit, memory]
    channels: list[ChannelProtocol] = [rabbit_channel, memory_channel]
    return [*connections, *channels]


CORE = Path(__file__).resolve().parent.parent / "core"

SHARED = (
    "Consumer",
    "DeliveryCallback",
    "DrainTimeout",
    "PublishError",
    "PublishNacked",
    "QueueDeclareOk",
)


@pytest.mark.parametrize("name", SHARED)
def test_shared_records_and_errors_have_one_home(name):
    assert getattr(rabbit_channel_module, name) is getattr(engine, name)
    assert name in rabbit_channel_module.__all__


def _imported(path: Path) -> set[str]:
    """The munggoggo modules a source file imports (relative imports resolved)."""
    package = ["munggoggo", *path.parent.relative_to(CORE).parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_neither_engine_imports_the_other():
    for path in sorted((CORE / "memory").glob("*.py")):
        imported = _imported(path)
        assert not imported & {"munggoggo.channel", "munggoggo.client"}, path
    for name in ("channel.py", "client.py"):
        imported = _imported(CORE / name)
        assert not {m for m in imported if m.startswith("munggoggo.memory")}, name


def _members(protocol: type) -> list[str]:
    return [name for name in dir(protocol) if not name.startswith("_") and name not in dir(object)]


def _check_methods(protocol: type, obj: object) -> None:
    """Each protocol method exists with the same parameters (names, kinds, in order)."""
    for name in _members(protocol):
        wanted = inspect.getattr_static(protocol, name)
        if not inspect.isfunction(wanted):
            assert hasattr(obj, name), name
            continue
        have = inspect.signature(getattr(obj, name))
        want = inspect.signature(wanted.__get__(obj))
        assert [(p.name, p.kind) for p in have.parameters.values()] == [
            (p.name, p.kind) for p in want.parameters.values()
        ], name


async def test_both_engines_are_engines_at_run_time(broker_url: str) -> None:
    try:
        for conn in (Connection(broker_url), MemoryConnection("memory://test_engine")):
            async with conn:
                assert isinstance(conn, ConnectionProtocol)
                _check_methods(ConnectionProtocol, conn)
                ch = await conn.channel()
                assert isinstance(ch, ChannelProtocol)
                _check_methods(ChannelProtocol, ch)
                assert isinstance(ch.connection, ConnectionProtocol)
                await ch.close()
    finally:
        MemoryBroker.reset("test_engine")
