"""The testing kit for users' agents: munggoggo's pytest plugin and MessageRecorder.

The plugin is what installing munggoggo registers (the pytest11 entry point); pytester runs
users' test files with it in a temporary folder: the example's tests on a fresh memory://
broker per test and, with --munggoggo-url, on RabbitMQ; a leftover of one test is invisible
in the next on both. MessageRecorder is tested directly, on RabbitMQ and memory:// (this
suite's own mesh_url, which overrides the plugin's fixture of that name).
"""

from __future__ import annotations

import asyncio
import os
import pickle
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from mesh_tools import uid

from munggoggo import Agent, MunggoggoError
from munggoggo.memory import MemoryBroker
from munggoggo.template import Template
from munggoggo.testing import MessageRecorder, RecorderTimeout, pytest_plugin

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "testing"


def inner_conftest(pytester: pytest.Pytester) -> None:
    """The users' runs: async tests under pytest-asyncio, no plugin of this suite."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


# -- the plugin ------------------------------------------------------------------------


def test_installing_munggoggo_registers_the_plugin(request: pytest.FixtureRequest) -> None:
    [entry] = [ep for ep in entry_points(group="pytest11") if ep.name == "munggoggo"]
    assert entry.value == "munggoggo.testing.pytest_plugin"
    assert request.config.pluginmanager.get_plugin("munggoggo") is pytest_plugin


def test_the_example_passes_on_a_memory_broker_per_test(pytester: pytest.Pytester) -> None:
    inner_conftest(pytester)
    for name in ("greeter.py", "test_greeter.py"):
        pytester.makepyfile(**{name.removesuffix(".py"): (EXAMPLE / name).read_text()})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_example_passes_on_rabbitmq(pytester: pytest.Pytester, broker_url: str) -> None:
    inner_conftest(pytester)
    for name in ("greeter.py", "test_greeter.py"):
        pytester.makepyfile(**{name.removesuffix(".py"): (EXAMPLE / name).read_text()})
    result = pytester.runpytest("--munggoggo-url", broker_url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["munggoggo: mesh_url on amqp://*"])
    assert "guest:guest" not in result.stdout.str()


def test_a_rabbitmq_run_lets_the_queues_of_its_agents_expire(
    pytester: pytest.Pytester, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a test's agents leave on a shared broker goes a minute after they stopped,
    unless the user chose an expiry; the variable is taken back after the run."""
    inner_conftest(pytester)
    pytester.makepyfile(
        """
        from munggoggo import AgentConfig

        def test_expiry(mesh_url):
            print("EXPIRES", AgentConfig().behaviour_queue_expires_ms)
        """
    )
    monkeypatch.delenv("MUNGGOGGO_QUEUE_EXPIRES_MS", raising=False)
    result = pytester.runpytest("-s", "--munggoggo-url", broker_url)
    result.stdout.fnmatch_lines(["*EXPIRES 60000*"])
    assert "MUNGGOGGO_QUEUE_EXPIRES_MS" not in os.environ
    monkeypatch.setenv("MUNGGOGGO_QUEUE_EXPIRES_MS", "5000")
    result = pytester.runpytest("-s", "--munggoggo-url", broker_url)
    result.stdout.fnmatch_lines(["*EXPIRES 5000*"])
    assert os.environ["MUNGGOGGO_QUEUE_EXPIRES_MS"] == "5000"


# Two tests in file order: the first leaves a message in a queue of a stopped agent, the
# second starts that agent again (the same identity: IDENTITY, or mesh_name's) and must
# not receive it. URL (the controls) replaces mesh_url by one broker for both tests.
LEFTOVER = """
import os

import pytest

from munggoggo import Agent
from munggoggo.testing import MessageRecorder, RecorderTimeout

# One event loop for both tests: a memory:// broker of the same name would live on.
pytestmark = pytest.mark.asyncio(loop_scope="module")
IDENTITY, TOPIC, URL = {identity!r}, {topic!r}, {url!r}
first = {{}}


def keeper_identity(mesh_name):
    return IDENTITY or mesh_name("keeper")


async def test_a_leaves_a_message_behind(mesh_url, mesh_name):
    first["url"] = mesh_url
    assert os.environ["MUNGGOGGO_URL"] == mesh_url
    mesh_url = URL or mesh_url
    async with Agent(keeper_identity(mesh_name), url=mesh_url) as keeper:
        await keeper.add_behaviour(MessageRecorder(keeper, binding_keys=[TOPIC]))
    # The keeper stopped; its recorder's queue stays bound to TOPIC and keeps this.
    async with Agent(mesh_name("sender"), url=mesh_url) as sender:
        await sender.publish("left over", TOPIC)


async def test_b_does_not_see_it(mesh_url, mesh_name):
    if mesh_url.startswith("memory://"):
        assert mesh_url != first["url"]
    mesh_url = URL or mesh_url
    async with Agent(keeper_identity(mesh_name), url=mesh_url) as keeper:
        recorder = await keeper.add_behaviour(MessageRecorder(keeper, binding_keys=[TOPIC]))
        with pytest.raises(RecorderTimeout) as info:
            await recorder.wait(1, timeout=1.0)
    assert info.value.received == []
"""


def run_leftover(
    pytester: pytest.Pytester, *args: str, identity: str = "", url: str = ""
) -> pytest.RunResult:
    inner_conftest(pytester)
    source = LEFTOVER.format(identity=identity, topic=uid("kit.left"), url=url)
    pytester.makepyfile(test_leftover=source)
    before = os.environ.get("MUNGGOGGO_URL")
    result = pytester.runpytest(*args)
    assert os.environ.get("MUNGGOGGO_URL") == before, "mesh_url must restore MUNGGOGGO_URL"
    return result


def test_a_memory_broker_is_reset_between_tests(pytester: pytest.Pytester) -> None:
    """Even one identity in both tests: the second test's broker is a fresh one."""
    run_leftover(pytester, identity=uid("keeper")).assert_outcomes(passed=2)


def test_the_leftover_is_there_for_tests_that_share_a_memory_broker(
    pytester: pytest.Pytester,
) -> None:
    """The control for the test above: the check sees a leftover when there is one."""
    name = uid("kit-shared")
    try:
        result = run_leftover(pytester, identity=uid("keeper"), url=f"memory://{name}")
    finally:
        MemoryBroker.reset(name)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_b_does_not_see_it*"])


def test_names_from_mesh_name_isolate_tests_on_rabbitmq(
    pytester: pytest.Pytester, broker_url: str
) -> None:
    run_leftover(pytester, "--munggoggo-url", broker_url).assert_outcomes(passed=2)


def test_the_leftover_is_there_for_a_test_that_reuses_an_identity_on_rabbitmq(
    pytester: pytest.Pytester, broker_url: str
) -> None:
    """The control for the test above: the check does see a leftover when there is one
    (on a shared RabbitMQ, an identity that is not from mesh_name is shared too)."""
    result = run_leftover(pytester, "--munggoggo-url", broker_url, identity=uid("keeper"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_b_does_not_see_it*"])


def test_a_memory_url_given_names_each_tests_fresh_broker(pytester: pytest.Pytester) -> None:
    inner_conftest(pytester)
    pytester.makepyfile(
        """
        seen = []

        def test_one(mesh_url):
            seen.append(mesh_url)

        def test_two(mesh_url):
            seen.append(mesh_url)
            assert all(url.startswith("memory://mine-") for url in seen), seen
            assert seen[0] != seen[1]
        """
    )
    pytester.runpytest("--munggoggo-url", "memory://mine").assert_outcomes(passed=2)


def test_the_ini_setting_names_the_broker_and_the_command_line_wins(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "munggoggo_url = memory://from-ini\n"
    )
    pytester.makepyfile(
        """
        def test_url(mesh_url):
            print("URL", mesh_url)
        """
    )
    pytester.runpytest("-s").stdout.fnmatch_lines(["*URL memory://from-ini-*"])
    given = pytester.runpytest("-s", "--munggoggo-url", "memory://from-option")
    given.stdout.fnmatch_lines(["*URL memory://from-option-*"])


def test_an_unusable_url_is_a_usage_error(pytester: pytest.Pytester) -> None:
    inner_conftest(pytester)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--munggoggo-url", "ftp://127.0.0.1/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--munggoggo-url*"])


def test_without_a_url_the_run_header_says_nothing(pytester: pytest.Pytester) -> None:
    """The plugin loads in every run; it leaves runs that do not use it as they were."""
    inner_conftest(pytester)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if line.startswith("munggoggo:")]


# -- MessageRecorder ----------------------------------------------------------------------


async def test_wait_returns_the_first_n_in_arrival_order(mesh_url: str) -> None:
    topic = uid("kit.rec")
    async with Agent(uid("rec"), url=mesh_url) as agent:
        recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=[topic]))
        for body in (b"one", b"two", b"three"):
            await agent.publish(body, topic)
        assert [m.body for m in await recorder.wait(2, timeout=10)] == [b"one", b"two"]
        assert [m.body for m in await recorder.wait(3, timeout=10)] == [b"one", b"two", b"three"]
        assert [m.body for m in recorder.messages] == [b"one", b"two", b"three"]
        assert len(recorder) == 3
        assert recorder.describe()["recorded"] == 3
        # What it recorded is acked: nothing stays unsettled in its hands.
        assert all(m.settled for m in recorder.messages)


async def test_a_timeout_raises_with_what_arrived(mesh_url: str) -> None:
    topic = uid("kit.rec")
    async with Agent(uid("rec"), url=mesh_url) as agent:
        recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=[topic]))
        await agent.publish(b"only one", topic)
        await recorder.wait(1, timeout=10)
        with pytest.raises(RecorderTimeout) as info:
            await recorder.wait(2, timeout=0.3)
    error = info.value
    assert isinstance(error, MunggoggoError)
    assert isinstance(error, TimeoutError)
    assert [m.body for m in error.received] == [b"only one"]
    assert error.expected == 2
    assert "1 of 2" in str(error)


async def test_it_records_the_direct_messages_its_template_matches(mesh_url: str) -> None:
    async with (
        Agent(uid("rec"), url=mesh_url) as agent,
        Agent(uid("sender"), url=mesh_url) as sender,
    ):
        recorder = await agent.add_behaviour(
            MessageRecorder(agent, template=Template(sender=sender.identity), name="direct")
        )
        await sender.send(agent.identity, {"n": 1})
        [msg] = await recorder.wait(1, timeout=10)
    assert msg.decode() == {"n": 1}
    assert msg.sender == sender.identity
    assert recorder.short_name == "direct"


async def test_a_waiter_is_woken_by_the_message_that_completes_its_count(mesh_url: str) -> None:
    """wait() started before anything arrived returns once the nth message is there."""
    topic = uid("kit.rec")
    async with Agent(uid("rec"), url=mesh_url) as agent:
        recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=[topic]))
        waiting = asyncio.ensure_future(recorder.wait(2, timeout=10))
        await agent.publish(b"a", topic)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await agent.publish(b"b", topic)
        assert [m.body for m in await waiting] == [b"a", b"b"]


async def test_clear_starts_the_count_again(mesh_url: str) -> None:
    topic = uid("kit.rec")
    async with Agent(uid("rec"), url=mesh_url) as agent:
        recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=[topic]))
        await agent.publish(b"old", topic)
        await recorder.wait(1, timeout=10)
        recorder.clear()
        await agent.publish(b"new", topic)
        assert [m.body for m in await recorder.wait(1, timeout=10)] == [b"new"]


@pytest.mark.parametrize(("n", "timeout"), [(0, 1.0), (1, -1.0), (1, float("nan"))])
async def test_wait_refuses_what_cannot_be_waited_for(n: int, timeout: float) -> None:
    name = uid("kit-refuse")
    try:
        async with Agent(uid("rec"), url=f"memory://{name}") as agent:
            recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=["x"]))
            with pytest.raises(ValueError):
                await recorder.wait(n, timeout=timeout)
    finally:
        MemoryBroker.reset(name)


async def test_the_timeout_pickles_with_what_arrived(mesh_url: str) -> None:
    topic = uid("kit.rec")
    async with Agent(uid("rec"), url=mesh_url) as agent:
        recorder = await agent.add_behaviour(MessageRecorder(agent, binding_keys=[topic]))
        await agent.publish(b"kept", topic)
        with pytest.raises(RecorderTimeout) as info:
            await recorder.wait(2, timeout=0.3)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is RecorderTimeout
    assert str(back) == str(info.value)
    assert back.expected == 2
    assert [(m.body, m.routing_key) for m in back.received] == [(b"kept", topic)]
