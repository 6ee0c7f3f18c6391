"""The `munggoggo` command as a user runs it (the installed console script and
`python -m munggoggo`): `--version`, and `--url` given after the subcommand, which wins over
one given before it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mesh_tools import uid

import munggoggo
from munggoggo.cli import build_parser

SCRIPT = shutil.which("munggoggo", path=str(Path(sys.executable).parent))
COMMANDS = {
    "console script": [SCRIPT or "munggoggo"],
    "python -m": [sys.executable, "-m", "munggoggo"],
}
NOBODY = "amqp://guest:guest@127.0.0.1:1/"  # no broker listens on port 1


def munggoggo_cmd(*args: str, how: str = "console script") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMANDS[how], *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def test_the_console_script_is_installed() -> None:
    assert SCRIPT is not None, "no munggoggo script next to this Python"


@pytest.mark.parametrize("how", sorted(COMMANDS))
def test_version_prints_the_installed_version_first(how: str) -> None:
    done = munggoggo_cmd("--version", how=how)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == f"munggoggo {importlib.metadata.version('munggoggo')}"
    assert first == f"munggoggo {munggoggo.__version__}"
    assert platform.python_version() in second
    assert "speedups" in second
    assert done.stderr == ""


def test_version_wins_over_a_subcommand() -> None:
    done = munggoggo_cmd("--version", "demo", "--seconds", "nan")
    assert done.returncode == 0
    assert done.stdout.startswith("munggoggo ")


@pytest.mark.parametrize(
    ("argv", "url"),
    [
        (["demo"], None),
        (["--url", "A", "demo"], "A"),
        (["demo", "--url", "B"], "B"),
        (["--url", "A", "demo", "--url", "B"], "B"),
        (["--url", "A", "run", "m:C", "--url", "R"], "R"),
        (["--url", "A", "gateway", "--url", "G"], "G"),
        (["--url", "A", "gateway"], "A"),
        (["--url", "A", "ctl", "--url", "C", "peers"], "C"),
        (["--url", "A", "ctl", "peers", "--url", "P"], "P"),
        (["ctl", "call", "x", "m", "1", "--url", "P"], "P"),
        (["--url", "A", "ctl", "dead-letters", "list", "--url", "D"], "D"),
        (["--url", "A", "ctl", "dead-letters", "list"], "A"),
    ],
)
def test_url_before_or_after_the_subcommand(argv: list[str], url: str | None) -> None:
    """Every subcommand that talks to a broker takes --url; the one nearest the end wins."""
    assert build_parser().parse_args(argv).url == url


@pytest.mark.parametrize("how", sorted(COMMANDS))
def test_demo_takes_url_after_the_subcommand(how: str) -> None:
    """The demo's own --url is the one used: memory:// runs at once, without trying the
    unreachable broker given before the subcommand."""
    done = munggoggo_cmd(
        "--url", NOBODY, "demo", "--url", f"memory://{uid('cli')}", "--seconds", "0.5", how=how
    )
    assert done.returncode == 0, done.stderr
    assert "no broker answers" not in done.stdout
    assert "calculator.mul" in done.stdout


def test_demo_url_after_the_subcommand_wins_the_other_way_round() -> None:
    done = munggoggo_cmd(
        "--url", f"memory://{uid('cli')}", "demo", "--url", NOBODY, "--seconds", "0.5"
    )
    assert done.returncode == 0, done.stderr
    assert "no broker answers at amqp://127.0.0.1:1/" in done.stdout


def test_ctl_takes_url_after_its_subcommand() -> None:
    """memory:// in the ctl process itself: the publish succeeds only on the later URL."""
    done = munggoggo_cmd(
        "--url", NOBODY, "ctl", "publish", "--url", f"memory://{uid('cli')}", "a.topic", "1"
    )
    assert done.returncode == 0, done.stderr
    assert '"ok": true' in done.stdout


def test_gateway_checks_the_url_after_its_subcommand() -> None:
    done = munggoggo_cmd("--url", f"memory://{uid('cli')}", "gateway", "--url", "nope://host")
    assert done.returncode == 1
    assert "'nope'" in done.stderr
    assert "Traceback" not in done.stderr
