"""Dead-letter scans against each other: the broker-wide lock, its bounded wait, the bounds
of a scan, a requeue whose confirms do not come, and a quorum dead-letter queue looked at
many times.

Each test works on a dead-letter queue of its own (`DeadLetters(connection, queue=...)`),
on RabbitMQ and on memory:// where the path exists there, and deletes it before it ends:
the shared `munggoggo.dead-letters` and its lock are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mesh_tools import uid

from munggoggo._speedups import Properties
from munggoggo.agent import open_connection
from munggoggo.amqp.errors import NotFound
from munggoggo.deadletter_lock import lock_queue, scan_lock
from munggoggo.deadletters import (
    DeadLetters,
    DeadLettersBusy,
    DeadLettersTimeout,
    PurgeResult,
    RequeueResult,
)
from munggoggo.durable import QUORUM_ARGUMENTS
from munggoggo.engine import ConnectionProtocol
from munggoggo.url import parse_url
from munggoggo.wire import AGENT_HEADER, DEAD_LETTER_ID_HEADER, QUEUE_HEADER, REASON_HEADER

pytestmark = pytest.mark.timeout(90)

LETTERS = 40


@contextlib.asynccontextmanager
async def connections(url: str, count: int) -> AsyncIterator[list[ConnectionProtocol]]:
    """`count` connections of their own: readers that are not one process's operations."""
    opened = [await open_connection(parse_url(url), uid("reader")) for _ in range(count)]
    try:
        yield opened
    finally:
        for conn in opened:
            await conn.close()


@contextlib.asynccontextmanager
async def dead_letter_queue(
    conn: ConnectionProtocol,
    count: int,
    *,
    home: str | None = None,
    arguments: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[str, list[str]]]:
    """A throwaway dead-letter queue holding `count` letters (each says it came from
    `home`); yields its name and the letters' ids, oldest first."""
    ch = await conn.channel(confirms=True)
    queue = uid("test.dead-letters")
    await ch.queue_declare(queue, durable=True, arguments=arguments)
    ids = [f"{queue}-{n}" for n in range(count)]
    try:
        for n, letter_id in enumerate(ids):
            headers: dict[str, Any] = {
                DEAD_LETTER_ID_HEADER: letter_id,
                AGENT_HEADER: "tester",
                REASON_HEADER: f"planted #{n}",
            }
            if home is not None:
                headers[QUEUE_HEADER] = home
            ch.publish(b"%d" % n, "", queue, Properties(headers=headers))
        await ch.wait_confirms(timeout=10)
        yield queue, ids
    finally:
        await ch.queue_delete(queue)
        await ch.close()


async def ids_of(dead: DeadLetters) -> list[str]:
    return [letter.id for letter in await dead.list(10_000)]


async def test_readers_on_other_connections_never_hide_letters_from_each_other(mesh_url):
    async with (
        connections(mesh_url, 4) as (a, b, c, d),
        dead_letter_queue(a, LETTERS) as (queue, ids),
    ):
        lister, first, last, purger = (DeadLetters(x, queue) for x in (a, b, c, d))
        for _ in range(4):
            listed, found_first, found_last, requeued = await asyncio.gather(
                lister.list(10_000),
                first.get(ids[0]),
                last.get(ids[-1]),
                # It says no queue it came from: found, and kept where it is.
                purger.requeue([ids[5]]),
            )
            assert [letter.id for letter in listed] == ids
            assert found_first is not None and found_first.id == ids[0]
            assert found_last is not None and found_last.id == ids[-1]
            assert (requeued.missing, list(requeued.kept)) == ([], [ids[5]])
        assert await ids_of(lister) == ids  # same letters, same order

        # A purge of the whole queue while another connection lists: it waits for the
        # list, which hands every letter back first; nothing comes back after it.
        listed, purged = await asyncio.gather(lister.list(10_000), purger.purge(all=True))
        assert len(listed) in (0, LETTERS)
        assert (purged.purged, purged.left) == (LETTERS, 0)
        assert await ids_of(lister) == []


async def test_purge_by_id_while_others_look_finds_every_id(mesh_url):
    async with (
        connections(mesh_url, 3) as (a, b, c),
        dead_letter_queue(a, LETTERS) as (queue, ids),
    ):
        looking = [DeadLetters(x, queue).list(10_000) for x in (a, b)]
        *_, purged = await asyncio.gather(*looking, DeadLetters(c, queue).purge([ids[-1], ids[0]]))
        assert (purged.purged, purged.missing) == (2, [])
        assert await ids_of(DeadLetters(a, queue)) == ids[1:-1]


async def test_a_waiting_reader_gives_up_after_its_lock_timeout(mesh_url):
    async with connections(mesh_url, 2) as (a, b), dead_letter_queue(a, 3) as (queue, ids):
        async with scan_lock(a, queue, timeout=5):
            # Another connection, and another operation of this process on the same one.
            for conn in (b, a):
                with pytest.raises(DeadLettersBusy, match="dead letters busy"):
                    await DeadLetters(conn, queue, lock_timeout=0.3).get(ids[0])
        # Released: both read every letter again.
        assert await ids_of(DeadLetters(b, queue)) == ids
        assert await ids_of(DeadLetters(a, queue)) == ids


async def test_the_lock_goes_with_its_holders_connection(mesh_url):
    async with connections(mesh_url, 1) as (a,), dead_letter_queue(a, 2) as (queue, ids):
        holder = await open_connection(parse_url(mesh_url), uid("holder"))
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(scan_lock(holder, queue, timeout=5))
            with pytest.raises(DeadLettersBusy):
                await DeadLetters(a, queue, lock_timeout=0.2).list()
            await holder.close()  # a reader that died while it held the lock
            assert await ids_of(DeadLetters(a, queue, lock_timeout=5)) == ids
            stack.pop_all()  # its release has nothing left to do
        ch = await a.channel(confirms=False)
        with pytest.raises(NotFound):
            await ch.queue_declare(lock_queue(queue), passive=True)


async def test_a_scan_stops_at_its_time_bound_and_loses_nothing(mesh_url):
    async with connections(mesh_url, 1) as (a,), dead_letter_queue(a, 5) as (queue, ids):
        hasty = DeadLetters(a, queue, scan_timeout=0)
        with pytest.raises(DeadLettersTimeout, match="read 0 letters"):
            await hasty.list(10_000, agent="nobody")
        with pytest.raises(DeadLettersTimeout):
            await hasty.get("not-there")
        with pytest.raises(DeadLettersTimeout) as stopped:
            await hasty.purge([ids[0]])
        cut_short = stopped.value.result
        # Not reached is not "missing": the id may well be there (it is).
        assert isinstance(cut_short, PurgeResult)
        assert (cut_short.purged, cut_short.missing) == (0, [])
        assert await ids_of(DeadLetters(a, queue)) == ids


async def test_a_requeue_whose_confirms_do_not_come_in_time_keeps_its_letters(broker_url):
    """RabbitMQ only: memory:// confirms as it publishes, so no confirm is ever late. The
    copies go to a quorum queue, which confirms only once its log has them: later than the
    scan's last basic.get is answered."""
    async with connections(broker_url, 1) as (a,):
        ch = await a.channel(confirms=False)
        home = uid("test.home")
        await ch.queue_declare(home, durable=True, arguments=dict(QUORUM_ARGUMENTS))
        try:
            async with dead_letter_queue(a, 2, home=home) as (queue, ids):
                with pytest.raises(DeadLettersTimeout, match="did not confirm") as late:
                    await DeadLetters(a, queue, confirm_timeout=0).requeue(all=True)
                result = late.value.result
                assert isinstance(result, RequeueResult) and result.requeued == []
                assert sorted(result.kept) == ids
                assert all("may have been delivered" in why for why in result.kept.values())
                # Kept: every dead letter is still there (its copy may be in `home` too).
                assert await ids_of(DeadLetters(a, queue)) == ids
        finally:
            await ch.queue_delete(home)


async def test_a_quorum_dead_letter_queue_keeps_a_letter_looked_at_many_times(mesh_url):
    """Quorum queues of RabbitMQ 4.x drop a message returned more often than their delivery
    limit (20 by default): a look must not count as one. On 3.10 (no default limit) and on
    memory:// the same holds."""
    async with (
        connections(mesh_url, 1) as (a,),
        dead_letter_queue(a, 1, arguments=dict(QUORUM_ARGUMENTS)) as (queue, ids),
    ):
        dead = DeadLetters(a, queue)
        for _ in range(25):
            assert await ids_of(dead) == ids
            assert (await dead.get(ids[0])) is not None
        assert await ids_of(dead) == ids
