"""A missing extra is one line naming the `pip install` that adds it: on stderr with exit
status 2 from the `munggoggo` command, as a `MissingExtra` (an ImportError and a
MunggoggoError) from Python.

The dependencies are installed here, so each test runs a fresh interpreter that cannot import
them: a `sitecustomize` puts None in `sys.modules` for each name in $BLOCK_MODULES, which makes
importing it fail as if it were not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mesh_tools import uid

from munggoggo import MissingExtra, MunggoggoError
from munggoggo.extras import EXTRAS, needs_extra, require

# Checks of the sources and the packaging: neither the speedups nor the broker change
# them, so CI runs them in its first pass only (.ci/run).
pytestmark = pytest.mark.static

SCRIPT = shutil.which("munggoggo", path=str(Path(sys.executable).parent)) or "munggoggo"
BLOCKER = """\
import os, sys
for name in filter(None, os.environ.get("BLOCK_MODULES", "").split(",")):
    sys.modules[name] = None
"""


@pytest.fixture
def without(tmp_path: Path):
    """Run a command in an interpreter where the given modules cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)

    def run(modules: list[str], command: list[str]) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])
            ),
            "BLOCK_MODULES": ",".join(modules),
        }
        return subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=env, check=False
        )

    return run


def one_line(extra: str, module: str, feature: str) -> str:
    return (
        f"{feature} needs the '{extra}' extra (no module named '{module}'): "
        f"pip install 'munggoggo[{extra}]'"
    )


def test_the_blocker_works(without) -> None:
    """A guard on the fixture: the blocked module really cannot be imported."""
    done = without(["granian"], [sys.executable, "-c", "import granian"])
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr


@pytest.mark.parametrize("module", EXTRAS["gateway"])
def test_gateway_command_without_the_gateway_extra(without, module: str) -> None:
    done = without([module], [SCRIPT, "gateway", "--port", "0"])
    assert done.returncode == 2
    assert done.stderr == one_line("gateway", module, "munggoggo gateway") + "\n"
    assert done.stdout == ""


def test_demo_metrics_port_without_the_metrics_extra(without) -> None:
    command = [SCRIPT, "demo", "--url", f"memory://{uid('extras')}", "--metrics-port", "0"]
    done = without(["prometheus_client"], [*command, "--seconds", "5"])
    assert done.returncode == 2
    assert done.stderr == one_line("metrics", "prometheus_client", "munggoggo demo") + "\n"


def test_demo_without_metrics_needs_no_extra(without) -> None:
    """Only the flag that uses prometheus_client needs it."""
    command = [SCRIPT, "demo", "--url", f"memory://{uid('extras')}", "--seconds", "0.3"]
    done = without(["prometheus_client", "granian", "opentelemetry"], command)
    assert done.returncode == 0, done.stderr


PYTHON_API = """\
import sys
from munggoggo import MissingExtra, MunggoggoError

try:
    {statement}
except MissingExtra as exc:
    assert isinstance(exc, ImportError) and isinstance(exc, MunggoggoError)
    print(exc.extra, exc.module, exc.name, sep="|")
    print(exc)
else:
    print("no error")
"""


@pytest.mark.parametrize(
    ("statement", "blocked", "extra", "feature"),
    [
        ("import munggoggo.gateway", "granian", "gateway", "munggoggo.gateway"),
        ("import munggoggo.gateway.app", "prometheus_client", "gateway", "munggoggo.gateway"),
        (
            "from munggoggo.metrics import serve_metrics; serve_metrics(0)",
            "prometheus_client",
            "metrics",
            "munggoggo.metrics",
        ),
        ("import munggoggo.otel", "opentelemetry", "otel", "munggoggo.otel"),
    ],
)
def test_python_api_without_an_extra(without, statement, blocked, extra, feature) -> None:
    done = without([blocked], [sys.executable, "-c", PYTHON_API.format(statement=statement)])
    assert done.returncode == 0, done.stderr
    fields, message = done.stdout.splitlines()
    assert fields == f"{extra}|{blocked}|{blocked}"
    assert message == one_line(extra, blocked, feature)


def test_an_unrelated_import_error_is_not_called_a_missing_extra() -> None:
    """A module outside the extra fails as itself (a broken install must not be hidden)."""
    with pytest.raises(ModuleNotFoundError) as info, needs_extra("otel", "munggoggo.otel"):
        import munggoggo_no_such_module  # noqa: F401
    assert not isinstance(info.value, MissingExtra)


def test_an_installed_extra_is_no_error() -> None:
    require("gateway", "munggoggo.gateway")
    require("metrics", "munggoggo.metrics")
    require("otel", "munggoggo.otel")


def test_missing_extra_is_an_import_error_and_a_munggoggo_error() -> None:
    exc = MissingExtra("munggoggo.gateway", "gateway", "granian")
    assert isinstance(exc, ImportError) and isinstance(exc, MunggoggoError)
    assert exc.name == "granian"
    assert str(exc) == one_line("gateway", "granian", "munggoggo.gateway")
    assert exc.explain("munggoggo gateway") == one_line("gateway", "granian", "munggoggo gateway")
