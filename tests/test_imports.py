"""The package's import structure: every module imports alone, the sans-IO layers never pull
in asyncio, the CLI leaves the gateway alone, the package namespace is lazy, and the imports
inside the package form no cycle (at import time, or hidden in a function).

The first test is multidict's tests/test_circular_imports.py: each module is imported first, in
a fresh interpreter, so a cycle that only bites in one import order cannot hide behind the
order the test suite happens to use. The graph test finds the cycles that have not bitten yet.
"""

from __future__ import annotations

import ast
import importlib.machinery
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

# Checks of the sources and the packaging: neither the speedups nor the broker change
# them, so CI runs them in its first pass only (.ci/run).
pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parent.parent

# Cycles closed only by an import deferred into a function body, known and being reworked
# elsewhere: each as the set of modules of its strongly connected part.
# Cycles closed only by an import inside a function: none (PublishError and the other
# shared engine records live in core/engine.py, which both engines import).
KNOWN_DEFERRED_CYCLES: list[frozenset[str]] = []


def _package_dirs() -> dict[str, Path]:
    """Import package -> its source folder, as pyproject's package-dir maps them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: ROOT / folder for package, folder in setuptools["package-dir"].items()}


PACKAGES = _package_dirs()


def _sources() -> dict[str, Path]:
    """Every module of the package -> its source (.py, or .pyx for a compiled twin)."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.iterdir()):
            if path.suffix in (".py", ".pyx"):
                found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


SOURCES = _sources()
SANS_IO = sorted(
    name
    for name in SOURCES
    if name.split(".")[:2] in (["munggoggo", "amqp"], ["munggoggo", "_speedups"])
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: no user site, no PYTHON* variables, no script folder on the path: only the
    # installed package, and nothing imported before the code runs.
    return subprocess.run(
        [sys.executable, "-I", *args, *(["-c", code] if code else [])],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _skip_unbuilt(name: str) -> None:
    path = SOURCES[name]
    if path.suffix == ".pyx" and not any(
        path.with_name(path.stem + suffix).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ):
        pytest.skip(f"{name}: the compiled twin is not built here")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_module_imports_first_and_alone(name: str) -> None:
    """Importing the module first in a fresh interpreter works."""
    _skip_unbuilt(name)
    if name.endswith(".__main__"):
        # Importing __main__ runs the command: run it the way it is meant to run, harmlessly.
        done = _python("", "-m", name.removesuffix(".__main__"), "--help")
    else:
        done = _python(f"import importlib; importlib.import_module({name!r})")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_module_does_not_import_asyncio(name: str) -> None:
    """The protocol layer and the hot paths import no IO framework (h11's rule)."""
    _skip_unbuilt(name)
    done = _python(
        "import importlib, sys\n"
        f"importlib.import_module({name!r})\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'asyncio'))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_package_names_resolve_lazily() -> None:
    """`import munggoggo` runs no runtime module; each public name resolves on first use."""
    done = _python(
        "import sys, munggoggo\n"
        "print(sorted(m for m in sys.modules if m.startswith('munggoggo.')))\n"
        "from munggoggo import Agent, Behaviour, expose, run\n"
        "print('munggoggo.agent' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['munggoggo._version']", "True"]


def test_submodules_resolve_on_first_use() -> None:
    """`import munggoggo` alone, then a submodule as an attribute (as when the package
    imported them eagerly)."""
    done = _python(
        "import munggoggo\n"
        "print(munggoggo.rpc.RpcError.__module__, munggoggo.agent.Agent is munggoggo.Agent)\n"
        "print(hasattr(munggoggo, 'no_such_module'))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["munggoggo.rpc", "True", "False"]


def test_package_public_names() -> None:
    """Every name in `__all__` is there (star import included), `dir()` lists them, and the
    lazily resolved names are the defining modules' objects."""
    import munggoggo
    from munggoggo import agent, rpc, runner

    namespace: dict[str, object] = {}
    exec("from munggoggo import *", namespace)
    assert set(munggoggo.__all__) <= set(namespace)
    assert set(munggoggo.__all__) <= set(dir(munggoggo))
    assert munggoggo.Agent is agent.Agent
    assert munggoggo.Core is agent.Agent
    assert munggoggo.expose is rpc.expose
    assert munggoggo.serve is runner.serve
    assert munggoggo.__version__ == munggoggo._version.__version__
    with pytest.raises(AttributeError):
        munggoggo.NoSuchName  # noqa: B018


# --- The graph of module-level imports ---------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(
    node: ast.AST, deferred: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (module level, class
    bodies, if/try/with blocks), and with `deferred` also those in function bodies; never
    those under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if not deferred and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _runtime_imports(ast.Module(body=[stmt], type_ignores=[]), deferred)
        else:
            yield from _runtime_imports(child, deferred)


def _parse(path: Path) -> ast.Module:
    source = path.read_text()
    if path.suffix != ".pyx":
        return ast.parse(source)
    # Cython is not Python: keep its top-level Python imports (no cimports) and parse those.
    lines: list[str] = []
    open_paren = False
    for line in (line.partition("#")[0] for line in source.splitlines()):
        if open_paren:
            lines.append(line)
            open_paren = ")" not in line
        elif line.startswith(("import ", "from ")) and " cimport " not in line:
            lines.append(line)
            open_paren = "(" in line and ")" not in line
    return ast.parse("\n".join(lines))


def _package_of(name: str) -> str:
    """The package a module's relative imports start from."""
    return name if SOURCES[name].stem == "__init__" else name.rpartition(".")[0]


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _resolve(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(name).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _lazy_names() -> dict[str, dict[str, str]]:
    """For each module that resolves names lazily (a module `__getattr__`, PEP 562), the
    module each name comes from, read from its `if TYPE_CHECKING:` imports."""
    lazy: dict[str, dict[str, str]] = {}
    for name, path in SOURCES.items():
        tree = _parse(path)
        if not any(
            isinstance(stmt, ast.FunctionDef) and stmt.name == "__getattr__" for stmt in tree.body
        ):
            continue
        names = lazy.setdefault(name, {})
        for stmt in tree.body:
            if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
                for imp in ast.walk(stmt):
                    if isinstance(imp, ast.ImportFrom):
                        for alias in imp.names:
                            names[alias.asname or alias.name] = _resolve(name, imp)
    return lazy


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its import runs or reads from at import time.

    `from a.b import c` runs a.b (and a, unless a is the importer's own ancestor: that one is
    already initialised or initialising) and reads c from a.b, or runs a.b.c if c is a module;
    a name a lazy package resolves on first access runs the module that defines it.
    """
    lazy = _lazy_names()
    graph: dict[str, set[str]] = {}
    for name, path in SOURCES.items():
        edges = graph.setdefault(name, set())
        skip = _ancestors(name) | {name}
        for node in _runtime_imports(_parse(path), deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                module = _resolve(name, node)
                targets = [module]
                for alias in node.names:
                    if f"{module}.{alias.name}" in SOURCES:
                        targets.append(f"{module}.{alias.name}")
                    elif alias.name in lazy.get(module, {}):
                        targets.append(lazy[module][alias.name])
                    elif module in skip and module != name:
                        # Reading a name off a package still initialising is the classic
                        # circular-import failure: count it, even from the package's own child.
                        edges.add(module)
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    run = ".".join(parts[:i])
                    if run in SOURCES and run not in skip:
                        edges.add(run)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The graph's strongly connected parts with more than one module, or a self-import
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    part = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        part.add(member)
                        if member == node:
                            break
                    if len(part) > 1 or node in graph[node]:
                        found.append(frozenset(part))
    return found


def test_graph_sees_the_package() -> None:
    """The graph is built from real edges (a guard against a parser that finds nothing)."""
    graph = import_graph()
    assert "munggoggo.amqp.errors" in graph["munggoggo.amqp.connection"]
    assert "munggoggo._speedups._frames_py" in graph["munggoggo._speedups._frames"]
    assert graph["munggoggo"] == {"munggoggo._version"}


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["e"]]


def test_no_import_cycles() -> None:
    """No cycle in the imports that run at import time: none, known or not."""
    assert [sorted(part) for part in cycles(import_graph())] == []


def test_no_cycles_hidden_in_deferred_imports() -> None:
    """An import moved into a function to dodge a cycle hides the cycle; it does not remove
    it. Counting those too, no cycle but the known ones."""
    found = cycles(import_graph(deferred=True))
    assert [sorted(part) for part in found if part not in KNOWN_DEFERRED_CYCLES] == []


def test_cli_does_not_import_the_gateway() -> None:
    """The command line imports the gateway only in the command that serves it."""
    done = _python(
        "import sys, munggoggo.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('munggoggo.gateway')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
