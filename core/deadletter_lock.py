"""One dead-letter scan at a time on the whole broker: the lock every reader takes.

AMQP has no peek: a scan of the dead-letter queue takes its letters with basic.get and holds
them until it puts them back, hiding them from any other reader meanwhile. A second scan at
the same moment (another gateway worker, `munggoggo ctl dead-letters`) would report ids as
missing that exist, and a purge of the whole queue would leave behind, to come back later,
what the other reader held (queue.purge does not touch unacknowledged messages).

So every `DeadLetters` operation holds this lock: the exclusive queue `<queue>.lock`
(`munggoggo.dead-letters.lock`), declared on a channel of its own. The broker lets one
connection at a time have it and refuses the others with RESOURCE_LOCKED (405, which closes
that channel): they wait briefly and try again, up to a bounded total wait, then give up with
`DeadLettersBusy`. The lock goes away with its holder: deleted when the operation ends, and by
the broker when the holder's connection closes; its `x-expires` removes one left behind by a
connection that lives on (a failed delete, a reconnect that redeclared it). Within one process,
operations on the same connection (which would all own the queue) queue up behind an asyncio
lock per connection first. memory:// honours exclusive queues the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from ._speedups import MunggoggoError
from .amqp.errors import AMQPError, ResourceLocked
from .engine import ChannelProtocol, ConnectionProtocol

__all__ = ["LOCK_SUFFIX", "DeadLettersBusy", "lock_queue", "scan_lock"]

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# Longer than any scan may last (its own bound is far shorter): only a lock whose holder
# forgot it (its connection alive, the delete lost) ever expires.
_LOCK_EXPIRES_MS = 300_000
_FIRST_RETRY = 0.02  # seconds; doubled after each refusal up to _LAST_RETRY
_LAST_RETRY = 0.25
_RELEASE_TIMEOUT = 5.0

# Per connection (and so per event loop): operations of one process on one connection.
_local: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


class DeadLettersBusy(MunggoggoError, TimeoutError):
    """Another reader kept the dead-letter queue for longer than we were willing to wait."""


def lock_queue(queue: str) -> str:
    """The name of a dead-letter queue's lock.

    Args:
        queue: the dead-letter queue.

    Returns:
        The exclusive queue whose holder may scan `queue`: `<queue>.lock`.
    """
    return queue + LOCK_SUFFIX


@contextlib.asynccontextmanager
async def scan_lock(
    connection: ConnectionProtocol, queue: str, timeout: float
) -> AsyncIterator[None]:
    """Hold the lock of the dead-letter queue `queue` (module docstring) for the block.

    Args:
        connection: the connection to take it through (it owns the lock queue meanwhile).
        queue: the dead-letter queue.
        timeout: seconds to wait at most, for this process's other operations on the same
            connection and for other readers together.

    Yields:
        Nothing: the lock is held until the block ends.

    Raises:
        DeadLettersBusy: the lock was not free within `timeout`.
        AMQPError: the connection failed while taking the lock.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    local = _local.get(connection)
    if local is None:
        local = _local[connection] = asyncio.Lock()
    try:
        await asyncio.wait_for(local.acquire(), timeout)
    except TimeoutError:
        raise _busy(queue, timeout) from None
    try:
        channel = await _take(connection, lock_queue(queue), deadline, timeout)
        try:
            yield
        finally:
            await _release(channel, lock_queue(queue))
    finally:
        local.release()


async def _take(
    connection: ConnectionProtocol, name: str, deadline: float, timeout: float
) -> ChannelProtocol:
    loop = asyncio.get_running_loop()
    delay = _FIRST_RETRY
    while True:
        channel = await connection.channel(confirms=False)
        try:
            await channel.queue_declare(
                name, exclusive=True, arguments={"x-expires": _LOCK_EXPIRES_MS}
            )
            return channel
        except ResourceLocked:
            pass  # another connection holds it; the refusal closed this channel
        except BaseException:
            with contextlib.suppress(AMQPError):
                await channel.close()
            raise
        with contextlib.suppress(AMQPError):
            await channel.close()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _busy(name.removesuffix(LOCK_SUFFIX), timeout)
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _LAST_RETRY)


async def _release(channel: ChannelProtocol, name: str) -> None:
    try:
        await asyncio.wait_for(channel.queue_delete(name), _RELEASE_TIMEOUT)
    except (AMQPError, TimeoutError) as exc:
        # The broker drops it with our connection, or its x-expires does.
        log.warning("could not release the dead-letter lock %s: %s", name, exc)
    finally:
        with contextlib.suppress(AMQPError):
            await channel.close()


def _busy(queue: str, timeout: float) -> DeadLettersBusy:
    return DeadLettersBusy(
        f"dead letters busy: another reader has held {queue} for more than {timeout:g}s; "
        "retry later"
    )
