"""The agent's inbox `<identity>`: a durable queue the agent consumes exclusively.

- A connection blip loses no direct message or RPC request the broker confirmed to its
  sender: the queue stays while the agent reconnects (it used to be exclusive, and went
  with the connection).
- The exclusive consumer is the identity lock: a second agent with the same identity
  fails at start.
- A clean stop deletes an empty inbox, so later sends are refused as unknown at once.
- An inbox deleted under a running agent is declared and consumed again.
- No queue of the topology is both non-durable and non-exclusive (RabbitMQ 4.3 refuses
  those); memory:// refuses them too.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import rabbitmqctl, wait_until
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, IdentityInUse, RpcError, Template, expose
from munggoggo.amqp.errors import BrokerError
from munggoggo.client import Connection
from munggoggo.durable import QueueMismatch
from munggoggo.memory import MemoryConnection
from munggoggo.testing import FaultProxy, broker_address

pytestmark = pytest.mark.timeout(90)


class Inbox(BodyCollector):
    """Keeps the bodies of the direct messages its template lets through."""


class Receiver(Agent):
    async def setup(self) -> None:
        await self.add_behaviour(Inbox(self, template=Template(kind="message")))

    @expose
    def mul(self, a: int, b: int) -> int:
        return a * b


async def test_a_blip_loses_no_confirmed_direct_message_or_rpc_request(broker_url):
    async with FaultProxy(upstream=broker_address()) as proxy:
        receiver = Receiver(uid("blip-rx"), url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        async with receiver, Agent(uid("blip-tx"), url=broker_url) as sender:
            failures: list = []
            sender.on_publish_failure = failures.extend
            proxy.refuse()  # the receiver cannot reconnect until accept()
            assert proxy.cut() == 1
            assert await wait_until(lambda: not receiver.connection.is_open)
            for i in range(20):
                await sender.send(receiver.identity, f"m{i}".encode())
            call = asyncio.ensure_future(sender.call(receiver.identity, "mul", 6, 7, timeout=30))
            await sender.flush(timeout=10)  # the broker took them all: the inbox is there
            assert failures == []
            await asyncio.sleep(0.2)
            assert not call.done()
            await proxy.accept()
            assert await call == 42
            inbox = receiver.behaviours["Inbox"]
            assert await wait_until(lambda: len(inbox.bodies) == 20, timeout=20)
            assert inbox.bodies == [f"m{i}".encode() for i in range(20)]
            assert receiver.connection.reconnects == 1


async def test_a_second_agent_with_the_same_identity_fails_at_start(mesh_url):
    identity = uid("twin")
    async with Receiver(identity, url=mesh_url) as first:
        second = Agent(identity, url=mesh_url)
        with pytest.raises(IdentityInUse) as info:
            await second.start()
        assert str(info.value).startswith(f"agent identity {identity!r} is already in use")
        assert second.state == "stopped"
        # The first one still has its inbox and answers.
        async with Agent(uid("twin-caller"), url=mesh_url) as caller:
            assert await caller.call(identity, "mul", 2, 3) == 6
        assert first.state == "running"


async def test_a_clean_stop_deletes_the_empty_inbox(mesh_url):
    identity = uid("gone")
    async with Agent(uid("gone-caller"), url=mesh_url) as caller:
        async with Receiver(identity, url=mesh_url):
            assert await caller.call(identity, "mul", 3, 3) == 9
        with pytest.raises(RpcError) as info:
            await caller.call(identity, "mul", 3, 3, timeout=5)
        assert info.value.code == -32001  # unknown agent, at once: nothing routes there


async def test_a_deleted_inbox_is_declared_and_consumed_again(mesh_url):
    identity = uid("phoenix")
    async with Receiver(identity, url=mesh_url) as receiver:
        connection = (
            MemoryConnection(mesh_url) if mesh_url.startswith("memory://") else Connection(mesh_url)
        )
        async with connection as admin:
            ch = await admin.channel(confirms=False)
            await ch.queue_delete(identity)
        async with Agent(uid("phoenix-caller"), url=mesh_url) as caller:
            for _ in range(100):  # until the inbox is back
                try:
                    assert await caller.call(identity, "mul", 4, 5, timeout=2) == 20
                    break
                except RpcError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the agent did not consume a new inbox")
        assert receiver.state == "running"


async def test_the_inbox_is_durable_and_consumed_exclusively(broker_url):
    identity = uid("props")
    async with Receiver(identity, url=broker_url):
        queues = rabbitmqctl(
            "list_queues", "name", "durable", "exclusive", "exclusive_consumer_tag", "arguments"
        )
        row = next(line.split("\t") for line in queues.splitlines() if line.startswith(identity))
        assert row[:3] == [identity, "true", "false"], row
        assert row[3], row  # an exclusive consumer holds it
        assert "x-expires" in row[4] and "munggoggo.dlx" in row[4], row


async def test_no_queue_of_an_agent_is_transient_and_not_exclusive(broker_url):
    """RabbitMQ 4.3 refuses such queues by default: the inbox, behaviour queues and shared
    queues are durable (or exclusive)."""
    identity = uid("topo")
    async with Receiver(identity, url=broker_url) as agent:
        await agent.add_behaviour(Inbox(agent, name="topics", binding_keys=[uid("k")]))
        await agent.add_behaviour(
            Inbox(agent, name="shared", binding_keys=[uid("k")], queue=uid("shared-q"))
        )
        rows = [
            line.split("\t")
            for line in rabbitmqctl("list_queues", "name", "durable", "exclusive").splitlines()
        ]
        ours = {name: (d, e) for name, d, e in rows if name.startswith(identity)}
        ours.update({n: (d, e) for n, d, e in rows if n == agent.behaviours["shared"].queue})
        assert len(ours) == 3, ours
        assert all(durable == "true" or exclusive == "true" for durable, exclusive in ours.values())


async def test_memory_refuses_a_transient_non_exclusive_queue():
    url = f"memory://{uid('refuse')}"
    async with MemoryConnection(url) as conn:
        ch = await conn.channel(confirms=False)
        for kwargs in ({}, {"auto_delete": True}):
            with pytest.raises(BrokerError) as info:
                await ch.queue_declare(uid("transient"), **kwargs)
            assert info.value.reply_code == 541
        # Durable or exclusive queues are fine.
        await ch.queue_declare(uid("durable"), durable=True)
        await ch.queue_declare(uid("exclusive"), exclusive=True)


async def test_an_empty_behaviour_queue_left_non_durable_is_replaced(broker_url):
    """A behaviour queue an older version declared non-durable (possible on RabbitMQ 3.10)
    is replaced when empty; one holding messages is a QueueMismatch that names it."""
    identity = uid("legacy")
    async with Connection(broker_url) as admin:
        ch = await admin.channel(confirms=False)
        try:
            await ch.queue_declare(f"{identity}.Empty", arguments={"x-expires": 60000})
        except BrokerError as exc:  # a broker that denies transient non-exclusive queues
            pytest.skip(f"this broker cannot create the old kind of queue ({exc.reply_code})")
        await ch.queue_declare(f"{identity}.Full", arguments={"x-expires": 60000})
        pub = await admin.channel()
        pub.publish(b"old", exchange="", routing_key=f"{identity}.Full")
        await pub.wait_confirms()
        async with Agent(identity, url=broker_url) as agent:
            empty = await agent.add_behaviour(Inbox(agent, name="Empty", binding_keys=["x"]))
            assert empty.queue == f"{identity}.Empty"
            with pytest.raises(QueueMismatch) as info:
                await agent.add_behaviour(Inbox(agent, name="Full", binding_keys=["x"]))
            assert f"{identity}.Full" in str(info.value)
        await ch.queue_delete(f"{identity}.Full")
