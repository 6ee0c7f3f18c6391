"""TLS to RabbitMQ: `amqps://` with a CA, a client certificate and key, against a real TLS
listener that requires client certificates (tests/tls_broker.py starts it at runtime).

Skipped only when `rabbitmqctl` is missing (a remote broker we cannot configure).
"""

from __future__ import annotations

import ssl
import uuid
from urllib.parse import urlencode

import pytest
from broker_tools import wait_until
from tls_broker import TLSListener, listener_ports, rabbitmqctl_available, tls_listener

from munggoggo import Agent, Behaviour
from munggoggo._speedups import Properties
from munggoggo.amqp.errors import AMQPConnectError
from munggoggo.client import Connection
from munggoggo.url import parse_url

pytestmark = [
    pytest.mark.rabbitmq,
    # The TLS listener is added to the machine's node, reading certificates from this
    # machine's files (a chrooted node would not see them).
    pytest.mark.main_broker,
    pytest.mark.skipif(not rabbitmqctl_available(), reason="rabbitmqctl is not available"),
]


@pytest.fixture(scope="module")
def tls():
    before = listener_ports()
    with tls_listener() as listener:
        assert listener.port in listener_ports()
        yield listener
    assert listener_ports() == before  # the broker is left as it was found


def amqps_url(tls: TLSListener, **params: str) -> str:
    return f"amqps://guest:guest@127.0.0.1:{tls.port}/?{urlencode(params)}"


def full_url(tls: TLSListener, **extra: str) -> str:
    files = tls.files
    params = {
        "cafile": str(files.ca),
        "certfile": str(files.client_cert),
        "keyfile": str(files.client_key),
    }
    params.update(extra)
    return amqps_url(tls, **params)


async def test_publish_and_consume_over_tls_with_a_client_certificate(tls):
    async with Connection(full_url(tls)) as conn:
        ssl_object = conn._stream.transport.get_extra_info("ssl_object")
        assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        assert dict(x[0] for x in ssl_object.getpeercert()["subject"])["commonName"] == (
            "localhost"
        )
        ch = await conn.channel()
        q = await ch.queue_declare("", exclusive=True)
        seq = ch.publish(b"over tls", "", q.queue, Properties(content_type="text/plain"))
        await ch.wait_confirms(seq, timeout=10)
        got = await ch.get(q.queue, no_ack=True)
        assert got is not None and got.body == b"over tls"
        assert got.properties.content_type == "text/plain"


async def test_agent_round_trip_over_tls(tls, broker_url):
    topic = f"tls.{uuid.uuid4().hex[:8]}"

    class Keep(Behaviour):
        async def setup(self) -> None:
            self.got: list[bytes] = []

        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.got.append(msg.body)

    agent = Agent(f"tls-{uuid.uuid4().hex[:8]}", url=full_url(tls))
    plain = Agent(f"plain-{uuid.uuid4().hex[:8]}", url=broker_url)  # one mesh, two listeners
    async with agent, plain:
        keep = await agent.add_behaviour(Keep(agent, binding_keys=[topic]))
        await agent.publish(b"hello over tls", topic)
        await plain.publish(b"hello from plain amqp", topic)
        assert await wait_until(lambda: len(keep.got) == 2)
        assert sorted(keep.got) == [b"hello from plain amqp", b"hello over tls"]
        assert await plain.call(agent.identity, "ping") == "pong"
        assert agent.connection._stream.transport.get_extra_info("ssl_object") is not None


def assert_tls_handshake_failed(message: str, url: str) -> None:
    """Our sentence naming the broker, then the ssl module's reason (its words, not ours)."""
    prefix = f"cannot connect to {parse_url(url)}: TLS handshake failed: "
    assert message.startswith(prefix), message
    assert message[len(prefix) :].strip(), message


async def test_wrong_ca_fails_naming_certificate_verification(tls):
    url = full_url(tls, cafile=str(tls.files.stranger_ca))
    with pytest.raises(AMQPConnectError) as info:
        await Connection(url, reconnect=False).connect()
    message = str(info.value)
    assert_tls_handshake_failed(message, url)
    assert f"127.0.0.1:{tls.port}" in message


async def test_server_name_that_the_certificate_does_not_cover_is_refused(tls):
    url = full_url(tls, server_name_indication="broker.example")
    with pytest.raises(AMQPConnectError) as info:
        await Connection(url, reconnect=False).connect()
    assert_tls_handshake_failed(str(info.value), url)


async def test_verify_none_accepts_a_server_it_cannot_verify(tls):
    url = full_url(tls, cafile=str(tls.files.stranger_ca), verify="verify_none")
    async with Connection(url) as conn:
        assert conn.is_open


async def test_missing_client_certificate_is_refused_clearly(tls):
    url = amqps_url(tls, cafile=str(tls.files.ca))
    with pytest.raises(AMQPConnectError) as info:
        await Connection(url, reconnect=False).connect()
    message = str(info.value)
    assert "TLS" in message
    assert "client certificate" in message  # the hint, whether the alert or a reset came first
    assert f"127.0.0.1:{tls.port}" in message


async def test_client_certificate_from_an_untrusted_issuer_is_refused_clearly(tls):
    files = tls.files
    url = full_url(tls, certfile=str(files.stranger_cert), keyfile=str(files.stranger_key))
    with pytest.raises(AMQPConnectError) as info:
        await Connection(url, reconnect=False).connect()
    message = str(info.value)
    assert "TLS" in message
    assert "trusts certfile's issuer" in message


async def test_unreadable_tls_file_names_the_option(tls):
    missing = tls.files.directory / "nope.pem"
    with pytest.raises(AMQPConnectError) as info:
        await Connection(full_url(tls, certfile=str(missing))).connect()
    message = str(info.value)
    assert "cannot set up TLS" in message
    assert "certfile" in message and str(missing) in message


async def test_plain_amqp_client_on_the_tls_port_fails_without_hanging(tls):
    url = f"amqp://guest:guest@127.0.0.1:{tls.port}/?connection_timeout=3000"
    with pytest.raises(AMQPConnectError) as info:
        await Connection(url, reconnect=False).connect()
    assert f"127.0.0.1:{tls.port}" in str(info.value)
    assert "answered with TLS" in str(info.value) and "amqps://" in str(info.value)


def test_ssl_context_from_url_loads_the_client_certificate(tls):
    from munggoggo.url import parse_url

    ctx = parse_url(full_url(tls)).ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "munggoggo test CA"),),)
