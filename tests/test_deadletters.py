"""Poison messages and the dead-letter queue: redelivery counts, list, requeue, purge, CLI.

Every test works only on dead letters of its own agents (unique identities), whatever else
sits in the shared `munggoggo.dead-letters`, and removes them before it ends, so the queue
is left as found.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template
from munggoggo._speedups import Properties
from munggoggo.client import Connection
from munggoggo.deadletters import DeadLetters
from munggoggo.wire import (
    DEAD_LETTER_QUEUE,
    REASON_HEADER,
    REQUEUED_FROM_HEADER,
    RETRIES_HEADER,
)

MAX_REDELIVERIES = 3


class Picky(Behaviour):
    """Fails on bodies starting with b"poison" until `fixed`; counts every attempt."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    async def setup(self) -> None:
        self.attempts: dict[bytes, int] = {}
        self.handled: list[bytes] = []
        self.headers: list[dict] = []
        self.fixed = False

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.attempts[msg.body] = self.attempts.get(msg.body, 0) + 1
        if msg.body.startswith(b"poison") and not self.fixed:
            raise RuntimeError(f"cannot digest {msg.body!r}")
        self.handled.append(msg.body)
        self.headers.append(dict(msg.headers))


def poisoned_agent(url: str) -> Agent:
    return Agent(uid("dl"), url=url, config=AgentConfig(max_redeliveries=MAX_REDELIVERIES))


async def dead_letters_of(dead: DeadLetters, agent: str, count: int, timeout: float = 15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await dead.list(10_000, agent=agent)
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            pytest.fail(f"{len(found)} dead letter(s) of {agent} after {timeout}s, not {count}")
        await asyncio.sleep(0.05)


async def queue_depth(agent: Agent, queue: str) -> int:
    ch = await agent.connection.channel(confirms=False)
    try:
        return (await ch.queue_declare(queue, passive=True)).message_count
    finally:
        await ch.close()


async def test_poison_message_dead_lettered_after_n_redeliveries_then_requeued(mesh_url):
    topic = uid("poison")
    agent = poisoned_agent(mesh_url)
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            picky = await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            await agent.publish(b"poison pill", topic)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert letter.reason == "RuntimeError: cannot digest b'poison pill'"
            assert letter.retries == MAX_REDELIVERIES + 1
            assert (letter.agent, letter.behaviour) == (agent.identity, "Picky")
            assert (letter.queue, letter.exchange, letter.routing_key) == (
                picky.queue,
                "munggoggo.topic",
                topic,
            )
            assert letter.age() is not None and letter.age() < 3600
            assert letter.body == b"poison pill"

            # The agent survived the poison and serves the next message; the poison was
            # tried exactly once plus N redeliveries, and is not in its queue any more.
            await agent.publish(b"wholesome", topic)
            assert await wait_until(lambda: b"wholesome" in picky.handled)
            assert picky.attempts[b"poison pill"] == MAX_REDELIVERIES + 1
            assert agent.state == "running" and picky.state == "running"
            assert await queue_depth(agent, picky.queue) == 0

            # Fixed handler: the requeued letter is delivered again, with a fresh count.
            picky.fixed = True
            result = await dead.requeue([letter.id])
            assert result.requeued == [letter.id] and not result.kept and not result.missing
            assert await wait_until(lambda: b"poison pill" in picky.handled)
            headers = picky.headers[picky.handled.index(b"poison pill")]
            assert headers[REQUEUED_FROM_HEADER] == letter.id
            assert RETRIES_HEADER not in headers
            assert picky.attempts[b"poison pill"] == MAX_REDELIVERIES + 2
            assert await dead.list(10_000, agent=agent.identity) == []
            assert sorted(picky.handled) == [b"poison pill", b"wholesome"]  # nothing lost
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_poison_direct_message_in_the_inbox_is_dead_lettered_too(mesh_url):
    agent = poisoned_agent(mesh_url)
    sender = Agent(uid("sender"), url=mesh_url)
    async with agent, sender:
        dead = DeadLetters(agent.connection)
        try:
            picky = await agent.add_behaviour(
                Picky(agent, template=Template(sender=sender.identity))
            )
            await sender.send(agent.identity, b"poison letter")
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert letter.queue == agent.identity
            assert letter.retries == MAX_REDELIVERIES + 1
            await sender.send(agent.identity, b"fine letter")
            assert await wait_until(lambda: b"fine letter" in picky.handled)
            assert picky.attempts[b"poison letter"] == MAX_REDELIVERIES + 1

            picky.fixed = True
            assert (await dead.requeue([letter.id])).requeued == [letter.id]
            assert await wait_until(lambda: b"poison letter" in picky.handled)
        finally:
            await dead.purge(all=True, agent=agent.identity)


@pytest.mark.parametrize("stranger_count", ["lots", [1, 2], -7, 2.5, None])
async def test_a_retry_count_set_by_a_stranger_does_not_break_the_failure_path(
    broker_url, stranger_count
):
    topic = uid("odd")
    agent = poisoned_agent(broker_url)
    async with agent, Connection(broker_url) as conn:
        dead = DeadLetters(agent.connection)
        try:
            picky = await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            ch = await conn.channel()
            props = Properties(headers={RETRIES_HEADER: stranger_count})
            await ch.wait_confirms(ch.publish(b"poison odd", "munggoggo.topic", topic, props))
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert letter.retries == MAX_REDELIVERIES + 1  # counted from zero
            assert picky.attempts[b"poison odd"] == MAX_REDELIVERIES + 1
            assert picky.state == "running"
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_requeue_keeps_a_dead_letter_whose_queue_is_gone(mesh_url):
    topic = uid("gone")
    agent = poisoned_agent(mesh_url)
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            picky = await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            await agent.publish(b"poison orphan", topic)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            await picky.stop()
            channel, tag = agent._consumers.pop(picky.short_name)
            await channel.cancel(tag)
            await channel.queue_delete(picky.queue)

            result = await dead.requeue(all=True, agent=agent.identity)
            assert result.requeued == []
            assert "no longer exists" in result.kept[letter.id]
            assert [d.id for d in await dead.list(10_000, agent=agent.identity)] == [letter.id]

            purged = await dead.purge([letter.id, "no-such-id"])
            assert (purged.purged, purged.ids, purged.missing) == (1, [letter.id], ["no-such-id"])
            assert await dead.list(10_000, agent=agent.identity) == []
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_list_and_a_missing_id_leave_the_queue_as_found(mesh_url):
    topic = uid("keep")
    agent = poisoned_agent(mesh_url)
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            for i in range(3):
                await agent.publish(f"poison {i}".encode(), topic)
            first = await dead_letters_of(dead, agent.identity, 3)
            depth = await queue_depth(agent, DEAD_LETTER_QUEUE)
            again = await dead.list(10_000, agent=agent.identity)
            assert [d.id for d in again] == [d.id for d in first]  # same letters, same order
            assert len({d.id for d in first}) == 3
            assert [d.body for d in await dead.list(2, agent=agent.identity)] == [
                d.body for d in first[:2]
            ]
            result = await dead.requeue(["not-a-dead-letter"])
            assert (result.requeued, result.kept, result.missing) == ([], {}, ["not-a-dead-letter"])
            assert await queue_depth(agent, DEAD_LETTER_QUEUE) == depth
            with pytest.raises(ValueError, match="either by id or with all"):
                await dead.requeue()
            with pytest.raises(ValueError, match="either by id or with all"):
                await dead.purge(["x"], all=True)
        finally:
            await dead.purge(all=True, agent=agent.identity)
        assert await dead.list(10_000, agent=agent.identity) == []


async def test_get_fetches_one_letter_with_body_and_headers_and_leaves_the_queue_as_found(
    mesh_url,
):
    topic = uid("get")
    agent = poisoned_agent(mesh_url)
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            for i in range(3):
                await agent.publish(f"poison {i}".encode(), topic)
            first = await dead_letters_of(dead, agent.identity, 3)
            middle = await dead.get(first[1].id)
            assert middle is not None
            assert (middle.id, middle.body) == (first[1].id, b"poison 1")
            assert middle.headers[REASON_HEADER] == middle.reason
            assert await dead.get("not-a-dead-letter") is None
            # Nothing taken, nothing moved.
            again = await dead.list(10_000, agent=agent.identity)
            assert [d.id for d in again] == [d.id for d in first]
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_broker_dead_letters_are_read_from_x_death(broker_url):
    """A message RabbitMQ itself dead-lettered (rejected without requeue) is listed with the
    broker's reason and requeued to the queue it died in."""
    async with Connection(broker_url) as conn:
        ch = await conn.channel()
        queue = uid("test.dl.rejecting")
        await ch.queue_declare(
            queue, durable=True, arguments={"x-dead-letter-exchange": "munggoggo.dlx"}
        )
        dead = DeadLetters(conn)
        try:
            marker = uid("marker").encode()
            await ch.wait_confirms(ch.publish(marker, "", queue))
            got = await ch.get(queue)
            ch.reject(got.delivery_tag, requeue=False)

            async def mine():
                return [d for d in await dead.list(10_000) if d.body == marker]

            assert await wait_until(mine, interval=0.05)
            (letter,) = await mine()
            assert (letter.reason, letter.queue, letter.retries) == ("broker: rejected", queue, 1)
            assert letter.agent is None and letter.dead_lettered_at is not None
            assert (await dead.requeue([letter.id])).requeued == [letter.id]
            back = await ch.get(queue, no_ack=True)
            assert back is not None and back.body == marker
            assert "x-death" not in back.properties.headers
            assert await mine() == []
        finally:
            await ch.queue_delete(queue)


async def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "munggoggo",
        "--url",
        url,
        "ctl",
        "dead-letters",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_ctl_dead_letters_list_requeue_purge(broker_url):
    topic = uid("cli")
    agent = poisoned_agent(broker_url)
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            picky = await agent.add_behaviour(Picky(agent, binding_keys=[topic]))
            await agent.publish(b"poison one", topic)
            await agent.publish(b"poison two", topic)
            one, two = await dead_letters_of(dead, agent.identity, 2)

            code, out, err = await run_cli(broker_url, "list", "--agent", agent.identity)
            assert code == 0, err
            header, *rows = out.splitlines()
            assert header.split()[:4] == ["ID", "AGE", "RETRIES", "AGENT/BEHAVIOUR"]
            assert [r.split()[0] for r in rows] == [one.id, two.id]
            assert f"{agent.identity}/Picky" in rows[0] and picky.queue in rows[0]
            assert rows[0].split()[2] == str(MAX_REDELIVERIES + 1)
            assert "RuntimeError: cannot digest b'poison one'" in rows[0]

            code, out, _ = await run_cli(broker_url, "list", "--agent", agent.identity, "--json")
            assert code == 0 and out.count("\n") == 2 and f'"id": "{one.id}"' in out

            picky.fixed = True
            code, out, _ = await run_cli(broker_url, "requeue", "--id", one.id, "--id", "nope")
            assert code == 1  # one id was not found
            assert f"requeued 1 dead letter(s)\n  {one.id}\nnot found: nope" in out
            assert await wait_until(lambda: b"poison one" in picky.handled)

            code, out, _ = await run_cli(broker_url, "purge", "--id", two.id)
            assert (code, out.strip()) == (0, "purged 1 dead letter(s)")
            assert await dead.list(10_000, agent=agent.identity) == []
            assert b"poison two" not in picky.handled

            # A usage error (argparse's exit status 2; its wording is argparse's) naming
            # our two ways to choose, and nothing done.
            code, out, err = await run_cli(broker_url, "requeue")
            assert (code, out) == (2, "")
            assert "--id" in err and "--all" in err
        finally:
            await dead.purge(all=True, agent=agent.identity)
