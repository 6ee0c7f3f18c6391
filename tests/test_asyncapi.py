"""The mesh's contract as AsyncAPI 3.0 (core/asyncapi.py): built from a live mesh's `peers()`
on RabbitMQ and memory://, served by the gateway at `GET /asyncapi.json`, printed by
`munggoggo ctl asyncapi`; every document is validated against the official schema.

tests/data/asyncapi-3.0.0.schema.json is `schemas/3.0.0-without-$id.json` of the npm package
`@asyncapi/specs` 6.11.1 (`npm pack @asyncapi/specs`), unchanged.

Also here: `Behaviour.describe()`'s `body_schema`, and `rpc_schemas.hoist_defs`, which moves
a method's standalone schema definitions into a document.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from mesh_tools import uid

from munggoggo import Agent, Behaviour, envelope, expose
from munggoggo.asyncapi import BINDING_KEY_EXTENSION, REPLY_TO_LOCATION, asyncapi_document
from munggoggo.rpc_schemas import DefsIndex, hoist_defs, type_schema
from munggoggo.template import Template
from munggoggo.url import URLError

pytestmark = [pytest.mark.timeout(60)]

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json").read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


class Point(msgspec.Struct):
    x: float
    y: float


class Reading(msgspec.Struct):
    sensor: str
    where: Point
    value: float


class Command(msgspec.Struct):
    verb: str


class Sensors(Agent):
    """Behaviours with binding keys (one with a template body type, one without), one fed
    from the inbox with a declared body type, and typed exposed methods."""

    class Readings(Behaviour):
        async def run(self) -> None:
            await self.receive(timeout=0.2)

    class Plain(Behaviour):
        async def run(self) -> None:
            await self.receive(timeout=0.2)

    class Commands(Behaviour):
        body_type = Command

        async def run(self) -> None:
            await self.receive(timeout=0.2)

    async def setup(self) -> None:
        prefix = self.identity
        await self.add_behaviour(
            self.Readings(
                self,
                binding_keys=[f"{prefix}.readings.*", f"{prefix}.alerts.#"],
                template=Template(body_type=Reading),
            )
        )
        await self.add_behaviour(self.Plain(self, binding_keys=[f"{prefix}.plain"]))
        await self.add_behaviour(self.Commands(self, template=Template(kind="message")))

    @expose
    def locate(self, reading: Reading, scale: float = 1.0) -> Point:
        """Where a reading was taken, scaled.

        Args:
            reading: the reading.
            scale: the factor.
        """
        return Point(reading.where.x * scale, reading.where.y * scale)

    @expose
    def count(self, sensors: list[str]) -> int:
        return len(sensors)


def binding_keys(identity: str) -> list[str]:
    return [f"{identity}.readings.*", f"{identity}.alerts.#", f"{identity}.plain"]


def resolve(document: dict[str, Any], ref: str) -> Any:
    """What a local `$ref` points at (a KeyError if nothing)."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The schema itself, or what its `$ref` points at."""
    return resolve(document, schema["$ref"]) if "$ref" in schema else schema


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def check_document(document: dict[str, Any]) -> None:
    """Valid against the official schema, and every reference resolves."""
    errors = sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    for ref in refs(document):
        resolve(document, ref)


def check_sensors(document: dict[str, Any], identity: str) -> None:
    """Every binding key and method of a `Sensors` agent, with its schemas."""
    channels = document["channels"]
    by_address = {c["address"]: c for c in channels.values() if c.get("address")}
    by_key = {c[BINDING_KEY_EXTENSION]: c for c in channels.values() if BINDING_KEY_EXTENSION in c}
    for key in binding_keys(identity):
        channel = by_key[key]
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert (exchange["name"], exchange["type"]) == ("munggoggo.topic", "topic")
        assert channel["bindings"]["amqp"]["is"] == "routingKey"
        assert f"`{key}`" in channel["description"]
    # Patterns are no addresses; the literal key is one.
    assert [by_key[k]["address"] for k in binding_keys(identity)] == [
        None,
        None,
        binding_keys(identity)[2],
    ]
    by_address.update(by_key)
    for key in binding_keys(identity)[:2]:
        (message,) = by_address[key]["messages"].values()
        payload = message["payload"]
        assert payload["required"] == ["sensor", "where", "value"]
        assert resolve(document, payload["properties"]["where"]["$ref"])["required"] == ["x", "y"]
        assert message["contentType"] == "application/json"
    (plain,) = by_address[binding_keys(identity)[2]]["messages"].values()
    assert plain["payload"] == {}  # no body type declared: anything
    for message in by_address[binding_keys(identity)[0]]["messages"].values():
        headers = message["headers"]["allOf"]
        assert resolve(document, headers[0]["$ref"])["properties"].keys() >= {
            "app_id",
            "type",
            "content_type",
            "correlation_id",
            "reply_to",
        }
        assert headers[1]["properties"]["type"] == {"const": "message"}

    inbox = by_address[identity]
    assert inbox["bindings"]["amqp"]["queue"]["name"] == identity
    operations = {
        op["title"]: op
        for op in document["operations"].values()
        if resolve(document, op["channel"]["$ref"]) is inbox
    }
    for method in ("locate", "count", "describe", "ping"):
        assert f"{identity}.{method}" in operations, method
    locate = operations[f"{identity}.locate"]
    assert locate["action"] == "receive"
    assert locate["summary"] == "Where a reading was taken, scaled."
    (request_ref,) = locate["messages"]
    request = resolve(document, request_ref["$ref"])
    assert request["headers"]["allOf"][1]["properties"]["type"] == {"const": "rpc"}
    assert request["correlationId"]["location"] == "$message.header#/correlation_id"
    payload = request["payload"]["properties"]
    assert payload["method"] == {"const": "locate"}
    params = payload["params"]["anyOf"][0]
    assert params["required"] == ["reading"]
    assert set(params["properties"]) == {"reading", "scale"}
    reading = resolve(document, params["properties"]["reading"]["$ref"])
    assert reading["required"] == ["sensor", "where", "value"]
    reply = locate["reply"]
    assert reply["address"]["location"] == REPLY_TO_LOCATION
    (reply_ref,) = reply["messages"]
    assert reply_ref["$ref"].startswith(reply["channel"]["$ref"] + "/messages/")
    result = resolve(document, reply_ref["$ref"])["payload"]["oneOf"][0]["properties"]["result"]
    assert deref(document, result)["required"] == ["x", "y"]
    count = resolve(document, operations[f"{identity}.count"]["messages"][0]["$ref"])
    assert count["payload"]["properties"]["params"]["anyOf"][0]["properties"]["sensors"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    direct = operations[f"{identity}.Commands receives direct messages"]
    (command_ref,) = direct["messages"]
    assert resolve(document, command_ref["$ref"])["payload"]["required"] == ["verb"]


async def test_document_of_a_live_mesh(mesh_url):
    async with (
        Sensors(uid("sensors"), url=mesh_url) as sensors,
        Agent(uid("client"), url=mesh_url) as client,
    ):
        peers = await client.peers(timeout=0.5)
    document = asyncapi_document(peers, server_url=mesh_url)
    check_document(document)
    check_sensors(document, sensors.identity)
    assert document["asyncapi"] == "3.0.0"
    broadcast = document["channels"]["broadcast"]["bindings"]["amqp"]["exchange"]
    assert (broadcast["name"], broadcast["type"]) == ("munggoggo.fanout", "fanout")
    fanout = document["channels"]["broadcast"]["messages"]
    assert fanout["presence"]["payload"]["required"] == ["identity", "state"]
    assert fanout["discover"]["payload"]["properties"]["method"] == {"const": "describe"}
    discover = document["operations"]["discover"]
    assert discover["reply"]["address"]["location"] == REPLY_TO_LOCATION
    (server,) = document["servers"].values()
    assert server["protocol"] == mesh_url.split(":", 1)[0]
    assert "guest" not in json.dumps(document["servers"])  # no credentials


def test_no_agents_is_still_a_valid_document():
    document = asyncapi_document([], server_url="amqp://u:secret@broker.example:5673/prod")
    check_document(document)
    assert document["servers"]["broker"]["host"] == "broker.example:5673"
    assert document["servers"]["broker"]["pathname"] == "/prod"
    assert "secret" not in json.dumps(document)


def test_identities_outside_the_key_alphabet_get_unique_keys():
    agents = [
        {"identity": "a:b", "methods": ["m"], "schemas": {}, "behaviours": []},
        {"identity": "a_b", "methods": ["m"], "schemas": {}, "behaviours": []},
    ]
    document = asyncapi_document(agents, server_url="memory://x")
    check_document(document)
    inboxes = {c["address"] for k, c in document["channels"].items() if k.startswith("inbox.")}
    assert inboxes == {"a:b", "a_b"}
    titles = {op["title"] for op in document["operations"].values()}
    assert {"a:b.m", "a_b.m"} <= titles


def test_an_agent_type_named_like_ours_does_not_replace_it():
    params = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/WireProperties"}},
        "$defs": {"WireProperties": {"type": "object", "properties": {"mine": {}}}},
    }
    agent = {
        "identity": "a",
        "methods": ["m"],
        "schemas": {"m": {"params": params, "result": {}, "doc": None}},
        "behaviours": [],
    }
    document = asyncapi_document([agent], server_url="memory://x")
    check_document(document)
    schemas = document["components"]["schemas"]
    assert "app_id" in schemas["WireProperties"]["properties"]
    assert schemas["WireProperties_2"]["properties"] == {"mine": {}}


def test_a_bad_server_url_is_refused():
    with pytest.raises(URLError):
        asyncapi_document([], server_url="http://not-a-broker")


# -- body_schema and hoist_defs -------------------------------------------------------


async def test_describe_has_the_declared_body_schema():
    url = f"memory://{uid('bodies')}"

    class Both(Behaviour):
        body_type = Command  # the class's own wins over the template's

    async with Agent(uid("a"), url=url) as agent:
        cases = {
            "template": Behaviour(agent, name="template", template=Template(body_type=Reading)),
            "all_of": Behaviour(
                agent, name="all_of", template=Template(kind="message") & Template(body_type=Point)
            ),
            "any_of": Behaviour(
                agent, name="any_of", template=Template(body_type=Point) | Template(kind="rpc")
            ),
            "none": Behaviour(agent, name="none", binding_keys=["x"]),
            "class": Both(agent, name="class", template=Template(body_type=Reading)),
        }
        schemas = {name: b.describe()["body_schema"] for name, b in cases.items()}
    assert schemas["template"] == type_schema(Reading)
    assert schemas["all_of"] == type_schema(Point)
    assert schemas["any_of"] is None  # no single type is promised
    assert schemas["none"] is None
    assert schemas["class"] == type_schema(Command)


def test_hoist_defs_moves_definitions_and_renames_a_clash():
    defs: dict[str, Any] = {"Point": {"type": "string"}}  # another Point already there
    schema = type_schema(list[Reading])
    hoisted = hoist_defs(schema, defs, "#/components/schemas/")
    assert "$defs" not in hoisted
    document = {"components": {"schemas": defs}, "x": hoisted}
    reading = resolve(document, hoisted["items"]["$ref"])
    assert reading["required"] == ["sensor", "where", "value"]
    assert reading["properties"]["where"] == {"$ref": "#/components/schemas/Point_2"}
    assert defs["Point"] == {"type": "string"}  # the other one kept
    assert resolve(document, reading["properties"]["where"]["$ref"])["required"] == ["x", "y"]
    # The same definitions again: reused, not duplicated.
    again = hoist_defs(schema, defs, "#/components/schemas/")
    assert again == hoisted
    assert sorted(defs) == ["Point", "Point_2", "Reading"]


# -- the gateway and the command line ---------------------------------------------------


@pytest.mark.rabbitmq
async def test_gateway_serves_the_document(gateway, broker_url):
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        response = await gateway.http.get("/asyncapi.json", params={"wait": "0.5"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    check_document(document)
    check_sensors(document, sensors.identity)
    identities = {c["address"] for k, c in document["channels"].items() if k.startswith("inbox.")}
    assert not any(i.startswith("gateway-") for i in identities)


@pytest.mark.rabbitmq
@pytest.mark.parametrize("wait", ["abc", "-1", "6"])
async def test_gateway_refuses_a_bad_wait(gateway, wait):
    response = await gateway.http.get("/asyncapi.json", params={"wait": wait})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


async def ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "munggoggo", "--url", url, "ctl", *args],
        capture_output=True,
        text=True,
        timeout=45,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


@pytest.mark.rabbitmq
async def test_ctl_prints_and_writes_the_document(broker_url, tmp_path):
    out = tmp_path / "asyncapi.json"
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        printed = await ctl(broker_url, "asyncapi", "--wait", "0.5")
        written = await ctl(broker_url, "asyncapi", "--wait", "0.5", "--out", str(out))
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    check_document(document)
    check_sensors(document, sensors.identity)
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    from_file = json.loads(out.read_text(encoding="utf-8"))
    check_document(from_file)
    check_sensors(from_file, sensors.identity)


@pytest.mark.rabbitmq
async def test_ctl_cannot_write_the_file_and_says_so(broker_url, tmp_path):
    result = await ctl(
        broker_url, "asyncapi", "--wait", "0", "--out", str(tmp_path / "no" / "such" / "f")
    )
    assert result.returncode == 1
    assert "asyncapi" not in result.stdout
    assert result.stderr.startswith("munggoggo ctl:")


# -- answers that are no proper description ----------------------------------------------


MALFORMED_AGENTS: list[Any] = [
    {"name": "no identity"},
    {"identity": 7, "methods": ["m"]},
    "not an object",
    {"identity": "schemas-list", "methods": ["m"], "schemas": []},
    {"identity": "behaviour-names", "behaviours": ["b"]},
    {"identity": "methods-str", "methods": "abc", "schemas": {"m": "no schema"}},
    {"identity": "keys-str", "behaviours": [{"name": "b", "binding_keys": "ab"}]},
    {
        "identity": "bad-body",
        "behaviours": [{"name": "b", "binding_keys": [1, "k"], "body_schema": 3}],
    },
    {"identity": "bad-defs", "methods": ["m"], "schemas": {"m": {"params": {"$defs": [1]}}}},
]


def test_malformed_descriptions_are_skipped_per_agent():
    good = {"identity": "good", "methods": ["m"], "schemas": {}, "behaviours": []}
    document = asyncapi_document([*MALFORMED_AGENTS, good], server_url="memory://x")
    check_document(document)
    inboxes = {c["address"] for k, c in document["channels"].items() if k.startswith("inbox.")}
    assert "good" in inboxes
    assert {"schemas-list", "behaviour-names", "methods-str", "keys-str"} <= inboxes
    assert not any(not isinstance(i, str) for i in inboxes)
    titles = {op["title"] for op in document["operations"].values()}
    assert {"good.m", "schemas-list.m", "methods-str.m"} <= titles
    topic = [c for c in document["channels"].values() if "munggoggo.topic" in json.dumps(c)]
    assert [c["messages"]["message"]["payload"] for c in topic] == [{}]  # bad-body's "k"


class Odd(Agent):
    """Answers `describe` with something that is no munggoggo description."""

    @expose
    def describe(self) -> Any:
        return {"name": "not-a-munggoggo-agent"}


async def test_peers_leave_out_an_answer_without_identity(mesh_url):
    async with (
        Odd(uid("odd"), url=mesh_url),
        Sensors(uid("sensors"), url=mesh_url) as sensors,
        Agent(uid("client"), url=mesh_url) as client,
    ):
        peers = await client.peers(timeout=0.5)
        with_method = await client.peers(timeout=0.5, method="locate")
    identities = [p["identity"] for p in peers]
    assert sensors.identity in identities
    assert all(isinstance(i, str) for i in identities)
    assert sensors.identity in [p["identity"] for p in with_method]
    assert all("locate" in p["methods"] for p in with_method)
    check_document(asyncapi_document(peers, server_url=mesh_url))


def test_wildcards_and_braces_are_no_addresses():
    behaviour = {"name": "b", "binding_keys": ["sensor.{room}.#", "*", "a.b", "a*.b", "c#"]}
    agents = [{"identity": "x{y}", "methods": [], "behaviours": [behaviour]}]
    document = asyncapi_document(agents, server_url="memory://x")
    check_document(document)
    topic = {
        c[BINDING_KEY_EXTENSION]: c["address"]
        for c in document["channels"].values()
        if BINDING_KEY_EXTENSION in c
    }
    # `a*.b` has no wildcard word: RabbitMQ matches it literally; no address holds a `#`.
    assert topic == {"sensor.{room}.#": None, "*": None, "a.b": "a.b", "a*.b": "a*.b", "c#": None}
    (inbox,) = [c for k, c in document["channels"].items() if k.startswith("inbox.")]
    assert inbox["address"] is None
    assert inbox["bindings"]["amqp"]["queue"]["name"] == "x{y}"
    for channel in document["channels"].values():
        address = channel.get("address")
        assert address is None or not any(ch in address for ch in "{}#")


class Größe(msgspec.Struct):
    a: int
    b: Größe | None = None


def test_keys_and_definition_names_are_ascii():
    schema = type_schema(list[Größe])
    agent = {
        "identity": "agent-é",
        "methods": ["mé"],
        "schemas": {"mé": {"params": {}, "result": schema, "doc": None}},
        "behaviours": [{"name": "bé", "binding_keys": ["k"]}],
    }
    document = asyncapi_document([agent], server_url="memory://x")
    check_document(document)
    ascii_key = re.compile(r"[A-Za-z0-9_.\-]+")
    keys = [
        *document["channels"],
        *document["operations"],
        *document["components"]["schemas"],
        *(m for c in document["channels"].values() for m in c["messages"]),
    ]
    assert all(ascii_key.fullmatch(k) for k in keys), keys
    assert "Gr__e" in document["components"]["schemas"]


@pytest.mark.rabbitmq
async def test_ctl_leaves_out_the_gateway_workers_client_agents(broker_url):
    async with (
        Sensors(uid("sensors"), url=broker_url) as sensors,
        Agent(uid("gateway-ctl"), url=broker_url) as worker,
    ):
        printed = await ctl(broker_url, "asyncapi", "--wait", "0.5")
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    check_document(document)
    inboxes = {c["address"] for k, c in document["channels"].items() if k.startswith("inbox.")}
    assert sensors.identity in inboxes
    assert worker.identity not in inboxes
    assert not any(i.startswith("gateway-") for i in inboxes)


def test_wire_details_of_requests_and_replies():
    agent = {"identity": "a", "methods": ["m"], "schemas": {}, "behaviours": []}
    document = asyncapi_document([agent], server_url="memory://x")
    check_document(document)
    properties = document["components"]["schemas"]["WireProperties"]["properties"]
    assert properties["expiration"]["type"] == "string"  # AMQP's shortstr of milliseconds
    request = document["channels"]["inbox.a"]["messages"]["m.request"]["payload"]
    assert request["properties"]["id"] == {"type": ["string", "integer"]}
    params = jsonschema.Draft7Validator(request["properties"]["params"])
    assert params.is_valid(None) and params.is_valid([1]) and params.is_valid({})
    assert "params" not in request["required"]
    replies = document["channels"]["replies"]["messages"]
    success, error = replies["a.m.reply"]["payload"]["oneOf"]
    assert success["properties"]["id"] == {"type": ["string", "integer"]}
    assert error["properties"]["id"] == {"type": ["string", "integer", "null"]}


@pytest.mark.parametrize(
    ("url", "host", "pathname"),
    [
        ("amqp://[::1]:5673/", "[::1]:5673", "/%2F"),
        ("amqp://h/prod", "h:5672", "/prod"),
        ("amqp://h/%2Fprod", "h:5672", "/%2Fprod"),
        ("amqps://h:5671/a%2Fb", "h:5671", "/a%2Fb"),
    ],
)
def test_servers_bracket_ipv6_and_encode_the_vhost(url, host, pathname):
    document = asyncapi_document([], server_url=url)
    check_document(document)
    server = document["servers"]["broker"]
    assert (server["host"], server["pathname"]) == (host, pathname)


def test_content_types_are_what_the_envelope_takes():
    behaviours = [
        {"name": "typed", "binding_keys": ["t"], "body_schema": type_schema(Point)},
        {"name": "untyped", "binding_keys": ["u"], "body_schema": None},
    ]
    agents = [{"identity": "a", "methods": [], "behaviours": behaviours}]
    document = asyncapi_document(agents, server_url="memory://x")
    check_document(document)
    assert "defaultContentType" not in document  # broadcasts may be text or bytes
    by_key = {
        c[BINDING_KEY_EXTENSION]: c["messages"]["message"]
        for c in document["channels"].values()
        if BINDING_KEY_EXTENSION in c
    }
    typed = by_key["t"]["headers"]["allOf"][1]["properties"]["content_type"]
    accepted = jsonschema.Draft7Validator(typed)
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.example+json",
        "application/msgpack",
        "application/x-msgpack",
    ]:
        assert accepted.is_valid(content_type), content_type
        assert envelope.decode_body(
            b"\x81\xa1x\x01" if "msgpack" in content_type else b'{"x": 1}', content_type
        ) == {"x": 1}
    for content_type in ["text/plain", "application/octet-stream", "application/jsonx"]:
        assert not accepted.is_valid(content_type), content_type
    untyped = by_key["u"]
    assert "contentType" not in untyped
    assert "content_type" not in untyped["headers"]["allOf"][1]["properties"]
    broadcast = document["channels"]["broadcast"]["messages"]["broadcast"]
    assert "contentType" not in broadcast
    wire = document["components"]["schemas"]["WireProperties"]["properties"]["content_type"]
    assert jsonschema.Draft7Validator(wire).is_valid("text/plain; charset=latin-1")


def test_hoist_defs_with_an_index_numbers_on_and_still_reuses():
    def schema(i: int) -> dict[str, Any]:
        p = {"type": "object", "properties": {f"f{i}": {"$ref": "#/$defs/Q"}}}
        q = {"type": "object", "properties": {f"g{i}": {"type": "integer"}}}
        return {"$ref": "#/$defs/P", "$defs": {"P": p, "Q": q}}

    defs: dict[str, Any] = {}
    index = DefsIndex()
    refs_of = [hoist_defs(schema(i), defs, "#/", index)["$ref"] for i in range(50)]
    assert refs_of == ["#/P"] + [f"#/P_{i}" for i in range(2, 51)]
    assert sorted(defs) == sorted(["P", "Q"] + [f"{n}_{i}" for n in "PQ" for i in range(2, 51)])
    assert defs["P_10"]["properties"] == {"f9": {"$ref": "#/Q_10"}}
    # The same schema again: the copies hoisted before, with or without the index.
    assert hoist_defs(schema(9), defs, "#/", index)["$ref"] == "#/P_10"
    assert hoist_defs(schema(9), defs, "#/")["$ref"] == "#/P_10"
    assert len(defs) == 100
    # A new one takes the next number without trying the ones before.
    assert index.next_suffix["P"] == 51
    assert hoist_defs(schema(50), defs, "#/", index)["$ref"] == "#/P_51"
