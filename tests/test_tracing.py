"""W3C traceparent propagation: message -> behaviour -> publish, and RPC caller -> callee."""

from __future__ import annotations

import uuid

import pytest
from broker_tools import wait_until

from munggoggo import Agent, Behaviour, expose
from munggoggo.tracing import (
    TRACEPARENT,
    child_of,
    is_valid,
    new_traceparent,
    outgoing_headers,
    trace_id,
)

pytestmark = pytest.mark.rabbitmq


def test_traceparent_helpers():
    tp = new_traceparent()
    assert is_valid(tp) and tp.startswith("00-") and tp.endswith("-01")
    child = child_of(tp)
    assert is_valid(child) and trace_id(child) == trace_id(tp) and child != tp
    assert not is_valid("00-" + "0" * 32 + "-" + "1" * 16 + "-01")
    assert not is_valid("garbage") and not is_valid(None)
    assert outgoing_headers({"a": 1}) == {"a": 1}  # no trace current: unchanged
    token = TRACEPARENT.set(tp)
    try:
        headers = outgoing_headers({"a": 1})
        assert headers["a"] == 1 and trace_id(headers["traceparent"]) == trace_id(tp)
    finally:
        TRACEPARENT.reset(token)


class Relay(Behaviour):
    """Receives on one topic and publishes on another: the trace must follow."""

    def __init__(self, *args, out: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.out = out

    async def run(self) -> None:
        msg = await self.receive(timeout=0.1)
        if msg is not None:
            await self.publish(msg.body, self.out)


class Collect(Behaviour):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.got = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.1)
        if msg is not None:
            self.got.append(msg)


class Traced(Agent):
    @expose
    async def whoami(self) -> str | None:
        return TRACEPARENT.get()

    @expose
    async def forward(self, topic: str) -> None:
        await self.publish("from rpc", topic)


async def test_a_trace_spans_message_behaviour_and_publish(broker_url):
    tag = uuid.uuid4().hex[:8]
    source, relayed = f"trace.in.{tag}", f"trace.out.{tag}"
    relay = Agent(f"trace-relay-{tag}", url=broker_url)
    sink = Agent(f"trace-sink-{tag}", url=broker_url)
    async with relay, sink:
        await relay.add_behaviour(Relay(relay, binding_keys=[source], out=relayed))
        got = await sink.add_behaviour(Collect(sink, binding_keys=[relayed]))
        tp = new_traceparent()
        await sink.publish("traced", source, headers={"traceparent": tp})
        await sink.publish("untraced", source)
        assert await wait_until(lambda: len(got.got) == 2)
        by_body = {m.body: m for m in got.got}
        forwarded = by_body[b"traced"].headers["traceparent"]
        assert trace_id(forwarded) == trace_id(tp) and forwarded != tp
        assert "traceparent" not in by_body[b"untraced"].headers  # no leak between messages


async def test_a_trace_spans_rpc_caller_and_callee(broker_url):
    tag = uuid.uuid4().hex[:8]
    callee = Traced(f"trace-callee-{tag}", url=broker_url)
    caller = Agent(f"trace-caller-{tag}", url=broker_url)
    async with callee, caller:
        got = await caller.add_behaviour(Collect(caller, binding_keys=[f"trace.rpc.{tag}"]))
        assert await caller.call(callee.identity, "whoami") is None
        tp = new_traceparent()
        token = TRACEPARENT.set(tp)
        try:
            seen = await caller.call(callee.identity, "whoami")
            await caller.call(callee.identity, "forward", f"trace.rpc.{tag}")
        finally:
            TRACEPARENT.reset(token)
        assert trace_id(seen) == trace_id(tp) and seen != tp
        assert await wait_until(lambda: len(got.got) == 1)
        assert trace_id(got.got[0].headers["traceparent"]) == trace_id(tp)
        assert TRACEPARENT.get() is None  # the callee's context did not leak into ours


class Front(Agent):
    """Calls another agent from inside an RPC method: gateway -> Front -> Traced."""

    back = ""

    @expose
    async def ask_back(self) -> list[str | None]:
        return [TRACEPARENT.get(), await self.call(self.back, "whoami")]


async def test_a_trace_spans_gateway_agent_and_agent(broker_url):
    from gateway_tools import running_gateway

    from munggoggo.gateway.state import GatewaySettings

    tag = uuid.uuid4().hex[:8]
    back = Traced(f"trace-back-{tag}", url=broker_url)
    front = Front(f"trace-front-{tag}", url=broker_url)
    front.back = back.identity
    topic = f"trace.gw.{tag}"
    listener = Agent(f"trace-listener-{tag}", url=broker_url)
    settings = GatewaySettings(url=broker_url, call_timeout=5.0)
    async with back, front, listener, running_gateway(settings) as gateway:
        got = await listener.add_behaviour(Collect(listener, binding_keys=[topic]))
        tp = new_traceparent()
        headers = {"traceparent": tp}
        reply = await gateway.http.post(f"/agents/{front.identity}/call/ask_back", headers=headers)
        assert reply.status_code == 200, reply.text
        at_front, at_back = reply.json()
        # Each hop sees the caller's trace with a parent id of its own.
        assert trace_id(at_front) == trace_id(tp) and at_front != tp
        assert trace_id(at_back) == trace_id(tp) and at_back not in (tp, at_front)

        rpc = {"jsonrpc": "2.0", "method": f"{back.identity}.whoami", "id": 1}
        seen = (await gateway.http.post("/jsonrpc", json=rpc, headers=headers)).json()["result"]
        assert trace_id(seen) == trace_id(tp)
        published = await gateway.http.post(f"/topics/{topic}", json="hi", headers=headers)
        assert published.status_code in (200, 202), published.text
        assert await wait_until(lambda: len(got.got) == 1)
        assert trace_id(got.got[0].headers["traceparent"]) == trace_id(tp)

        # No header, or a malformed one: no trace reaches the agent.
        assert (await gateway.http.post(f"/agents/{back.identity}/call/whoami")).json() is None
        bad = {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"}
        reply = await gateway.http.post(f"/agents/{back.identity}/call/whoami", headers=bad)
        assert reply.json() is None
    assert TRACEPARENT.get() is None  # the request's trace did not leak into our context
