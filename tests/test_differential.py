"""Differential conformance: one scenario, run on memory:// and on RabbitMQ, same results.

Each test runs a scenario function twice, on a fresh memory:// broker and on the broker of
the run (MUNGGOGGO_URL: RabbitMQ 3.10 by default, 4.3 on port 5675), with the same names,
and compares what the two brokers delivered, returned and refused (reply code and text).
The scenarios cover what the behaviour tests of tests/test_conformance.py do not look at:
routing with CC and BCC, priority queues, the headers exchange, per-message expiration,
user_id and property round trips.

Where RabbitMQ 3.10 and 4.x differ, memory:// does what 4.x does (docs/decisions.md); on
3.x those few results are compared with what 3.10 does instead, listed in each test, so
a change on either side still shows.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from broker_tools import wait_until
from conftest import memory_broker

from munggoggo._speedups import PROPERTY_NAMES, Properties
from munggoggo.channel import PublishError
from munggoggo.client import Connection
from munggoggo.memory import MemoryConnection

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- the harness


class Run:
    """One scenario's view of one broker: a connection, a channel, names, and helpers that
    turn what the broker does into plain data to compare."""

    def __init__(self, conn: Any, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.ch: Any = None
        self._exchanges: list[str] = []

    def n(self, name: str) -> str:
        """A name of this scenario: the same on both brokers, unique on the shared one."""
        return f"{self.prefix}.{name}"

    async def exchange(self, name: str, kind: str, **kwargs: Any) -> str:
        await self.ch.exchange_declare(self.n(name), kind, **kwargs)
        self._exchanges.append(self.n(name))
        return self.n(name)

    async def queue(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        """An exclusive queue: it goes with the connection."""
        await self.ch.queue_declare(self.n(name), exclusive=True, arguments=arguments)
        return self.n(name)

    async def refusal(self, call: Awaitable[Any]) -> Any:
        """ "ok", or the (reply code, reply text) the broker refused `call` with."""
        try:
            await call
        except Exception as exc:  # the broker's refusal: compared, not matched on type
            code = getattr(exc, "reply_code", None)
            if code is None:
                raise
            await asyncio.sleep(0.05)  # the channel reopens
            return (code, self.plain(exc.reply_text))
        return "ok"

    async def publish(
        self, body: bytes, exchange: str, key: str, props: Any = None, **kwargs: Any
    ) -> Any:
        """Publish and wait for the confirm: "ok" or the (code, text) of the refusal."""
        self.ch.publish(body, exchange, key, props, **kwargs)
        try:
            await self.ch.wait_confirms(timeout=10)
        except PublishError as exc:
            error = exc.failures[0][1]
            if not hasattr(error, "reply_code"):
                return type(error).__name__  # nacked: the broker did not take it
            await asyncio.sleep(0.05)  # the channel reopens
            return (error.reply_code, self.plain(error.reply_text))
        return "ok"

    async def drain(self, queue: str, *, props: bool = False) -> list[tuple]:
        """What Basic.Get hands out, in order, until the queue is empty."""
        out = []
        while (d := await self.ch.get(queue, no_ack=True)) is not None:
            out.append(self.summary(d, props=props))
        return out

    async def count(self, queue: str) -> int:
        return (await self.ch.queue_declare(queue, passive=True)).message_count

    async def settle(self, queue: str, count: int) -> None:
        """Wait until `queue` holds `count` messages (dead-lettering is asynchronous)."""
        for _ in range(500):
            if await self.count(queue) >= count:
                return
            await asyncio.sleep(0.01)

    def summary(self, d: Any, *, props: bool = False) -> tuple:
        """A delivery as data: body, exchange, routing key, headers (x-death without its
        clock time), and with props=True every other property that is set."""
        p = d.properties
        headers = self.plain_headers(p.headers)
        out: tuple = (d.body.decode(), self.plain(d.exchange), self.plain(d.routing_key), headers)
        if props:
            others = {
                name: self.plain(getattr(p, name))
                for name in PROPERTY_NAMES
                if name != "headers" and getattr(p, name) is not None
            }
            out += (others,)
        return out

    def plain_headers(self, headers: dict[str, Any] | None) -> dict[str, Any] | None:
        if headers is None:
            return None
        out = {k: self.plain(v) for k, v in headers.items()}
        if "x-death" in out:
            out["x-death"] = [{k: v for k, v in d.items() if k != "time"} for d in out["x-death"]]
        return out

    def plain(self, value: Any) -> Any:
        """`value` with this scenario's prefix written as "P" (for reading failures)."""
        if isinstance(value, str):
            return value.replace(self.prefix, "P")
        if isinstance(value, list):
            return [self.plain(v) for v in value]
        if isinstance(value, dict):
            return {k: self.plain(v) for k, v in value.items()}
        return value

    async def cleanup(self) -> None:
        ch = await self.conn.channel()
        for name in self._exchanges:
            await ch.exchange_delete(name)


Scenario = Callable[[Run], Awaitable[Any]]


async def run_on(url: str, prefix: str, scenario: Scenario) -> tuple[Any, int]:
    """Run `scenario` on the broker at `url`; returns its result and RabbitMQ's major
    version (0 for memory://)."""
    memory = url.startswith("memory://")
    conn = await (MemoryConnection(url) if memory else Connection(url)).connect()
    run = Run(conn, prefix)
    try:
        run.ch = await conn.channel()
        result = await scenario(run)
        major = 0 if memory else int(str(conn.server_properties["version"]).split(".")[0])
        return result, major
    finally:
        try:
            await run.cleanup()
        finally:
            await conn.close()


async def both(request: Any, broker_url: str, scenario: Scenario) -> tuple[Any, Any, int]:
    """The scenario's result on memory:// and on RabbitMQ, and RabbitMQ's major version."""
    prefix = f"diff.{uuid.uuid4().hex[:8]}"
    with memory_broker(request) as url:
        memory, _ = await run_on(url, prefix, scenario)
    rabbit, major = await run_on(broker_url, prefix, scenario)
    return memory, rabbit, major


def split(result: dict[str, Any], keys: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the entries not in keys, the entries in keys)."""
    return (
        {k: v for k, v in result.items() if k not in keys},
        {k: v for k, v in result.items() if k in keys},
    )


def entry(key: str, tag: bytes, payload: bytes) -> bytes:
    """One encoded field-table entry (types our encoder never writes: b, T, D, f, ...)."""
    k = key.encode()
    return bytes([len(k)]) + k + tag + payload


def raw_headers(*entries: bytes, flags: int = 0, tail: bytes = b"") -> bytes:
    """Encoded properties: headers made of `entries`, plus the fields of `flags` in `tail`."""
    table = b"".join(entries)
    return struct.pack(">H", 0x2000 | flags) + struct.pack(">I", len(table)) + table + tail


# --------------------------------------------------------------------------- CC and BCC


async def test_cc_and_bcc_route_like_routing_keys_and_bcc_is_stripped(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        topic = await r.exchange(
            "t", "topic", auto_delete=True, arguments={"alternate-exchange": r.n("ae")}
        )
        ae = await r.exchange("ae", "fanout", auto_delete=True)
        direct = await r.exchange("d", "direct", auto_delete=True)
        fanout = await r.exchange("f", "fanout", auto_delete=True)
        names = ["qa", "qb", "qae", "qd", "qf", "k0", "k1", "k2", "dflt"]
        queues = {name: await r.queue(name) for name in names}
        await r.ch.queue_bind(queues["qa"], topic, "a.*")
        await r.ch.queue_bind(queues["qb"], topic, "b.#")
        await r.ch.queue_bind(queues["qae"], ae)
        await r.ch.exchange_bind(direct, topic, "c.*")  # exchange to exchange
        await r.ch.queue_bind(queues["qd"], direct, "c.x")
        await r.ch.queue_bind(queues["qf"], fanout)
        for i in range(3):
            await r.ch.queue_bind(queues[f"k{i}"], direct, f"k{i}")
        returned: list = []
        r.ch.on_return = lambda d: returned.append((d.reply_code, d.reply_text, r.summary(d)))
        publishes = [
            # CC and BCC add routing keys; every queue gets one copy, none sees BCC.
            (b"1", direct, "k0", {"CC": ["k1"], "BCC": ["k2", "k1"], "other": 1}, False),
            # Through a topic exchange and on to the exchange bound to it, by the CC keys.
            (b"2", topic, "a.x", {"CC": ["b.y", "c.x"]}, False),
            # Routed by CC: the alternate exchange is not asked.
            (b"3", topic, "zzz", {"CC": ["b"]}, False),
            # Routed nowhere by key or BCC: the alternate exchange gets it, BCC stripped.
            (b"4", topic, "zzz", {"BCC": ["nothing"]}, False),
            # A fanout exchange ignores keys but still strips BCC.
            (b"5", fanout, "x", {"BCC": ["x"], "k": "v"}, False),
            # The default exchange routes CC and BCC keys to the queues of those names.
            (b"6", "", queues["dflt"], {"CC": [queues["k0"]], "BCC": [queues["dflt"]]}, False),
            # Items that are not strings are ignored; so are a lowercase cc and an empty CC.
            (b"7", direct, "k0", {"CC": ["k1", 7, b"k2"]}, False),
            (b"8", direct, "k0", {"cc": ["k1"], "CC": []}, False),
            # Mandatory: routed by BCC alone is routed; by nothing is returned, without BCC.
            (b"9", direct, "none", {"BCC": ["k2"]}, True),
            (b"10", direct, "none", {"CC": ["none2"], "BCC": ["none3"]}, True),
        ]
        outcome = [
            await r.publish(body, ex, key, Properties(headers=headers), mandatory=mandatory)
            for body, ex, key, headers, mandatory in publishes
        ]
        assert await wait_until(lambda: len(returned) == 1)
        delivered = {name: await r.drain(q) for name, q in queues.items()}
        return {"outcome": outcome, "delivered": delivered, "returned": returned}

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    # The broker-independent facts, spelt out.
    assert memory["delivered"]["k2"] == [
        ("1", "P.d", "k0", {"CC": ["k1"], "other": 1}),
        ("9", "P.d", "none", {}),
    ]
    assert memory["returned"][0][:2] == (312, "NO_ROUTE")


async def test_cc_and_bcc_that_are_not_arrays_refuse_the_message(request, broker_url):
    async def scenario(r: Run) -> list:
        q = await r.queue("q")
        out = []
        for headers in (
            {"CC": "k1"},
            {"BCC": 5},
            {"CC": ["ok"], "BCC": {"a": 1}},
            {"CC": None},
            {"BCC": True},
            {"CC": 1.5},
        ):
            out.append(await r.publish(b"x", "", q, Properties(headers=headers)))
        # A raw byte-array CC: RabbitMQ names the type it got.
        out.append(await r.publish(b"x", "", q, raw_headers(entry("CC", b"x", b"\0\0\0\1a"))))
        out.append(await r.drain(q))
        return out

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    assert memory[0] == (
        406,
        'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}',
    )
    assert memory[-1] == []


async def test_dead_lettering_keeps_the_cc_and_bcc_keys(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        dlx = await r.exchange("dlx", "direct", auto_delete=True)
        src = await r.queue("src", {"x-dead-letter-exchange": dlx})
        with_key = await r.queue(
            "src-k", {"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dl"}
        )
        got = {}
        for name, key in (("by-cc", "cc-key"), ("by-bcc", "bcc-key"), ("by-dl", "dl")):
            got[name] = await r.queue(name)
            await r.ch.queue_bind(got[name], dlx, key)
        headers = {"CC": ["cc-key"], "BCC": ["bcc-key"], "k": 1}
        # Expired at once: dead-lettered by every key it was published with, BCC included.
        await r.publish(b"all-keys", "", src, Properties(headers=headers, expiration="0"))
        # With a dead-letter routing key, by that key alone.
        await r.publish(b"dl-key", "", with_key, Properties(headers=headers, expiration="0"))
        for q in got.values():
            await r.settle(q, 1)
        return {name: await r.drain(q) for name, q in got.items()}

    memory, rabbit, major = await both(request, broker_url, scenario)
    if major >= 4:
        # 4.x adds x-last-death-*; memory:// writes x-death as 3.10 does (not this issue).
        for deliveries in rabbit.values():
            for d in deliveries:
                for key in [k for k in d[3] if k.startswith("x-last-death-")]:
                    del d[3][key]
    else:
        # 3.10 drops CC from a copy dead-lettered with a routing key of its own; 4.x keeps it.
        assert "CC" not in rabbit["by-dl"][0][3]
        rabbit["by-dl"][0][3]["CC"] = ["cc-key"]
    assert memory == rabbit
    death = memory["by-dl"][0][3]["x-death"][0]
    assert death["routing-keys"] == ["P.src-k", "cc-key"]  # the publish's key and CC, no BCC
    assert [d[0] for d in memory["by-cc"]] == ["all-keys"] == [d[0] for d in memory["by-bcc"]]


# --------------------------------------------------------------------------- user_id


async def test_user_id_must_name_the_connections_user(request, broker_url):
    async def scenario(r: Run) -> list:
        q = await r.queue("q")
        out = [
            await r.publish(b"x", "", q, Properties(user_id=u))
            for u in ("guest", "other", "", "Guest")
        ]
        out.append([d[0] for d in await r.drain(q)])
        # Checked after the exchange: a missing exchange is a 404 whatever user_id says.
        out.append(await r.publish(b"x", r.n("nope"), q, Properties(user_id="other")))
        return out

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    assert memory[1] == (
        406,
        "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'guest'",
    )


async def test_the_order_of_the_publish_checks(request, broker_url):
    """4.x checks the expiration, then CC/BCC, then user_id; 3.10 checks user_id first."""

    async def scenario(r: Run) -> dict[str, Any]:
        q = await r.queue("q")
        return {
            "expiration+cc": await r.publish(
                b"x", "", q, Properties(expiration="soon", headers={"CC": "x"})
            ),
            "user+expiration": await r.publish(
                b"x", "", q, Properties(user_id="other", expiration="soon")
            ),
            "user+cc": await r.publish(
                b"x", "", q, Properties(user_id="other", headers={"CC": "x"})
            ),
        }

    memory, rabbit, major = await both(request, broker_url, scenario)
    user_first = (
        406,
        "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'guest'",
    )
    if major < 4:
        same, differ = split(rabbit, {"user+expiration", "user+cc"})
        assert differ == {"user+expiration": user_first, "user+cc": user_first}
        assert same == split(memory, {"user+expiration", "user+cc"})[0]
    else:
        assert memory == rabbit
    assert memory["user+cc"][1].startswith("PRECONDITION_FAILED - invalid message")


# --------------------------------------------------------------------------- expiration


async def test_per_message_expiration_limits_and_refusals(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        q = await r.queue("q")
        values = [
            *("4294967296", "315360000000", "315360000001", "-1", "-0", "+10", "00012"),
            *("-0005", "", " 10", "10 ", "abc", "10abc", "1e3", "0x10", "-", "+"),
            *("12\x01x", '12"\\'),  # leftovers Erlang prints as a list, and with escapes
            # The error text as Erlang's ~p lays it out: flat, or wrapped before column 79.
            *("5" * 18, "5" * 19, "-" + "5" * 18, "-" + "5" * 19, "9" * 23),
            "1" * 60,  # a reply text over 255 bytes is cut to 252 and "..."
        ]
        out = {v: await r.publish(b"x", "", q, Properties(expiration=v)) for v in values}
        # What was accepted is delivered with its expiration property as published.
        kept = [(d[0], d[4].get("expiration")) for d in await r.drain(q, props=True)]
        return {"publish": out, "kept": kept}

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    assert memory["publish"]["4294967296"] == "ok"
    assert memory["publish"]["315360000001"][0] == 406


async def test_queue_ttl_and_expires_share_the_ten_year_limit(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        out = {}
        for key in ("x-message-ttl", "x-expires"):
            for value in (4294967296, 315360000000, 315360000001):
                out[f"{key}={value}"] = await r.refusal(r.queue(f"{key}{value}", {key: value}))
        return out

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    assert memory["x-expires=315360000000"] == "ok"


# --------------------------------------------------------------------------- priorities


async def test_priority_queues_deliver_highest_first(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        out: dict[str, Any] = {}
        priorities = [None, 1, 5, 9, 0, 3, 5, None, 255, 2]

        async def fill(queue: str, values: list) -> None:
            for i, p in enumerate(values):
                r.ch.publish(f"{i}:{p}".encode(), "", queue, Properties(priority=p))
            await r.ch.wait_confirms(timeout=10)

        def bodies(deliveries: list) -> list:
            return [d[0] for d in deliveries]

        # Capped at the maximum, higher first, FIFO within a priority, none counts as 0.
        q = await r.queue("p", {"x-max-priority": 5})
        await fill(q, priorities)
        out["count"] = await r.count(q)
        out["order"] = bodies(await r.drain(q))
        # Requeued messages go back to their priority, ahead of newer ones there: all at
        # once, and one by one from different priorities out of order.
        for nack in ("multiple", "one by one"):
            await fill(q, priorities)
            taken = [await r.ch.get(q) for _ in range(6)]
            if nack == "multiple":
                r.ch.nack(taken[2].delivery_tag, multiple=True, requeue=True)
            else:
                for i in (4, 1, 5):
                    r.ch.nack(taken[i].delivery_tag, requeue=True)
            r.ch.ack(0, multiple=True)
            await asyncio.sleep(0.05)
            redelivered = []
            while (d := await r.ch.get(q, no_ack=True)) is not None:
                redelivered.append((d.body.decode(), d.redelivered))
            out[f"taken, requeued {nack}"] = [x.body.decode() for x in taken]
            out[f"after requeue {nack}"] = redelivered
        # x-max-length drops the head: the highest priority message.
        q = await r.queue("maxlen", {"x-max-priority": 5, "x-max-length": 3})
        await fill(q, [1, 5, 0, 3, 2, 5, 0])
        out["drop_head"] = bodies(await r.drain(q))
        q = await r.queue(
            "reject", {"x-max-priority": 5, "x-max-length": 3, "x-overflow": "reject-publish"}
        )
        out["reject"] = [
            await r.publish(f"{i}".encode(), "", q, Properties(priority=p))
            for i, p in enumerate([1, 5, 0, 3])
        ]
        out["reject_order"] = bodies(await r.drain(q))
        # A queue without x-max-priority ignores priorities.
        q = await r.queue("plain")
        await fill(q, [0, 3, None, 1])
        out["plain"] = bodies(await r.drain(q))
        # A consumer with prefetch 1 gets them highest first too.
        q = await r.queue("consumed", {"x-max-priority": 10})
        await fill(q, [1, 2, 3, 4, 10, 0])
        consumer = await r.conn.channel(prefetch_count=1)
        got: list = []

        def on_batch(batch: list) -> None:
            for d in batch:
                got.append(d.body.decode())
                consumer.ack(d.delivery_tag)

        await consumer.consume(q, on_batch)
        assert await wait_until(lambda: len(got) == 6)
        out["consumed"] = got
        await consumer.close()
        return out

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    assert memory["order"] == [
        "2:5",
        "3:9",
        "6:5",
        "8:255",
        "5:3",
        "9:2",
        "1:1",
        "0:None",
        "4:0",
        "7:None",
    ]


async def test_priority_queue_ttl_is_checked_at_the_head_only(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        q = await r.queue("ttl", {"x-max-priority": 5})
        for body, p, ttl in (
            ("hi-long", 5, "600000"),
            ("lo-short", 1, "1"),
            ("hi-short", 5, "1"),
            ("lo-long", 1, "600000"),
        ):
            await r.publish(body.encode(), "", q, Properties(priority=p, expiration=ttl))
        await asyncio.sleep(0.2)  # the short TTLs are long past
        # The head (hi-long) has not expired, so nothing behind it is dropped yet ...
        count = await r.count(q)
        # ... until it is taken: then the expired ones at the head go.
        return {"count": count, "order": [d[0] for d in await r.drain(q)]}

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit == {"count": 4, "order": ["hi-long", "lo-long"]}


async def test_x_max_priority_checks_and_zero(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for value in (255, 256, -1, "5", 5.0, True):
            out[f"max={value!r}"] = await r.refusal(r.queue(f"m{value}", {"x-max-priority": value}))
        for kind in ("quorum", "stream"):
            out[kind] = await r.refusal(
                r.ch.queue_declare(
                    r.n(kind), durable=True, arguments={"x-queue-type": kind, "x-max-priority": 5}
                )
            )
        q = await r.queue("p", {"x-max-priority": 5})
        out["redeclare"] = [
            await r.refusal(r.queue("p", args))
            for args in ({"x-max-priority": 6}, {}, {"x-max-priority": 5})
        ]
        # x-max-priority 0: 4.x takes it as 1, 3.10 as a single FIFO.
        q = await r.queue("zero", {"x-max-priority": 0})
        for i, p in enumerate([0, 3, None, 1]):
            r.ch.publish(f"{i}:{p}".encode(), "", q, Properties(priority=p))
        await r.ch.wait_confirms(timeout=10)
        out["zero"] = [d[0] for d in await r.drain(q)]
        return out

    memory, rabbit, major = await both(request, broker_url, scenario)
    if major < 4:
        assert rabbit.pop("zero") == ["0:0", "1:3", "2:None", "3:1"]
        assert memory.pop("zero") == ["1:3", "3:1", "0:0", "2:None"]
    assert memory == rabbit
    assert memory["max=256"][1].endswith("{max_value_exceeded,256}")
    assert memory["quorum"] == (
        406,
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'P.quorum' in "
        "vhost '/' of queue type rabbit_quorum_queue",
    )


# --------------------------------------------------------------------------- headers exchange

BINDINGS = {
    "all_a1": {"x-match": "all", "a": 1},
    "all_a1f": {"x-match": "all", "a": 1.0},
    "allx_xk": {"x-match": "all-with-x", "x-k": "v"},
    "anyx_xk_b2": {"x-match": "any-with-x", "x-k": "v", "b": 2},
    "anyx_void": {"x-match": "any-with-x", "x-k": None},
    "allx_only": {"x-match": "all-with-x"},
    "all_xk": {"x-match": "all", "x-k": "v"},
    "any_xk": {"x-match": "any", "x-k": "v"},
    "any_only": {"x-match": "any"},
    "all_only": {"x-match": "all"},
    "default_ab": {"a": 1, "b": 2},
    "any_ab": {"x-match": "any", "a": 1, "b": 2},
    "arr1": {"a": [1]},
    "tab1": {"a": {"n": 1}},
    "true": {"a": True},
    "str_s": {"a": "s"},
    "bin_s": {"a": bytearray(b"s")},
    "void": {"a": None},
    "big": {"a": 2**40},
    "ts5": {"a": 5},
    "ts5000": {"a": 5000},
}
HEADERS = {
    "h_a1": {"a": 1},
    "h_a1f": {"a": 1.0},
    "h_xk": {"x-k": "v"},
    "h_arr1": {"a": [1]},
    "h_tab1": {"a": {"n": 1}},
    "h_true": {"a": True},
    "h_one": {"a": 1, "b": 3},
    "h_ab": {"a": 1, "b": 2},
    "h_bin_s": {"a": b"s"},
    "h_str_s": {"a": "s"},
    "h_none": None,
    "h_empty": {},
    "h_void": {"a": None},
    "h_big": {"a": 2**40},
    "h_b2": {"b": 2},
    "h_xmatch": {"x-match": "all-with-x"},
}
RAW_HEADERS = {
    "r_byte1": raw_headers(entry("a", b"b", struct.pack(">b", 1))),
    "r_short1": raw_headers(entry("a", b"s", struct.pack(">h", 1))),
    "r_long1": raw_headers(entry("a", b"l", struct.pack(">q", 1))),
    "r_float1": raw_headers(entry("a", b"f", struct.pack(">f", 1.0))),
    "r_ts5": raw_headers(entry("a", b"T", struct.pack(">Q", 5))),
    "r_arr_byte1": raw_headers(entry("a", b"A", b"\0\0\0\2b\1")),
    "r_bool2": raw_headers(entry("a", b"t", b"\x02")),
    "r_dup": raw_headers(
        entry("a", b"I", struct.pack(">i", 2)), entry("a", b"I", struct.pack(">i", 1))
    ),
}
# Where 3.10 differs: it compares with Erlang's ==, so 1.0 equals 1, a timestamp counts in
# seconds, and of a repeated header the first is compared.
HEADERS_ON_3 = {
    "all_a1": ["h_a1", "h_a1f", "h_one", "h_ab", "r_byte1", "r_short1", "r_long1", "r_float1"],
    "all_a1f": ["h_a1", "h_a1f", "h_one", "h_ab", "r_byte1", "r_short1", "r_long1", "r_float1"],
    "any_ab": [
        "h_a1",
        "h_a1f",
        "h_one",
        "h_ab",
        "h_b2",
        "r_byte1",
        "r_short1",
        "r_long1",
        "r_float1",
    ],
    "ts5": ["r_ts5"],
    "ts5000": [],
}


async def test_headers_exchange_matches_like_rabbitmq(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        ex = await r.exchange("h", "headers", auto_delete=True)
        for name, args in BINDINGS.items():
            await r.ch.queue_bind(await r.queue(name), ex, "", args)
        for name, headers in HEADERS.items():
            r.ch.publish(name.encode(), ex, "", Properties(headers=headers))
        for name, raw in RAW_HEADERS.items():
            r.ch.publish(name.encode(), ex, "", raw)
        await r.ch.wait_confirms(timeout=10)
        return {name: [d[0] for d in await r.drain(r.n(name))] for name in BINDINGS}

    memory, rabbit, major = await both(request, broker_url, scenario)
    if major < 4:
        same, differ = split(rabbit, set(HEADERS_ON_3))
        assert differ == HEADERS_ON_3
        rabbit = {**same, **split(memory, set(HEADERS_ON_3))[1]}
    assert memory == rabbit
    # 4.x and memory://: exact types at the top level, types inside arrays and tables too.
    assert memory["all_a1"] == ["h_a1", "h_one", "h_ab", "r_byte1", "r_short1", "r_long1", "r_dup"]
    assert memory["all_a1f"] == ["h_a1f", "r_float1"]
    assert memory["allx_xk"] == ["h_xk"] and memory["arr1"] == ["r_arr_byte1"]


async def test_headers_exchange_refuses_a_bad_x_match(request, broker_url):
    async def scenario(r: Run) -> dict[str, Any]:
        ex = await r.exchange("h", "headers", auto_delete=True)
        q = await r.queue("q")
        out = {}
        values = ("foo", "ALL", "any", 'a"b', "ü", 1, 300, 70000, -1, 2.5, 0.1, 1e20, True)
        for value in (*values, None, bytearray(b"any"), [1, "a"], {"k": "v"}):
            out[repr(value)] = await r.refusal(r.ch.queue_bind(q, ex, "", {"x-match": value}))
        other = await r.exchange("h2", "headers", auto_delete=True)
        out["e2e"] = await r.refusal(r.ch.exchange_bind(other, ex, "", {"x-match": "some"}))
        # Other exchange types do not look at x-match.
        direct = await r.exchange("d", "direct", auto_delete=True)
        out["direct"] = await r.refusal(r.ch.queue_bind(q, direct, "k", {"x-match": "foo"}))
        return out

    memory, rabbit, major = await both(request, broker_url, scenario)
    if major < 4:  # 3.10 prints a UTF-8 binary as its bytes (~p), 4.x as <<"ü"/utf8>> (~tp)
        code, text = memory["'ü'"]
        assert rabbit.pop("'ü'") == (code, text.replace('"/utf8>>', '">>'))
        memory.pop("'ü'")
    assert memory == rabbit
    assert memory["'foo'"] == (
        406,
        "PRECONDITION_FAILED - Invalid x-match field value "
        '<<"foo">>; expected all, any, all-with-x, or any-with-x',
    )
    assert memory["'any'"] == memory["direct"] == "ok"


# --------------------------------------------------------------------------- round trips

RAW_TYPES = (
    entry("b", b"b", struct.pack(">b", -5)),
    entry("B", b"B", b"\xfa"),
    entry("s", b"s", struct.pack(">h", -300)),
    entry("u", b"u", struct.pack(">H", 60000)),
    entry("i", b"i", struct.pack(">I", 4000000000)),
    entry("f", b"f", struct.pack(">f", 0.25)),
    entry("D", b"D", b"\x02" + struct.pack(">i", 12345)),
    entry("T", b"T", struct.pack(">Q", 1_700_000_000)),
    entry("S", b"S", struct.pack(">I", 2) + b"\xff\xfe"),
    entry("x", b"x", struct.pack(">I", 2) + b"ab"),
    entry("arr", b"A", struct.pack(">I", 6) + b"D\x01" + struct.pack(">i", 5)),
)
FULL = Properties(
    content_type="application/json",
    content_encoding="gzip",
    headers={
        "s": "str",
        "i": 7,
        "neg": -70000,
        "big": 2**40,
        "f": 1.5,
        "t": True,
        "fa": False,
        "v": None,
        "bin": b"\x00\xff",
        "arr": [1, "a", [2.5, None], {"k": "v"}],
        "tab": {"x": {"y": 1}},
        "empty": {},
        "ea": [],
        "utf": "ü€",
    },
    delivery_mode=2,
    priority=7,
    correlation_id="corr",
    reply_to="rt",
    expiration="600000",
    message_id="mid",
    timestamp=1_700_000_000,
    type="typ",
    user_id="guest",
    app_id="app",
    cluster_id="cl",
)


async def test_properties_round_trip(request, broker_url):
    """Every property and header type arrives as published: straight, after BCC was taken
    out, after dead-lettering and after the direct reply-to rewrite."""

    async def scenario(r: Run) -> dict[str, Any]:
        q = await r.queue("q")
        dead = await r.queue("dead")
        src = await r.queue(
            "src", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
        )
        typed = raw_headers(*RAW_TYPES)
        with_bcc = raw_headers(*RAW_TYPES, entry("BCC", b"A", b"\0\0\0\0"))
        for body, props in (
            ("full", FULL),
            ("empty", Properties()),
            ("none", None),
            ("empty-headers", Properties(headers={})),
            ("typed", typed),
            ("bcc", with_bcc),
        ):
            await r.publish(body.encode(), "", q, props)
        out: dict[str, Any] = {"straight": await r.drain(q, props=True)}
        # Dead-lettered: x-death is added, everything else stays (expiration goes).
        await r.publish(
            b"dead-full",
            "",
            src,
            Properties(
                **{k: getattr(FULL, k) for k in PROPERTY_NAMES if k != "expiration"},
                expiration="0",
            ),
        )
        await r.publish(
            b"dead-typed", "", src, raw_headers(*RAW_TYPES, flags=0x0100, tail=b"\x010")
        )
        await r.settle(dead, 2)
        out["dead"] = [
            (d[0], {k: v for k, v in d[3].items() if not k.startswith("x-")}, d[4])
            for d in await r.drain(dead, props=True)
        ]
        # Direct reply-to: reply_to is rewritten, the headers stay as they were.
        replies: list = []
        await r.ch.consume("amq.rabbitmq.reply-to", replies.extend, no_ack=True)
        await r.publish(
            b"request",
            "",
            q,
            raw_headers(*RAW_TYPES, flags=0x0200, tail=b"\x15amq.rabbitmq.reply-to"),
        )
        request = await r.ch.get(q, no_ack=True)
        reply_to = request.properties.reply_to
        out["reply_to"] = reply_to.startswith("amq.rabbitmq.reply-to.")
        out["request"] = r.plain_headers(request.properties.headers)
        await r.publish(b"reply", "", reply_to, raw_headers(*RAW_TYPES))
        assert await wait_until(lambda: len(replies) == 1)
        body, exchange, _name, headers, others = r.summary(replies[0], props=True)
        out["reply"] = (body, exchange, headers, others)
        return out

    memory, rabbit, _ = await both(request, broker_url, scenario)
    assert memory == rabbit
    straight = {d[0]: d for d in memory["straight"]}
    assert straight["typed"][3]["D"] == (2, 12345) and straight["bcc"][3] == straight["typed"][3]
    assert memory["dead"][1][1] == straight["typed"][3]
