"""The multi-tenant setup of docs/security.md, checked on RabbitMQ: a vhost per tenant and
a user whose permissions (the regexes below, copied in the doc) let its agents do all they
do, while other identities, other vhosts and the dead-letter queue stay closed to it.

The vhost and users are created with rabbitmqctl and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import quote

import pytest
from broker_tools import wait_until
from tls_broker import rabbitmqctl_available
from tls_broker import rabbitmqctl_patiently as rabbitmqctl

from munggoggo import Agent, AgentConfig, Behaviour
from munggoggo.amqp.errors import AccessRefused, AuthenticationError
from munggoggo.deadletters import DeadLetters
from munggoggo.testing import broker_address

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not rabbitmqctl_available(), reason="rabbitmqctl is not available"),
]


def agent_permissions(identities: str) -> tuple[str, str, str]:
    """configure, write, read for a user whose agents' identities match `identities` (a
    regex without anchors or dots), exactly as docs/security.md gives them."""
    own = f"{identities}(\\..+)?"  # its inboxes and behaviour queues
    configure = f"^({own}|munggoggo\\.(topic|fanout|dlx|dead-letters|delay(\\..+)?))$"
    write = f"^({own}|munggoggo\\.(topic|fanout|dlx|dead-letters|delay(\\..+)?)|amq\\.default)$"
    read = f"^({own}|munggoggo\\.(topic|fanout|dlx|delay(\\..+)?))$"
    return configure, write, read


@pytest.fixture(scope="module")
def tenant():
    """A vhost with an agent user (identities `sensor-<tag>-...`) and an ops user."""
    tag = uuid.uuid4().hex[:8]
    vhost, agents, ops = f"mg-tenant-{tag}", f"mg-agents-{tag}", f"mg-ops-{tag}"
    password = uuid.uuid4().hex
    rabbitmqctl("add_vhost", vhost)
    try:
        for user in (agents, ops):
            rabbitmqctl("add_user", user, password)
        rabbitmqctl(
            "set_permissions", "-p", vhost, agents, *agent_permissions(f"sensor-{tag}-[^.]+")
        )
        rabbitmqctl("set_permissions", "-p", vhost, ops, ".*", ".*", ".*")
        host, port = broker_address()  # the broker under test
        base = "amqp://{}:" + password + f"@{host}:{port}/" + quote(vhost, safe="")
        yield {"tag": tag, "vhost": vhost, "agents": base.format(agents), "ops": base.format(ops)}
    finally:
        rabbitmqctl("delete_vhost", vhost)  # its queues and exchanges go with it
        for user in (agents, ops):
            with contextlib.suppress(RuntimeError):  # never created
                rabbitmqctl("delete_user", user)


class Keep(Behaviour):
    async def setup(self) -> None:
        self.got: list[bytes] = []
        self.poisoned = 0

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        if msg.body == b"poison":
            self.poisoned += 1
            raise RuntimeError("poison")
        self.got.append(msg.body)


async def test_an_agent_user_can_do_everything_an_agent_does(tenant):
    tag = tenant["tag"]
    config = AgentConfig(max_redeliveries=1)
    a = Agent(f"sensor-{tag}-a", url=tenant["agents"], config=config)
    b = Agent(f"sensor-{tag}-b", url=tenant["agents"])
    async with a, b:
        keep = await a.add_behaviour(Keep(a, binding_keys=["readings.#"]))
        await b.publish(b"21.5", "readings.kitchen")  # pub/sub
        assert await wait_until(lambda: keep.got == [b"21.5"])
        assert await b.call(a.identity, "ping") == "pong"  # RPC both ways
        assert await a.call(b.identity, "ping") == "pong"
        assert a.identity in {p["identity"] for p in await b.peers(timeout=1.0)}  # broadcast
        await b.publish(b"poison", "readings.kitchen")  # retried, then dead-lettered
        assert await wait_until(lambda: keep.poisoned == 2)

        async with _ops(tenant) as ops:
            dead = DeadLetters(ops)
            letters = await dead.list(agent=a.identity)
            assert [d.reason for d in letters] == ["RuntimeError: poison"]
            assert (await dead.purge(all=True, agent=a.identity)).purged == 1


async def test_an_agent_user_can_delay_messages_and_retries(tenant):
    """The delay exchange and queues (core/delays.py) are in the regexes: declaring a delay
    queue with a dead-letter exchange, binding it, publishing through it."""
    tag = tenant["tag"]
    config = AgentConfig(retry_delays=(0.1,))
    a = Agent(f"sensor-{tag}-e", url=tenant["agents"], config=config)
    b = Agent(f"sensor-{tag}-f", url=tenant["agents"])
    async with a, b:
        keep = await a.add_behaviour(Keep(a, binding_keys=["late.#"]))
        await b.publish(b"later", "late.kitchen", delay=0.1)  # through munggoggo.delay
        assert await wait_until(lambda: keep.got == [b"later"])
        await b.publish(b"poison", "late.kitchen")  # retried after 0.1 s, then dead
        assert await wait_until(lambda: keep.poisoned == 2)
        await b.send(a.identity, b"direct", delay=0.1)  # a delay queue to the default exchange
        async with _ops(tenant) as ops:
            dead = DeadLetters(ops)

            async def both_dead() -> bool:
                return len(await dead.list(agent=a.identity)) == 2

            # The direct message arrived (nothing there wants it: a dead letter).
            assert await wait_until(both_dead)
            reasons = sorted(d.reason for d in await dead.list(agent=a.identity))
            assert reasons == ["RuntimeError: poison", "no behaviour template matches this message"]
            await dead.purge(all=True, agent=a.identity)


async def test_an_agent_user_cannot_take_other_identities(tenant):
    stranger = Agent(f"other-{tenant['tag']}", url=tenant["agents"])
    with pytest.raises(AccessRefused) as info:
        await stranger.start()
    error = info.value
    # Refused where it declares its inbox; which queue and user is in the broker's words.
    assert (error.reply_code, error.class_id, error.method_id) == (403, 50, 10)
    assert str(error) == (
        f"channel closed by broker: 403 {error.reply_text} (in reply to Queue.Declare)"
    )


async def test_an_agent_user_cannot_read_dead_letters(tenant):
    agent = Agent(f"sensor-{tenant['tag']}-c", url=tenant["agents"])
    async with agent:
        # (a throwaway vhost: were it allowed, emptying its dead-letter queue harms nobody)
        with pytest.raises(AccessRefused) as info:
            await DeadLetters(agent.connection).purge(all=True)
        error = info.value
        # Refused already where it declares the dead-letter lock every reader takes
        # (`munggoggo.dead-letters.lock`, outside its configure rights), before any look.
        assert (error.reply_code, error.class_id, error.method_id) == (403, 50, 10)
        assert "munggoggo.dead-letters.lock" in error.reply_text
        assert str(error) == (
            f"channel closed by broker: 403 {error.reply_text} (in reply to Queue.Declare)"
        )


async def test_a_tenant_user_cannot_open_another_vhost(tenant):
    url = tenant["agents"].rsplit("/", 1)[0] + "/"  # the default vhost "/"
    with pytest.raises(AuthenticationError, match="may not open vhost '/'"):
        await Agent(f"sensor-{tenant['tag']}-d", url=url).start()


def _ops(tenant):
    from munggoggo.client import Connection

    return Connection(tenant["ops"])
