"""Docstring coverage of the public API: every public name documented, with its parameters,
its return value and what it raises.

The public API is `munggoggo.__all__` plus the public modules below (the same files ruff's
pydocstyle rules check: `[tool.ruff.lint.per-file-ignores]` in pyproject.toml, kept in step
by `test_ruff_checks_the_public_modules`). A module's public names are its `__all__`, or
else the names it defines without a leading underscore; a public class's public methods and
properties count too, including those it inherits from munggoggo classes (each counted once,
where it is defined), never those of the standard library or a dependency.

Rules (Google style, what mkdocstrings renders):

- every public class, function, method and property has a docstring of its own;
- a callable with parameters (besides `self`/`cls`) has an `Args:` section naming each one
  (`*args`/`**kwargs` included); a class documents its constructor's parameters in its own
  docstring (or its `__init__`'s), and a dataclass or msgspec Struct its fields under
  `Attributes:`;
- a function or method that returns something (its return annotation is not `None`) has a
  `Returns:` (or `Yields:`) section; properties are exempt (the summary is the value);
- a memory:// engine method that implements an engine contract member of the same name
  (`ChannelProtocol`, `ConnectionProtocol` in munggoggo.engine) needs a docstring of its
  own, but its Args/Returns/Raises are the contract's, documented there once;
- every exception a callable raises itself (`raise X` in its body, not a bare re-raise) is
  named in its `Raises:` section (but NotImplementedError, a stub's body, and
  AssertionError, a line that cannot be reached).

`python -m tests.test_docstrings` (or `pytest -s tests/test_docstrings.py`) prints the
coverage figures and every gap.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import importlib
import inspect
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

# Checks of the sources and the packaging: neither the speedups nor the broker change
# them, so CI runs them in its first pass only (.ci/run).
pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parent.parent

# The public modules: those defining a name of munggoggo.__all__ (the Agent's role mixins
# define its methods), the engine contract, URLs, the codec, the testing tools, the
# gateway's entry points, the sans-IO protocol layer, memory://, metrics and OpenTelemetry.
PUBLIC_MODULES = (
    "munggoggo",
    "munggoggo.agent",
    "munggoggo.agent_base",
    "munggoggo.publishing",
    "munggoggo.batching",
    "munggoggo.consumers",
    "munggoggo.inbox",
    "munggoggo.rpc_client",
    "munggoggo.rpc_server",
    "munggoggo.handoff",
    "munggoggo.batch_consume",
    "munggoggo.batch_format",
    "munggoggo.control_plane",
    "munggoggo.behaviour",
    "munggoggo.config",
    "munggoggo.durable",
    "munggoggo.message",
    "munggoggo.rpc",
    "munggoggo.runner",
    "munggoggo.template",
    "munggoggo.worker",
    "munggoggo.engine",
    "munggoggo.engine_channel",
    "munggoggo.engine_records",
    "munggoggo.url",
    "munggoggo.envelope",
    "munggoggo.exceptions",
    "munggoggo.extras",
    "munggoggo.fsm",
    "munggoggo.timed",
    "munggoggo.behaviour_lifecycle",
    "munggoggo.behaviour_kinds",
    "munggoggo.mermaid",
    "munggoggo.presence",
    "munggoggo.rpc_registry",
    "munggoggo.rpc_deadlines",
    "munggoggo.rpc_limits",
    "munggoggo.rpc_schemas",
    "munggoggo.asyncapi",
    "munggoggo.delays",
    "munggoggo.metrics",
    "munggoggo.otel",
    "munggoggo.perf_body",
    "munggoggo.perf_stats",
    "munggoggo.perf_run",
    "munggoggo.perf_agents",
    "munggoggo.perf_rpc",
    "munggoggo.perf_modes",
    "munggoggo.perf_metrics",
    "munggoggo.perf_report",
    "munggoggo.perf_scale",
    "munggoggo.perf_figures",
    "munggoggo.perf_workers",
    "munggoggo.cli_bench",
    "munggoggo.deadletter_lock",
    "munggoggo.amqp",
    "munggoggo.amqp.connection",
    "munggoggo.amqp.errors",
    "munggoggo.amqp.handshake",
    "munggoggo.amqp.events",
    "munggoggo.amqp.state",
    "munggoggo.memory",
    "munggoggo.memory.broker",
    "munggoggo.memory.channel",
    "munggoggo.memory.connection",
    "munggoggo.testing",
    "munggoggo.testing.broker_faults",
    "munggoggo.testing.cluster",
    "munggoggo.testing.fault_proxy",
    "munggoggo.testing.ports",
    "munggoggo.gateway.app",
    "munggoggo.gateway.contracts",
    "munggoggo.gateway.server",
    "munggoggo.gateway.state",
)

SECTION = re.compile(r"^(\w[\w ]*):\s*$")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One documented thing: a class, function, method or property."""

    qualname: str  # module:Qualified.name
    obj: Any
    kind: str  # class, function, method, property


def source_of(module: str) -> Path:
    """The source file of a munggoggo module, as pyproject's package-dir maps it."""
    return Path(inspect.getfile(importlib.import_module(module))).resolve()


def _ours(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("munggoggo")


def _public_names(module: ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return list(exported)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def _members(cls: type) -> Iterator[tuple[str, Any, type]]:
    """Public methods and properties of a class: name, raw attribute, defining class."""
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not _ours(owner):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, staticmethod | classmethod):
            yield name, raw.__func__, owner
        elif isinstance(raw, property) or inspect.isfunction(raw):
            yield name, raw, owner


def public_api() -> list[Entry]:
    """Every public class, function, method and property, once each."""
    entries: dict[str, Entry] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and _ours(obj):
                key = f"{obj.__module__}:{obj.__qualname__}"
                entries.setdefault(key, Entry(key, obj, "class"))
                for member, raw, owner in _members(obj):
                    mkey = f"{owner.__module__}:{owner.__qualname__}.{member}"
                    kind = "property" if isinstance(raw, property) else "method"
                    entries.setdefault(mkey, Entry(mkey, raw, kind))
            elif inspect.isfunction(obj) and _ours(obj):
                key = f"{obj.__module__}:{obj.__qualname__}"
                entries.setdefault(key, Entry(key, obj, "function"))
    return sorted(entries.values(), key=lambda e: e.qualname)


def sections(doc: str) -> dict[str, str]:
    """A Google-style docstring's sections: title -> its text."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(doc).splitlines():
        match = SECTION.match(line)
        if match:
            current = found.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def _documented_names(text: str) -> set[str]:
    """The names an Args:/Attributes: section describes (`name:` or `name (type):`)."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"^ {4}(\**\w+)(?: \(.*\))?:", line)
        if match:
            names.add(match.group(1).lstrip("*"))
    return names


def _parameters(func: Callable[..., Any]) -> list[str]:
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [p.name for p in params]


def _returns_value(func: Callable[..., Any]) -> bool:
    annotation = inspect.signature(func).return_annotation
    if annotation is inspect.Signature.empty:
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text not in ("None", "NoReturn", "Never")


def _raised(func: Callable[..., Any]) -> set[str]:
    """Exceptions the function's own body raises by name (`raise X(...)`, `raise X`)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return set()
    tree = ast.parse(source)
    body = tree.body[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # a nested function raises when it is called, not this one
            if isinstance(child, ast.ClassDef):
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                    found.add(exc.id)
                elif isinstance(exc, ast.Attribute):
                    found.add(exc.attr)
            visit(child)

    visit(body)
    # A stub's or an abstract method's body; a line that cannot be reached.
    found -= {"NotImplementedError", "AssertionError"}
    return found


@functools.cache
def _contract_implementations() -> frozenset[str]:
    """The memory:// engine's members that implement an engine contract member."""
    from munggoggo.engine import ChannelProtocol, ConnectionProtocol
    from munggoggo.memory import MemoryChannel, MemoryConnection

    found = set()
    for engine, contract in (
        (MemoryChannel, ChannelProtocol),
        (MemoryConnection, ConnectionProtocol),
    ):
        for name in vars(contract):
            owner = next((k for k in engine.__mro__ if name in vars(k)), None)
            if not name.startswith("_") and owner is not None:
                found.add(f"{owner.__module__}:{owner.__qualname__}.{name}")
    return frozenset(found)


def _implements_contract(entry: Entry) -> bool:
    return entry.qualname in _contract_implementations()


def problems(entry: Entry) -> list[str]:
    """What the entry's documentation lacks (empty: nothing)."""
    obj = entry.obj
    doc = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ or obj.__doc__)
    if entry.kind == "class" and doc and issubclass(obj, msgspec.Struct) and not _own_doc(obj):
        doc = None
    if not doc or not doc.strip():
        return ["no docstring"]
    if entry.kind == "property" or _implements_contract(entry):
        return []
    found = sections(doc)
    missing: list[str] = []
    if entry.kind == "class":
        fields = _fields(obj)
        if fields:
            documented = _documented_names(found.get("Attributes", ""))
            lacking = [f for f in fields if f not in documented]
            if lacking:
                missing.append(f"Attributes: lacks {', '.join(lacking)}")
        init = vars(obj).get("__init__")
        if inspect.isfunction(init) and _ours(init) and not fields:
            params = _parameters(init)
            documented = _documented_names(found.get("Args", ""))
            documented |= _documented_names(sections(init.__doc__ or "").get("Args", ""))
            lacking = [p for p in params if p not in documented]
            if lacking:
                missing.append(f"Args: lacks {', '.join(lacking)}")
        return missing
    params = _parameters(obj)
    documented = _documented_names(found.get("Args", ""))
    lacking = [p for p in params if p not in documented]
    if lacking:
        missing.append(f"Args: lacks {', '.join(lacking)}")
    if _returns_value(obj) and "Returns" not in found and "Yields" not in found:
        missing.append("no Returns:")
    undocumented = sorted(
        name for name in _raised(obj) if not re.search(rf"\b{name}\b", found.get("Raises", ""))
    )
    if undocumented:
        missing.append(f"Raises: lacks {', '.join(undocumented)}")
    return missing


def _own_doc(cls: type) -> bool:
    """msgspec gives every Struct a generated docstring; only a written one counts."""
    written = vars(cls).get("__doc__") or ""
    return bool(written) and not written.startswith(cls.__name__ + "(")


def _fields(cls: type) -> list[str]:
    """The fields of a dataclass or msgspec Struct (documented under Attributes:)."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return list(cls.__struct_fields__)
    return []


def coverage() -> tuple[int, int, int, dict[str, list[str]]]:
    """(entries, with a docstring, complete, gaps by entry)."""
    api = public_api()
    gaps = {e.qualname: p for e in api if (p := problems(e))}
    with_doc = sum(1 for e in api if gaps.get(e.qualname) != ["no docstring"])
    return len(api), with_doc, len(api) - len(gaps), gaps


def _package_class_members() -> set[str]:
    """The methods and properties of the classes munggoggo.__all__ names (the API most
    users meet), as public_api() names them."""
    import munggoggo

    found = set()
    for name in munggoggo.__all__:
        cls = getattr(munggoggo, name)
        if inspect.isclass(cls) and _ours(cls):
            found |= {f"{o.__module__}:{o.__qualname__}.{m}" for m, _, o in _members(cls)}
    return found


def report() -> str:
    """The coverage figures and every gap, one a line."""
    total, with_doc, complete, gaps = coverage()
    members = _package_class_members()
    members_with_doc = sum(1 for m in members if gaps.get(m) != ["no docstring"])
    lines = [
        f"public names with a docstring: {with_doc}/{total}",
        f"public names fully documented (Args/Returns/Raises/Attributes): {complete}/{total}",
        f"methods/properties of munggoggo.__all__ classes with a docstring: "
        f"{members_with_doc}/{len(members)}",
    ]
    lines += [f"  {name}: {'; '.join(p)}" for name, p in sorted(gaps.items())]
    return "\n".join(lines)


def _expand(pattern: str) -> list[str]:
    """A glob's `{a,b}` alternatives spelled out (nested ones too), as ruff reads them."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [x for alt in match.group(1).split(",") for x in _expand(head + alt + tail)]


def test_public_api_is_documented() -> None:
    text = report()
    print(text)
    total, _, _, gaps = coverage()
    assert total > 100, "the walk found too little of the public API"
    assert not gaps, text


def test_ruff_checks_the_public_modules() -> None:
    """The pydocstyle rules cover exactly the public modules' files (and the coming ones)."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "D" in lint["select"]
    negated = [k for k, v in lint["per-file-ignores"].items() if k.startswith("!") and "D" in v]
    assert len(negated) == 1, "one negated pattern: D is ignored everywhere else"
    patterns = _expand(negated[0][1:])
    checked = {
        str(source_of(m).relative_to(ROOT))
        for m in PUBLIC_MODULES
        if not source_of(m).name.startswith("_") or source_of(m).name == "__init__.py"
    }
    for path in sorted(checked):
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f"ruff's D skips {path}"
    for path in patterns:
        if "*" not in path:
            assert (ROOT / path).exists(), f"ruff's D names {path}, which does not exist"


def test_the_checks_can_fail() -> None:
    def undocumented(a: int) -> int:
        return a

    def partly(a: int, b: int) -> int:
        """Add.

        Args:
            a: one.
        """
        if a < 0:
            raise ValueError("negative")
        return a + b

    assert problems(Entry("x:undocumented", undocumented, "function")) == ["no docstring"]
    assert problems(Entry("x:partly", partly, "function")) == [
        "Args: lacks b",
        "no Returns:",
        "Raises: lacks ValueError",
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(report())
