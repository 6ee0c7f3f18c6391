"""One exception tree: every exception munggoggo raises on purpose is a `MunggoggoError`,
keeps the standard exception it always was, is listed in `munggoggo.exceptions` (the whole
package is walked, so a new one cannot be forgotten), pickles, and the README's ones import
from `munggoggo`. Real failures (a body that does not decode, a bad URL, a call that times
out, properties over frame_max) are caught by `except MunggoggoError`.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pickle
import pkgutil
import re
from pathlib import Path

import msgspec
import pytest
from mesh_tools import Calc, MessageCollector, uid

import munggoggo
from munggoggo import exceptions
from munggoggo.exceptions import MunggoggoError
from munggoggo.memory import MemoryBroker

README = Path(__file__).resolve().parent.parent / "README.md"

# Exceptions that never leave the module raising them, so users never see or catch them:
# the gateway's turn into an HTTP status or a WebSocket error frame before they reach user
# code (see docs/decisions.md, "One exception tree").
INTERNAL = {
    "munggoggo.batch_format.BatchFormatError": "a DecodeError: the batch is dead-lettered",
    "munggoggo.gateway.auth.Unauthorized": "answered 401",
    "munggoggo.gateway.frames.BadFrame": "answered with an error frame",
    "munggoggo.gateway.guard.Answer": "the guard's own answer (an HTTPError)",
    "munggoggo.gateway.http.HTTPError": "answered with its status",
    "munggoggo.gateway.limits.BodyTimeout": "answered 408",
    "munggoggo.gateway.limits.BodyTooLarge": "answered 413",
    "munggoggo.gateway.limits.ClientDisconnected": "ends the request",
    "munggoggo.gateway.mesh.NotConnected": "answered 503 (an AMQPError all the same)",
    "munggoggo.gateway.publisher.PublishRefused": "answered 503",
    "munggoggo.gateway.publisher.Unroutable": "a send to no inbox: answered 404 (-32001)",
    "munggoggo.gateway.publisher.VerdictTimeout": "a send with no confirm in time: answered 504",
    "munggoggo.perf_scale.ScaleError": "munggoggo bench prints it as one line and exits 1",
    "munggoggo.perf_workers._LeaderSaid": "a ScaleError: munggoggo bench prints it as one line",
}

# The standard exceptions each keeps (besides Exception): `except` clauses written for
# these must still catch them.
STDLIB_BASES: dict[str, tuple[type[BaseException], ...]] = {
    "AMQPConnectError": (OSError,),
    "AuthenticationError": (OSError,),
    "AgentStoppedByItself": (RuntimeError,),
    "AgentUnreachable": (ConnectionError, OSError),
    "ClusterError": (RuntimeError,),
    "DecodeError": (ValueError,),
    "DrainTimeout": (TimeoutError, OSError),
    "EncodeError": (ValueError,),
    "FrameError": (ValueError,),
    "MissingExtra": (ImportError,),
    "PropertiesTooLarge": (ValueError,),
    "RecorderTimeout": (TimeoutError, OSError),
    "DeadLettersBusy": (TimeoutError, OSError),
    "DeadLettersTimeout": (TimeoutError, OSError),
    "RpcTimeout": (TimeoutError, OSError),
    "URLError": (ValueError,),
}


def public_exceptions() -> dict[str, type[BaseException]]:
    return {name: getattr(exceptions, name) for name in exceptions.__all__}


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in any module of the package, by qualified name."""
    # The gateway and the speedups live in folders of their own (pyproject's package-dir):
    # walk each, since the package's own __path__ does not reach them.
    names = ["munggoggo"]
    for top in ("munggoggo", "munggoggo.gateway", "munggoggo._speedups"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, f"{top}."):
            if not info.name.endswith("__main__") and info.name not in names:
                names.append(info.name)
    found: dict[str, type[BaseException]] = {}
    for name in names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_the_walk_finds_exceptions_where_they_are_defined() -> None:
    """A guard on the walk below: it sees the core, the gateway and the speedups."""
    found = defined_exceptions()
    assert found["munggoggo.envelope.DecodeError"] is exceptions.DecodeError
    assert "munggoggo.gateway.http.HTTPError" in found
    assert "munggoggo._speedups._frames_py.PropertiesTooLarge" in found


def test_every_exception_of_the_package_is_listed_or_known_internal() -> None:
    listed = set(public_exceptions().values())
    missing = sorted(
        name
        for name, cls in defined_exceptions().items()
        if cls not in listed and name not in INTERNAL
    )
    assert missing == [], "add these to munggoggo/exceptions.py (or to INTERNAL, saying why)"
    assert sorted(set(INTERNAL) - set(defined_exceptions())) == [], "stale INTERNAL entries"


@pytest.mark.parametrize("name", exceptions.__all__)
def test_each_listed_exception_is_a_munggoggo_error(name: str) -> None:
    assert issubclass(getattr(exceptions, name), MunggoggoError)


@pytest.mark.parametrize("name", sorted(STDLIB_BASES))
def test_each_keeps_its_standard_base(name: str) -> None:
    cls = getattr(exceptions, name)
    for base in STDLIB_BASES[name]:
        assert issubclass(cls, base), f"{name} is no longer a {base.__name__}"


def test_the_tree_has_one_root() -> None:
    """MunggoggoError derives from Exception alone; the rest of the old roots hang under it."""
    assert MunggoggoError.__bases__ == (Exception,)
    for root in ("AMQPError", "RpcError", "EncodeError", "DecodeError", "URLError"):
        assert MunggoggoError in getattr(exceptions, root).__mro__
    assert issubclass(exceptions.QueueMismatch, exceptions.PreconditionFailed)
    assert issubclass(exceptions.IdentityInUse, exceptions.AMQPError)


def test_the_module_docstring_draws_every_listed_exception() -> None:
    tree = exceptions.__doc__ or ""
    assert [name for name in exceptions.__all__ if not re.search(rf"\b{name}\b", tree)] == []


def test_the_readme_exceptions_import_from_munggoggo() -> None:
    """Every listed exception the README names, and the usual ones, import from munggoggo
    itself, as the same class."""
    named = set(re.findall(r"\b[A-Z][A-Za-z]+\b", README.read_text())) & set(exceptions.__all__)
    usual = {
        "AMQPError",
        "AgentUnreachable",
        "DecodeError",
        "DrainTimeout",
        "EncodeError",
        "IdentityInUse",
        "MissingExtra",
        "MunggoggoError",
        "PropertiesTooLarge",
        "PublishError",
        "PublishNacked",
        "QueueMismatch",
        "RpcError",
        "RpcTimeout",
        "URLError",
    }
    for name in sorted(named | usual):
        assert name in munggoggo.__all__, name
        assert getattr(munggoggo, name) is getattr(exceptions, name), name


def examples() -> list[BaseException]:
    """One instance of every listed exception, with the arguments its raisers give it."""
    e = exceptions
    made: list[BaseException] = []
    for name in e.__all__:
        cls = getattr(e, name)
        if issubclass(cls, e.BrokerError):
            made.append(cls(cls.reply_code or 999, "SOME_TEXT", 50, 10, "connection"))
        elif cls is e.PublishError:
            made.append(cls([(7, e.PublishNacked("nacked")), (8, e.ConnectionLost("gone"))]))
        elif cls is e.AgentUnreachable:
            made.append(cls("no route back", may_have_run=True))
        elif issubclass(cls, e.RpcError):
            made.append(cls(-32050, "refused", {"why": ["asked"]}))
        elif cls is e.PropertiesTooLarge:
            made.append(cls(200_020, 131_072))
        elif cls is e.MissingExtra:
            made.append(cls("munggoggo.gateway", "gateway", "granian"))
        else:
            made.append(cls("something went wrong"))
    return made


@pytest.mark.parametrize("exc", examples(), ids=lambda exc: type(exc).__name__)
def test_each_pickles_with_its_fields(exc: BaseException) -> None:
    """Exceptions cross process boundaries (process pools, multiprocessing logging)."""
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    fields = {k: v for k, v in vars(exc).items() if k != "failures"}
    assert {k: v for k, v in vars(back).items() if k != "failures"} == fields
    if isinstance(exc, exceptions.PublishError):
        assert [(seq, str(err)) for seq, err in back.failures] == [
            (seq, str(err)) for seq, err in exc.failures
        ]


# -- raised for real, caught as MunggoggoError ------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: int


@pytest.fixture
def memory_url():
    name = uid("exceptions")
    yield f"memory://{name}"
    MemoryBroker.reset(name)


async def test_a_body_that_does_not_decode_is_a_munggoggo_error(memory_url: str) -> None:
    key = uid("points")
    async with munggoggo.Agent(uid("rx"), url=memory_url) as receiver:
        collector = await receiver.add_behaviour(MessageCollector(receiver, binding_keys=[key]))
        await receiver.publish({"x": "one", "y": 2}, key)
        async with asyncio.timeout(10):
            while not collector.got:
                await asyncio.sleep(0.01)
        with pytest.raises(MunggoggoError) as info:
            collector.got[0].decode(Point)
    assert isinstance(info.value, munggoggo.DecodeError)
    assert isinstance(info.value, ValueError)


def test_a_bad_url_is_a_munggoggo_error() -> None:
    with pytest.raises(MunggoggoError) as info:
        munggoggo.Agent(uid("bad-url"), url="ftp://127.0.0.1/")
    assert isinstance(info.value, munggoggo.URLError)
    assert isinstance(info.value, ValueError)


async def test_a_call_that_times_out_is_a_munggoggo_error(memory_url: str) -> None:
    async with (
        Calc(uid("calc"), url=memory_url) as calc,
        munggoggo.Agent(uid("caller"), url=memory_url) as caller,
    ):
        with pytest.raises(MunggoggoError) as info:
            await caller.call(calc.identity, "slow", 5.0, timeout=0.2)
    assert isinstance(info.value, munggoggo.RpcTimeout)
    assert isinstance(info.value, TimeoutError)


async def test_properties_over_frame_max_are_a_munggoggo_error(memory_url: str) -> None:
    """The speedups' own error, raised by the hot path that may import only the standard
    library, is caught by `except munggoggo.MunggoggoError` too."""
    async with munggoggo.Agent(uid("big"), url=memory_url) as agent:
        try:
            await agent.publish(b"x", uid("big"), headers={"h": "x" * 200_000})
        except munggoggo.MunggoggoError as exc:
            caught: BaseException = exc
        else:
            pytest.fail("a publish over frame_max went out")
    assert isinstance(caught, munggoggo.PropertiesTooLarge)
    assert isinstance(caught, ValueError)
