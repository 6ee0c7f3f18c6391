"""A node of the 3-node cluster goes away in the middle of a confirmed stream.

Two durable-mode agents (quorum behaviour queue, persistent messages) connect with the
cluster's failover URL list, so both land on the first node. A behaviour of one publishes
numbers 0, 1, 2, ... on a topic as fast as confirms allow; a behaviour of the other records
every number it receives (duplicates kept). Once the stream runs, the node both agents are
connected to is stopped (`rabbitmqctl stop_app`: their connections are cut, the quorum
queue elects a leader on the surviving nodes). The agents must reconnect to a surviving
node on their own and the stream go on; then the publisher stops, waits for every confirm,
and each number it published must have been consumed: lost = published - consumed, with
duplicates (redeliveries of what was unacked, republished unconfirmed publishes) counted.

`failover(cluster)` returns the counts and timings; the stopped node is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from typing import Any

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy
from munggoggo.amqp.errors import AMQPError
from munggoggo.client import Connection
from munggoggo.testing import Cluster

DURABLE = AgentConfig(queue_type="quorum", behaviour_queue_expires_ms=120_000)


class Numbers(Behaviour):
    """Publishes 0, 1, 2, ... in small batches; `sent` counts what publish() accepted."""

    restart_policy = RestartPolicy(initial=0.05, maximum=0.5)  # refused during the outage
    key = ""

    async def setup(self) -> None:
        self.sent = 0

    async def run(self) -> None:
        for _ in range(50):
            await self.publish(self.sent, self.key)
            self.sent += 1
        await asyncio.sleep(0)


class Record(Behaviour):
    """Records each number received (a list: duplicates stay visible)."""

    seen: list[int]

    async def run(self) -> None:
        msg = await self.receive(timeout=0.5)
        if msg is not None:
            self.seen.append(msg.decode(int))


async def _until(predicate: Any, timeout: float, what: str) -> float:
    """Poll until `predicate()`; returns when (monotonic), raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.01)
    return time.monotonic()


def _port(agent: Agent) -> int:
    return agent.url.port


class Outage:
    """When an agent's connection went down and when it was open again (polled every
    5 ms while the fault lasts; the client has no callback for the loss itself)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.down: float | None = None
        self.up: float | None = None
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        conn = self.agent.connection
        while self.down is None:
            if not conn.is_open:
                self.down = time.monotonic()
            await asyncio.sleep(0.005)
        while not (conn.is_open and conn.reconnects >= 1):
            await asyncio.sleep(0.005)
        self.up = time.monotonic()

    async def wait(self, timeout: float, what: str) -> float:
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            raise TimeoutError(f"{what}: not within {timeout:g}s") from None
        assert self.down is not None and self.up is not None
        return self.up - self.down


async def failover(
    cluster: Cluster, *, before: int = 3000, after: int = 3000, timeout: float = 60
) -> dict[str, Any]:
    """The run described in the module docstring; raises TimeoutError when a phase stalls."""
    rid = uuid.uuid4().hex[:8]
    key = f"failover.{rid}"
    receiver = Agent(f"failover-rx-{rid}", url=cluster.urls, config=DURABLE)
    sender = Agent(f"failover-tx-{rid}", url=cluster.urls, config=DURABLE)
    failures: list[Any] = []
    seen: list[int] = []
    stopped = None
    queue = ""
    try:
        await receiver.start()
        record = Record(receiver, binding_keys=[key])
        record.seen = seen
        await receiver.add_behaviour(record)
        queue = record.queue or ""
        await sender.start()
        sender.on_publish_failure = failures.extend
        numbers = Numbers(sender)
        numbers.key = key
        await sender.add_behaviour(numbers)
        started = time.monotonic()
        await _until(lambda: len(seen) >= before, timeout, "consuming before the fault")
        rate_before = len(seen) / (time.monotonic() - started)

        port = _port(sender)
        stopped = next(n for n in cluster.nodes if n.port == port)
        assert _port(receiver) == port, "both agents start on the first URL's node"
        survivor = next(n for n in cluster.nodes if n is not stopped)
        leader_before = await asyncio.to_thread(_leader, cluster, survivor, queue)
        outages = Outage(sender), Outage(receiver)
        t_stop = time.monotonic()
        await asyncio.to_thread(cluster.stop_app, stopped)
        stop_took = time.monotonic() - t_stop
        tx_outage = await outages[0].wait(timeout, "the publishing agent reconnecting")
        rx_outage = await outages[1].wait(timeout, "the consuming agent reconnecting")
        resumed_at = numbers.sent
        consumed_at = len(seen)
        t_resume = time.monotonic()
        await _until(lambda: numbers.sent >= resumed_at + after, timeout, "publishing after")
        await _until(lambda: len(seen) >= consumed_at + after, timeout, "consuming after")
        rate_after = (len(seen) - consumed_at) / (time.monotonic() - t_resume)
        leader_after = await asyncio.to_thread(_leader, cluster, survivor, queue)
        await numbers.stop(timeout=10)
        await sender.flush(timeout=timeout)  # raises PublishError if any publish failed
        sent = numbers.sent
        expected = set(range(sent))
        with contextlib.suppress(TimeoutError):  # what is missing then is reported as lost
            await _until(lambda: expected <= set(seen), timeout, "every published number")
        await asyncio.sleep(0.3)  # duplicates still in flight
        unique = set(seen)
        return {
            "sent": sent,
            "confirmed": sent - len(failures),
            "failed_reported": len(failures),
            "consumed": len(unique & expected),
            "duplicates": sum(c - 1 for c in Counter(seen).values() if c > 1),
            "lost": len(expected - unique),
            "stopped_node": stopped.name,
            "queue_leader_before": leader_before,
            "queue_leader_after": leader_after,
            "publisher_now_on": _node_name(cluster, _port(sender)),
            "consumer_now_on": _node_name(cluster, _port(receiver)),
            "stop_app_s": round(stop_took, 2),
            "publisher_outage_s": round(tx_outage, 3),
            "consumer_outage_s": round(rx_outage, 3),
            "msgs_per_s_before": round(rate_before),
            "msgs_per_s_after": round(rate_after),
        }
    finally:
        await sender.stop()
        await receiver.stop()
        if stopped is not None:
            await asyncio.to_thread(cluster.start_app, stopped)
        if queue:
            await _delete_queue(cluster, queue)


def _leader(cluster: Cluster, node: Any, queue: str) -> str:
    """The node holding the quorum queue's leader, as `node` sees it."""
    for row in cluster.ctl(node, "list_queues", "name", "leader").splitlines():
        name, _, leader = row.partition("\t")
        if name == queue:
            return leader.strip()
    return "?"


def _node_name(cluster: Cluster, port: int) -> str:
    return next(n.name for n in cluster.nodes if n.port == port)


async def _delete_queue(cluster: Cluster, queue: str) -> None:
    try:
        async with Connection(cluster.urls, reconnect=False) as conn:
            await (await conn.channel(confirms=False)).queue_delete(queue)
    except AMQPError:
        pass  # the cluster is removed with its data anyway
