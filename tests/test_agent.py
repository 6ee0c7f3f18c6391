"""core/agent.py: the agent's own contract, on RabbitMQ and memory://.

One identity per running agent (a second one fails clearly, the identity is free again
once the first stopped), what an agent tells about itself (describe, behaviour lookup),
the control plane over RPC (status, stop and start a behaviour, traces), and the sequence
numbers publishes return, which the failure hook reports.

Messaging between agents (routing, copies, broadcast, retries and dead letters) is
tests/test_conformance.py's; adding behaviours is test_add_behaviour.py's, stopping while
starting test_stop_during_start.py's, the inbox test_inbox.py's.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from broker_tools import wait_until
from mesh_tools import Calc, MessageCollector, uid

from munggoggo import Agent, RpcError


async def test_an_agent_describes_its_methods_and_behaviours(mesh_url):
    async with Calc(uid("calc"), url=mesh_url) as calc:
        info = calc.describe()
        assert info["identity"] == calc.identity and info["state"] == "running"
        assert {"mul", "subtract", "ping", "status"} <= set(info["methods"])
        assert "not_exposed" not in info["methods"]
        assert [b["name"] for b in info["behaviours"]] == ["Recorder"]
        assert calc.behaviour("Recorder") is calc.behaviours["Recorder"]
        with pytest.raises(KeyError, match=f"agent '{calc.identity}' has no behaviour 'nope'"):
            calc.behaviour("nope")


async def test_second_agent_with_the_same_identity_fails_clearly(mesh_url):
    from munggoggo import IdentityInUse

    name = uid("twin")
    first = Agent(name, url=mesh_url)
    async with first:
        with pytest.raises(IdentityInUse) as info:
            await Agent(name, url=mesh_url).start()
        assert name in str(info.value)
    # Once the first is gone the identity is free again.
    async with Agent(name, url=mesh_url) as again:
        assert again.state == "running"


async def test_control_plane_over_rpc(mesh_url):
    agent = Agent(uid("ctl-target"), url=mesh_url)
    ctl = Agent(uid("ctl"), url=mesh_url)
    async with agent, ctl:
        topic = uid("t")
        worker = await agent.add_behaviour(
            MessageCollector(agent, binding_keys=[topic], name="worker")
        )
        peers = await ctl.peers(timeout=0.5)
        assert agent.identity in [p["identity"] for p in peers]
        assert ctl.identity not in [p["identity"] for p in peers]
        status = await ctl.call(agent.identity, "status")
        assert status["identity"] == agent.identity and status["connected"] is True
        stopped = await ctl.call(agent.identity, "stop_behaviour", "worker")
        assert stopped["state"] == "stopped"
        # A stopped behaviour does not consume: new messages wait ready in its queue.
        for i in range(3):
            await ctl.publish(str(i), topic)
        await ctl.flush(timeout=5)
        probe = await ctl.connection.channel()

        async def ready() -> int:
            return (await probe.queue_declare(worker.queue, passive=True)).message_count

        for _ in range(100):
            if await ready() == 3:
                break
            await asyncio.sleep(0.02)
        assert await ready() == 3 and worker.got == []
        started = await ctl.call(agent.identity, "start_behaviour", "worker")
        assert started["state"] == "running"
        assert await wait_until(lambda: sorted(m.body for m in worker.got) == [b"0", b"1", b"2"])
        with pytest.raises(RpcError) as info:
            await ctl.call(agent.identity, "stop_behaviour", "nope")
        assert "no behaviour 'nope'" in info.value.message
        traces = await ctl.call(agent.identity, "traces", 50)
        assert any(t["kind"] == "rpc" and t["direction"] == "out" for t in traces)


async def test_publishes_return_sequence_numbers_the_failure_hook_reports(mesh_url):
    agent = Agent(uid("seq"), url=mesh_url)
    async with agent:
        nobody = f"seq.{uuid.uuid4().hex[:6]}"  # no subscriber: nothing to clean up
        first = await agent.publish(b"a", nobody)
        second = await agent.broadcast(b"b")  # every agent acks a broadcast it has no use for
        assert second == first + 1
        reported: list = []
        agent.on_publish_failure = reported.extend
        failure = (second + 1, RuntimeError("never confirmed"))
        agent._pub.on_publish_failure([failure])  # what the channel calls after a loss
        assert reported == [failure]
