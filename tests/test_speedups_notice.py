"""The run-time notice that the compiled speedups are not in use (munggoggo._speedups).

A build without a compiler installs and runs on the pure-Python twins; the first agent to
start says so in one line on the `munggoggo` logger: WARNING naming the compiled module that
failed to import and why, or INFO when MUNGGOGGO_NO_EXTENSIONS=1 asked for the twins. Each
case runs in a fresh interpreter, because the choice is made once, at import. A compiled
module that cannot be imported is made so the way Python itself allows: a None entry in
sys.modules, which makes its import raise ImportError.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SPEEDUPS = Path(__file__).resolve().parent.parent / "_speedups"
SUFFIXES = importlib.machinery.EXTENSION_SUFFIXES

# Starts two agents on memory:// one after the other and prints what the `munggoggo`
# logger itself (not its children, such as munggoggo.agent) received: [[level, text], ...].
SCRIPT = """
import asyncio, json, logging, sys
for name in sys.argv[1:]:
    sys.modules["munggoggo._speedups." + name] = None  # its import now raises ImportError

records = []

class Keep(logging.Handler):
    def emit(self, record):
        if record.name == "munggoggo":
            records.append([record.levelname, record.getMessage()])

logging.getLogger("munggoggo").addHandler(Keep())
logging.getLogger("munggoggo").setLevel(logging.DEBUG)

from munggoggo import Agent
import munggoggo._speedups as speedups

async def main():
    for identity in ("first", "second"):
        async with Agent(identity, url="memory://speedups-notice"):
            pass

asyncio.run(main())
print(json.dumps({"using": speedups.USING_EXTENSIONS, "records": records}))
"""


def _run(*blocked: str, no_extensions: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MUNGGOGGO_NO_EXTENSIONS"}
    if no_extensions:
        env["MUNGGOGGO_NO_EXTENSIONS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *blocked],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tempfile.gettempdir(),  # not the repository: only the installed package
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _compiled_built() -> bool:
    return all(
        any(
            (SPEEDUPS / (name + suffix)).exists()
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
        )
        for name in ("_frames", "_confirms")
    )


def test_a_compiled_module_that_fails_to_import_is_named_once_as_a_warning() -> None:
    got = _run("_frames")
    assert got["using"] is False
    (record,) = got["records"]  # two agents started, one line
    level, text = record
    assert level == "WARNING"
    assert "_frames" in text and "pure-Python" in text
    if _compiled_built():
        assert "_confirms" not in text  # it imported: only the missing one is named


def test_both_missing_are_both_named() -> None:
    ((level, text),) = _run("_frames", "_confirms")["records"]
    assert level == "WARNING"
    assert "_frames" in text and "_confirms" in text


def test_twins_asked_for_on_purpose_are_one_info_line_naming_the_switch() -> None:
    got = _run(no_extensions=True)
    assert got["using"] is False
    ((level, text),) = got["records"]
    assert level == "INFO"
    assert "MUNGGOGGO_NO_EXTENSIONS" in text


@pytest.mark.skipif(not _compiled_built(), reason="the compiled speedups are not built here")
def test_nothing_is_said_when_the_compiled_speedups_are_loaded() -> None:
    got = _run()
    assert got == {"using": True, "records": []}


def test_the_notice_function_reports_the_state_of_this_process() -> None:
    import munggoggo._speedups as speedups

    text = speedups.speedups_notice()
    if speedups.USING_EXTENSIONS:
        assert text is None
    else:
        assert text is not None and "pure-Python" in text
