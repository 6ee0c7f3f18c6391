"""The agent's RPC client: calls to other agents' `@expose`d methods, and peer discovery.

A call publishes a JSON-RPC 2.0 request to the target's inbox on the agent's RPC channel
(no confirms; mandatory, so an unknown target comes back as a return) with `reply_to` our
own inbox, a fresh, unguessable `correlation_id` and the call's deadline
(core/rpc_deadlines.py); the reply arrives in our inbox (see
core/inbox.py) and answers the call's future. One timer on the future bounds the wait.
`Reachability` (core/reachability.py) fails calls in flight when the connection drops and
tells an unreachable agent from an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from typing import Any

from . import envelope
from ._speedups import Properties, encode_properties
from .agent_base import RUNNING, AgentBase
from .amqp.errors import AMQPError
from .rpc import (
    TIMEOUT,
    UNAVAILABLE,
    AgentUnreachable,
    RpcError,
    RpcTimeout,
    decode_response,
    encode_request,
)
from .rpc_deadlines import DEADLINE_HEADER, deadline_marks, deadline_table
from .tracing import outgoing_headers
from .wire import FANOUT_EXCHANGE

log = logging.getLogger("munggoggo.agent")


class RpcClient(AgentBase):
    """The agent's calling role: `call`, `call_params`, `peers`, and their replies."""

    async def call(
        self, target: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call `method` of agent `target` with params by position or by name.

        Args:
            target: the called agent's identity.
            method: the `@expose`d method's name.
            args: params by position.
            timeout: seconds to wait for the reply (default `config.rpc_timeout`); the
                request carries the deadline (AMQP `expiration` and the
                `x-munggoggo-deadline` header), and the callee never starts it later.
                `math.inf` waits for the reply with no deadline.
            kwargs: params by name.

        Returns:
            The method's result.

        Raises:
            ValueError: params given both by position and by name, or a timeout that is
                NaN, zero or negative.
            RpcError: the call failed (unknown agent or method, bad params, the method
                raised, this agent is not running); `AgentUnreachable` and `RpcTimeout`
                (no reply in time, or the callee found the deadline passed) are kinds of
                it.
        """
        if args and kwargs:
            raise ValueError("JSON-RPC params go by position or by name, not both")
        return await self.call_params(
            target, method, list(args) if args else (kwargs or None), timeout=timeout
        )

    async def call_params(
        self,
        target: str,
        method: str,
        params: list[Any] | dict[str, Any] | None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """`call` with the JSON-RPC params given as they travel (a list, a dict or None):
        for callers that forward params, whose names may be anything (even `timeout`).

        Args:
            target: the called agent's identity.
            method: the `@expose`d method's name.
            params: by position (a list), by name (a dict), or None.
            timeout: seconds to wait for the reply (default `config.rpc_timeout`).

        Returns:
            The method's result.

        Raises:
            ValueError: a timeout that is NaN, zero or negative.
            RpcError: as `call`; -32003 when this agent is not running.
            RpcTimeout: no reply in time, or the callee found the call's deadline passed
                before starting it (-32002).
        """
        if self.state != RUNNING:
            raise RpcError(UNAVAILABLE, f"agent {self.identity!r} is {self.state}")
        call_id = self._new_call_id()
        body = encode_request(method, params, call_id)
        limit = timeout if timeout is not None else self.config.rpc_timeout
        now = time.time()
        # The deadline travels with the request (core/rpc_deadlines.py): the broker drops
        # it from a queue once it expires, the callee never starts it afterwards.
        expiration, deadline = deadline_marks(limit, now)
        props = _request_properties(
            self.identity, call_id, expiration, deadline, int(now), target, method
        )
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self._pending_calls[call_id] = fut
        self._call_targets[call_id] = target
        # One timer on the future itself: asyncio.wait_for would add a Task per call.
        # An infinite timeout has no timer: it waits for the reply or the connection's loss.
        timer = (
            self.loop.call_later(limit, _expire_call, fut, target, method, limit)
            if deadline is not None
            else None
        )
        started = time.perf_counter()
        outcome = "error"
        try:
            try:
                self._rpc.publish(body, "", target, props, mandatory=True)
            except AMQPError as exc:
                outcome = "unavailable"
                raise RpcError(UNAVAILABLE, f"cannot call {target!r}: {exc}") from None
            if self.records_traces:
                self.trace.record_out(envelope.KIND_RPC, target, method, len(body), call_id)
            try:
                reply = await fut
            except RpcTimeout:
                outcome = "timeout"
                raise
            except AgentUnreachable:
                outcome = "unreachable"
                raise
            try:
                result = decode_response(reply)
            except RpcError as exc:
                if exc.code != TIMEOUT:
                    raise
                # The callee did not start the call: its deadline had passed there.
                outcome = "timeout"
                raise RpcTimeout(exc.code, exc.message, exc.data) from None
            outcome = "ok"
            return result
        finally:
            if timer is not None:
                timer.cancel()
            self._pending_calls.pop(call_id, None)
            self._call_targets.pop(call_id, None)
            if self.config.metrics:
                self.stats.rpc_client_hist(method, outcome).observe(time.perf_counter() - started)

    async def peers(
        self, timeout: float = 0.5, *, method: str | None = None
    ) -> list[dict[str, Any]]:
        """Discover the other agents: broadcast `describe`, collect answers.

        Args:
            timeout: seconds to collect answers.
            method: only the agents that serve an exposed method of this name (their
                own, or a running behaviour's); None: every agent.

        Returns:
            Each other agent's `describe()` answer, sorted by identity. An answer that is
            not an object with a string `identity` is left out (and logged).
        """
        call_id = self._new_call_id()
        collector: list[bytes] = []
        self._collectors[call_id] = collector
        props = encode_properties(
            Properties(
                content_type=envelope.JSON,
                type=envelope.KIND_CONTROL,
                app_id=self.identity,
                correlation_id=call_id,
                reply_to=self.identity,
            )
        )
        try:
            self._rpc.publish(encode_request("describe", None, call_id), FANOUT_EXCHANGE, "", props)
            await asyncio.sleep(timeout)
        finally:
            self._collectors.pop(call_id, None)
        found = []
        malformed = 0
        for body in collector:
            try:
                info = decode_response(body)
            except RpcError:
                continue
            # An answer that is no description (another client's `describe`, say) would
            # break whoever lists or documents the agents: left out, said once per call.
            if not isinstance(info, dict) or not isinstance(info.get("identity"), str):
                malformed += 1
                continue
            if info["identity"] == self.identity:
                continue
            methods = info.get("methods")
            if method is not None and (
                not isinstance(methods, list | tuple) or method not in methods
            ):
                continue
            found.append(info)
        if malformed:
            log.warning(
                "agent %s: peers() left out %d describe answer(s) without a string identity",
                self.identity,
                malformed,
            )
        return sorted(found, key=lambda i: i["identity"])

    def _new_call_id(self) -> str:
        """A correlation id for one call: our prefix and 96 random bits, so that nobody
        who saw earlier ids can guess the next one and answer in the callee's place.
        """
        return self._call_prefix + _random_hex()

    def _take_reply(self, call_id: str, delivery: Any) -> None:
        """A reply carrying one of our call ids: it answers the call if that call still
        waits and the reply comes from the agent called. A reply naming another sender
        (`app_id`) is dropped; one naming none is taken, as plain AMQP servers send them
        (see docs/decisions.md). A late reply (the call timed out) is dropped.
        """
        fut = self._pending_calls.get(call_id)
        if fut is None:
            collector = self._collectors.get(call_id)
            if collector is not None:
                collector.append(delivery.body)
            return
        sender = delivery.properties.app_id
        target = self._call_targets.get(call_id)
        if sender and target is not None and sender != target:
            log.warning(
                "agent %s: dropped a reply from %r to a call to %r", self.identity, sender, target
            )
            return
        del self._pending_calls[call_id]
        if not fut.done():
            fut.set_result(delivery.body)

    def _on_return(self, delivery: Any) -> None:
        """The broker returned a mandatory publish (no queue for its routing key): a call
        fails as unknown or unreachable; a direct message is counted and logged.
        """
        self.stats.returned += 1
        call_id = delivery.properties.correlation_id
        fut = self._pending_calls.pop(call_id, None) if call_id else None
        if fut is not None and not fut.done():
            fut.set_exception(self._reachability.no_route(delivery.routing_key))
            return
        log.warning(
            "agent %s: message to %r returned by the broker: %d %s",
            self.identity,
            delivery.routing_key,
            delivery.reply_code,
            delivery.reply_text,
        )


def _request_properties(
    identity: str,
    call_id: str,
    expiration: str | None,
    deadline: int | None,
    timestamp: int,
    target: str,
    method: str,
) -> bytes:
    """A request's encoded properties: `reply_to` and `app_id` our identity, the
    deadline's two marks, a traceparent when a trace is current.

    The usual request (a deadline, no trace) is spliced from bytes encoded once per
    identity and expiration: the general encoder costs more than the rest of the call's
    own work. The bytes are the general encoder's.
    """
    trace = outgoing_headers(None, envelope.KIND_RPC, target, method)
    table = deadline_table(deadline) if deadline is not None and trace is None else None
    if table is not None:
        cid = call_id.encode("utf-8", "surrogateescape")
        template = _templates.get((identity, expiration))
        if template is None:
            template = _request_template(identity, expiration)
        if len(cid) <= 255:
            head, middle, tail = template
            return b"".join(
                (head, table, bytes((len(cid),)), cid, middle, _U64.pack(timestamp), tail)
            )
    headers: dict[str, Any] | None = None
    if deadline is not None:
        headers = {DEADLINE_HEADER: deadline}
    if trace is not None:
        headers = {**headers, **trace} if headers else trace
    return encode_properties(
        Properties(
            content_type=envelope.JSON,
            type=envelope.KIND_RPC,
            app_id=identity,
            correlation_id=call_id,
            reply_to=identity,
            expiration=expiration,
            timestamp=timestamp,
            headers=headers,
        )
    )


# The fixed parts of request properties, by (identity, expiration); bounded, as a
# caller may pass ever different timeouts.
_templates: dict[tuple[str, str | None], tuple[bytes, bytes, bytes]] = {}
_U64 = struct.Struct(">Q")


def _request_template(identity: str, expiration: str | None) -> tuple[bytes, bytes, bytes]:
    """What surrounds a request's header table, correlation id and timestamp: the
    property flags and content type; reply_to and expiration; type and app_id. Each
    short string is encoded by the general encoder (its checks included).
    """

    def short(value: str) -> bytes:
        return encode_properties(Properties(content_type=value))[2:]

    # content_type, headers, correlation_id, reply_to, [expiration,] timestamp, type, app_id
    flags = 0x8000 | 0x2000 | 0x0400 | 0x0200 | 0x0040 | 0x0020 | 0x0008
    middle = short(identity)
    if expiration is not None:
        flags |= 0x0100
        middle += short(expiration)
    template = (
        flags.to_bytes(2, "big") + short(envelope.JSON),
        middle,
        short(envelope.KIND_RPC) + short(identity),
    )
    if len(_templates) >= 256:
        _templates.clear()
    _templates[(identity, expiration)] = template
    return template


# Random call ids drawn in batches: one urandom read serves many calls (each id still
# gets 96 bits nobody saw before). A forked child draws its own.
_ID_BATCH = 64
_random_ids: list[str] = []
os.register_at_fork(after_in_child=_random_ids.clear)


def _random_hex() -> str:
    """96 random bits as 24 hex digits, never handed out twice."""
    if not _random_ids:
        raw = os.urandom(12 * _ID_BATCH).hex()
        _random_ids.extend(raw[i : i + 24] for i in range(0, len(raw), 24))
    return _random_ids.pop()


def _expire_call(fut: asyncio.Future[bytes], target: str, method: str, limit: float) -> None:
    if not fut.done():
        fut.set_exception(
            RpcTimeout(TIMEOUT, f"no reply from agent {target!r} to {method}() within {limit:g}s")
        )
