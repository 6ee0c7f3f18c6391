"""The broker password never appears in logs, error messages, reprs or CLI output.

A distinctive password is used in every way a connection can fail (wrong password, nothing
listening, a server that never answers, a bad vhost, TLS failures, malformed URLs) and
through a recovery whose reconnects fail for a while; every log record (DEBUG and up),
every exception's str/repr/traceback and the CLI's stdout/stderr are searched for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
import uuid
from urllib.parse import quote

import pytest
from broker_tools import close_broker_connection, local_port, wait_until
from tls_broker import rabbitmqctl_available
from tls_broker import rabbitmqctl_patiently as rabbitmqctl

from munggoggo import Agent
from munggoggo.amqp.errors import AMQPConnectError, AuthenticationError
from munggoggo.client import Connection
from munggoggo.gateway.state import GatewaySettings
from munggoggo.testing import broker_address, free_port
from munggoggo.transport import Backoff
from munggoggo.url import URLError, parse_url

SECRET = f"Pw-{uuid.uuid4().hex[:12]}-sEcReT"
# The forms a password can take in text: as given, percent-encoded, and its tail (a
# message that cut the password at a '/' would show only part of it).
FORMS = (SECRET, quote(SECRET, safe=""), SECRET[3:])
# host:port of the broker under test (MUNGGOGGO_URL's): where a connection is really made.
BROKER = "{}:{}".format(*broker_address())


def assert_clean(*texts: str) -> None:
    for text in texts:
        for form in FORMS:
            assert form not in text, f"the password leaked into: {text!r}"


def exception_texts(exc: BaseException) -> tuple[str, str, str]:
    return str(exc), repr(exc), "".join(traceback.format_exception(exc))


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


# --------------------------------------------------------------------------- URLs and objects


def test_url_and_settings_objects_never_show_the_password():
    for url in (
        f"amqp://guest:{SECRET}@127.0.0.1:5672/",
        f"amqps://guest:{quote(SECRET)}@broker.example/tenant?cafile=/ca.pem&verify=verify_peer",
    ):
        parsed = parse_url(url)
        assert parsed.password == SECRET
        assert_clean(str(parsed), repr(parsed), f"{parsed}", f"{parsed!r}")
    settings = GatewaySettings(url=f"amqp://guest:{SECRET}@127.0.0.1/")
    assert_clean(repr(settings), str(settings))
    agent = Agent("cred-repr", url=f"amqp://guest:{SECRET}@127.0.0.1:5672/")
    assert_clean(repr(agent), str(agent), repr(agent.url), str(agent.url))


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{SECRET}@127.0.0.1:notaport/",
        f"amqp://guest:{SECRET}@127.0.0.1:99999/",
        f"amqp://guest:{SECRET}@[::1/",
        f"amqp://guest:{SECRET}/more@127.0.0.1/",  # an unencoded '/' in the password
        f"amqp://guest:{SECRET}?more@127.0.0.1/",
        f"amqp://guest:{SECRET}#more@127.0.0.1/",
        f"amqp://guest:1234/{SECRET}@127.0.0.1/",  # ... that urllib reads as host:port/vhost
        f"amqp:guest:{SECRET}@127.0.0.1",  # no '//': the rest would be taken for the vhost
        f"http://guest:{SECRET}@127.0.0.1/",
        f"ftp:guest:{SECRET}@127.0.0.1",
        f"amqp://guest:{SECRET}@127.0.0.1/?heartbeat=soon",
        f"amqp://guest:{SECRET}@127.0.0.1/?nonsense=1",
        f"amqp://guest:{SECRET}@127.0.0.1/?verify=maybe",
        f"amqp://guest:{SECRET}@127.0.0.1/?frame_max=-5",
    ],
)
def test_malformed_urls_are_refused_without_the_password(url):
    with pytest.raises(URLError) as info:
        parse_url(url)
    assert_clean(*exception_texts(info.value))
    assert str(info.value)  # and it says what is wrong


# --------------------------------------------------------------------------- failed connections


async def silent_server() -> tuple[asyncio.Server, int]:
    """Accepts connections and never says a word (a handshake that times out)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_failed_connections_never_show_the_password(debug_logs, broker_url):
    server, silent_port = await silent_server()
    creds = f"guest:{quote(SECRET, safe='')}"
    host = f"{creds}@127.0.0.1"
    broker = f"{creds}@{BROKER}"
    cases = {
        "wrong password": (f"amqp://{broker}/", AuthenticationError),
        "nothing listening": (f"amqp://{host}:{free_port()}/", AMQPConnectError),
        "no handshake": (f"amqp://{host}:{silent_port}/?connection_timeout=300", AMQPConnectError),
        "TLS to a plain port": (f"amqps://{broker}/?connection_timeout=3000", AMQPConnectError),
        "missing CA file": (f"amqps://{broker}/?cafile=/nonexistent/ca.pem", AMQPConnectError),
    }
    try:
        for name, (url, error) in cases.items():
            with pytest.raises(error) as info:
                await Connection(url, reconnect=False).connect()
            assert parse_url(url).host in str(info.value), name  # it names the broker
            assert_clean(*exception_texts(info.value))
        # An agent that cannot start says so without the password, in logs and error.
        agent = Agent(f"cred-{uuid.uuid4().hex[:8]}", url=f"amqp://{broker}/")
        with pytest.raises(AuthenticationError) as info:
            await agent.start()
        assert_clean(*exception_texts(info.value))
    finally:
        server.close()
        await server.wait_closed()
    assert debug_logs.records  # the failures were logged, and nothing logged the password
    assert_clean(debug_logs.text, *(repr(r.__dict__) for r in debug_logs.records))


@pytest.fixture
def broker_user():
    """A user with the distinctive password and rights on '/', deleted afterwards."""
    if not rabbitmqctl_available():
        pytest.skip("rabbitmqctl is not available to add a user")
    name = f"mg-cred-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", name, SECRET)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_user", name)


async def test_bad_vhost_and_recovery_never_show_the_password(debug_logs, broker_user):
    creds = f"{broker_user}:{quote(SECRET, safe='')}@{BROKER}"
    with pytest.raises(AuthenticationError) as info:
        await Connection(f"amqp://{creds}/no-such-vhost-{uuid.uuid4().hex[:6]}").connect()
    assert "may not open vhost" in str(info.value)
    assert_clean(*exception_texts(info.value))

    conn = await Connection(
        f"amqp://{creds}/", backoff=Backoff(initial=0.05, maximum=0.2, jitter=lambda d: d)
    ).connect()
    try:
        # While the password is changed, every reconnect is refused and logged; then it
        # is restored and the connection recovers.
        rabbitmqctl("change_password", broker_user, SECRET + "-changed")
        close_broker_connection(local_port(conn), "credentials test")
        assert await wait_until(
            lambda: any("reconnect to" in r.getMessage() for r in debug_logs.records), 15
        )
        rabbitmqctl("change_password", broker_user, SECRET)
        assert await wait_until(lambda: conn.is_open and conn.reconnects == 1, 15)
    finally:
        await conn.close()
    failures = [r.getMessage() for r in debug_logs.records if "reconnect to" in r.getMessage()]
    assert any("refused the credentials" in m for m in failures), failures
    assert_clean(debug_logs.text, *(repr(r.__dict__) for r in debug_logs.records))


# --------------------------------------------------------------------------- the CLI


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "munggoggo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--url", f"amqp://guest:{SECRET}@{BROKER}/", "ctl", "peers"], {}, "credentials"),
        (["ctl", "peers"], {"MUNGGOGGO_URL": f"amqp://guest:{SECRET}@{BROKER}/"}, "credentials"),
        (
            ["--url", f"amqp://guest:{SECRET}@{BROKER}/", "ctl", "dead-letters", "list"],
            {},
            "credentials",
        ),
        (["--url", f"amqp://guest:{SECRET}/x@127.0.0.1/", "ctl", "peers"], {}, "percent-encode"),
        (
            ["run", "munggoggo.demo:CalculatorAgent", "--url", f"amqp://guest:{SECRET}@{BROKER}/"],
            {},
            "credentials",
        ),
        (
            ["run", "munggoggo.demo:CalculatorAgent", "--url", "amqp://guest:x@127.0.0.1:1/"],
            {"MUNGGOGGO_URL": f"amqp://guest:{SECRET}@{BROKER}/"},
            "connection refused",
        ),
        (["run", "munggoggo.demo:PingAgent", "--url", f"amqp:guest:{SECRET}@h"], {}, "no host"),
    ],
    ids=[
        "ctl-wrong-password",
        "ctl-env",
        "dead-letters",
        "ctl-bad-url",
        "run",
        "run-env",
        "run-no-host",
    ],
)
def test_cli_errors_never_show_the_password(broker_url, args, env, says):
    code, output = run_cli(*args, env=env)
    assert code == 1, output
    assert says in output
    assert_clean(output)
