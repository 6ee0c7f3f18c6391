"""OpenTelemetry spans for munggoggo's W3C traces (optional: `pip install munggoggo[otel]`).

`instrument()` plugs hooks into munggoggo/tracing.py so every hop of a trace is a span:

- PRODUCER `send <kind> <destination>` for each message or RPC request sent while a trace
  is current; the message's `traceparent` names this span, so the receiver's span is its
  child;
- CONSUMER `process <agent>.<behaviour>` from `receive()` until the message is settled (an
  exception in the step marks it failed);
- SERVER `<agent>.<method>` around an exposed method serving an RPC request.

Consumer and server spans are OpenTelemetry's current span while user code runs, so spans
the user makes (or a database instrumentation makes) nest under them, and a user span that
is current when an agent publishes or calls becomes the parent of the producer span: traces
can start in user code, in the gateway's caller, or anywhere upstream.

Only the opentelemetry-api is needed here; the application picks the SDK and exporter.
"""

from __future__ import annotations

import functools
from typing import Any

from . import tracing
from .extras import needs_extra
from .tracing import HEADER, TRACEPARENT

with needs_extra("otel", "munggoggo.otel"):
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_SYSTEM = {"messaging.system": "rabbitmq"}


def instrument(tracer_provider: Any = None) -> None:
    """Record spans for every agent in this process from now on (idempotent).

    Args:
        tracer_provider: the OpenTelemetry tracer provider (None: the global one).
    """
    tracer = trace.get_tracer("munggoggo", tracer_provider=tracer_provider)
    tracing.hooks = _Hooks(tracer)


def uninstrument() -> None:
    """Stop recording spans; spans in progress still end normally."""
    tracing.hooks = None


def _traceparent_of(ctx: Any) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier.get(HEADER)


def _parent_context(traceparent: str | None) -> Any:
    if traceparent is None or not tracing.is_valid(traceparent):
        return None
    return _PROPAGATOR.extract({HEADER: traceparent})


class _Hooks:
    """What munggoggo/tracing.py, agent.py and behaviour.py call when instrumented."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer

    def producer(self, current: str | None, kind: str, destination: str, operation: str) -> Any:
        """A PRODUCER span for one message sent; its traceparent, or None without a trace.
        The parent is OpenTelemetry's current span when there is one (a user span, or one
        of ours), else the traceparent the message being handled brought.
        """
        if trace.get_current_span().get_span_context().is_valid:
            parent = None  # start_span's default: the current OpenTelemetry context
        else:
            parent = _parent_context(current)
            if parent is None:
                return None  # no trace anywhere: no header, no span
        name = f"send {kind} {destination}.{operation}" if operation else f"send {kind}"
        attributes = dict(_SYSTEM, **{"messaging.operation": "publish", "munggoggo.kind": kind})
        if destination:
            attributes["messaging.destination.name"] = destination
        if operation:
            attributes["rpc.method"] = operation
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        span.end()  # sending is handing the message to the connection: no duration to wait
        return _traceparent_of(trace.set_span_in_context(span))

    def consumer(self, previous: Any, msg: Any, behaviour: Any) -> _CurrentSpan:
        if previous is not None:
            previous.finish(None)
        headers = msg.delivery.properties.headers
        parent = _parent_context(headers.get(HEADER) if headers else None)
        attributes = dict(
            _SYSTEM,
            **{
                "messaging.operation": "process",
                "messaging.destination.name": msg.routing_key or "",
                "munggoggo.agent": behaviour.agent.identity,
                "munggoggo.behaviour": behaviour.short_name,
            },
        )
        span = self.tracer.start_span(
            f"process {behaviour.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        return _CurrentSpan(span)

    def server(self, func: Any, is_async: bool, identity: str, method: str, headers: Any) -> Any:
        """`func` wrapped in a SERVER span (run by the caller in the request's context)."""
        tracer = self.tracer
        traceparent = headers.get(HEADER) if headers else None
        attributes = {"rpc.system": "jsonrpc", "rpc.service": identity, "rpc.method": method}

        def start() -> _CurrentSpan:
            span = tracer.start_span(
                f"{identity}.{method}",
                context=_parent_context(traceparent),
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
            return _CurrentSpan(span)

        if is_async:

            @functools.wraps(func)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                current = start()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    current.finish(exc)
                    raise
                current.finish(None)
                return result

            return traced_async

        @functools.wraps(func)
        def traced(*args: Any, **kwargs: Any) -> Any:
            current = start()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                current.finish(exc)
                raise
            current.finish(None)
            return result

        return traced


class _CurrentSpan:
    """A span made current (OpenTelemetry's context and our traceparent) until finished."""

    __slots__ = ("_token", "_trace_token", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        ctx = trace.set_span_in_context(span)
        self._token = otel_context.attach(ctx)
        self._trace_token = TRACEPARENT.set(_traceparent_of(ctx))

    def finish(self, exc: BaseException | None) -> None:
        span = self.span
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        try:
            otel_context.detach(self._token)
            TRACEPARENT.reset(self._trace_token)
        except ValueError:
            # Finished in another context than it started in (a behaviour stopped from
            # outside): the context it was current in is gone anyway.
            TRACEPARENT.set(None)
        return None
