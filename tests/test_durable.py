"""Durable mode (`AgentConfig(queue_type="quorum")`) on RabbitMQ, and on memory://.

- What is declared: quorum behaviour queues (durable, `x-queue-type`, `x-expires`, the DLX)
  next to the classic durable inbox; transient mode declares durable classic queues for
  its non-persistent messages. Checked with `rabbitmqctl list_queues`, not with our own
  client.
- Persistence: durable-mode messages are persistent and survive a broker restart
  (stop_app / start_app under the broker fault lock) both in the agent's quorum queue and in
  a durable classic queue, where a transient agent's messages do not (its queue comes back
  empty).
- A queue left by the other mode is a `QueueMismatch` naming the queue and the fix.
- `munggoggo.dead-letters` is taken with the type it has: classic on the shared vhost,
  quorum in a throwaway vhost where a durable-mode agent came first.
- memory:// accepts the durable configuration and behaves the same minus persistence, and
  refuses quorum queues that are exclusive, transient or auto-delete as RabbitMQ does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from broker_tools import eventually, wait_until
from fault_tools import delete_queues
from mesh_tools import Calc, MessageCollector, uid
from tls_broker import rabbitmqctl_patiently as rabbitmqctl

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, durable
from munggoggo.amqp.errors import BrokerError, PreconditionFailed
from munggoggo.client import Connection
from munggoggo.deadletters import DeadLetters
from munggoggo.durable import QueueMismatch
from munggoggo.testing.broker_faults import BrokerFaultLock, start_app, stop_app
from munggoggo.wire import DEAD_LETTER_QUEUE, TOPIC_EXCHANGE

DURABLE = AgentConfig(queue_type="quorum")


def queue_info(name: str, vhost: str = "/") -> dict | None:
    """The broker's own view of a queue (type, durable, exclusive, arguments), or None."""
    out = rabbitmqctl(
        "list_queues",
        "-p",
        vhost,
        "name",
        "type",
        "durable",
        "exclusive",
        "auto_delete",
        "arguments",
        "--formatter",
        "json",
    )
    for q in json.loads(out):
        if q["name"] == name:
            q["arguments"] = {key: value for key, _type, value in q["arguments"]}
            return q
    return None


class Collector(MessageCollector):
    """Keeps what it receives; its queue is `<identity>.Collector`."""


class Flaky(Behaviour):
    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            raise RuntimeError("cannot handle it")


def test_queue_type_setting():
    assert AgentConfig().queue_type == "transient" and not AgentConfig().durable
    assert AgentConfig(queue_type=None).queue_type == "transient"
    assert AgentConfig(queue_type="classic").queue_type == "transient"
    assert DURABLE.durable
    with pytest.raises(ValueError, match="unknown queue type 'stream'"):
        AgentConfig(queue_type="stream")


def test_queue_type_from_the_environment(monkeypatch):
    monkeypatch.setenv("MUNGGOGGO_QUEUE_TYPE", "quorum")
    assert AgentConfig().durable
    assert not AgentConfig(queue_type="transient").durable  # explicit wins


async def test_durable_mode_declares_quorum_queues_and_publishes_persistent(broker_url):
    rx = Agent(uid("durable-rx"), url=broker_url, config=DURABLE)
    tx = Agent(uid("durable-tx"), url=broker_url, config=DURABLE)
    key = uid("durable.key")
    queue = ""
    try:
        async with rx, tx:
            b = await rx.add_behaviour(Collector(rx, binding_keys=[key]))
            queue = b.queue
            for i in range(3):
                await tx.publish(i, key)
            await tx.send(rx.identity, "direct")  # into the inbox: no behaviour wants it
            await tx.flush(timeout=10)
            assert await wait_until(lambda: len(b.got) == 3, timeout=10)
            assert [m.decode(int) for m in b.got] == [0, 1, 2]
            assert {m.delivery.properties.delivery_mode for m in b.got} == {2}

            info = queue_info(queue)
            assert info is not None
            assert info["type"] == "quorum" and info["durable"] and not info["exclusive"]
            assert info["arguments"]["x-queue-type"] == "quorum"
            assert info["arguments"]["x-expires"] == DURABLE.behaviour_queue_expires_ms
            assert info["arguments"]["x-dead-letter-exchange"] == "munggoggo.dlx"
            inbox = queue_info(rx.identity)
            assert inbox is not None
            # The inbox is the same in both modes: classic, durable, not exclusive (the
            # agent's exclusive consumer is the identity lock).
            assert inbox["type"] == "classic" and inbox["durable"] and not inbox["exclusive"]
            # RPC requests and replies go through the inbox as before.
            assert await tx.call(rx.identity, "ping") == "pong"
            # The direct message was dead-lettered (no template wants it): take it out of
            # the shared munggoggo.dead-letters again.
            purged = 0
            for _ in range(50):
                result = await DeadLetters(rx.connection).purge(all=True, agent=rx.identity)
                purged += result.purged
                if purged:
                    break
                await asyncio.sleep(0.1)
            assert purged == 1
    finally:
        if queue:
            await delete_queues(broker_url, queue)


async def test_munggoggo_run_queue_type_flag(broker_url):
    """`munggoggo run ... --queue-type quorum` gives the agent class quorum queues (the
    class itself sets no config), and the agent drains and exits on SIGTERM."""
    identity = uid("cli-durable")
    tests_dir = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(tests_dir), "MUNGGOGGO_URL": broker_url}
    env.pop("MUNGGOGGO_QUEUE_TYPE", None)
    command = [sys.executable, "-m", "munggoggo", "run", "process_agents:Worker"]
    proc = subprocess.Popen(
        [*command, "--identity", identity, "--queue-type", "quorum"],
        cwd=tests_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    queue = f"{identity}.Work"
    try:
        info = None
        for _ in range(100):
            info = await asyncio.to_thread(queue_info, queue)
            if info is not None or proc.poll() is not None:
                break
            await asyncio.sleep(0.2)
        assert info is not None, proc.stderr.read().decode() if proc.poll() is not None else ""
        assert info["type"] == "quorum" and info["durable"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await delete_queues(broker_url, queue)


async def test_transient_mode_declares_durable_classic_queues_for_transient_messages(broker_url):
    """No queue may be non-durable and non-exclusive (RabbitMQ 4.3): the default mode's
    behaviour queues are durable classic queues, its messages non-persistent."""
    rx = Agent(uid("transient-rx"), url=broker_url)
    key = uid("transient.key")
    async with rx:
        b = await rx.add_behaviour(Collector(rx, binding_keys=[key]))
        await rx.publish(b"x", key)
        assert await wait_until(lambda: len(b.got) == 1, timeout=10)
        assert b.got[0].delivery.properties.delivery_mode is None
        info = queue_info(b.queue)
        assert info is not None
        assert info["type"] == "classic" and info["durable"] and not info["exclusive"]
        # We send no x-queue-type for classic queues (3.10 compares it on redeclare);
        # RabbitMQ 4 records `classic` there by itself.
        assert info["arguments"].get("x-queue-type", "classic") == "classic"
        await delete_queues(broker_url, b.queue)


@pytest.mark.fault
async def test_only_durable_mode_messages_survive_a_broker_restart(broker_url):
    """Both modes' messages wait in queues while the broker restarts: in the agents' own
    behaviour queues (nobody consuming) and in durable classic queues (declared by hand)."""
    n = 300
    rid = uuid.uuid4().hex[:8]
    long_lived = 300_000  # the queues must outlive the restart whatever the suite sets
    durable = AgentConfig(queue_type="quorum", behaviour_queue_expires_ms=long_lived)
    transient = AgentConfig(behaviour_queue_expires_ms=long_lived)
    keys = {mode: f"test.durable.{mode}.{rid}" for mode in ("quorum", "transient")}
    classic = {mode: f"test.durable.classic.{mode}.{rid}" for mode in keys}
    rx_ids = {mode: f"restart-rx-{mode}-{rid}" for mode in keys}
    configs = {"quorum": durable, "transient": transient}
    own_queues = []
    async with Connection(broker_url, reconnect=False) as admin:
        ch = await admin.channel(confirms=False)
        for mode, queue in classic.items():
            await ch.queue_declare(queue, durable=True)
            await ch.queue_bind(queue, TOPIC_EXCHANGE, keys[mode] + ".classic")
    try:
        for mode, config in configs.items():
            # The receiver subscribes, then stops: its queue stays and fills up.
            async with Agent(rx_ids[mode], url=broker_url, config=config) as rx:
                b = await rx.add_behaviour(Collector(rx, binding_keys=[keys[mode]]))
                own_queues.append(b.queue)
            async with Agent(uid("restart-tx"), url=broker_url, config=config) as tx:
                for i in range(n):
                    await tx.publish(i, keys[mode])
                    await tx.publish(i, keys[mode] + ".classic")
                await tx.flush(timeout=30)  # every message confirmed before the restart

        async with BrokerFaultLock():
            try:
                await asyncio.to_thread(stop_app)
            finally:
                await asyncio.to_thread(start_app)

        async with Connection(broker_url, reconnect=False) as admin:
            ch = await admin.channel(confirms=False)
            counts = {
                mode: (await ch.queue_declare(queue, passive=True)).message_count
                for mode, queue in classic.items()
            }
            assert counts == {"quorum": n, "transient": 0}  # persistent vs not
            # The transient agent's queue (durable) is back, without its messages.
            transient_left = await ch.queue_declare(own_queues[1], passive=True)
            assert transient_left.message_count == 0

        # The durable receiver comes back and finds everything in its quorum queue.
        async with Agent(rx_ids["quorum"], url=broker_url, config=durable) as rx:
            b = await rx.add_behaviour(Collector(rx, binding_keys=[keys["quorum"]]))
            await eventually(lambda: len(b.got) >= n, 30, "the durable backlog consumed")
            await asyncio.sleep(0.3)  # duplicates would show up now
            assert sorted(m.decode(int) for m in b.got) == list(range(n))
    finally:
        await delete_queues(broker_url, *classic.values(), *own_queues)


async def test_a_queue_left_by_the_other_mode_is_a_clear_error(mesh_url):
    identity = uid("mismatch")
    key = uid("mismatch.key")
    queue = f"{identity}.Collector"
    try:
        for first, second in ((AgentConfig(), DURABLE), (DURABLE, AgentConfig())):
            async with Agent(identity, url=mesh_url, config=first) as agent:
                await agent.add_behaviour(Collector(agent, binding_keys=[key]))
            async with Agent(identity, url=mesh_url, config=second) as agent:
                with pytest.raises(QueueMismatch) as caught:
                    await agent.add_behaviour(Collector(agent, binding_keys=[key]))
                text = str(caught.value)
                # What differs is in the broker's words; the refused method is the spec's.
                assert (caught.value.class_id, caught.value.method_id) == (50, 10)
                assert text.endswith("(in reply to Queue.Declare)")
                assert f"declares queue {queue!r} as a " in text
                assert f"AgentConfig.queue_type={second.queue_type!r}" in text
                assert f"rabbitmqctl delete_queue {queue}" in text
                assert isinstance(caught.value, PreconditionFailed)
                # The refusal closed only that channel: the agent still works.
                assert await agent.call(agent.identity, "ping") == "pong"
                await (await agent.connection.channel(confirms=False)).queue_delete(queue)
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


async def test_durable_mode_on_memory_behaves_the_same(mesh_url):
    """Pub/sub, RPC, retry and dead-lettering with the durable configuration: the same
    outcome on RabbitMQ and on memory:// (which keeps nothing across processes anyway)."""
    calc = Calc(uid("calc"), url=mesh_url, config=DURABLE)
    agent = Agent(uid("durable-agent"), url=mesh_url, config=DURABLE)
    key, poison = uid("conf.key"), uid("conf.poison")
    async with calc, agent:
        b = await agent.add_behaviour(Collector(agent, binding_keys=[key]))
        flaky = await agent.add_behaviour(Flaky(agent, binding_keys=[poison]))
        await calc.publish({"n": 1}, key)
        assert await wait_until(lambda: len(b.got) == 1, timeout=10)
        assert b.got[0].decode() == {"n": 1}
        assert b.got[0].delivery.properties.delivery_mode == 2
        assert await agent.call(calc.identity, "mul", 6, 7) == 42

        letters = DeadLetters(agent.connection)
        await calc.publish(b"poison", poison)

        for _ in range(100):
            found = await letters.list(agent=agent.identity)
            if found:
                break
            await asyncio.sleep(0.1)
        assert [letter.queue for letter in found] == [flaky.queue]
        assert (await letters.purge(all=True, agent=agent.identity)).purged == 1
    if not mesh_url.startswith("memory://"):
        await delete_queues(mesh_url, b.queue, flaky.queue)


@pytest.mark.parametrize(
    "properties, problem",
    [
        ({"exclusive": True}, "exclusive-owner"),
        ({"durable": False}, "non-durable"),
        ({"auto_delete": True}, "auto-delete"),
    ],
)
async def test_quorum_queues_refuse_what_they_cannot_be(mesh_url, properties, problem):
    name = uid("test.quorum")
    kwargs = {"durable": True, **properties}
    memory = mesh_url.startswith("memory://")
    async with Agent(uid("quorum-refusals"), url=mesh_url) as agent:
        ch = await agent.connection.channel(confirms=False)
        with pytest.raises(BrokerError) as caught:
            await ch.queue_declare(name, arguments={"x-queue-type": "quorum"}, **kwargs)
        error = caught.value
        assert (error.class_id, error.method_id) == (50, 10)
        if problem == "non-durable":
            # A non-durable, non-exclusive queue: RabbitMQ 4.3 (and memory://, which
            # follows it) refuses the kind of queue before its type (541); 3.10 says 406.
            assert error.reply_code in ((541,) if memory else (406, 541))
        else:
            assert error.reply_code == 406 and isinstance(error, PreconditionFailed)
        if error.reply_code == 406:
            assert str(error) == (
                f"channel closed by broker: 406 {error.reply_text} (in reply to Queue.Declare)"
            )
            if memory:
                # The memory broker's own text (RabbitMQ's is the broker's to word).
                assert f"invalid property '{problem}' for queue '{name}'" in error.reply_text


async def test_durable_agent_takes_the_classic_dead_letter_queue_with_a_warning(
    broker_url, caplog, monkeypatch
):
    caplog.set_level(logging.WARNING, logger="munggoggo.durable")
    monkeypatch.setattr(durable, "_warned_classic_dlq", False)  # once per process
    assert queue_info(DEAD_LETTER_QUEUE)["type"] == "classic"  # the shared vhost's
    async with Agent(uid("durable-dlq"), url=broker_url, config=DURABLE) as agent:
        assert agent.state == "running"
    assert any("is a classic queue" in r.getMessage() for r in caplog.records)


async def test_both_modes_share_a_quorum_dead_letter_queue(broker_url):
    """In a fresh vhost a durable-mode agent creates munggoggo.dead-letters as a quorum
    queue; a transient agent then starts, dead-letters into it, and ctl's reader works."""
    vhost = uid("mg-durable")
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = broker_url.rstrip("/") + "/" + quote(vhost, safe="")
        async with Agent(uid("durable-first"), url=url, config=DURABLE):
            info = queue_info(DEAD_LETTER_QUEUE, vhost)
            assert info["type"] == "quorum" and info["durable"]
        agent = Agent(uid("transient-second"), url=url, config=AgentConfig(max_redeliveries=0))
        async with agent:
            flaky = await agent.add_behaviour(Flaky(agent, binding_keys=["poison"]))
            await agent.publish(b"poison", "poison")
            letters = DeadLetters(agent.connection)
            for _ in range(100):
                found = await letters.list()
                if found:
                    break
                await asyncio.sleep(0.1)
            assert [letter.queue for letter in found] == [flaky.queue]
        assert queue_info(DEAD_LETTER_QUEUE, vhost)["type"] == "quorum"
    finally:
        rabbitmqctl("delete_vhost", vhost)
