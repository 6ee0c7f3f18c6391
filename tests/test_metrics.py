"""Agent metrics: scrape after known traffic and check the series moved by the right amounts."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import uuid

import pytest
from broker_tools import wait_until
from mesh_tools import Calc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from munggoggo import Agent, Behaviour, RpcError
from munggoggo.deadletters import DeadLetters
from munggoggo.metrics import (
    COLLECTOR,
    STEP_SAMPLE_EVERY,
    FastHistogram,
    StepHistogram,
    serve_metrics,
)
from munggoggo.testing import free_port

pytestmark = pytest.mark.rabbitmq


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(COLLECTOR)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Sink(Behaviour):
    def __init__(self, *args, fail_on: bytes | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.got = 0
        self.fail_on = fail_on

    async def run(self) -> None:
        msg = await self.receive(timeout=0.1)
        if msg is not None:
            self.got += 1
            if msg.body == self.fail_on:
                raise ValueError("poison")


def test_fast_histogram_buckets_are_cumulative():
    hist = FastHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        hist.observe(v)
    assert hist.buckets() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and hist.sum == pytest.approx(2.65)


def test_step_histogram_counts_every_step_and_weighs_the_timed_ones():
    hist = StepHistogram((0.1, 1.0))
    assert hist.count == 0 and hist.sum == 0.0
    assert hist.buckets() == [("0.1", 0), ("1.0", 0), ("+Inf", 0)]
    hist.observe(0.05)  # stands for itself
    hist.unsampled += 6
    assert hist.count == 7
    assert hist.buckets() == [("0.1", 1), ("1.0", 1), ("+Inf", 7)]  # untimed: in +Inf only
    hist.observe(0.5)  # stands for itself and the six untimed steps before it
    assert hist.count == 8 and hist.sampled == 2
    assert hist.sum == pytest.approx(0.05 + 0.5 * 7)
    assert hist.buckets() == [("0.1", 1), ("1.0", 8), ("+Inf", 8)]
    hist.unsampled += 2
    hist.observe(2.0, stands_for_unsampled=False)  # itself alone; the two stay untimed
    assert hist.count == 11 and hist.unsampled == 2
    assert hist.sum == pytest.approx(0.05 + 0.5 * 7 + 2.0)
    assert hist.buckets() == [("0.1", 1), ("1.0", 8), ("+Inf", 11)]


def test_step_histogram_series_never_decrease():
    # Prometheus reads a lower counter as a reset: no series may go down between scrapes,
    # whatever the timed steps' durations.
    hist = StepHistogram()
    seen = [(dict(hist.buckets()), hist.sum, hist.count)]
    for value, untimed in ((0.0004, 15), (2.0, 15), (0.0001, 3), (-0.001, 0), (7.0, 0)):
        hist.observe(value)
        seen.append((dict(hist.buckets()), hist.sum, hist.count))
        hist.unsampled += untimed
        seen.append((dict(hist.buckets()), hist.sum, hist.count))
    for (b1, s1, c1), (b2, s2, c2) in itertools.pairwise(seen):
        assert all(b2[le] >= b1[le] for le in b1), (b1, b2)
        assert s2 >= s1 and c2 >= c1
        assert b2["+Inf"] == c2


@pytest.mark.parametrize("slow_when_empty", [True, False])
@pytest.mark.parametrize("empty_every", [17, 5, 2])
def test_step_histogram_sum_estimates_every_steps_time(empty_every, slow_when_empty):
    # A behaviour's sampling, step by step (as Behaviour._end_step does it), with set
    # durations: busy steps are timed one in STEP_SAMPLE_EVERY, a step that starts with
    # an empty mailbox always, for itself alone. The weighted sum must estimate the true
    # total, whether the steps timed for that reason are slower or faster than the rest.
    hist = StepHistogram()
    true_total = 0.0
    sample_in = 0
    for i in range(5000):
        empty_start = i % empty_every == empty_every - 1
        slow = empty_start == slow_when_empty
        cost = (0.010 if slow else 0.001) * (1 + (i * 7919) % 3) / 2  # three sizes of each
        true_total += cost
        if empty_start or not sample_in:
            if sample_in or empty_start:
                hist.observe(cost, stands_for_unsampled=False)
            else:
                hist.observe(cost)
                sample_in = STEP_SAMPLE_EVERY - 1
        else:
            hist.unsampled += 1
            sample_in -= 1
    assert hist.count == 5000
    assert hist.sum == pytest.approx(true_total, rel=0.1)


class Scripted(Behaviour):
    """Each step of work advances a fake clock by a set cost: slow after a wait for mail
    (the mailbox was empty when the step began), fast when served from a full mailbox."""

    def __init__(self, *args, clock: list[float], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.true_total = 0.0
        self.got = self.after_wait = 0

    async def run(self) -> None:
        waited = self.mailbox_size == 0
        msg = await self.receive(timeout=1.0)
        if msg is None:
            return
        cost = 0.010 if waited else 0.001
        self.clock[0] += cost
        self.true_total += cost
        self.got += 1
        self.after_wait += waited


async def test_step_time_estimate_is_not_biased_by_steps_after_a_wait(mesh_url, monkeypatch):
    # Durations come from a fake clock (each read also ticks it by a nanosecond, so a wait
    # for mail takes some time): steps after a wait cost 10x the busy ones. They are all
    # timed; the busy ones one in STEP_SAMPLE_EVERY. The estimate must not let the slow
    # ones stand for the fast ones.
    clock = [0.0]

    def fake_perf_counter() -> float:
        clock[0] += 1e-9
        return clock[0]

    monkeypatch.setattr("munggoggo.behaviour.perf_counter", fake_perf_counter)
    topic = f"metrics.bias.{uuid.uuid4().hex[:8]}"
    agent = Agent(f"metrics-bias-{uuid.uuid4().hex[:6]}", url=mesh_url)
    async with agent:
        sink = await agent.add_behaviour(
            Scripted(agent, binding_keys=[topic], name="scripted", clock=clock)
        )
        sent = 0
        for _ in range(6):  # bursts: one step after a wait, then busy steps
            await asyncio.gather(*(agent.publish(str(i), topic) for i in range(40)))
            sent += 40
            assert await wait_until(lambda sent=sent: sink.got == sent)
        hist = sink.step_seconds
        assert hist.count == sent
        assert 1 <= sink.after_wait < sent // 4  # both kinds of step happened
        # The untimed steps not yet stood for (busy ones, 1 ms each) are not in the sum.
        in_buckets = sink.true_total - hist.unsampled * 0.001
        assert hist.sum == pytest.approx(in_buckets, rel=0.15)


async def test_every_step_of_work_is_counted_though_few_are_timed(broker_url):
    topic = f"metrics.steps.{uuid.uuid4().hex[:8]}"
    sub = Agent(f"metrics-steps-{uuid.uuid4().hex[:6]}", url=broker_url)
    async with sub:
        sink = await sub.add_behaviour(Sink(sub, binding_keys=[topic], name="steps"))
        for i in range(100):
            await sub.publish(str(i), topic)
        assert await wait_until(lambda: sink.got == 100)
        assert sink.step_seconds.count == 100
        assert 1 <= sink.step_seconds.sampled <= 100
        assert 0 < sink.step_seconds.sum < 10


async def test_counters_histograms_and_gauges_follow_known_traffic(broker_url):
    topic = f"metrics.{uuid.uuid4().hex[:8]}"
    sub = Agent(f"metrics-sub-{uuid.uuid4().hex[:6]}", url=broker_url)
    pub = Agent(f"metrics-pub-{uuid.uuid4().hex[:6]}", url=broker_url)
    calc = Calc(f"metrics-calc-{uuid.uuid4().hex[:6]}", url=broker_url)
    async with sub, pub, calc:
        sink = await sub.add_behaviour(Sink(sub, binding_keys=[topic], name="sink"))
        for i in range(25):
            await pub.publish(str(i), topic)
        await pub.flush(timeout=5)
        assert await wait_until(lambda: sink.got == 25)
        for i in range(3):
            assert await pub.call(calc.identity, "mul", i, 2) == i * 2
        with pytest.raises(RpcError):
            await pub.call(calc.identity, "nope")
        await asyncio.sleep(0.2)  # coalesced acks go out at the end of the tick

        s = scrape()
        a_sub, a_pub, a_calc = sub.identity, pub.identity, calc.identity
        assert (
            value(
                s, "munggoggo_messages_published_total", agent=a_pub, behaviour="", kind="message"
            )
            == 25
        )
        assert (
            value(
                s,
                "munggoggo_messages_consumed_total",
                agent=a_sub,
                behaviour="sink",
                kind="message",
            )
            == 25
        )
        assert value(s, "munggoggo_messages_acked_total", agent=a_sub, behaviour="sink") == 25
        assert value(s, "munggoggo_rpc_served_total", agent=a_calc, method="mul", outcome="ok") == 3
        assert (
            value(s, "munggoggo_rpc_served_total", agent=a_calc, method="_unknown", outcome="error")
            == 1
        )
        assert (
            value(s, "munggoggo_rpc_client_seconds_count", agent=a_pub, method="mul", outcome="ok")
            == 3
        )
        assert (
            value(
                s, "munggoggo_rpc_client_seconds_count", agent=a_pub, method="nope", outcome="error"
            )
            == 1
        )
        assert value(s, "munggoggo_rpc_server_seconds_count", agent=a_calc, method="mul") == 3
        assert (
            value(s, "munggoggo_behaviour_step_seconds_count", agent=a_sub, behaviour="sink") >= 25
        )
        assert value(s, "munggoggo_connection_up", agent=a_sub) == 1
        assert value(s, "munggoggo_mailbox_depth", agent=a_sub, behaviour="sink") == 0
        # 25 publishes: seqs 32, 64, ... are sampled, so none yet; publish past 32.
        for i in range(40):
            await pub.publish(str(i), topic)
        await pub.flush(timeout=5)
        s = scrape()
        assert value(s, "munggoggo_publish_confirm_seconds_count", agent=a_pub) >= 1
        build = [k for k in s if k[0] == "munggoggo_build_info"]
        assert build and ("version", "0.1.0") in build[0][1]


async def test_failures_and_dead_letters_are_counted(broker_url):
    from munggoggo import AgentConfig, RestartPolicy

    topic = f"metrics.{uuid.uuid4().hex[:8]}"

    class Fragile(Sink):
        restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    agent = Agent(
        f"metrics-dl-{uuid.uuid4().hex[:6]}", url=broker_url, config=AgentConfig(max_redeliveries=1)
    )
    async with agent:
        b = await agent.add_behaviour(
            Fragile(agent, binding_keys=[topic], fail_on=b"bad", name="fragile")
        )
        await agent.publish(b"bad", topic)
        assert await wait_until(lambda: agent.stats.dead_lettered.get("fragile") == 1)
        s = scrape()
        assert (
            value(
                s, "munggoggo_behaviour_failures_total", agent=agent.identity, behaviour="fragile"
            )
            == 2
        )
        assert (
            value(
                s,
                "munggoggo_messages_dead_lettered_total",
                agent=agent.identity,
                behaviour="fragile",
            )
            == 1
        )
        assert (
            value(
                s, "munggoggo_messages_redelivered_total", agent=agent.identity, behaviour="fragile"
            )
            == 1  # the one retry before the dead letter
        )
        assert b.got == 2
        # Leave the shared munggoggo.dead-letters as we found it.
        purged = await DeadLetters(agent.connection).purge(all=True, agent=agent.identity)
        assert purged.purged == 1


async def test_stopped_agents_leave_the_scrape(broker_url):
    agent = Agent(f"metrics-gone-{uuid.uuid4().hex[:6]}", url=broker_url)
    async with agent:
        assert value(scrape(), "munggoggo_connection_up", agent=agent.identity) == 1
    assert ("munggoggo_connection_up", (("agent", agent.identity),)) not in scrape()


def test_metrics_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            serve_metrics(port, addr="127.0.0.1")
        assert f"cannot serve metrics on 127.0.0.1:{port}" in str(info.value)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "munggoggo",
                "run",
                "munggoggo.demo:CalculatorAgent",
                "--metrics-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert (
        f"cannot serve metrics on 0.0.0.0:{port}" in result.stderr
        or "cannot serve metrics" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--metrics-port", "70000"], "cannot serve metrics on port 70000: ports are 0-65535"),
    (["--metrics-port", "-1"], "cannot serve metrics on port -1: ports are 0-65535"),
])  # fmt: skip
def test_a_metrics_port_that_cannot_be_is_a_clear_error(args, message):
    for command in (["run", "munggoggo.demo:CalculatorAgent"], ["demo", "--seconds", "5"]):
        result = subprocess.run(
            [sys.executable, "-m", "munggoggo", "--url", "memory://metrics", *command, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


async def test_the_demo_serves_metrics_while_it_runs():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "munggoggo", "--url", "memory://metrics-demo", "demo",
        "--seconds", "20", "--metrics-port", str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import httpx

    published = 0.0
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(15):
            while published < 2:  # the ping agents publish once a second each
                try:
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
                    continue
                published = sum(
                    s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.name == "munggoggo_messages_published_total"
                    and s.labels.get("agent") in ("ping-1", "ping-2")
                )
                await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        await proc.wait()
    assert published >= 2


async def test_step_duration_leaves_out_the_wait_for_mail(broker_url):
    topic = f"metrics.wait.{uuid.uuid4().hex[:8]}"
    agent = Agent(f"metrics-wait-{uuid.uuid4().hex[:6]}", url=broker_url)
    async with agent:
        sink = await agent.add_behaviour(Sink(agent, binding_keys=[topic], name="patient"))
        await asyncio.sleep(1.0)  # ~10 idle polls (receive(timeout=0.1) that got nothing)
        assert sink.steps >= 3
        assert sink.step_seconds.count == 0  # idle polls are not steps of work
        await agent.publish(b"late", topic)
        assert await wait_until(lambda: sink.got == 1)
        assert await wait_until(lambda: sink.step_seconds.count == 1)
        # The step that got the message waited up to 0.1 s for it inside receive(): the
        # histogram holds the work after it, not the wait.
        assert sink.step_seconds.sum < 0.1
