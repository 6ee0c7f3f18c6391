"""The seed's example (examples/seed_ping.py, the blog's code with its imports changed) runs
as a program: it prints the behaviour's pings and stops cleanly on SIGTERM.

On RabbitMQ it runs in a throwaway vhost: its identity `AgentIdentity` and queue
`AgentIdentity.PingBehav` are the example's own, and a user may be running it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "seed_ping.py"
LINE = re.compile(r"^AgentIdentity\.PingBehav: Message received: (\d+)$")
WANTED = 3  # "Message received" lines before the SIGTERM
PATIENCE = 20.0  # seconds: a bound on a hang, not a speed check (about 1 line a second)


async def read_pings(stdout: asyncio.StreamReader, lines: list[str]) -> None:
    """Collect stdout lines until WANTED of them are pings (or the program ends)."""
    while sum(bool(LINE.match(line)) for line in lines) < WANTED:
        raw = await stdout.readline()
        if not raw:
            return
        lines.append(raw.decode().rstrip("\n"))


async def test_seed_example_pings_and_stops_on_sigterm(isolated_mesh_url):
    env = dict(os.environ, MUNGGOGGO_URL=isolated_mesh_url)
    env.pop("PYTHONUNBUFFERED", None)  # the runner itself must get lines out of a pipe
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        cwd=EXAMPLE.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        await asyncio.wait_for(read_pings(proc.stdout, lines), PATIENCE)
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    rest, stderr = await asyncio.wait_for(proc.communicate(), 30)
    lines += rest.decode().splitlines()
    pings = [int(m.group(1)) for m in map(LINE.match, lines) if m]
    assert len(pings) >= WANTED, (lines, stderr.decode())
    # The counter the behaviour published, received back in order from the topic.
    assert pings[:WANTED] == [1, 2, 3], lines
    assert proc.returncode == 0, stderr.decode()
    text = stderr.decode()
    assert "Traceback" not in text, text
    assert "agent AgentIdentity stopped" in text, text  # the drain ran to its end
