"""RPC when the path to the target breaks: "unreachable right now" (-32005, retryable) versus
"no such agent" (-32001).

- A call in flight when the caller's connection drops fails at once with AgentUnreachable
  (`may_have_run` true), not after its timeout: cut by the fault proxy, closed by the broker
  (rabbitmqctl close_connection), and with the request itself lost in the drop.
- A call whose target has no inbox right after the caller's connection recovered fails as
  AgentUnreachable (`may_have_run` false) for `AgentConfig.unreachable_grace` seconds: the
  broker lost the inbox and its agent, still reconnecting, declares it again; a retry then
  reaches it. After the grace, no inbox means unknown (-32001) again.
- The gateway answers -32005 with 503 and Retry-After over REST and passes the code through
  over JSON-RPC.

An agent that is only reconnecting keeps its durable inbox: a call to it is routed and
waits for it (tests/test_inbox.py). memory:// never loses its connection, so none of this
happens there.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import close_broker_connection, local_port, wait_until
from fault_tools import delete_queues
from gateway_tools import running_gateway
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, AgentUnreachable, RpcError, expose
from munggoggo.gateway.state import GatewaySettings
from munggoggo.rpc import UNKNOWN_AGENT, UNREACHABLE
from munggoggo.testing import FaultProxy, broker_address

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]

LONG = 120.0  # a call timeout no test waits out: the failure must come from the loss
PROMPT = 30.0  # bounded wait for what must happen at once (generous: the machine is shared)


class Holder(Agent):
    """`hold()` runs until the test releases it; `mul` answers at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.holding = 0

    @expose
    async def hold(self) -> str:
        self.holding += 1
        await self.release.wait()
        return "released"

    @expose
    def mul(self, a: int, b: int) -> int:
        return a * b


def proxied(proxy: FaultProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


async def recovered(agent: Agent, reconnects: int = 1) -> None:
    conn = agent.connection
    ok = await wait_until(lambda: conn.reconnects >= reconnects and conn.is_open, timeout=PROMPT)
    assert ok, f"{agent.identity} did not reconnect"


async def fails_unreachable(call: asyncio.Future, may_have_run: bool) -> AgentUnreachable:
    with pytest.raises(AgentUnreachable) as info:
        await asyncio.wait_for(call, PROMPT)
    error = info.value
    assert isinstance(error, RpcError)
    assert error.code == UNREACHABLE == -32005
    assert error.may_have_run is may_have_run
    assert error.data == {"may_have_run": may_have_run}
    return error


# -- calls in flight when the caller's connection drops -----------------------------------


async def test_a_call_in_flight_fails_at_once_when_the_connection_is_cut(broker_url):
    async with (
        FaultProxy(upstream=broker_address()) as proxy,
        Holder(uid("held"), url=broker_url) as target,
        Agent(uid("cut-caller"), url=proxied(proxy)) as caller,
    ):
        call = asyncio.ensure_future(caller.call(target.identity, "hold", timeout=LONG))
        assert await wait_until(lambda: target.holding == 1, timeout=PROMPT)
        assert proxy.cut() == 1
        await fails_unreachable(call, may_have_run=True)
        target.release.set()
        # Retryable: once the connection is back the same call goes through.
        await recovered(caller)
        assert await caller.call(target.identity, "mul", 6, 7, timeout=PROMPT) == 42
        assert await caller.call(target.identity, "hold", timeout=PROMPT) == "released"


async def test_a_call_in_flight_fails_at_once_when_the_broker_closes_the_connection(broker_url):
    async with (
        Holder(uid("held"), url=broker_url) as target,
        Agent(uid("closed-caller"), url=broker_url) as caller,
    ):
        call = asyncio.ensure_future(caller.call(target.identity, "hold", timeout=LONG))
        assert await wait_until(lambda: target.holding == 1, timeout=PROMPT)
        await asyncio.to_thread(close_broker_connection, local_port(caller.connection))
        await fails_unreachable(call, may_have_run=True)
        target.release.set()
        await recovered(caller)
        assert await caller.call(target.identity, "mul", 2, 3, timeout=PROMPT) == 6


async def test_a_request_lost_with_the_connection_fails_at_once(broker_url):
    """The request is queued for the socket in the very tick the connection is cut: it never
    reaches the broker, so no reply can come; the call must not wait for one."""
    async with (
        FaultProxy(upstream=broker_address()) as proxy,
        Holder(uid("never"), url=broker_url) as target,
        Agent(uid("lost-caller"), url=proxied(proxy)) as caller,
    ):
        call = asyncio.ensure_future(caller.call(target.identity, "mul", 1, 1, timeout=LONG))
        await asyncio.sleep(0)  # the call published; the write is due later in this tick
        assert proxy.cut() == 1
        await fails_unreachable(call, may_have_run=True)
        await recovered(caller)
        assert await caller.call(target.identity, "mul", 1, 1, timeout=PROMPT) == 1


async def test_a_call_sent_while_the_recovery_restores_fails_at_once_when_it_is_cut(broker_url):
    """During a recovery the RPC channel is ready before the inbox consumer is restored: a
    call can go out on the new connection then, and must not outlive that connection either.
    The proxy slows every chunk so that the restore takes a few round trips."""
    async with (
        FaultProxy(upstream=broker_address()) as proxy,
        Holder(uid("restore-held"), url=broker_url) as target,
        Agent(uid("restore-caller"), url=proxied(proxy)) as caller,
    ):
        conn = caller.connection
        proxy.slow(delay=0.25)
        assert proxy.cut() == 1
        assert await wait_until(lambda: conn.state == "recovering", timeout=PROMPT)
        while True:
            assert conn.state == "recovering", "the restore ended before a call went out"
            call = asyncio.ensure_future(caller.call(target.identity, "mul", 2, 2, timeout=LONG))
            await asyncio.sleep(0)  # the call publishes, or is refused (channel not ready)
            if not call.done():
                break
            assert call.exception().code == -32003  # not connected yet
            await asyncio.sleep(0.02)
        assert conn.state == "recovering"
        assert proxy.cut() == 1
        proxy.normal()
        await fails_unreachable(call, may_have_run=True)
        await recovered(caller)
        assert await caller.call(target.identity, "mul", 2, 2, timeout=PROMPT) == 4


# -- a missing inbox right after the caller's own recovery --------------------------------


async def test_a_target_without_inbox_right_after_recovery_is_unreachable_until_back(
    broker_url,
):
    """The broker lost the target's inbox (a node that restarted without its data, a
    failover to another broker: here the queue is deleted while the target is cut off) and
    the caller's connection recovered: the target is reconnecting, not gone."""
    async with (
        FaultProxy(upstream=broker_address()) as target_link,
        FaultProxy(upstream=broker_address()) as caller_link,
    ):
        target = Holder(uid("phoenix"), url=proxied(target_link))
        caller = Agent(
            uid("back-caller"), url=proxied(caller_link), config={"unreachable_grace": 60.0}
        )
        async with target, caller:
            target_link.refuse()  # the target stays away until accept()
            assert target_link.cut() == 1
            assert await wait_until(lambda: not target.connection.is_open, timeout=PROMPT)
            await delete_queues(broker_url, target.identity)
            assert caller_link.cut() == 1
            await recovered(caller)

            call = caller.call(target.identity, "mul", 3, 4, timeout=LONG)
            await fails_unreachable(asyncio.ensure_future(call), may_have_run=False)
            assert target.holding == 0

            await target_link.accept()  # its recovery declares the inbox again
            await recovered(target)
            assert await caller.call(target.identity, "mul", 3, 4, timeout=PROMPT) == 12


async def test_after_the_grace_a_missing_inbox_is_an_unknown_agent_again(broker_url):
    grace = 1.0
    async with (
        FaultProxy(upstream=broker_address()) as proxy,
        Agent(
            uid("grace-caller"), url=proxied(proxy), config=AgentConfig(unreachable_grace=grace)
        ) as caller,
    ):
        nobody = uid("nobody")
        # Before any recovery there is no doubt: no inbox, no such agent.
        with pytest.raises(RpcError) as info:
            await caller.call(nobody, "mul", 1, 2, timeout=PROMPT)
        assert info.value.code == UNKNOWN_AGENT and not isinstance(info.value, AgentUnreachable)
        assert proxy.cut() == 1
        await recovered(caller)
        await asyncio.sleep(grace + 0.5)  # the grace is over, however slow the machine
        with pytest.raises(RpcError) as info:
            await caller.call(nobody, "mul", 1, 2, timeout=PROMPT)
        assert info.value.code == UNKNOWN_AGENT and not isinstance(info.value, AgentUnreachable)


# -- the gateway ------------------------------------------------------------------------


@pytest.mark.parametrize("face", ["rest", "jsonrpc"])
async def test_the_gateway_answers_unreachable_as_retryable(broker_url, face):
    async with (
        FaultProxy(upstream=broker_address()) as proxy,
        Holder(uid("gw-held"), url=broker_url) as target,
        running_gateway(GatewaySettings(url=proxied(proxy), call_timeout=LONG)) as gw,
    ):
        if face == "rest":
            request = gw.http.post(f"/agents/{target.identity}/call/hold", json=[])
        else:
            payload = {"jsonrpc": "2.0", "method": f"{target.identity}.hold", "id": 7}
            request = gw.rpc(payload)
        pending = asyncio.ensure_future(request)
        assert await wait_until(lambda: target.holding == 1, timeout=PROMPT)
        assert proxy.cut() == 1
        response = await asyncio.wait_for(pending, PROMPT)
        target.release.set()
        if face == "rest":
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            error = response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            reply = response.json()
            assert reply["id"] == 7
            error = reply["error"]
        assert error["code"] == -32005
        assert error["data"] == {"may_have_run": True}
