"""examples/rpc_contracts.py (shown in docs/how-to/rpc-contracts.md) runs as a program on
RabbitMQ and memory:// and prints what the page says it prints.

On RabbitMQ it runs in a throwaway vhost: its identities `calculator` and `client` are the
example's own, and a user may be running it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rpc_contracts.py"


async def test_the_rpc_contracts_example(isolated_mesh_url):
    env = dict(os.environ, MUNGGOGGO_URL=isolated_mesh_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[:5] == [
        "mul: 42",
        "add: 5",
        "mul: timed out while queued, never started",
        "slow: done",
        "serving add: ['calculator']",
    ], lines
    label, _, contract = lines[5].partition(": ")
    assert label == "mul's contract"
    assert json.loads(contract) == {
        "doc": "Multiply two integers.",
        "params": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        "result": {"type": "integer"},
    }
