"""munggoggo's pytest plugin: a broker per test for the tests of your agents.

Installing munggoggo registers it (the `pytest11` entry point `munggoggo`); `-p no:munggoggo`
turns it off. It gives:

- `mesh_url`: the URL your test's agents connect to. By default a fresh memory:// broker
  for each test, forgotten afterwards; with `--munggoggo-url amqp://...` (or the
  `munggoggo_url` ini setting) the same tests run on that RabbitMQ. While the test runs,
  `MUNGGOGGO_URL` names it too, so agents made without `url=` use it.
- `mesh_name`: `mesh_name("ping")` is a name no other test uses (`ping-1a2b3c4d`), the same
  for every call with that word within one test: identities, topics and queue names that
  keep one test's messages and leftovers out of the next one on a shared RabbitMQ.

On RabbitMQ tests share the URL's vhost (a user without administrator rights cannot make
one per test): isolation comes from names unique to each test, and what a test declared is
cleaned up by the broker itself, since agents of the run give their queues an expiry
(`MUNGGOGGO_QUEUE_EXPIRES_MS`, a minute unless set). See docs/how-to/testing.md.

The module imports nothing of munggoggo's runtime: pytest loads it in every run, including
runs that never touch an agent.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

OPTION = "--munggoggo-url"
INI = "munggoggo_url"
URL_VARIABLE = "MUNGGOGGO_URL"
EXPIRES_VARIABLE = "MUNGGOGGO_QUEUE_EXPIRES_MS"
# Long enough for a test's own restart of an agent, short enough that a run's leftovers do
# not pile up on a shared broker.
TEST_QUEUE_EXPIRES_MS = "60000"
MEMORY = "memory://"
_SET_EXPIRES = pytest.StashKey[bool]()  # this run set EXPIRES_VARIABLE (and takes it back)
# A test's name ("test_x[rabbitmq]") as a memory:// host: brackets, colons and the like go.
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--munggoggo-url` and the `munggoggo_url` ini setting.

    Args:
        parser: pytest's option parser.
    """
    group = parser.getgroup("munggoggo", "munggoggo agents")
    group.addoption(
        OPTION,
        dest="munggoggo_url",
        default=None,
        metavar="URL",
        help="run the tests' mesh_url on this broker (amqp://, amqps://) instead of a "
        "fresh memory:// broker per test",
    )
    parser.addini(INI, "broker URL for mesh_url (the command line's --munggoggo-url wins)")


def pytest_configure(config: pytest.Config) -> None:
    """Check the broker URL given; on RabbitMQ, let the run's queues expire when unused.

    Args:
        config: the run's configuration.

    Raises:
        pytest.UsageError: the URL cannot be used (its scheme, its form).
    """
    url = configured_url(config)
    if url is None:
        return
    from ..url import URLError, parse_url  # only when a URL was given

    try:
        parsed = parse_url(url)
    except URLError as exc:
        raise pytest.UsageError(f"{OPTION}: {exc}") from None
    if not parsed.is_memory and EXPIRES_VARIABLE not in os.environ:
        # Agents read it when they are made: what a test leaves behind (a stopped agent's
        # behaviour queues) is deleted by the broker a minute after its last consumer.
        os.environ[EXPIRES_VARIABLE] = TEST_QUEUE_EXPIRES_MS
        config.stash[_SET_EXPIRES] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    """Take back the queue expiry this run set (the process may go on: pytester, IDEs).

    Args:
        config: the run's configuration.
    """
    if config.stash.get(_SET_EXPIRES, False):
        os.environ.pop(EXPIRES_VARIABLE, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Name the broker in the run's header when one was given.

    Args:
        config: the run's configuration.

    Returns:
        The header line, or None on the default (a memory:// broker per test).
    """
    url = configured_url(config)
    if url is None:
        return None
    from ..url import parse_url

    return f"munggoggo: mesh_url on {parse_url(url)}"  # str() leaves the password out


def configured_url(config: pytest.Config) -> str | None:
    """The broker URL the run was given: `--munggoggo-url`, else the ini setting.

    Args:
        config: the run's configuration.

    Returns:
        The URL, or None when neither is set (a memory:// broker per test).
    """
    url = config.getoption("munggoggo_url", default=None) or config.getini(INI)
    return str(url) if url else None


@pytest.fixture
def mesh_name() -> Callable[[str], str]:
    """Names unique to this test: `mesh_name("ping")` -> `ping-1a2b3c4d`.

    The same word gives the same name within the test, so a test can name an agent's
    identity and find it again; another test (or another run) gets other names. Use them
    for identities, topics and queue names, and the test runs alike on memory:// and on a
    RabbitMQ shared with other tests.

    Returns:
        A function of a word (default `agent`) to a name unique to this test.
    """
    token = uuid.uuid4().hex[:8]

    def name(word: str = "agent") -> str:
        return f"{word}-{token}"

    return name


@pytest.fixture
def mesh_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker URL for this test's agents.

    A fresh memory:// broker of its own unless the run was given `--munggoggo-url` (or
    the `munggoggo_url` ini setting): then that URL, shared by the tests (give them
    names from `mesh_name`). A memory:// URL given there is a name prefix: each test
    still gets a fresh broker. `MUNGGOGGO_URL` is this URL while the test runs.

    Args:
        request: the test asking.

    Yields:
        The URL. A memory:// broker is forgotten after the test.
    """
    url = configured_url(request.config)
    broker: str | None = None
    if url is None or url.startswith(MEMORY):
        prefix = (url or "").removeprefix(MEMORY).strip("/") or request.node.name[:40]
        broker = f"{_broker_name(prefix)}-{uuid.uuid4().hex[:8]}"
        url = MEMORY + broker
    previous = os.environ.get(URL_VARIABLE)
    os.environ[URL_VARIABLE] = url
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop(URL_VARIABLE, None)
        else:
            os.environ[URL_VARIABLE] = previous
        if broker is not None:
            # Imported here: a run that never asks for mesh_url never loads the runtime.
            from ..memory import MemoryBroker

            MemoryBroker.reset(broker)


def _broker_name(text: str) -> str:
    """`text` as a memory:// broker name: what a URL's host may hold."""
    return _NOT_IN_NAMES.sub("-", text).strip("-") or "test"
