"""A waiter for one publish gets that publish's fate, not an earlier publish's failure.

The broker nacks a publish to a queue that refuses it (x-overflow=reject-publish with no
room). A later publish's own waiter (`wait_confirm_of`) succeeds; `wait_confirms` still
reports the nack. An agent's dead-letter handoff waits for its copy this way, so an
unrelated nacked send never puts the original back in the queue. RabbitMQ and memory://.
"""

from __future__ import annotations

import pytest
from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import Agent
from munggoggo.agent import open_connection
from munggoggo.channel import PublishError, PublishNacked
from munggoggo.deadletters import DeadLetters
from munggoggo.url import parse_urls

REFUSING = {"x-overflow": "reject-publish", "x-max-length": 0, "x-expires": 60_000}


async def test_a_later_publish_waiter_is_not_failed_by_an_earlier_nack(mesh_url):
    conn = await open_connection(parse_urls(mesh_url), name="confirm-of")
    try:
        ch = await conn.channel()
        full = uid("test.full")
        await ch.queue_declare(full, durable=True, arguments=REFUSING)
        fine = (await ch.queue_declare("", exclusive=True)).queue
        nacked = ch.publish(b"no room", "", full)
        later = ch.publish(b"fits", "", fine)
        await ch.wait_confirm_of(later, timeout=10)
        with pytest.raises(PublishError) as info:
            await ch.wait_confirms(timeout=10)  # a range waiter still hears of it
        assert [seq for seq, _ in info.value.failures] == [nacked]
        with pytest.raises(PublishError) as info:
            await ch.wait_confirm_of(nacked, timeout=10)  # and so does its own waiter
        assert [seq for seq, _ in info.value.failures] == [nacked]
        assert isinstance(info.value.failures[0][1], PublishNacked)
        await ch.queue_delete(full)
    finally:
        await conn.close()


async def test_a_nacked_send_does_not_fail_a_later_dead_letter_handoff(mesh_url):
    agent = Agent(uid("handoff"), url=mesh_url)
    failures: list = []
    agent.on_publish_failure = failures.extend
    async with agent:
        conn = agent.connection
        ch = await conn.channel()
        full = uid("test.full")
        await ch.queue_declare(full, durable=True, arguments=REFUSING)
        nacked = await agent.send(full, b"no room")
        assert await wait_until(lambda: bool(failures), timeout=10)
        assert [seq for seq, _ in failures] == [nacked]
        inbox = agent.consumers()[""][0]
        # No behaviour takes direct messages: this one is dead-lettered, its copy confirmed.
        await agent.send(agent.identity, b"nobody wants me")
        assert await wait_until(lambda: inbox.acked + inbox.nacked >= 1, timeout=10)
        assert inbox.nacked == 0  # the original was not put back for a second dead letter
        dead = DeadLetters(conn)
        try:
            letters = await dead.list(10_000, agent=agent.identity)
            assert [letter.body for letter in letters] == [b"nobody wants me"]
        finally:
            await dead.purge(all=True, agent=agent.identity)
            await ch.queue_delete(full)
            await ch.close()
