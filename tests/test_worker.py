"""The original munggoggo's spellings: `Core` (the agent class), `Worker(...)
.execute_from_commandline()` (the runner) and `Core(identity, config={...})`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest

from munggoggo import Agent, AgentConfig, Core, Worker

pytestmark = pytest.mark.timeout(60)


def test_core_is_agent():
    assert Core is Agent


def test_worker_takes_agents_and_lists_of_agents():
    a, b, c = Agent("w-a"), Agent("w-b"), Agent("w-c")
    assert Worker(a).agents == [a]
    assert Worker(a, b).agents == [a, b]
    assert Worker([a, b], c).agents == [a, b, c]
    assert Worker((a,), loglevel="debug").loglevel == 10
    assert Worker(a, loglevel="WARNING").loglevel == 30


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "says"),
    [
        ((), {}, ValueError, "at least one agent"),
        (("w-a",), {}, TypeError, "agents or lists of agents, got str"),
        (([1],), {}, TypeError, "agents or lists of agents, got int"),
        ((None,), {}, TypeError, "agents or lists of agents, got NoneType"),
        ((Agent("w-d"),), {"loglevel": "loud"}, ValueError, "unknown log level 'loud'"),
    ],
)
def test_worker_refuses_what_it_cannot_run(args, kwargs, error, says):
    with pytest.raises(error) as info:
        Worker(*args, **kwargs)
    assert says in str(info.value)


def test_a_config_dict_maps_onto_agent_config_fields():
    agent = Core("cfg", config={"PREFETCH": 7, "rpc_timeout": 1.5, "Max_Redeliveries": 0})
    assert agent.config == AgentConfig(prefetch=7, rpc_timeout=1.5, max_redeliveries=0)
    assert Core("cfg-empty", config={}).config == AgentConfig()


def test_an_unknown_config_key_names_the_accepted_ones():
    with pytest.raises(ValueError) as info:
        Core("cfg", config={"prefetchh": 1})
    message = str(info.value)
    assert message.startswith("unknown agent config key 'prefetchh'")
    assert "prefetch, prefetch_budget" in message and "queue_type" in message
    # The original's one key says where its job went.
    with pytest.raises(ValueError, match=r"await agent\.peers\(\)"):
        Core("cfg", config={"UPDATE_PEER_INTERVAL": 1.0})


@pytest.mark.parametrize("config", [5, "prefetch=1", ["prefetch"]])
def test_a_config_of_another_type_is_a_type_error(config):
    with pytest.raises(TypeError, match="AgentConfig or a dict of its fields"):
        Core("cfg", config=config)


def test_a_config_dict_with_a_bad_value_is_refused():
    with pytest.raises(ValueError):
        Core("cfg", config={"queue_type": "no-such-type"})


async def run_program(code: str, url: str, stop_after_line: str | None) -> tuple[int, str, str]:
    """Run `code` as a program; SIGTERM it after it printed `stop_after_line`."""
    env = dict(os.environ, MUNGGOGGO_URL=url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(code),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out: list[str] = []
    if stop_after_line is not None:
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not raw:
                break
            out.append(raw.decode())
            if raw.decode().strip() == stop_after_line:
                proc.send_signal(signal.SIGTERM)
                break
    rest, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, "".join(out) + rest.decode(), err.decode()


TWO_AGENTS = """
    import asyncio
    from munggoggo import Behaviour, Core, Worker

    class Talker(Core):
        class Say(Behaviour):
            async def run(self):
                msg = await self.receive()
                if msg:
                    print(f"{self.name} got {msg.body.decode()}")
                await self.publish(self.agent.identity, "talk")
                await asyncio.sleep(0.2)

        async def setup(self):
            await self.add_runtime_dependency(self.Say(self, binding_keys=["talk"]))

    Worker([Talker("talker-a"), Talker("talker-b")], loglevel="info").execute_from_commandline()
"""


async def test_worker_runs_a_list_of_agents_until_sigterm():
    code, out, err = await run_program(TWO_AGENTS, "memory://worker", "talker-b.Say got talker-a")
    assert code == 0, err
    assert "talker-b.Say got talker-a" in out
    assert "agent talker-a stopped" in err and "agent talker-b stopped" in err
    assert "Traceback" not in err, err


async def test_worker_exits_1_with_one_line_when_an_agent_cannot_start():
    program = """
        from munggoggo import Core, Worker
        Worker(Core("no-broker"), loglevel="info").execute_from_commandline()
    """
    code, _, err = await run_program(program, "amqp://guest:guest@127.0.0.1:1/", None)
    assert code == 1
    assert "agents could not start: cannot connect to amqp://127.0.0.1:1/" in err
    assert "Traceback" not in err, err
