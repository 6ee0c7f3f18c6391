"""`munggoggo ctl` as a user runs it (a subprocess) against the real broker: a direct
message the broker returns is reported and fails the command, and durations that are
not a finite number of seconds are refused by the parser, before anything runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from broker_tools import wait_until
from mesh_tools import BodyCollector, uid

from munggoggo import Agent
from munggoggo.cli import build_parser
from munggoggo.template import Template

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]


async def ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`munggoggo --url URL ctl ARGS...` to completion (off the event loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "munggoggo", "--url", url, "ctl", *args],
        capture_output=True,
        text=True,
        timeout=45,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


async def test_send_to_an_agent_that_does_not_exist_fails_and_says_so(broker_url):
    nobody = uid("nosuch")
    result = await ctl(broker_url, "send", nobody, "hello")
    assert result.returncode == 1, result
    assert '"ok"' not in result.stdout
    assert f"unknown agent {nobody!r}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_send_to_a_running_agent_succeeds(broker_url):
    async with Agent(uid("receiver"), url=broker_url) as receiver:
        inbox = await receiver.add_behaviour(BodyCollector(receiver, template=Template()))
        result = await ctl(broker_url, "send", receiver.identity, "hello")
        assert result.returncode == 0, result.stderr
        assert '"ok": true' in result.stdout
        assert await wait_until(lambda: inbox.bodies == [b"hello"], timeout=10)


async def test_publish_and_broadcast_still_succeed(broker_url):
    for args in (["publish", uid("cli.topic"), "1"], ["broadcast", '{"cli": 1}']):
        result = await ctl(broker_url, *args)
        assert result.returncode == 0, result.stderr
        assert '"ok": true' in result.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
async def test_a_timeout_that_is_no_finite_number_of_seconds_is_refused(broker_url, value):
    result = await ctl(broker_url, "--timeout", value, "status", uid("anyone"))
    assert result.returncode == 2, result  # argparse's usage error
    assert "--timeout" in result.stderr and "seconds" in result.stderr
    assert "Future exception" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "accepted"),
    [
        (["ctl", "--timeout", "2.5", "peers"], True),
        (["ctl", "peers", "--wait", "0"], True),
        (["ctl", "peers", "--wait", "nan"], False),
        (["demo", "--seconds", "inf"], False),
        (["gateway", "--call-timeout", "nan"], False),
        (["gateway", "--call-timeout", "1e-3"], True),
    ],
)
def test_every_duration_option_takes_only_finite_seconds(args, accepted, capsys):
    parser = build_parser()
    if accepted:
        parser.parse_args(args)
        return
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(args)
    assert exited.value.code == 2
    assert "seconds" in capsys.readouterr().err
