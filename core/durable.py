"""Queue modes and declarations: what `AgentConfig.queue_type` changes on the wire, and the
declarations that must work on every broker we support (RabbitMQ 3.10 and 4.3 with
upstream defaults) and on a mesh where both modes meet.

No queue is both non-durable and non-exclusive: RabbitMQ 4.3 refuses those by default
(`transient_nonexcl_queues`, a 541 that closes the connection).

- `transient` (the default): behaviour queues are durable classic queues with `x-expires`,
  and messages are not persistent: fast, and a broker restart empties the queues (the
  queues themselves come back).
- `quorum` (durable mode): behaviour queues are quorum queues (durable, replicated over the
  cluster, every message on disk) and everything the agent publishes with confirms is
  persistent (delivery_mode 2), so a durable classic queue it reaches keeps it too.

In both modes the exchanges are durable and the agent's inbox `<identity>` is a durable
classic queue with `x-expires` that the agent consumes exclusively (the identity lock): a
connection blip keeps what is queued there (`declare_inbox`). RabbitMQ refuses (406) to
redeclare a queue with another type, durability or arguments: a behaviour queue left
empty and unused by an older version (non-durable) is replaced, any other mismatch is a
`QueueMismatch` that says what to do; an inbox is taken as it is. The one queue both
modes share, `munggoggo.dead-letters`, is taken as it is (`declare_dead_letter_queue`).
"""

from __future__ import annotations

import logging
from typing import Any

from .amqp.errors import PreconditionFailed
from .engine import ChannelProtocol
from .wire import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE

log = logging.getLogger("munggoggo.durable")

TRANSIENT = "transient"
QUORUM = "quorum"
QUEUE_TYPES = (TRANSIENT, QUORUM)
PERSISTENT = 2  # AMQP delivery_mode
QUORUM_ARGUMENTS = {"x-queue-type": QUORUM}
_warned_classic_dlq = False  # the warning is about the mesh: once per process is enough


class QueueMismatch(PreconditionFailed):
    """A queue exists with another type, durability or arguments than this agent declares.

    RabbitMQ cannot change them in place; the message names the queue and the ways out.
    """


def normalize_queue_type(value: str | None) -> str:
    """`transient` or `quorum`; None, "" and "classic" (what transient queues are) mean
    transient, so configurations written before the modes existed keep their meaning.

    Args:
        value: the queue type given.

    Returns:
        "transient" or "quorum".

    Raises:
        ValueError: any other value.
    """
    if value in (None, "", TRANSIENT, "classic"):
        return TRANSIENT
    if value == QUORUM:
        return QUORUM
    raise ValueError(f"unknown queue type {value!r}: expected 'transient' or 'quorum'")


def queue_declaration(queue_type: str, expires_ms: int | None) -> tuple[bool, dict[str, Any]]:
    """(durable, arguments) of a behaviour queue in this mode: always durable (see the
    module docstring); quorum in durable mode.

    Classic queues carry no `x-queue-type`: RabbitMQ 3.10 compares the argument on
    redeclare, and the queues of agents from before the modes existed have none.

    Args:
        queue_type: the mode, "transient" or "quorum".
        expires_ms: the queue's `x-expires` (None or 0: none).

    Returns:
        Whether the queue is durable (always), and its declare arguments.
    """
    arguments: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
    if expires_ms:
        arguments["x-expires"] = expires_ms  # allowed on quorum queues too
    if queue_type == QUORUM:
        arguments.update(QUORUM_ARGUMENTS)
    return True, arguments


async def declare_behaviour_queue(
    channel: ChannelProtocol, queue: str, queue_type: str | None, expires_ms: int | None
) -> None:
    """Declare a behaviour (or shared) queue for this mode (`queue_type` as
    `AgentConfig.queue_type` takes it: None is transient).

    A queue an older version left non-durable (RabbitMQ 4.3 would not even let it be
    created) is replaced when it is empty and unused, which loses nothing; otherwise the
    406 becomes a QueueMismatch naming the queue and the ways out.

    Args:
        channel: the channel to declare on (a 406 closes it; the client reopens it).
        queue: the queue's name.
        queue_type: the mode, "transient" or "quorum".
        expires_ms: how long the queue outlives its last consumer (None: forever).

    Raises:
        QueueMismatch: the queue exists with other properties and holds messages or has
            consumers.
        PreconditionFailed: another refusal (an invalid argument).
    """
    queue_type = normalize_queue_type(queue_type)
    durable, arguments = queue_declaration(queue_type, expires_ms)
    try:
        await channel.queue_declare(queue, durable=durable, arguments=arguments)
        return
    except PreconditionFailed as exc:
        if "inequivalent arg 'durable'" not in exc.reply_text:
            raise mismatch(queue, queue_type, exc) from None
        refusal = exc
    # The refusal closed the channel; the client has reopened it.
    existing = await channel.queue_declare(queue, passive=True)
    if existing.message_count or existing.consumer_count:
        raise mismatch(queue, queue_type, refusal) from None
    try:
        await channel.queue_delete(queue, if_unused=True, if_empty=True)
    except PreconditionFailed:  # a message or consumer arrived in between: keep it
        raise mismatch(queue, queue_type, refusal) from None
    log.info("queue %r was left non-durable by an older version, empty: declared anew", queue)
    await channel.queue_declare(queue, durable=durable, arguments=arguments)


def mismatch(queue: str, queue_type: str, exc: PreconditionFailed) -> PreconditionFailed:
    """`exc` (a 406 on queue.declare) as a QueueMismatch that explains itself, when it is an
    inequivalent redeclaration; other 406s (an invalid argument) are returned unchanged.

    Args:
        queue: the queue declared.
        queue_type: the mode the agent declared it for.
        exc: the broker's refusal.

    Returns:
        The error to raise.
    """
    if "inequivalent arg" not in exc.reply_text:
        return exc
    wanted = (
        "a quorum queue (durable, AgentConfig.queue_type='quorum')"
        if queue_type == QUORUM
        else "a durable classic queue (AgentConfig.queue_type='transient')"
    )
    text = (
        f"{exc.reply_text}. This agent declares queue {queue!r} as {wanted}, and it already "
        "exists with other properties, which RabbitMQ cannot change in place: run the agent "
        "with the queue type the queue has, or delete the queue once it is drained "
        f"(rabbitmqctl delete_queue {queue}; an unused behaviour queue also expires on its own "
        "after AgentConfig.behaviour_queue_expires_ms) and start the agent again"
    )
    return QueueMismatch(exc.reply_code, text, exc.class_id, exc.method_id, exc.scope)


async def declare_inbox(channel: ChannelProtocol, identity: str, expires_ms: int | None) -> None:
    """Declare the agent's inbox `<identity>`: a durable classic queue that outlives a
    connection blip (`expires_ms` after its last consumer left, RabbitMQ drops it).

    An inbox left with other arguments (another `AgentConfig.inbox_expires_ms`) is taken
    as it is: it holds messages for this identity, and RabbitMQ cannot change it.

    Args:
        channel: the channel to declare on.
        identity: the agent's identity, the queue's name.
        expires_ms: how long the inbox outlives its last consumer (None: forever).

    Raises:
        ResourceLocked: an exclusive inbox of an older version, held by a running agent.
    """
    arguments: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
    if expires_ms:
        arguments["x-expires"] = expires_ms
    try:
        await channel.queue_declare(identity, durable=True, arguments=arguments)
    except PreconditionFailed as exc:
        log.warning("inbox %r exists with other properties, used as it is: %s", identity, exc)
        await channel.queue_declare(identity, passive=True)


async def declare_dead_letter_queue(channel: ChannelProtocol, queue_type: str | None) -> str:
    """Declare `munggoggo.dead-letters` (durable) as this mode prefers (`queue_type` as
    `AgentConfig.queue_type` takes it: None is transient), or as it already is.

    The queue is shared by every agent of the mesh, so agents of both modes must accept the
    type the first one gave it: the preferred declaration is tried, and on a 406 about the
    queue type the other one (the refusal closed the channel; the client reopens it).
    A durable-mode agent warns about a classic dead-letter queue: on a cluster it lives on
    one node and is unreachable while that node is down.

    Args:
        channel: the channel to declare on.
        queue_type: the agent's mode, "transient" or "quorum".

    Returns:
        The type the queue has, "transient" or "quorum".

    Raises:
        PreconditionFailed: the broker refused both declarations, or refused the first
            for another reason than the queue type.
    """
    queue_type = normalize_queue_type(queue_type)
    other = TRANSIENT if queue_type == QUORUM else QUORUM
    for attempt in (queue_type, other):
        arguments = QUORUM_ARGUMENTS if attempt == QUORUM else None
        try:
            await channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments=arguments)
        except PreconditionFailed as exc:
            if attempt == other or "x-queue-type" not in exc.reply_text:
                raise
            continue
        global _warned_classic_dlq
        if attempt != queue_type and queue_type == QUORUM and not _warned_classic_dlq:
            _warned_classic_dlq = True
            log.warning(
                "%s is a classic queue: on a RabbitMQ cluster it lives on one node and dead "
                "letters cannot reach it while that node is down; delete it when it is empty "
                "and a durable-mode agent recreates it as a quorum queue",
                DEAD_LETTER_QUEUE,
            )
        return attempt
    raise AssertionError("unreachable")
