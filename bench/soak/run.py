"""One soak run (see bench/soak/command.py for the command): the agent pipe through the fault proxy,
paced, a fault every interval, sampled, then settled and counted.

Owns the accounting. Every message carries its id (the Reading's `seq`, 0, 1, 2, ...);
the consumer marks ids in a byte-per-id ledger, so duplicates and ids never consumed are
exact. Failures reported to the publisher (on_publish_failure of the publishing agent's
confirm channel) come as confirm sequence numbers: the publishing behaviour is the only
publisher on that channel, so id = seq - 1 - (the channel's last seq before it started),
which is checked at the end. lost = confirmed (sent, not failed) ids consumed zero times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import statistics
import time
from typing import Any
from urllib.parse import quote

from munggoggo import Agent, Behaviour
from munggoggo.channel import PublishError
from munggoggo.client import Connection
from munggoggo.testing import FaultProxy
from munggoggo.testing.broker_faults import (
    BrokerFaultLock,
    close_named_connection,
    start_app,
    stop_app,
)
from munggoggo.url import parse_url

from ..common import progress, rss_mb
from ..mesh import CONFIG, NOTE, Reading, run_id

TICK = 0.01  # publisher pacing step, seconds
BURST = 0.1  # the token bucket holds at most this many seconds of messages
RECOVERY_LIMIT = 60.0  # seconds for the pipe to flow again after a fault
SETTLE_LIMIT = 120.0  # seconds for confirms and consumption to complete at the end


class Ledger:
    """How often each id was consumed: one byte per id (saturating at 255)."""

    def __init__(self, capacity: int) -> None:
        # Allocated up front, before the RSS baseline, so it does not show up as growth.
        self.counts = bytearray(capacity)
        self.unique = 0
        self.duplicates = 0

    def consumed(self, i: int) -> None:
        counts = self.counts
        if i >= len(counts):
            counts.extend(bytes(max(i + 1 - len(counts), len(counts))))
        c = counts[i]
        if c:
            self.duplicates += 1
            if c < 255:
                counts[i] = c + 1
        else:
            self.unique += 1
            counts[i] = 1

    def never_consumed(self, upto: int, excluded: set[int]) -> list[int]:
        """Ids below `upto`, not in `excluded`, that were never consumed."""
        counts = self.counts
        if upto > len(counts):
            counts.extend(bytes(upto - len(counts)))
        missing = []
        i = counts.find(0, 0, upto)
        while i != -1:
            if i not in excluded:
                missing.append(i)
            i = counts.find(0, i + 1, upto)
        return missing


class PacedPublisher(Behaviour):
    """Publishes Readings with consecutive ids at `rate` msgs/s (a token bucket)."""

    def __init__(self, agent: Agent, key: str, rate: float) -> None:
        super().__init__(agent, name="SoakPublisher")
        self.key = key
        self.rate = rate
        self.sent = 0
        self._credit = 0.0
        self._last: float | None = None

    async def run(self) -> None:
        now = self.agent.loop.time()
        if self._last is None:
            self._last = now
        # Time spent blocked in a fault refills at most BURST seconds: no catch-up burst.
        self._credit = min(self.rate * BURST, self._credit + (now - self._last) * self.rate)
        self._last = now
        n = int(self._credit)
        self._credit -= n
        key = self.key
        for _ in range(n):
            await self.publish(Reading("soak", self.sent, 21.5, "celsius", NOTE), key)
            self.sent += 1  # counted once publish() took it
        await asyncio.sleep(TICK)


class Counter(Behaviour):
    """Marks each received Reading's id in the ledger (acked when the step ends)."""

    def __init__(self, agent: Agent, key: str, ledger: Ledger) -> None:
        super().__init__(agent, binding_keys=[key], name="SoakCounter")
        self.ledger = ledger

    async def run(self) -> None:
        msg = await self.receive(timeout=0.5)
        if msg is not None:
            self.ledger.consumed(msg.decode(Reading).seq)


def proxied_url(url: str, port: int, heartbeat: int) -> str:
    """The broker URL with the proxy's port, a short heartbeat and connect timeout."""
    u = parse_url(url)
    vhost = "" if u.vhost == "/" else quote(u.vhost, safe="")
    return (
        f"amqp://{quote(u.username, safe='')}:{quote(u.password, safe='')}@127.0.0.1:{port}/"
        f"{vhost}?heartbeat={heartbeat}&connection_timeout=3000"
    )


class Soak:
    def __init__(
        self,
        url: str,
        *,
        minutes: float,
        rate: float | None,
        calibrate_messages: int,
        interval: float,
        faults: list[str],
        heartbeat: int,
        sample: float,
    ) -> None:
        self.url = url
        self.seconds = minutes * 60
        self.rate = rate
        self.calibrate_messages = calibrate_messages
        self.interval = interval
        self.faults = faults
        self.heartbeat = heartbeat
        self.sample_every = sample
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.failed_seqs: list[int] = []
        self._stopping = False

    async def run(self) -> dict[str, Any]:
        broker = parse_url(self.url)
        # Shared for the whole run: fault tests elsewhere (exclusive) wait or give up with
        # a reason instead of restarting the broker under the soak's transient queue.
        self.lock = BrokerFaultLock(shared=True, timeout=300, holder="python -m bench soak")
        await self.lock.__aenter__()
        try:
            proxy = await FaultProxy(upstream=(broker.host, broker.port)).start()
            try:
                return await self._run(proxy)
            finally:
                await proxy.stop()
        finally:
            await self.lock.__aexit__()

    async def _run(self, proxy: FaultProxy) -> dict[str, Any]:
        max_rate = None
        if self.rate is None:
            from ..throughput.scenarios.agent import agent_pipe

            progress(
                f"soak: measuring the pipe's maximum through the proxy "
                f"({self.calibrate_messages:,} messages)"
            )
            calibration = await agent_pipe(
                proxied_url(self.url, proxy.port, 60), self.calibrate_messages
            )
            max_rate = calibration["msgs_per_s"]
            self.rate = round(max_rate / 2)
        progress(
            f"soak: {self.seconds / 60:g} min at {self.rate:,.0f} msgs/s, a fault every "
            f"{self.interval:g} s ({', '.join(self.faults)})"
        )

        rid = run_id()
        key = f"bench.soak.{rid}"
        config = CONFIG
        if "restart" in self.faults:
            # A transient queue loses what it holds in a broker restart (RabbitMQ's design).
            config = dataclasses.replace(CONFIG, queue_type="quorum")
        url = proxied_url(self.url, proxy.port, self.heartbeat)
        rx = Agent(f"soak-rx-{rid}", url=url, config=config)
        tx = Agent(f"soak-tx-{rid}", url=url, config=config)
        self.ledger = ledger = Ledger(int(self.rate * self.seconds * 1.2) + 10_000)
        queue = ""
        await rx.start()
        try:
            counter = Counter(rx, key, ledger)
            await rx.add_behaviour(counter)
            queue = counter.queue or ""
            await tx.start()
            try:
                result = await self._soak(proxy, tx, rx, key)
            finally:
                await tx.stop()
        finally:
            await rx.stop()
            if queue:
                async with Connection(self.url, reconnect=False) as admin:
                    await (await admin.channel(confirms=False)).queue_delete(queue)
        result["summary"]["max_rate_measured"] = max_rate
        return result

    async def _soak(self, proxy: FaultProxy, tx: Agent, rx: Agent, key: str) -> dict[str, Any]:
        ledger = self.ledger
        pub_channel = tx.publish_channel  # the confirm channel: failures come from there
        base_seq = pub_channel._tracker.last_seq
        original_hook = pub_channel.on_publish_failure

        def on_failure(failures: list[tuple[int, Exception]]) -> None:
            self.failed_seqs.extend(seq for seq, _ in failures)
            if original_hook is not None:
                original_hook(failures)

        pub_channel.on_publish_failure = on_failure
        self.shutdowns = 0  # connection losses because the broker shut down

        def on_lost(conn: Any, reason: BaseException) -> None:
            if "reason 'shutdown'" in str(reason):
                self.shutdowns += 1

        tx.connection.on_lost.append(on_lost)
        rx.connection.on_lost.append(on_lost)
        gc.collect()
        self.t0 = time.monotonic()
        publisher = PacedPublisher(tx, key, self.rate)  # type: ignore[arg-type]
        await tx.add_behaviour(publisher)
        sampler = asyncio.ensure_future(self._sample(publisher, tx, rx))
        injector = asyncio.ensure_future(self._inject(proxy, tx, rx))
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self._stopping = True
            await injector  # the fault under way finishes (thaw, start_app) first
            proxy.normal()
        publishing_s = time.monotonic() - self.t0
        await publisher.stop(timeout=30)
        progress(f"soak: stopped publishing after {publisher.sent:,} messages; settling")

        unsettled = 0
        try:
            await tx.flush(timeout=SETTLE_LIMIT)
        except PublishError:
            pass  # reported through on_publish_failure too: counted from there
        except TimeoutError:
            unsettled = pub_channel.unconfirmed
        sent = publisher.sent
        mapping_ok = pub_channel._tracker.last_seq - base_seq == sent
        failed = {seq - base_seq - 1 for seq in self.failed_seqs}
        deadline = time.monotonic() + SETTLE_LIMIT
        missing = ledger.never_consumed(sent, failed)
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            missing = ledger.never_consumed(sent, failed)
        await asyncio.sleep(1.0)  # duplicates still in flight are counted too
        missing = ledger.never_consumed(sent, failed)
        sampler.cancel()
        self._take_sample(publisher, tx, rx)

        recoveries = [e["recovered_s"] for e in self.events if e.get("recovered_s") is not None]
        rss = [s["rss_mb"] for s in self.samples]
        after_minute = [s["rss_mb"] for s in self.samples if s["t"] >= 60] or rss
        kinds: dict[str, int] = {}
        for e in self.events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        summary: dict[str, Any] = {
            "minutes": round(publishing_s / 60, 2),
            "rate_target": self.rate,
            "rate_achieved": round(sent / publishing_s, 1),
            "sent": sent,
            "confirmed": sent - len(failed) - unsettled,
            "consumed": ledger.unique,
            "duplicates": ledger.duplicates,
            "lost": len(missing),
            "failed_reported": len(failed),
            "unsettled": unsettled,
            "reconnects": tx.connection.reconnects + rx.connection.reconnects,
            "faults": len(self.events),
            "faults_by_kind": kinds,
            "faults_not_recovered": sum(1 for e in self.events if not e.get("recovered_s")),
            "fault_errors": sum(1 for e in self.events if "error" in e),
            # Losses to a broker shutdown beyond our own restarts (2 connections each):
            # someone else restarted the broker, and a transient queue loses what it holds.
            "external_broker_shutdowns": max(0, self.shutdowns - 2 * kinds.get("restart", 0)),
            "recovery_s_median": round(statistics.median(recoveries), 2) if recoveries else None,
            "recovery_s_max": max(recoveries) if recoveries else None,
            "rss_start_mb": rss[0] if rss else None,
            "rss_end_mb": rss[-1] if rss else None,
            "rss_peak_mb": max(rss) if rss else None,
            "rss_growth_after_first_minute_mb": round(after_minute[-1] - after_minute[0], 1),
            "ledger_mb": round(len(ledger.counts) / 2**20, 1),
            "seq_mapping_ok": mapping_ok,
        }
        summary["ok"] = not (
            missing
            or unsettled
            or not mapping_ok
            or summary["faults_not_recovered"]
            or summary["fault_errors"]
        )
        if missing:
            summary["lost_examples"] = missing[:20]
        return {"summary": summary, "faults": self.events, "samples": self.samples}

    # -- sampling ------------------------------------------------------------------

    async def _sample(self, publisher: PacedPublisher, tx: Agent, rx: Agent) -> None:
        next_report = 30.0
        while True:
            await asyncio.sleep(self.sample_every)
            s = self._take_sample(publisher, tx, rx)
            if s["t"] >= next_report:
                next_report += 30.0
                progress(
                    f"soak: {s['t'] / 60:4.1f} min: sent {s['sent']:,}, consumed "
                    f"{s['consumed']:,} (+{s['duplicates']:,} duplicates), "
                    f"reconnects {s['reconnects']}, RSS {s['rss_mb']:.1f} MiB"
                )

    def _take_sample(self, publisher: PacedPublisher, tx: Agent, rx: Agent) -> dict[str, Any]:
        s = {
            "t": round(time.monotonic() - self.t0, 2),
            "rss_mb": round(rss_mb(), 1),
            "sent": publisher.sent,
            "consumed": self.ledger.unique,
            "duplicates": self.ledger.duplicates,
            "reconnects": tx.connection.reconnects + rx.connection.reconnects,
        }
        self.samples.append(s)
        return s

    # -- faults --------------------------------------------------------------------

    async def _inject(self, proxy: FaultProxy, tx: Agent, rx: Agent) -> None:
        n = 0
        closes = 0
        while True:
            at = self.t0 + (n + 1) * self.interval
            while time.monotonic() < at and not self._stopping:
                await asyncio.sleep(min(0.2, at - time.monotonic()))
            # No fault in the last half interval: the run ends on a pipe that flows again.
            if self._stopping or at + self.interval / 2 > self.t0 + self.seconds:
                return
            kind = self.faults[n % len(self.faults)]
            n += 1
            started = time.monotonic()
            event: dict[str, Any] = {"t": round(started - self.t0, 2), "kind": kind}
            try:
                if kind == "cut":
                    event["connections"] = proxy.cut()
                elif kind == "freeze":
                    await self._freeze(proxy, tx, rx, event)
                elif kind == "close":
                    target = (tx, rx)[closes % 2]
                    closes += 1
                    event["agent"] = target.identity
                    event["closed"] = await asyncio.to_thread(
                        close_named_connection, target.identity, "soak fault"
                    )
                    if not event["closed"]:
                        event["error"] = f"no broker connection named {target.identity!r}"
                elif kind == "restart":
                    await self._restart(tx, rx, event)
            except Exception as exc:
                event["error"] = f"{type(exc).__name__}: {exc}"
            event["recovered_s"] = await self._recovered(tx, rx, started)
            self.events.append(event)
            progress(f"soak: fault {n} at {event['t']:.0f} s: {kind} {self._detail(event)}")

    async def _freeze(self, proxy: FaultProxy, tx: Agent, rx: Agent, event: dict) -> None:
        """Freeze until both agents noticed the silence (lost heartbeats), then thaw."""
        proxy.freeze()
        try:
            limit = time.monotonic() + 4 * self.heartbeat + 15
            while tx.connection.is_open or rx.connection.is_open:
                if time.monotonic() > limit:
                    event["error"] = "a frozen connection was never given up"
                    break
                await asyncio.sleep(0.05)
        finally:
            proxy.thaw()
        event["frozen_s"] = round(time.monotonic() - self.t0 - event["t"], 2)

    async def _restart(self, tx: Agent, rx: Agent, event: dict) -> None:
        async with self.lock.exclusive():
            try:
                await asyncio.to_thread(stop_app)
                limit = time.monotonic() + 30
                while (tx.connection.is_open or rx.connection.is_open) and (
                    time.monotonic() < limit
                ):
                    await asyncio.sleep(0.05)
            finally:
                await asyncio.to_thread(start_app)
        event["down_s"] = round(time.monotonic() - self.t0 - event["t"], 2)

    async def _recovered(self, tx: Agent, rx: Agent, started: float) -> float | None:
        """Seconds from the fault until both agents are connected and messages are
        consumed again; None when that did not happen within RECOVERY_LIMIT."""
        deadline = started + RECOVERY_LIMIT
        while not (tx.connection.is_open and rx.connection.is_open):
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        mark = self.ledger.unique
        while self.ledger.unique <= mark + max(1, int(self.rate * TICK)):  # type: ignore[operator]
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return round(time.monotonic() - started, 2)

    @staticmethod
    def _detail(event: dict[str, Any]) -> str:
        shown = {k: v for k, v in event.items() if k not in ("t", "kind")}
        return ", ".join(f"{k}={v}" for k, v in shown.items())
