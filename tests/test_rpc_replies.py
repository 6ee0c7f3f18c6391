"""Which replies answer an agent's call: RabbitMQ and memory://.

A call's correlation id cannot be guessed from the ids of earlier calls, so a client that
saw them cannot answer in the callee's place; a reply naming a sender (`app_id`) other than
the agent called is dropped; a reply naming none (a plain AMQP server) is taken.
"""

from __future__ import annotations

import asyncio
import json
import time

from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import Agent, expose
from munggoggo._speedups import Properties
from munggoggo.agent import open_connection
from munggoggo.envelope import KIND_RPC
from munggoggo.rpc import decode_request, encode_result
from munggoggo.url import parse_urls


class Gated(Agent):
    """Answers `answer()` once the test opens the gate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.called = asyncio.Event()
        self.gate = asyncio.Event()

    @expose
    async def answer(self) -> str:
        self.called.set()
        await self.gate.wait()
        return "real"


class RawPeer:
    """A plain AMQP client holding queue `name` (exclusive), as a hand-made agent would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = uid("raw")
        self.requests: list = []
        self.got_request = asyncio.Event()

    async def __aenter__(self) -> RawPeer:
        self.conn = await open_connection(parse_urls(self.url), name=self.name)
        self.ch = await self.conn.channel()
        await self.ch.queue_declare(self.name, exclusive=True)
        await self.ch.consume(self.name, self._on_batch, no_ack=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.conn.close()

    def _on_batch(self, batch: list) -> None:
        self.requests.extend(batch)
        self.got_request.set()

    async def next_request(self):
        await asyncio.wait_for(self.got_request.wait(), 10)
        self.got_request.clear()
        return self.requests.pop(0)

    def reply(self, to: str, correlation_id: str, result: str, app_id: str | None) -> None:
        props = Properties(
            content_type="application/json",
            type=KIND_RPC,
            correlation_id=correlation_id,
            app_id=app_id,
        )
        self.ch.publish(encode_result(result, correlation_id), "", to, props)


def guesses_from(seen: str) -> list[str]:
    """Correlation ids a client could guess from one id it saw: the same stem with a
    counter, and the next numbers after the seen one's if it ends in a number."""
    stem, _, last = seen.rpartition(".")
    numbers = set(range(1, 50))
    if last.isdigit():
        numbers.update(range(int(last) + 1, int(last) + 50))
    return [f"{stem}.{n}" for n in sorted(numbers)]


async def test_a_reply_with_a_guessed_correlation_id_is_not_the_answer(mesh_url):
    server = Gated(uid("gated"), url=mesh_url)
    caller = Agent(uid("caller"), url=mesh_url)
    async with server, caller, RawPeer(mesh_url) as forger:
        # The forger learns what the caller's ids look like by being called once.
        first = asyncio.ensure_future(caller.call(forger.name, "hello", timeout=10))
        request = await forger.next_request()
        seen = request.properties.correlation_id
        assert decode_request(request.body).method == "hello"
        forger.reply(caller.identity, seen, "hi", app_id=forger.name)
        assert await first == "hi"

        call = asyncio.ensure_future(caller.call(server.identity, "answer", timeout=10))
        await asyncio.wait_for(server.called.wait(), 10)
        inbox = caller.consumers()[""][0]
        settled = inbox.acked
        guesses = guesses_from(seen)
        for guess in guesses:  # posing as the server, as far as app_id goes
            forger.reply(caller.identity, guess, "forged", app_id=server.identity)
        # The caller took each one in (and dropped it, or answered the call with it).
        assert await wait_until(lambda: inbox.acked >= settled + len(guesses), timeout=10)
        server.gate.set()
        assert await call == "real"


async def test_a_reply_from_another_sender_than_the_agent_called_is_dropped(mesh_url):
    caller = Agent(uid("caller"), url=mesh_url)
    async with caller, RawPeer(mesh_url) as target:
        call = asyncio.ensure_future(caller.call(target.name, "answer", timeout=10))
        request = await target.next_request()
        correlation_id = request.properties.correlation_id
        reply_to = request.properties.reply_to
        target.reply(reply_to, correlation_id, "forged", app_id=uid("mallory"))
        target.reply(reply_to, correlation_id, "real", app_id=target.name)
        assert await call == "real"


async def test_a_reply_naming_no_sender_is_taken(mesh_url):
    caller = Agent(uid("caller"), url=mesh_url)
    async with caller, RawPeer(mesh_url) as plain_server:
        call = asyncio.ensure_future(caller.call(plain_server.name, "answer", timeout=10))
        request = await plain_server.next_request()
        props = request.properties
        plain_server.reply(props.reply_to, props.correlation_id, "plain", app_id=None)
        assert await call == "plain"


class Ping(Agent):
    @expose
    def ping(self) -> str:
        return "pong"


async def test_a_reply_carries_the_callees_name_and_the_requests_correlation_id(mesh_url):
    """What a plain client reads off a reply: JSON, the request's kind and correlation id
    (whatever its length or script), the callee as sender, when it was sent."""
    async with Ping(uid("ping"), url=mesh_url) as server, RawPeer(mesh_url) as client:
        ids = ["c1", "ünïcødé ✓", "x" * 255, "é" * 127]
        before = int(time.time())
        for kind, correlation_id in [*(("rpc", c) for c in ids), ("control", "c2")]:
            props = Properties(
                type=kind, reply_to=client.name, correlation_id=correlation_id,
                content_type="application/json",
            )  # fmt: skip
            body = json.dumps({"jsonrpc": "2.0", "method": "ping", "id": 1}).encode()
            client.ch.publish(body, "", server.identity, props)
        assert await wait_until(lambda: len(client.requests) == len(ids) + 1, timeout=10)
        replies = {d.properties.correlation_id: d for d in client.requests}
        assert sorted(replies) == sorted([*ids, "c2"])
        for correlation_id, reply in replies.items():
            props = reply.properties
            assert json.loads(reply.body)["result"] == "pong"
            assert props.content_type == "application/json" and props.app_id == server.identity
            assert props.type == ("control" if correlation_id == "c2" else "rpc")
            assert before <= props.timestamp <= time.time()
