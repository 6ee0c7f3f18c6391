"""The typing contract: what a user's type checker sees of munggoggo.

mypy runs as a subprocess over the package's installed layout (links under a temporary
directory, as .ci/typecheck builds them: core/ is `munggoggo`, _speedups/ and gateway/ its
subpackages), from a directory without our mypy settings, as a user would run it:
examples/typed_usage.py passes `--strict` (its `assert_type`s state what must be inferred),
and each misuse in tests/typing_cases/misuse.py is rejected on its own line. The stubs of
the compiled modules are held to the modules (mypy's stubtest) and to the pure-Python twins'
names and signatures. No broker is involved.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from munggoggo import Agent, Behaviour, OneShotBehaviour, PeriodicBehaviour
from munggoggo._speedups import USING_EXTENSIONS

# Static checks (mypy, stubtest): CI runs them in its first pass only (.ci/run).
pytestmark = [pytest.mark.timeout(300), pytest.mark.static]

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "typing_cases"
EXAMPLE = ROOT / "examples" / "typed_usage.py"
MISUSE = CASES / "misuse.py"
# Kept between runs (build/ is not tracked): a cold mypy run over the package takes a while.
CACHE = ROOT / "build" / "typecheck" / ".mypy_cache_tests"
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: ")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed layout of the package, as links to the repository's directories."""
    root = tmp_path_factory.mktemp("layout")
    package = root / "munggoggo"
    package.mkdir()
    for entry in (ROOT / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "gateway").symlink_to(ROOT / "gateway")
    (package / "_speedups").symlink_to(ROOT / "_speedups")
    return root


def run_mypy(layout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """mypy (the venv's) with the layout on MYPYPATH, run outside the repository so that
    none of our own settings apply."""
    env = {**os.environ, "MYPYPATH": str(layout)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(CACHE), *args],
        cwd=layout,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )


def marked_lines(path: Path) -> set[int]:
    return {
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.rstrip().endswith("# rejected")
    }


def test_the_package_is_marked_typed() -> None:
    assert (ROOT / "core" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "py.typed" in package_data["munggoggo"]
    assert "*.pyi" in package_data["munggoggo._speedups"]


def test_typed_example_passes_strict_and_misuses_are_rejected(layout: Path) -> None:
    # One run for both files: the misuses' errors must not leak into the example, and
    # errors inside the package are not reported (as for any installed package).
    result = run_mypy(
        layout,
        "--strict",
        "--follow-imports=silent",
        "--python-version=3.11",
        str(EXAMPLE),
        str(MISUSE),
    )
    errors: dict[str, set[int]] = {}
    for line in result.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors.setdefault(Path(match["path"]).name, set()).add(int(match["line"]))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "typed_usage.py" not in errors, result.stdout
    wanted = marked_lines(MISUSE)
    assert len(wanted) >= 9
    assert errors.get("misuse.py") == wanted, result.stdout


def test_behaviour_is_subscriptable_at_run_time() -> None:
    class Calculator(Agent):
        pass

    class Doubler(Behaviour[Calculator]):
        pass

    class Once(OneShotBehaviour[Calculator]):
        pass

    class Tick(PeriodicBehaviour[Calculator]):
        pass

    agent = Calculator("calc", url="memory://typing")
    assert Doubler(agent, binding_keys=["x"]).agent is agent
    assert Once(agent).kind == "one-shot"
    assert Tick(agent, 1.0).period == 1.0
    assert Behaviour[Calculator](agent).short_name == "Behaviour"  # a plain Behaviour


def defined_names(source: Path) -> set[str]:
    """The public names a module's (or stub's) source defines at its top level."""
    names = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {name for name in names if not name.startswith("_")}


def compiled_names(module: types.ModuleType) -> set[str]:
    """The public names of a compiled module (no source to read): not modules, nor
    classes and functions from outside the package (it shares some of the pure twin's)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        callable_kinds = type | types.FunctionType | types.BuiltinFunctionType
        if isinstance(value, callable_kinds) and not value.__module__.startswith(
            "munggoggo._speedups."
        ):
            continue
        names.add(name)
    return names


@pytest.mark.parametrize("name", ["_frames", "_confirms"])
def test_stub_names_are_the_twins_names(name: str) -> None:
    names = defined_names(ROOT / "_speedups" / f"{name}.pyi")
    assert names == defined_names(ROOT / "_speedups" / f"{name}_py.py")
    if USING_EXTENSIONS:
        assert names == compiled_names(importlib.import_module(f"munggoggo._speedups.{name}"))


def run_stubtest(layout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """mypy's stubtest (`args`: options, then modules): each module's stub against the
    module imported at run time."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--mypy-config-file",
            str(ROOT / "pyproject.toml"),
            "--allowlist",
            str(CASES / "stubtest_allowlist.txt"),
            *args,
        ],
        cwd=layout,
        env={**os.environ, "MYPYPATH": str(layout)},
        capture_output=True,
        text=True,
        timeout=280,
    )


@pytest.mark.skipif(not USING_EXTENSIONS, reason="the compiled modules are not built")
def test_stubs_match_the_compiled_modules(layout: Path) -> None:
    result = run_stubtest(layout, "munggoggo._speedups._frames", "munggoggo._speedups._confirms")
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubs_match_the_pure_twins(tmp_path: Path) -> None:
    # The same stubs, given to the twins: a layout where `_frames_py.pyi` is `_frames.pyi`
    # (mypy prefers a stub to the module beside it), so stubtest compares the twins'
    # signatures, defaults and attributes to what the stubs promise.
    package = tmp_path / "munggoggo"
    speedups = package / "_speedups"
    speedups.mkdir(parents=True)
    for entry in (ROOT / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "gateway").symlink_to(ROOT / "gateway")
    for entry in (ROOT / "_speedups").glob("*.py*"):
        if entry.suffix in (".py", ".pyi"):
            (speedups / entry.name).symlink_to(entry)
    for name in ("_frames", "_confirms"):
        (speedups / f"{name}_py.pyi").symlink_to(ROOT / "_speedups" / f"{name}.pyi")
    result = run_stubtest(
        tmp_path,
        "--ignore-unused-allowlist",  # the Cython entries concern the compiled twins only
        "munggoggo._speedups._frames_py",
        "munggoggo._speedups._confirms_py",
    )
    assert result.returncode == 0, result.stdout + result.stderr
