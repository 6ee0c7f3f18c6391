"""core/url.py: broker URLs into connection parameters, on their own (no broker).

Defaults, ports per scheme, the vhost, the query parameters (RabbitMQ URI spec names,
connection_timeout in milliseconds), memory://, MUNGGOGGO_URL, refusals that name the
problem, and failover lists (`parse_urls`). That no error or str() shows the password is
tests/test_credentials.py's; the TLS context tests/test_tls.py's.
"""

from __future__ import annotations

import pytest

from munggoggo.url import DEFAULT_URL, BrokerURL, URLError, parse_url, parse_urls

SECRET = "Url-s3cret"  # a password that must never reach an error


def test_a_bare_host_gets_the_defaults():
    url = parse_url("amqp://broker.example")
    assert (url.scheme, url.host, url.port, url.vhost) == ("amqp", "broker.example", 5672, "/")
    assert (url.username, url.password) == ("guest", "guest")
    assert (url.heartbeat, url.frame_max, url.channel_max) == (60, 131072, 2047)
    assert url.connection_timeout == 10.0 and url.name is None and url.verify
    assert not url.tls and not url.is_memory and url.ssl_context() is None


def test_amqps_defaults_to_port_5671_and_tls():
    url = parse_url("amqps://u:p@broker.example/")
    assert url.port == 5671 and url.tls
    assert parse_url("amqps://u:p@broker.example:6000/").port == 6000


def test_the_vhost_is_percent_decoded_and_shown_encoded():
    url = parse_url(f"amqp://user%40corp:{SECRET}@h:5673/%2Fprod")
    assert url.vhost == "/prod" and url.username == "user@corp" and url.password == SECRET
    assert str(url) == "amqp://h:5673/%2Fprod"
    assert str(parse_url("amqp://h/")) == "amqp://h:5672/"
    assert parse_url("amqp://h").vhost == "/"


def test_query_parameters_set_the_connection_options():
    url = parse_url(
        "amqps://h/?heartbeat=5&frame_max=8192&channel_max=10&connection_timeout=2500"
        "&name=worker-1&cafile=/ca.pem&certfile=/c.pem&keyfile=/k.pem"
        "&server_name_indication=broker.example&verify=verify_none"
    )
    assert (url.heartbeat, url.frame_max, url.channel_max) == (5, 8192, 10)
    assert url.connection_timeout == 2.5  # milliseconds in the URL, seconds here
    assert (url.name, url.cafile, url.certfile, url.keyfile) == (
        "worker-1",
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert url.server_name_indication == "broker.example" and url.verify is False
    assert parse_url("amqps://h/?verify=verify_peer").verify is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("http://h/", "unsupported broker URL scheme 'http'"),
        ("amqp://h/?nonsense=1", "unknown query parameter(s) nonsense"),
        ("amqp://h/?heartbeat=soon", "heartbeat='soon'"),
        ("amqp://h/?frame_max=-5", "frame_max must not be negative"),
        ("amqp://h/?verify=maybe", "verify must be verify_peer or verify_none"),
        ("amqp:guest:guest@h", "has no host"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(text, problem):
    with pytest.raises(URLError) as info:
        parse_url(text)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_memory_urls_name_a_broker_in_this_process():
    url = parse_url("memory://tests")
    assert url.is_memory and url.host == "tests" and str(url) == "memory://tests"
    assert parse_url("memory://").host == "default"


def test_no_url_reads_munggoggo_url_then_the_default(monkeypatch):
    monkeypatch.setenv("MUNGGOGGO_URL", "amqp://u:p@elsewhere:5999/v")
    assert (parse_url().host, parse_url().port, parse_url().vhost) == ("elsewhere", 5999, "v")
    monkeypatch.setenv("MUNGGOGGO_URL", "amqp://a/, amqp://b/")
    assert [u.host for u in parse_urls()] == ["a", "b"]
    monkeypatch.delenv("MUNGGOGGO_URL")
    assert parse_url() == parse_url(DEFAULT_URL)
    assert parse_urls() == (parse_url(DEFAULT_URL),)


def test_a_parsed_url_passes_through_parse_urls():
    url = parse_url("amqp://h/")
    assert parse_urls(url) == (url,)
    assert parse_urls([url, "amqp://g/"]) == (url, parse_url("amqp://g/"))
    assert isinstance(parse_urls("amqp://h/")[0], BrokerURL)


# -- failover lists ------------------------------------------------------------------------


def test_a_list_parses_from_commas_or_python_lists():
    a, b = "amqp://u:p@h1:5672/", "amqps://u:p@h2/vh?heartbeat=5"
    assert [str(u) for u in parse_urls(f"{a}, {b}")] == ["amqp://h1:5672/", "amqps://h2:5671/vh"]
    assert parse_urls([a, b]) == parse_urls(f"{a},{b}")
    assert len(parse_urls(a)) == 1


def test_a_comma_inside_a_password_does_not_split_the_url():
    (url,) = parse_urls("amqp://user:pa,ss@h1:5672/")
    assert url.password == "pa,ss" and url.host == "h1"


def test_bad_lists_are_clear_errors_without_passwords():
    with pytest.raises(URLError, match="memory:// URL cannot be part of a failover list"):
        parse_urls(["memory://x", "amqp://h1/"])
    with pytest.raises(URLError, match="no broker URL given"):
        parse_urls([])
    with pytest.raises(URLError) as info:  # one-URL callers get told, not a garbled vhost
        parse_url(f"amqp://u:{SECRET}@h1/,amqp://u:{SECRET}@h2/")
    assert "expected one broker URL, got a list of 2" in str(info.value)
    assert SECRET not in str(info.value)
