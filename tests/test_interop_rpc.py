"""The wire contract, seen from an independent client: aiormq calls `@expose`d methods with
plain JSON-RPC 2.0 over AMQP (direct reply-to), publishes to and consumes from
`munggoggo.topic` next to a running agent. Nothing of munggoggo is used on the aiormq side."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from typing import Any

import aiormq
import pytest
from broker_tools import wait_until
from pamqp.commands import Basic

from munggoggo import Agent, Behaviour, expose

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

REPLY_TO = "amq.rabbitmq.reply-to"
TOPIC_EXCHANGE = "munggoggo.topic"


class Target(Agent):
    """The agent under test: exposed methods plus a behaviour subscribed to one topic."""

    def __init__(self, identity: str, *, topic: str, url: str) -> None:
        super().__init__(identity, url=url)
        self.topic = topic
        self.recorded: list[str] = []
        self.received: list[dict[str, Any]] = []

    class Listen(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.5)
            if msg is not None:
                self.agent.received.append(
                    {
                        "body": msg.body,
                        "sender": msg.sender,
                        "kind": msg.kind,
                        "content_type": msg.content_type,
                        "routing_key": msg.routing_key,
                        "headers": msg.headers,
                    }
                )

    async def setup(self) -> None:
        await self.add_behaviour(self.Listen(self, binding_keys=[self.topic]))

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b

    @expose
    def greet(self, name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    @expose
    def boom(self, what: str) -> None:
        raise ValueError(f"boom: {what}")

    @expose
    def record(self, value: str) -> int:
        self.recorded.append(value)
        return len(self.recorded)


class WireRpcClient:
    """JSON-RPC over AMQP by the wire contract only, with RabbitMQ's direct reply-to."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, app_id: str) -> None:
        self.channel = channel
        self.app_id = app_id
        self.replies: list[aiormq.abc.DeliveredMessage] = []  # every reply, in arrival order
        self._waiting: dict[str, asyncio.Future[aiormq.abc.DeliveredMessage]] = {}

    async def start(self) -> None:
        # Direct reply-to: consume the pseudo-queue (no_ack) before publishing, same channel.
        await self.channel.basic_consume(REPLY_TO, self._on_reply, no_ack=True)

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        self.replies.append(message)
        fut = self._waiting.pop(message.header.properties.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(message)

    async def publish_request(self, target: str, request: dict[str, Any], correlation_id: str):
        confirm = await self.channel.basic_publish(
            json.dumps(request).encode(),
            exchange="",
            routing_key=target,
            properties=Basic.Properties(
                content_type="application/json",
                message_type="rpc",
                correlation_id=correlation_id,
                reply_to=REPLY_TO,
                app_id=self.app_id,
                message_id=correlation_id,  # aiormq maps a basic.return back by message_id
            ),
            mandatory=True,
        )
        assert isinstance(confirm, Basic.Ack), f"request to {target!r} not routed: {confirm!r}"

    async def request(
        self, target: str, request: dict[str, Any], timeout: float = 10.0
    ) -> tuple[dict[str, Any], aiormq.abc.DeliveredMessage]:
        correlation_id = f"c-{uuid.uuid4().hex}"
        fut = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = fut
        try:
            await self.publish_request(target, request, correlation_id)
            message = await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(correlation_id, None)
        assert message.header.properties.correlation_id == correlation_id
        return json.loads(message.body), message


@pytest.fixture
async def target(broker_url):
    identity = f"rpc-target-{uuid.uuid4().hex[:8]}"
    agent = Target(identity, topic=f"interop.{identity}", url=broker_url)
    async with agent:
        yield agent
    cleanup = await aiormq.connect(broker_url)
    try:
        ch = await cleanup.channel()
        await ch.queue_delete(f"{identity}.Listen")
    finally:
        await cleanup.close()


@pytest.fixture
async def peer(broker_url):
    conn = await aiormq.connect(broker_url)
    yield conn
    await conn.close()


@pytest.fixture
async def rpc(peer):
    client = WireRpcClient(await peer.channel(), app_id=f"aiormq-{uuid.uuid4().hex[:6]}")
    await client.start()
    return client


# -- RPC ---------------------------------------------------------------------------


async def test_call_by_position_returns_a_json_rpc_response(target, rpc):
    reply, message = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "mul", "params": [6, 7], "id": 1}
    )
    assert reply == {"jsonrpc": "2.0", "result": 42, "id": 1}
    props = message.header.properties
    assert props.content_type == "application/json"
    assert props.app_id == target.identity
    assert props.message_type == "rpc"


async def test_call_by_name_with_string_id_and_default(target, rpc):
    reply, _ = await rpc.request(
        target.identity,
        {"jsonrpc": "2.0", "method": "greet", "params": {"name": "aiormq"}, "id": "abc-1"},
    )
    assert reply == {"jsonrpc": "2.0", "result": "hello aiormq!", "id": "abc-1"}
    reply, _ = await rpc.request(
        target.identity,
        {
            "jsonrpc": "2.0",
            "method": "greet",
            "params": {"punctuation": "?", "name": "you"},
            "id": 2,
        },
    )
    assert reply == {"jsonrpc": "2.0", "result": "hello you?", "id": 2}


async def test_unknown_method_is_32601(target, rpc):
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "no_such_method", "params": [], "id": 7}
    )
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == 7
    assert "result" not in reply
    assert reply["error"]["code"] == -32601
    assert "no_such_method" in reply["error"]["message"]


async def test_private_and_unexposed_methods_are_not_callable(target, rpc):
    for method in ("_serve_rpc", "__init__", "start", "stop", "publish"):
        reply, _ = await rpc.request(
            target.identity, {"jsonrpc": "2.0", "method": method, "id": method}
        )
        assert reply["error"]["code"] == -32601, (method, reply)
        assert reply["id"] == method


@pytest.mark.parametrize(
    "params",
    [
        ["six", 7],
        [[6], 7],
        {"a": 6},  # b missing
        {"a": 6, "b": 7, "c": 8},  # unknown name
        [1, 2, 3],  # too many
    ],
)
async def test_wrong_params_are_32602(target, rpc, params):
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "mul", "params": params, "id": 9}
    )
    assert reply["id"] == 9
    assert reply["error"]["code"] == -32602, reply
    assert "result" not in reply


async def test_a_raising_method_answers_with_an_error_and_the_agent_keeps_serving(target, rpc):
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "boom", "params": ["x"], "id": 11}
    )
    assert reply["id"] == 11
    assert reply["error"]["code"] == -32000
    assert "boom: x" in reply["error"]["message"]
    assert reply["error"]["data"] == {"type": "ValueError"}
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "mul", "params": [3, 5], "id": 12}
    )
    assert reply == {"jsonrpc": "2.0", "result": 15, "id": 12}


async def test_a_notification_runs_the_method_and_gets_no_reply(target, rpc):
    await rpc.publish_request(
        target.identity,
        {"jsonrpc": "2.0", "method": "record", "params": ["noted"]},
        correlation_id="notification-1",
    )
    assert await wait_until(lambda: target.recorded == ["noted"], timeout=10)
    # `record` is synchronous: a reply to the notification would have been published before
    # the reply to this next call (same agent channel, same order).
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "record", "params": ["called"], "id": 5}
    )
    assert reply == {"jsonrpc": "2.0", "result": 2, "id": 5}
    await asyncio.sleep(0.3)  # a short wait for any stray reply
    correlation_ids = [m.header.properties.correlation_id for m in rpc.replies]
    assert "notification-1" not in correlation_ids
    assert len(rpc.replies) == 1


async def test_a_null_id_is_a_request_not_a_notification(target, rpc):
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "mul", "params": [2, 4], "id": None}
    )
    assert reply == {"jsonrpc": "2.0", "result": 8, "id": None}


async def test_invalid_request_objects_get_error_replies(target, rpc):
    reply, _ = await rpc.request(target.identity, {"jsonrpc": "1.0", "method": "mul", "id": 3})
    assert reply["error"]["code"] == -32600
    assert reply["id"] == 3
    reply, _ = await rpc.request(target.identity, {"jsonrpc": "2.0", "id": 4})  # no method
    assert reply["error"]["code"] == -32600
    # and it still serves
    reply, _ = await rpc.request(
        target.identity, {"jsonrpc": "2.0", "method": "mul", "params": [1, 1], "id": 6}
    )
    assert reply["result"] == 1


async def test_unparseable_body_gets_a_parse_error(target, rpc):
    correlation_id = f"c-{uuid.uuid4().hex}"
    fut = asyncio.get_running_loop().create_future()
    rpc._waiting[correlation_id] = fut
    await rpc.channel.basic_publish(
        b"{not json",
        routing_key=target.identity,
        properties=Basic.Properties(
            content_type="application/json",
            message_type="rpc",
            correlation_id=correlation_id,
            reply_to=REPLY_TO,
        ),
    )
    message = await asyncio.wait_for(fut, 10)
    reply = json.loads(message.body)
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None


async def test_many_concurrent_calls_each_get_their_own_reply(target, rpc):
    results = await asyncio.gather(
        *(
            rpc.request(
                target.identity, {"jsonrpc": "2.0", "method": "mul", "params": [i, 3], "id": i}
            )
            for i in range(50)
        )
    )
    assert [r for r, _ in results] == [
        {"jsonrpc": "2.0", "result": i * 3, "id": i} for i in range(50)
    ]


# -- pub/sub -----------------------------------------------------------------------


async def test_aiormq_publish_on_the_topic_exchange_reaches_a_behaviour(target, peer):
    ch = await peer.channel()
    app_id = f"aiormq-{uuid.uuid4().hex[:6]}"
    bodies = [b"first", b"\x00\x01binary", b"third"]
    for i, body in enumerate(bodies):
        confirm = await ch.basic_publish(
            body,
            exchange=TOPIC_EXCHANGE,
            routing_key=target.topic,
            properties=Basic.Properties(
                content_type="text/plain",
                message_type="message",
                app_id=app_id,
                message_id=f"m-{i}",
                headers={"n": i},
            ),
            mandatory=True,
        )
        assert isinstance(confirm, Basic.Ack), confirm
    assert await wait_until(lambda: len(target.received) == 3, timeout=10)
    assert [r["body"] for r in target.received] == bodies
    for i, r in enumerate(target.received):
        assert r["sender"] == app_id
        assert r["kind"] == "message"
        assert r["content_type"] == "text/plain"
        assert r["routing_key"] == target.topic
        assert r["headers"] == {"n": i}


async def test_a_message_without_type_is_a_plain_message(target, peer):
    ch = await peer.channel()
    await ch.basic_publish(
        b"untyped",
        exchange=TOPIC_EXCHANGE,
        routing_key=target.topic,
        properties=Basic.Properties(app_id="bare-client"),
    )
    assert await wait_until(lambda: len(target.received) == 1, timeout=10)
    assert target.received[0]["kind"] == "message"
    assert target.received[0]["sender"] == "bare-client"
    assert target.received[0]["body"] == b"untyped"


async def test_agent_publish_reaches_an_aiormq_consumer(target, peer):
    received: list[aiormq.abc.DeliveredMessage] = []
    ch = await peer.channel()
    topic = f"interop.out.{uuid.uuid4().hex[:8]}"
    q = await ch.queue_declare("", exclusive=True, auto_delete=True)
    await ch.queue_bind(q.queue, TOPIC_EXCHANGE, routing_key=topic)
    await ch.basic_consume(q.queue, received.append, no_ack=True)

    before = int(time.time())
    await target.publish({"x": 1, "ys": [1, 2]}, topic)
    await target.publish("text body", topic)
    await target.publish(b"\xffraw", topic, headers={"trace": "t-1"})
    await target.flush(timeout=10)
    after = int(time.time())
    assert await wait_until(lambda: len(received) == 3, timeout=10)

    assert json.loads(received[0].body) == {"x": 1, "ys": [1, 2]}
    assert received[1].body == b"text body"
    assert received[2].body == b"\xffraw"
    expected_types = ["application/json", "text/plain", "application/octet-stream"]
    for message, content_type in zip(received, expected_types, strict=True):
        props = message.header.properties
        assert message.routing_key == topic
        assert message.exchange == TOPIC_EXCHANGE
        assert props.app_id == target.identity
        assert props.message_type == "message"
        assert props.content_type == content_type
        assert isinstance(props.timestamp, datetime.datetime)
        assert before <= props.timestamp.timestamp() <= after
    assert received[2].header.properties.headers == {"trace": "t-1"}
