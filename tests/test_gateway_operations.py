"""The gateway's operations for the dashboard: direct messages (`POST /agents/{id}/send`),
broadcasts (`POST /broadcast`), text bodies on those and on `POST /topics/...`, and the
dead-letter routes (`/dead-letters`: list, inspect, requeue, purge), with their bad input,
metrics and authentication. The ASGI app runs in process with its lifespan, on the real
RabbitMQ (one test on memory://, where the whole dead-letter queue may be purged).

Every dead-letter test works only on dead letters of its own (unique agent identities),
whatever else sits in the shared `munggoggo.dead-letters`, and removes them before it ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from typing import Any

import pytest
from broker_tools import wait_until
from gateway_tools import running_gateway
from mesh_tools import MessageCollector, events_topic, uid
from prometheus_client.parser import text_string_to_metric_families

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template, deadletters
from munggoggo._speedups import Properties
from munggoggo.agent import open_connection
from munggoggo.client import Connection
from munggoggo.deadletter_lock import scan_lock
from munggoggo.deadletters import DeadLetters
from munggoggo.gateway.state import GatewaySettings
from munggoggo.memory import MemoryBroker
from munggoggo.rpc import UNKNOWN_AGENT
from munggoggo.url import parse_url
from munggoggo.wire import (
    AGENT_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTER_QUEUE,
    QUEUE_HEADER,
    REASON_HEADER,
    REQUEUED_FROM_HEADER,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain; charset=utf-8"}
TOKEN = "0ps-t0ken-" + "d" * 24


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def from_gateway(gw) -> Template:
    """What the gateway sends: messages whose sender is its worker's client agent."""
    return Template(sender=gw.app.state.mesh.identity, kind="message")


@pytest.fixture
async def listener(broker_url):
    """An agent whose `MessageCollector` takes every direct message (none is left over to
    be dead-lettered as unwanted)."""
    async with Agent(uid("listener"), url=broker_url) as agent:
        agent.collector = await agent.add_behaviour(
            MessageCollector(agent, template=Template(kind="message"))
        )
        yield agent


# -- direct messages -------------------------------------------------------------------


async def test_send_json_and_text_reach_the_agents_inbox(gateway, broker_url):
    async with Agent(uid("inbox"), url=broker_url) as agent:
        got = await agent.add_behaviour(MessageCollector(agent, template=from_gateway(gateway)))
        url = f"/agents/{agent.identity}/send"
        response = await gateway.http.post(url, json={"order": 17, "items": ["a", "b"]})
        assert response.status_code == 202, response.text
        assert response.json() == {"sent": True, "to": agent.identity}
        response = await gateway.http.post(url, content="grüezi".encode(), headers=TEXT)
        assert response.status_code == 202, response.text
        # Neither JSON nor text/plain declared: a body that is valid JSON is JSON.
        response = await gateway.http.post(
            url, content=b"[1, 2]", headers={"content-type": "application/x-anything"}
        )
        assert response.status_code == 202, response.text
        assert await wait_until(lambda: len(got.got) == 3)
        first, second, third = got.got
        assert first.content_type == "application/json"
        assert first.decode() == {"order": 17, "items": ["a", "b"]}
        assert second.content_type == "text/plain"
        assert second.decode() == "grüezi" and isinstance(second.decode(), str)
        assert third.content_type == "application/json" and third.decode() == [1, 2]
        assert all(m.routing_key == agent.identity for m in got.got)


async def test_send_text_in_another_charset(gateway, broker_url):
    async with Agent(uid("latin"), url=broker_url) as agent:
        got = await agent.add_behaviour(MessageCollector(agent, template=from_gateway(gateway)))
        response = await gateway.http.post(
            f"/agents/{agent.identity}/send",
            content="Zürich".encode("latin-1"),
            headers={"content-type": "text/plain; charset=ISO-8859-1"},
        )
        assert response.status_code == 202, response.text
        assert await wait_until(lambda: len(got.got) == 1)
        assert got.got[0].decode() == "Zürich"


async def test_send_to_an_unknown_agent_is_404(gateway):
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    error = error_of(await gateway.http.post(f"/agents/{nobody}/send", json={"x": 1}), 404)
    assert error["code"] == UNKNOWN_AGENT
    assert error["message"] == f"unknown agent {nobody!r}: no inbox queue of that name"
    # The worker goes on sending: the return did not upset its channel.
    error = error_of(
        await gateway.http.post(f"/agents/{nobody}/send", content=b"x", headers=TEXT), 404
    )
    assert error["code"] == UNKNOWN_AGENT


@pytest.mark.parametrize(
    "target",
    ["gateway-{own}", "gateway-elsewhere-1", "amq.rabbitmq.reply-to", "munggoggo.dead-letters"],
)
async def test_queues_that_are_no_agents_inbox_are_unknown_agents(gateway, target):
    """A gateway worker's client agent is no target (as for calls); nor are the broker's
    reply-to queues and the mesh's dead letters, though queues of those names exist."""
    target = target.format(own=gateway.app.state.mesh.identity.removeprefix("gateway-"))
    response = await gateway.http.post(f"/agents/{target}/send", json={"x": 1})
    assert error_of(response, 404)["code"] == UNKNOWN_AGENT


async def test_send_bad_bodies(gateway, listener):
    url = f"/agents/{listener.identity}/send"
    assert "body is required" in error_of(await gateway.http.post(url), 400)["message"]
    error_of(await gateway.http.post(url, content=b"", headers=TEXT), 400)
    error_of(await gateway.http.post(url, content=b"  \n", headers=JSON), 400)
    error = error_of(await gateway.http.post(url, content=b'{"a": ', headers=JSON), 400)
    assert error["message"].startswith("invalid JSON")
    # Not JSON, and not declared text: refused, not guessed.
    error_of(await gateway.http.post(url, content=b"hello", headers={}), 400)
    error_of(await gateway.http.post(url, content=b"\xff\xfe", headers=TEXT), 400)
    odd = {"content-type": "text/plain; charset=no-such-charset"}
    error_of(await gateway.http.post(url, content=b"hi", headers=odd), 415)
    deep = b"[" * 40 + b"1" + b"]" * 40
    assert "nested" in error_of(await gateway.http.post(url, content=deep), 400)["message"]
    assert gateway.app.state.in_flight == 0
    # None of them was sent: the next good one is the first to arrive.
    assert (await gateway.http.post(url, content=b"good", headers=TEXT)).status_code == 202
    assert await wait_until(lambda: listener.collector.got)
    assert [m.decode() for m in listener.collector.got] == ["good"]


async def test_send_body_size_limit(broker_url, listener):
    async with running_gateway(GatewaySettings(url=broker_url, max_body_bytes=64)) as gw:
        url = f"/agents/{listener.identity}/send"
        error_of(await gw.http.post(url, content=b"x" * 65, headers=TEXT), 413)
        error_of(await gw.http.post("/broadcast", content=b"x" * 65, headers=TEXT), 413)
        assert (await gw.http.post(url, content=b"x" * 64, headers=TEXT)).status_code == 202
        assert await wait_until(lambda: len(listener.collector.got) == 1)


async def test_send_when_every_slot_is_taken_is_503(broker_url, listener):
    async with running_gateway(GatewaySettings(url=broker_url, max_in_flight=1)) as gw:
        gw.app.state.call_started()  # someone else's call holds the only slot
        try:
            for path in (f"/agents/{listener.identity}/send", "/broadcast"):
                response = await gw.http.post(path, json=1)
                assert error_of(response, 503)["code"] == -32000
                assert response.headers["retry-after"] == "1"
            response = await gw.http.get("/dead-letters")
            assert error_of(response, 503)["code"] == -32000
        finally:
            gw.app.state.call_finished()


# -- broadcasts and topics -----------------------------------------------------------


async def test_broadcast_reaches_every_agent(gateway, broker_url):
    async with Agent(uid("b1"), url=broker_url) as one, Agent(uid("b2"), url=broker_url) as two:
        collectors = [
            await agent.add_behaviour(MessageCollector(agent, template=from_gateway(gateway)))
            for agent in (one, two)
        ]
        response = await gateway.http.post("/broadcast", json={"reload": True})
        assert response.status_code == 202, response.text
        assert response.json() == {"broadcast": True}
        response = await gateway.http.post("/broadcast", content=b"all hands", headers=TEXT)
        assert response.status_code == 202, response.text
        assert await wait_until(lambda: all(len(c.got) == 2 for c in collectors))
        for collector in collectors:
            assert [m.decode() for m in collector.got] == [{"reload": True}, "all hands"]
            assert collector.got[1].content_type == "text/plain"
        error_of(await gateway.http.post("/broadcast"), 400)
        error_of(await gateway.http.post("/broadcast", content=b"[", headers=JSON), 400)


async def test_publish_a_text_body_on_a_topic(gateway, calc):
    topic = events_topic(calc.identity)
    response = await gateway.http.post(f"/topics/{topic}", content=b"t=21.5", headers=TEXT)
    assert response.status_code == 202, response.text
    assert response.json() == {"published": True, "routing_key": topic}
    assert await wait_until(lambda: calc.received)
    assert calc.received == [(topic, "t=21.5")]


# -- dead letters -------------------------------------------------------------------


class Picky(Behaviour):
    """Fails on every message until `fixed`; keeps what it handled."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    async def setup(self) -> None:
        self.handled: list[Any] = []
        self.fixed = False

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        if not self.fixed:
            raise RuntimeError(f"cannot digest {msg.decode()!r}")
        self.handled.append(msg.decode())


async def listed(gw, agent: str, count: int) -> list[dict[str, Any]]:
    """The agent's dead letters as GET /dead-letters lists them, once there are `count`."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        response = await gw.http.get("/dead-letters", params={"agent": agent, "limit": 1000})
        assert response.status_code == 200, response.text
        found = response.json()["dead_letters"]
        return len(found) >= count

    assert await wait_until(enough, timeout=15), f"{len(found)} dead letters of {agent}"
    return found


@contextlib.asynccontextmanager
async def planted(url: str, agent: str, letters: list[tuple[bytes, str | None, str | None]]):
    """Dead letters in `munggoggo.dead-letters` as an agent named `agent` leaves them:
    (body, content type, queue) each; yields their ids, removes what is left after."""
    conn = await open_connection(parse_url(url), "planter")
    ids = []
    try:
        ch = await conn.channel(confirms=True)
        for n, (body, content_type, queue) in enumerate(letters):
            letter_id = f"{agent}-{n}"
            headers: dict[str, Any] = {
                DEAD_LETTER_ID_HEADER: letter_id,
                AGENT_HEADER: agent,
                REASON_HEADER: f"planted #{n}",
                "x-extra": b"\x00\x01",
            }
            if queue is not None:
                headers[QUEUE_HEADER] = queue
            props = Properties(content_type=content_type, type="message", headers=headers)
            ch.publish(body, DEAD_LETTER_EXCHANGE, "planted", props)
            ids.append(letter_id)
        await ch.wait_confirms(timeout=10)
        yield ids
    finally:
        await DeadLetters(conn).purge(all=True, agent=agent)
        await conn.close()


async def test_a_poison_message_sent_as_text_is_listed_inspected_and_requeued(gateway, broker_url):
    agent = Agent(uid("dl"), url=broker_url, config=AgentConfig(max_redeliveries=1))
    async with agent:
        try:
            picky = await agent.add_behaviour(Picky(agent, template=from_gateway(gateway)))
            url = f"/agents/{agent.identity}/send"
            response = await gateway.http.post(url, content=b"poison", headers=TEXT)
            assert response.status_code == 202, response.text

            (letter,) = await listed(gateway, agent.identity, 1)
            assert letter["agent"] == agent.identity and letter["behaviour"] == "Picky"
            assert letter["queue"] == agent.identity
            assert letter["reason"] == "RuntimeError: cannot digest 'poison'"
            assert letter["content_type"] == "text/plain" and letter["size"] == 6
            assert "body" not in letter and "headers" not in letter

            response = await gateway.http.get(f"/dead-letters/{letter['id']}")
            assert response.status_code == 200, response.text
            shown = response.json()
            assert shown["body"] == "poison"
            assert shown["headers"][REASON_HEADER] == letter["reason"]
            assert {k: shown[k] for k in letter if k != "age"} == {
                k: v for k, v in letter.items() if k != "age"
            }

            picky.fixed = True
            response = await gateway.http.post(
                "/dead-letters/requeue", json={"ids": [letter["id"]]}
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"requeued": [letter["id"]], "kept": {}, "missing": []}
            assert await wait_until(lambda: picky.handled == ["poison"])
            response = await gateway.http.get("/dead-letters", params={"agent": agent.identity})
            assert response.json() == {"dead_letters": []}
            error_of(await gateway.http.get(f"/dead-letters/{letter['id']}"), 404)
        finally:
            await DeadLetters(agent.connection).purge(all=True, agent=agent.identity)


async def test_inspect_shows_json_text_and_binary_bodies_and_loses_nothing(gateway, broker_url):
    agent = uid("planter")
    bodies = [
        (b'{"order": 17}', "application/json", None),
        ("naïve text".encode(), "text/plain", None),
        (b"\x80\x81\xff", "application/octet-stream", None),
    ]
    async with planted(broker_url, agent, bodies) as ids:
        before = await listed(gateway, agent, 3)
        assert [d["id"] for d in before] == ids  # oldest first

        shown = [(await gateway.http.get(f"/dead-letters/{i}")).json() for i in ids]
        assert shown[0]["body"] == {"order": 17} and "body_base64" not in shown[0]
        assert shown[1]["body"] == "naïve text"
        assert "body" not in shown[2]
        assert base64.b64decode(shown[2]["body_base64"]) == b"\x80\x81\xff"
        # Byte arrays in the headers travel as base64 (msgspec's rule for bytes in JSON).
        assert base64.b64decode(shown[0]["headers"]["x-extra"]) == b"\x00\x01"
        assert shown[0]["headers"][AGENT_HEADER] == agent

        # Looking took nothing away and changed no order.
        after = await listed(gateway, agent, 3)
        assert [d["id"] for d in after] == ids
        response = await gateway.http.get("/dead-letters", params={"agent": agent, "limit": 2})
        assert [d["id"] for d in response.json()["dead_letters"]] == ids[:2]
        error_of(await gateway.http.get(f"/dead-letters/{agent}-nope"), 404)

        # Looks at once (a worker runs them one at a time) do not hide letters from each
        # other: a scan holds what it took until it is done.
        params = {"agent": agent}
        answers = await asyncio.gather(
            *(gateway.http.get("/dead-letters", params=params) for _ in range(3)),
            *(gateway.http.get(f"/dead-letters/{i}") for i in ids),
        )
        assert [a.status_code for a in answers] == [200] * 6
        assert all([d["id"] for d in a.json()["dead_letters"]] == ids for a in answers[:3])
        assert [a.json()["id"] for a in answers[3:]] == ids
        error_of(await gateway.http.get("/dead-letters/" + "x" * 300), 404)


async def test_requeue_keeps_a_letter_whose_queue_is_gone_and_reports_unknown_ids(
    gateway, broker_url
):
    agent = uid("requeue")
    conn = await Connection(broker_url).connect()
    try:
        ch = await conn.channel(confirms=False)
        home = (await ch.queue_declare(uid("home"), exclusive=True)).queue
        gone = uid("gone")
        letters = [(b"1", None, home), (b"2", None, gone), (b"3", None, home)]
        async with planted(broker_url, agent, letters) as ids:
            await listed(gateway, agent, 3)
            response = await gateway.http.post(
                "/dead-letters/requeue",
                json={"ids": [ids[0], ids[1], "no-such-id"], "agent": agent},
            )
            assert response.status_code == 200, response.text
            result = response.json()
            assert result["requeued"] == [ids[0]]
            assert list(result["kept"]) == [ids[1]] and gone in result["kept"][ids[1]]
            assert result["missing"] == ["no-such-id"]
            copy = await ch.get(home, no_ack=True)
            assert copy is not None and copy.body == b"1"
            assert copy.properties.headers[REQUEUED_FROM_HEADER] == ids[0]
            assert [d["id"] for d in await listed(gateway, agent, 2)] == ids[1:]

            # all=true narrowed by agent: only this agent's letters; the gone queue's stays.
            response = await gateway.http.post(
                "/dead-letters/requeue", json={"all": True, "agent": agent}
            )
            result = response.json()
            assert result["requeued"] == [ids[2]] and list(result["kept"]) == [ids[1]]
            assert (await ch.get(home, no_ack=True)).body == b"3"
    finally:
        await conn.close()


async def test_purge_by_ids_and_all_for_an_agent(gateway, broker_url):
    agent = uid("purge")
    async with planted(broker_url, agent, [(b"a", None, None)] * 4) as ids:
        await listed(gateway, agent, 4)
        response = await gateway.http.post(
            "/dead-letters/purge", json={"ids": [ids[1], "unknown-id", ids[1]]}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "purged": 1,
            "ids": [ids[1]],
            "missing": ["unknown-id"],
            "left": None,
        }
        remaining = await listed(gateway, agent, 3)
        assert [d["id"] for d in remaining] == [ids[0], ids[2], ids[3]]

        response = await gateway.http.post(
            "/dead-letters/purge", json={"all": True, "agent": agent}
        )
        assert response.json() == {
            "purged": 3,
            "ids": [ids[0], ids[2], ids[3]],
            "missing": [],
            "left": None,
        }
        response = await gateway.http.get("/dead-letters", params={"agent": agent})
        assert response.json() == {"dead_letters": []}


async def test_purge_all_empties_the_queue():
    """The whole queue, on a memory:// broker of this test alone (never the shared one)."""
    url = f"memory://gateway-ops-{uuid.uuid4().hex[:8]}"
    try:
        async with (
            running_gateway(GatewaySettings(url=url)) as gw,
            planted(url, uid("x"), [(b"1", None, None)]),
            planted(url, uid("y"), [(b"2", None, None)]),
        ):
            assert len((await gw.http.get("/dead-letters")).json()["dead_letters"]) == 2
            response = await gw.http.post("/dead-letters/purge", json={"all": True})
            assert response.json() == {"purged": 2, "ids": [], "missing": [], "left": 0}
            assert (await gw.http.get("/dead-letters")).json() == {"dead_letters": []}
    finally:
        MemoryBroker.reset(url.removeprefix("memory://"))


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": ""}, {"agent": ""}],
)
async def test_list_bad_queries_are_400(gateway, query):
    error_of(await gateway.http.get("/dead-letters", params=query), 400)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "required"),
        (b"{", "invalid JSON"),
        (b"[1]", "JSON object"),
        (b'"all"', "JSON object"),
        (b"{}", "choose"),
        (b'{"ids": []}', "choose"),
        (b'{"all": false}', "choose"),
        (b'{"ids": ["a"], "all": true}', "not both"),
        (b'{"ids": "abc"}', "ids must be"),
        (b'{"ids": [1]}', "ids must be"),
        (b'{"ids": [""]}', "ids must be"),
        (b'{"all": "yes"}', "all must be"),
        (b'{"all": true, "agent": 5}', "agent must be"),
        (b'{"all": true, "agent": ""}', "agent must be"),
        (b'{"id": ["a"]}', "unknown field"),
    ],
)
@pytest.mark.parametrize("action", ["requeue", "purge"])
async def test_requeue_and_purge_bad_bodies_are_400(gateway, action, body, words):
    response = await gateway.http.post(f"/dead-letters/{action}", content=body, headers=JSON)
    assert words in error_of(response, 400)["message"]


async def test_requeue_and_purge_want_json(gateway):
    for action in ("requeue", "purge"):
        response = await gateway.http.post(
            f"/dead-letters/{action}", content=b'{"all": true}', headers=TEXT
        )
        error_of(response, 415)
    # Wrong methods on the fixed paths, and on an id.
    assert (await gateway.http.get("/dead-letters/purge")).status_code == 405
    assert (await gateway.http.post("/dead-letters/some-id")).status_code == 405


# -- metrics, description, authentication --------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_operations_are_counted(gateway, listener):
    await gateway.http.post(f"/agents/{listener.identity}/send", json=1)
    await gateway.http.post("/broadcast", json=1)
    await gateway.http.get("/dead-letters", params={"limit": 1})
    await gateway.http.post("/dead-letters/purge", json={"ids": [uid("absent")]})
    scraped = samples((await gateway.http.get("/metrics")).text)
    assert scraped[("munggoggo_gateway_sent_total", ())] == 1
    assert scraped[("munggoggo_gateway_broadcast_total", ())] == 1
    assert scraped[("munggoggo_gateway_dead_letters_purged_total", ())] == 0
    for route, method, status in [
        ("/agents/{identity}/send", "POST", "202"),
        ("/broadcast", "POST", "202"),
        ("/dead-letters", "GET", "200"),
        ("/dead-letters/purge", "POST", "200"),
    ]:
        labels = (("method", method), ("route", route), ("status", status))
        assert scraped[("munggoggo_gateway_requests_total", labels)] == 1, route


async def test_openapi_describes_the_operations(gateway):
    spec = (await gateway.http.get("/openapi.json")).json()
    paths = spec["paths"]
    send = paths["/agents/{identity}/send"]["post"]
    assert set(send["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert {"202", "400", "404", "503", "504"} <= set(send["responses"])
    assert "text/plain" in paths["/topics/{routing_key}"]["post"]["requestBody"]["content"]
    assert "202" in paths["/broadcast"]["post"]["responses"]
    listing = paths["/dead-letters"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "agent"}
    assert "404" in paths["/dead-letters/{id}"]["get"]["responses"]
    for action in ("requeue", "purge"):
        assert "400" in paths[f"/dead-letters/{action}"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["DeadLetterSelection"]["additionalProperties"] is False
    json.dumps(spec)  # stays JSON


async def test_every_operation_needs_the_token(broker_url, calc, listener):
    settings = GatewaySettings(url=broker_url, tokens=(TOKEN,), allowed_hosts=("gateway",))
    async with running_gateway(settings) as gw:
        requests = [
            ("POST", f"/agents/{listener.identity}/send", {"x": 1}),
            ("POST", "/broadcast", {"x": 1}),
            ("POST", f"/topics/{events_topic(calc.identity)}", {"x": 1}),
            ("GET", "/dead-letters", None),
            ("GET", "/dead-letters/some-id", None),
            ("POST", "/dead-letters/requeue", {"ids": [uid("absent")]}),
            ("POST", "/dead-letters/purge", {"ids": [uid("absent")]}),
        ]
        for method, path, body in requests:
            response = await gw.http.request(method, path, json=body)
            assert error_of(response, 401)["code"] == 401, path
        assert gw.app.state.counters.get("sent", 0) == 0
        assert gw.app.state.counters.get("broadcast", 0) == 0
        auth = {"authorization": f"Bearer {TOKEN}"}
        expected = [202, 202, 202, 200, 404, 200, 200]
        for (method, path, body), status in zip(requests, expected, strict=True):
            response = await gw.http.request(method, path, json=body, headers=auth)
            assert response.status_code == status, (path, response.text)
        # The refused ones reached nobody: the accepted send and broadcast, then a last
        # message, are all the listener got, in order.
        response = await gw.http.post(
            f"/agents/{listener.identity}/send", content=b"last", headers={**auth, **TEXT}
        )
        assert response.status_code == 202
        got = listener.collector.got
        assert await wait_until(lambda: calc.received and len(got) >= 3)
        assert [m.decode() for m in got] == [{"x": 1}, {"x": 1}, "last"]
        assert [m.exchange for m in got] == ["", "munggoggo.fanout", ""]


async def test_operations_answer_503_while_the_broker_connection_is_down(broker_url, caplog):
    async with running_gateway(GatewaySettings(url=broker_url)) as gw:
        await gw.app.state.mesh.agent.connection.close()
        caplog.set_level(logging.INFO, logger="munggoggo.gateway")
        for method, path, body in [
            ("POST", "/agents/someone/send", {"value": 1}),
            ("POST", "/broadcast", {"value": 1}),
            ("GET", "/dead-letters", None),
            ("GET", "/dead-letters/some-id", None),
            ("POST", "/dead-letters/requeue", {"all": True}),
            ("POST", "/dead-letters/purge", {"ids": ["some-id"]}),
        ]:
            response = await gw.http.request(method, path, json=body)
            assert error_of(response, 503)["code"] == -32003, path
            assert response.headers["retry-after"] == "1"
        assert gw.app.state.in_flight == 0
        assert not [r for r in caplog.records if r.exc_info], "a refusal was logged as a crash"


# -- dead letters: other readers, a dropped connection, late confirms ------------------


@contextlib.asynccontextmanager
async def memory_gateway():
    """A gateway on a memory:// broker of this test alone, and a connection of its own to
    that broker (another reader)."""
    url = f"memory://gateway-ops-{uuid.uuid4().hex[:8]}"
    try:
        async with running_gateway(GatewaySettings(url=url)) as gw:
            other = await open_connection(parse_url(url), "other-reader")
            try:
                yield gw, other
            finally:
                await other.close()
    finally:
        MemoryBroker.reset(url.removeprefix("memory://"))


async def test_dead_letters_busy_with_another_reader_is_503(monkeypatch):
    monkeypatch.setattr(deadletters, "LOCK_TIMEOUT", 0.3)
    async with memory_gateway() as (gw, other):
        async with scan_lock(other, DEAD_LETTER_QUEUE, timeout=5):
            for method, path, body in [
                ("GET", "/dead-letters", None),
                ("GET", "/dead-letters/some-id", None),
                ("POST", "/dead-letters/requeue", {"all": True}),
                ("POST", "/dead-letters/purge", {"all": True}),
            ]:
                response = await gw.http.request(method, path, json=body)
                error = error_of(response, 503)
                assert error["code"] == -32003, path
                assert "dead letters busy" in error["message"]
                assert response.headers["retry-after"] == "1"
        assert (await gw.http.get("/dead-letters")).json() == {"dead_letters": []}
        assert gw.app.state.in_flight == 0


async def test_a_connection_lost_during_a_dead_letter_operation_is_503_unavailable():
    async with memory_gateway() as (gw, other):
        async with scan_lock(other, DEAD_LETTER_QUEUE, timeout=5):
            # The operation waits for the other reader; its connection drops meanwhile.
            waiting = asyncio.create_task(gw.http.get("/dead-letters"))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await gw.app.state.mesh.agent.connection.close()
            response = await waiting
        error = error_of(response, 503)
        assert error["code"] == -32003
        assert response.headers["retry-after"] == "1"
        assert gw.app.state.in_flight == 0


async def test_a_requeue_whose_confirms_come_late_is_504_and_keeps_its_letters(
    gateway, broker_url, monkeypatch
):
    """The copies go to a quorum queue, which confirms only once its log has them: later
    than a confirm timeout of 0 allows."""
    monkeypatch.setattr(deadletters, "CONFIRM_TIMEOUT", 0)
    agent = uid("late")
    conn = await Connection(broker_url).connect()
    home = uid("test.home")
    try:
        ch = await conn.channel(confirms=False)
        await ch.queue_declare(home, durable=True, arguments={"x-queue-type": "quorum"})
        async with planted(broker_url, agent, [(b"1", None, home), (b"2", None, home)]) as ids:
            await listed(gateway, agent, 2)
            response = await gateway.http.post(
                "/dead-letters/requeue", json={"all": True, "agent": agent}
            )
            error = error_of(response, 504)
            assert error["code"] == -32002
            assert error["data"]["requeued"] == [] and error["data"]["missing"] == []
            assert sorted(error["data"]["kept"]) == ids
            assert all("may have been delivered" in w for w in error["data"]["kept"].values())
            assert [d["id"] for d in await listed(gateway, agent, 2)] == ids
    finally:
        ch = await conn.channel(confirms=False)
        await ch.queue_delete(home)
        await conn.close()
