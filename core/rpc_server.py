"""The agent's RPC server: requests in its inbox run its `@expose`d methods.

A request (kind `rpc` or `control`) is decoded, its method looked up (the agent's own, or a
running behaviour's: core/rpc_registry.py), its deadline checked (core/rpc_deadlines.py: one
that passed is not started) and its params bound;
a plain method runs at once, an async one eagerly (core/eager.py: most never suspend, so
the reply leaves in the same loop tick). The JSON-RPC response goes to `reply_to` on the
agent's RPC channel, then the request is acked. Notifications get no reply. A method cut
short by the agent's own stop puts its request back in the inbox instead of answering.
With `AgentConfig.max_concurrent_calls`, a request finding every slot taken waits, unacked,
for one (core/rpc_limits.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import struct
import time
from typing import Any

from . import envelope, tracing
from ._speedups import Properties, encode_properties
from .agent_base import RUNNING, STOPPING, AgentBase
from .amqp.errors import AMQPError
from .eager import run_eagerly
from .lifecycle import refused_by_stopping
from .message import Message
from .rpc import (
    METHOD_NOT_FOUND,
    TIMEOUT,
    RpcError,
    decode_request,
    encode_error,
    encode_result,
    exception_error,
    is_notification,
)
from .rpc_deadlines import deadline_passed
from .tracing import HEADER as TRACE_HEADER
from .tracing import adopt

log = logging.getLogger("munggoggo.agent")


class RpcServer(AgentBase):
    """The agent's serving role: run the exposed method a request names, answer it."""

    def _serve_rpc(self, msg: Message) -> None:
        """A request arrived: run it now, or (every slot of `max_concurrent_calls` taken)
        let it wait unacked for one. Control requests are not counted: discovery and the
        CLI keep answering an agent busy with calls.
        """
        slots = self._call_slots
        if slots.limit is None or msg.kind == envelope.KIND_CONTROL:
            self._run_request(msg)
        elif slots.admit(msg):
            self._run_counted(msg)

    def _start_waiting_call(self, msg: Message) -> None:
        """A waiting request got a slot: serve it, unless the agent is stopping (then it
        goes back to the inbox for a successor, as a drain hands back what it holds).
        """
        if self.state != RUNNING or msg.stale:
            # Stale: the connection dropped while it waited; the broker delivers it again.
            msg.nack(requeue=True)
            self._call_slots.release()
            return
        try:
            self._run_counted(msg)
        except Exception as exc:  # one request's failure is that request's alone
            self.reject_failed(msg, exc)

    def _run_counted(self, msg: Message) -> None:
        """Serve a request holding a slot; the slot is given back when its call ends."""
        try:
            task = self._run_request(msg)
        except BaseException:
            self._call_slots.release()
            raise
        if task is None:
            self._call_slots.release()
        else:
            task.add_done_callback(self._call_ended)

    def _call_ended(self, task: asyncio.Task[None]) -> None:
        self._call_slots.release()

    def _run_request(self, msg: Message) -> asyncio.Task[None] | None:
        """Decode a request, check its deadline, run its method and answer.

        Returns the task still running an async method that suspended, else None (the
        request is answered already).
        """
        started = time.perf_counter()
        try:
            request = decode_request(msg.body)
        except RpcError as exc:
            self._reply(msg, getattr(exc, "request_id", None), error=exc, started=started)
            return None
        if request.id is None and is_notification(msg.body):
            msg_id: Any = _NOTIFICATION
        else:
            msg_id = request.id
        found = self._methods.lookup(request.method)
        if found is None and self.hold_while_starting(msg):
            return None  # perhaps a behaviour's method: served once the behaviours run
        if found is None:
            self._reply(
                msg,
                msg_id,
                error=RpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}"),
                started=started,
            )
            return None
        owner, method = found
        name = method.name
        headers = msg.delivery.properties.headers
        if headers and deadline_passed(headers):
            # Never start a call whose caller gave up: it waited too long in the queue.
            error = RpcError(TIMEOUT, f"{name}() not started: its deadline passed")
            self._reply(msg, msg_id, error=error, method=name, started=started)
            return None
        try:
            kwargs = method.bind(request.params)
        except RpcError as exc:
            self._reply(msg, msg_id, error=exc, method=name, started=started)
            return None
        context = contextvars.copy_context()
        func = method.func
        target = self if owner is None else owner  # a behaviour's method runs on it
        if tracing.hooks is not None:
            # A server span around the method, current while it runs (it sets the trace).
            func = tracing.hooks.server(func, method.is_async, self.identity, name, headers)
        elif headers and TRACE_HEADER in headers:
            context.run(adopt, headers)  # the method's publishes and calls continue the trace
        if method.is_async:
            # Most async methods never suspend: run them now and reply in this very tick.
            task = run_eagerly(
                self.loop,
                func(target, **kwargs),
                functools.partial(self._async_served, msg, msg_id, name, started),
                context,
            )
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return task
        try:
            result = context.run(func, target, **kwargs)
        except Exception as exc:
            log.warning("agent %s: %s() raised %s", self.identity, name, exc, exc_info=True)
            self._reply(msg, msg_id, error=exception_error(exc), method=name, started=started)
            return None
        self._reply(msg, msg_id, result=result, method=name, started=started)
        return None

    def _async_served(
        self,
        msg: Message,
        msg_id: Any,
        name: str,
        started: float,
        result: Any,
        exc: BaseException | None,
    ) -> None:
        if exc is None:
            self._reply(msg, msg_id, result=result, method=name, started=started)
            return
        if self.state == STOPPING and refused_by_stopping(exc):
            msg.nack(requeue=True)  # the method did not fail: the drain cut it short
            return
        if isinstance(exc, Exception):
            log.warning("agent %s: %s() raised %s", self.identity, name, exc, exc_info=exc)
        self._reply(msg, msg_id, error=exception_error(exc), method=name, started=started)

    def _reply(
        self,
        msg: Message,
        msg_id: Any,
        *,
        result: Any = None,
        error: RpcError | None = None,
        method: str = "_unknown",
        started: float = 0.0,
    ) -> None:
        """Answer an RPC request (unless it is a notification), ack it, count it.

        `method` labels the metrics: an exposed method's name, else `_unknown`, so
        callers cannot create unbounded label values.
        """
        stats = self.stats
        stats.count(stats.rpc_served, (method, "ok" if error is None else "error"))
        if started and self.config.metrics:
            stats.rpc_server_hist(method).observe(time.perf_counter() - started)
        reply_to = msg.reply_to
        if msg_id is not _NOTIFICATION and reply_to:
            if error is None:
                try:
                    body = encode_result(result, msg_id)
                except (TypeError, ValueError) as exc:
                    body = encode_error(
                        RpcError(-32603, f"result is not JSON-encodable: {exc}"), msg_id
                    )
            else:
                body = encode_error(error, msg_id)
            props = _reply_properties(self.identity, msg.kind, msg.correlation_id, int(time.time()))
            try:
                self._rpc.publish(body, "", reply_to, props)
            except AMQPError as exc:  # reconnecting: the caller's timeout reports it
                log.warning("agent %s: reply to %r lost: %s", self.identity, reply_to, exc)
            if self.records_traces:
                self.trace.record_out(msg.kind, reply_to, reply_to, len(body), msg.correlation_id)
        msg.ack()


def _reply_properties(
    identity: str, kind: str, correlation_id: str | None, timestamp: int
) -> bytes:
    """A reply's encoded properties, as the general encoder writes them: spliced around
    the correlation id and timestamp from bytes encoded once per identity and kind (the
    encoder costs more than the rest of the reply).
    """
    if correlation_id is not None:
        cid = correlation_id.encode("utf-8", "surrogateescape")
        template = _reply_templates.get((identity, kind))
        if template is None:
            template = _reply_template(identity, kind)
        if len(cid) <= 255:
            head, tail = template
            return b"".join((head, bytes((len(cid),)), cid, _U64.pack(timestamp), tail))
    return encode_properties(
        Properties(
            content_type=envelope.JSON,
            type=kind,
            app_id=identity,
            correlation_id=correlation_id,
            timestamp=timestamp,
        )
    )


# The fixed parts of reply properties, by (identity, kind); bounded, as the kind comes
# from the request.
_reply_templates: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_U64 = struct.Struct(">Q")


def _reply_template(identity: str, kind: str) -> tuple[bytes, bytes]:
    """The property flags and content type; then type and app_id. Each short string is
    encoded by the general encoder (its checks included).
    """

    def short(value: str) -> bytes:
        return encode_properties(Properties(content_type=value))[2:]

    # content_type, correlation_id, timestamp, type, app_id
    flags = 0x8000 | 0x0400 | 0x0040 | 0x0020 | 0x0008
    template = (flags.to_bytes(2, "big") + short(envelope.JSON), short(kind) + short(identity))
    if len(_reply_templates) >= 64:
        _reply_templates.clear()
    _reply_templates[(identity, kind)] = template
    return template


class _Notification:
    """Marker id for JSON-RPC notifications: no reply is sent."""

    def __repr__(self) -> str:
        return "<notification>"


_NOTIFICATION = _Notification()
