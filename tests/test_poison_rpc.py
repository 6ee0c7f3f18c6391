"""Poison RPC requests: whatever bytes arrive in an agent's inbox as an RPC request, the
agent answers with a JSON-RPC error and keeps its connection (an exception escaping the
consumer callback would drop the connection, and the unacked request would come back and
drop it again, forever).
"""

from __future__ import annotations

import json
import uuid

import pytest
from broker_tools import wait_until

from munggoggo import Agent
from munggoggo._speedups import Properties
from munggoggo.client import Connection

DEEP = 5_000  # msgspec recurses per level: far beyond what the interpreter stack allows

POISON = {
    "deep-array": b"[" * DEEP + b"]" * DEEP,
    "deep-params": b'{"jsonrpc":"2.0","method":"ping","id":1,"params":'
    + b"[" * DEEP
    + b"]" * DEEP
    + b"}",
    "invalid-utf8": b'{"jsonrpc":"2.0","method":"ping","id":1,"x":"\xff\xfe"}',
    "not-json": b"\x00\x01\x02 not json",
    "empty": b"",
    "wrong-shape": b'{"jsonrpc":"2.0","method":7,"id":{"a":1}}',
}


@pytest.mark.rabbitmq
async def test_malformed_rpc_requests_are_answered_and_the_agent_keeps_serving(broker_url):
    agent = Agent(f"rpc-poison-{uuid.uuid4().hex[:8]}", url=broker_url)
    async with agent, Connection(broker_url) as conn:
        ch = await conn.channel()
        inbox = (await ch.queue_declare("", exclusive=True)).queue
        replies: dict[str, dict] = {}

        def on_replies(batch) -> None:
            for d in batch:
                replies[d.properties.correlation_id] = json.loads(d.body)

        await ch.consume(inbox, on_replies, no_ack=True)
        bodies = {**POISON, "ping": b'{"jsonrpc":"2.0","method":"ping","id":"last"}'}
        for name, body in bodies.items():
            props = Properties(
                type="rpc", reply_to=inbox, correlation_id=name, content_type="application/json"
            )
            ch.publish(body, "", agent.identity, props)
        await ch.wait_confirms(timeout=10)
        assert await wait_until(lambda: len(replies) == len(bodies), timeout=15), replies.keys()

        assert replies["ping"]["result"] == "pong"  # served after all the poison
        for name in POISON:
            error = replies[name]["error"]
            assert error["code"] in (-32700, -32600), (name, error)
            assert error["message"].startswith(("Parse error", "Invalid Request")), (name, error)
        assert "nested too deeply" in replies["deep-array"]["error"]["message"]
        assert agent.connection.reconnects == 0 and agent.state == "running"
