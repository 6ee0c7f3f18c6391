"""munggoggo.otel: each hop of a trace is an OpenTelemetry span, joined parent to child
across agents (user span -> producer -> RPC server -> producer -> consumer)."""

from __future__ import annotations

import uuid

import pytest
from broker_tools import wait_until
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from munggoggo import Agent, Behaviour, expose, otel, tracing
from munggoggo.tracing import TRACEPARENT

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    exporter.tracer = provider.get_tracer("user")  # user code's own tracer, same provider
    try:
        yield exporter
    finally:
        otel.uninstrument()
        provider.shutdown()


class Sink(Behaviour):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.got = []
        self.nested_parent = None
        self.tracer = None

    async def run(self) -> None:
        msg = await self.receive(timeout=0.1)
        if msg is None:
            return
        self.got.append(msg)
        if msg.body == b"boom":
            raise ValueError("boom")
        if self.tracer is not None:
            # User code's own spans nest under the consumer span.
            with self.tracer.start_as_current_span("user work") as span:
                self.nested_parent = span.parent.span_id if span.parent else None


class Front(Agent):
    topic = ""

    @expose
    async def relay(self, value: int) -> int:
        await self.publish(value, self.topic)
        return value


def by_name(exporter) -> dict:
    return {s.name: s for s in exporter.get_finished_spans()}


async def test_spans_join_user_code_rpc_and_a_behaviour(broker_url, spans):
    tag = uuid.uuid4().hex[:8]
    front = Front(f"otel-front-{tag}", url=broker_url)
    front.topic = f"otel.{tag}"
    listener = Agent(f"otel-listener-{tag}", url=broker_url)
    caller = Agent(f"otel-caller-{tag}", url=broker_url)
    async with front, listener, caller:
        sink = await listener.add_behaviour(Sink(listener, binding_keys=[front.topic]))
        sink.tracer = spans.tracer
        with spans.tracer.start_as_current_span("request") as root:
            assert await caller.call(front.identity, "relay", 7) == 7
        assert await wait_until(lambda: len(sink.got) == 1)
        assert await wait_until(lambda: f"process {listener.identity}.Sink" in by_name(spans))
    found = by_name(spans)
    send_call = found[f"send rpc {front.identity}.relay"]
    server = found[f"{front.identity}.relay"]
    send_message = found["send message"]
    process = found[f"process {listener.identity}.Sink"]
    user_work = found["user work"]
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in (send_call, server, send_message, process)} == {trace_id}
    # Parent to child, hop by hop.
    assert send_call.parent.span_id == root.get_span_context().span_id
    assert server.parent.span_id == send_call.context.span_id
    assert send_message.parent.span_id == server.context.span_id
    assert process.parent.span_id == send_message.context.span_id
    assert user_work.parent.span_id == process.context.span_id == sink.nested_parent
    assert (send_call.kind, server.kind, process.kind) == (
        SpanKind.PRODUCER,
        SpanKind.SERVER,
        SpanKind.CONSUMER,
    )
    assert server.attributes["rpc.method"] == "relay"
    assert process.attributes["munggoggo.behaviour"] == "Sink"
    # The message carried the producer span's traceparent on the wire.
    header = sink.got[0].headers["traceparent"]
    assert header.startswith(f"00-{trace_id:032x}-{send_message.context.span_id:016x}-")
    assert TRACEPARENT.get() is None


async def test_a_failing_step_marks_its_span_failed(broker_url, spans):
    tag = uuid.uuid4().hex[:8]
    agent = Agent(f"otel-fail-{tag}", url=broker_url)
    topic = f"otel.fail.{tag}"
    async with agent:
        sink = await agent.add_behaviour(Sink(agent, binding_keys=[topic]))
        await agent.publish(b"fine", topic)
        await agent.publish(b"boom", topic)
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(sink.got) >= 2)
        name = f"process {agent.identity}.Sink"
        assert await wait_until(
            lambda: sum(s.name == name for s in spans.get_finished_spans()) >= 2
        )
        await agent.stop()
    processed = [s for s in spans.get_finished_spans() if s.name == name]
    statuses = sorted(s.status.status_code.name for s in processed[:2])
    assert statuses == [StatusCode.ERROR.name, StatusCode.UNSET.name]
    failed = next(s for s in processed if s.status.status_code is StatusCode.ERROR)
    assert "ValueError: boom" in failed.status.description
    # Untraced publishes (no span current when they were sent) start no producer span.
    assert not [s for s in spans.get_finished_spans() if s.name == "send message"]


async def test_without_instrument_no_spans_and_no_headers(broker_url):
    exporter = InMemorySpanExporter()
    assert tracing.hooks is None
    tag = uuid.uuid4().hex[:8]
    agent = Agent(f"otel-off-{tag}", url=broker_url)
    topic = f"otel.off.{tag}"
    async with agent:
        sink = await agent.add_behaviour(Sink(agent, binding_keys=[topic]))
        await agent.publish(b"plain", topic)
        assert await wait_until(lambda: len(sink.got) == 1)
    assert "traceparent" not in sink.got[0].headers
    assert exporter.get_finished_spans() == ()
