"""examples/fsm_traffic_light.py runs as a program and ends by itself: the light goes round
red -> green -> yellow, the pedestrian's button presses reach the FSM's green state, the
timer kills the FSM, whose on_end reports, and the agent is printed as a Mermaid diagram.

On RabbitMQ it runs in a throwaway vhost: its identities `light` and `pedestrian` are the
example's own, and a user may be running it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fsm_traffic_light.py"


async def test_the_traffic_light_example_runs_and_ends(isolated_mesh_url):
    env = dict(os.environ, MUNGGOGGO_URL=isolated_mesh_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        cwd=EXAMPLE.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 40)
    lines, errors = stdout.decode().splitlines(), stderr.decode()
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors, errors
    colours = [line.rsplit(" ", 1)[1] for line in lines if line.startswith("pedestrian: the")]
    assert len(colours) >= 3, lines
    # The order the transitions allow, from wherever the pedestrian began to watch.
    cycle = ["red", "green", "yellow"]
    start = cycle.index(colours[0])
    assert colours == [cycle[(start + i) % 3] for i in range(len(colours))], colours
    assert "light: message from pedestrian: hello" in lines  # ~BUTTON
    assert any(line == "light: button pressed by pedestrian" for line in lines), lines
    ended = [line for line in lines if line.startswith("light: off in state")]
    assert len(ended) == 1 and ended[0].endswith("(exit code 'switched off')"), lines
    assert "flowchart LR" in lines
    assert '    subgraph b0 ["Light<br/>fsm, stopped"]' in lines
    assert "        b0_s2 --> b0_s0" in lines
