"""JSON-RPC 2.0 at POST /jsonrpc: every example of section 7 of the specification adapted
to the `Calc` agent (method `subtract` becomes `<calc>.subtract`), then the gateway's limits
and failure modes. The ASGI app runs in process with its lifespan; the agent too; the
broker is the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import msgspec
import pytest
from gateway_tools import Gateway, running_gateway
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mesh_tools import FAILURE_CODE, Calc

from munggoggo.gateway.limits import BodyTooLarge, json_too_deep, read_body
from munggoggo.gateway.state import GatewaySettings
from munggoggo.rpc import INTERNAL_ERROR

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(30)]


def request(method: str, params=None, id=None, *, notification: bool = False) -> dict:
    entry = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        entry["params"] = params
    if not notification:
        entry["id"] = id
    return entry


async def post_raw(gw: Gateway, body: bytes, content_type: str = "application/json"):
    return await gw.http.post("/jsonrpc", content=body, headers={"content-type": content_type})


def answer(response) -> dict | list:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# -- section 7 of the specification, example by example --------------------------------


async def test_positional_parameters(gateway, calc):
    m = f"{calc.identity}.subtract"
    assert answer(await gateway.rpc(request(m, [42, 23], 1))) == {
        "jsonrpc": "2.0",
        "result": 19,
        "id": 1,
    }
    assert answer(await gateway.rpc(request(m, [23, 42], 2))) == {
        "jsonrpc": "2.0",
        "result": -19,
        "id": 2,
    }


async def test_named_parameters(gateway, calc):
    m = f"{calc.identity}.subtract"
    reply = answer(await gateway.rpc(request(m, {"subtrahend": 23, "minuend": 42}, 3)))
    assert reply == {"jsonrpc": "2.0", "result": 19, "id": 3}
    reply = answer(await gateway.rpc(request(m, {"minuend": 42, "subtrahend": 23}, 4)))
    assert reply == {"jsonrpc": "2.0", "result": 19, "id": 4}


async def test_notifications_get_no_reply_but_are_called(gateway, calc):
    response = await gateway.rpc(
        request(f"{calc.identity}.update", [1, 2, 3, 4, 5], notification=True)
    )
    assert response.status_code == 204
    assert response.content == b""
    assert calc.updates == [[1, 2, 3, 4, 5]]
    # A notification of a method that does not exist is not answered either.
    response = await gateway.rpc(request("foobar", notification=True))
    assert response.status_code == 204
    assert response.content == b""
    response = await gateway.rpc(request(f"{calc.identity}.foobar", notification=True))
    assert response.status_code == 204


async def test_non_existent_method(gateway, calc):
    reply = answer(await gateway.rpc(request("foobar", id="1")))
    assert reply["error"]["code"] == -32601
    assert reply["id"] == "1"
    assert "result" not in reply
    # An agent's own "Method not found" passes through.
    reply = answer(await gateway.rpc(request(f"{calc.identity}.foobar", id="1")))
    assert reply["error"] == {"code": -32601, "message": "Method not found: foobar"}
    assert reply["id"] == "1"


async def test_invalid_json(gateway):
    body = b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'
    reply = answer(await post_raw(gateway, body))
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None


async def test_invalid_request_object(gateway):
    reply = answer(await gateway.rpc({"jsonrpc": "2.0", "method": 1, "params": "bar"}))
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None


async def test_batch_with_invalid_json(gateway, calc):
    body = (
        b'[{"jsonrpc": "2.0", "method": "' + calc.identity.encode() + b'.sum", '
        b'"params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method"]'
    )
    reply = answer(await post_raw(gateway, body))
    assert isinstance(reply, dict)
    assert reply["error"]["code"] == -32700
    assert reply["id"] is None


async def test_empty_batch(gateway):
    reply = answer(await gateway.rpc([]))
    assert isinstance(reply, dict)  # a single error, not an array
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None


async def test_invalid_batch_of_one(gateway):
    reply = answer(await gateway.rpc([1]))
    assert isinstance(reply, list)
    assert len(reply) == 1
    assert reply[0]["error"]["code"] == -32600
    assert reply[0]["id"] is None


async def test_invalid_batch(gateway):
    reply = answer(await gateway.rpc([1, 2, 3]))
    assert [r["error"]["code"] for r in reply] == [-32600, -32600, -32600]
    assert [r["id"] for r in reply] == [None, None, None]


async def test_mixed_batch(gateway, calc):
    c = calc.identity
    reply = answer(
        await gateway.rpc(
            [
                request(f"{c}.sum", [1, 2, 4], "1"),
                request(f"{c}.notify_hello", [7], notification=True),
                request(f"{c}.subtract", [42, 23], "2"),
                {"foo": "boo"},
                request(f"{c}.get", {"name": "myself"}, "5"),
                request(f"{c}.get_data", id="9"),
            ]
        )
    )
    assert len(reply) == 5  # the notification is not answered
    assert reply[0] == {"jsonrpc": "2.0", "result": 7, "id": "1"}
    assert reply[1] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
    assert reply[2]["error"]["code"] == -32600
    assert reply[2]["id"] is None
    assert reply[3]["error"]["code"] == -32601
    assert reply[3]["id"] == "5"
    assert reply[4] == {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    assert calc.hellos == [7]


async def test_batch_of_notifications_only(gateway, calc):
    c = calc.identity
    response = await gateway.rpc(
        [
            request(f"{c}.sum", [1, 2, 4], notification=True),
            request(f"{c}.notify_hello", [7], notification=True),
        ]
    )
    assert response.status_code == 204
    assert response.content == b""
    assert calc.hellos == [7]


# -- request objects and ids -------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"jsonrpc": "1.0", "method": "x.y", "id": 3},
        {"method": "x.y", "id": 3},
        {"jsonrpc": "2.0", "id": 3},
        {"jsonrpc": "2.0", "method": "x.y", "params": "bar", "id": 3},
        {"jsonrpc": "2.0", "method": "x.y", "params": None, "id": 3},
        {"jsonrpc": "2.0", "method": "x.y", "params": 5, "id": 3},
    ],
    ids=["jsonrpc-1.0", "no-jsonrpc", "no-method", "params-str", "params-null", "params-int"],
)
async def test_invalid_requests_echo_a_readable_id(gateway, entry):
    reply = answer(await gateway.rpc(entry))
    assert reply["error"]["code"] == -32600
    assert reply["id"] == 3


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], True])
async def test_id_of_a_wrong_type_is_invalid_and_not_echoed(gateway, calc, bad_id):
    entry = request(f"{calc.identity}.get_data", id=bad_id)
    reply = answer(await gateway.rpc(entry))
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None


@pytest.mark.parametrize("id", [None, 7.5, "x", 0, -3])
async def test_valid_ids_are_echoed(gateway, calc, id):
    # `"id": null` is a request (answered), not a notification.
    reply = answer(await gateway.rpc(request(f"{calc.identity}.get_data", id=id)))
    assert reply == {"jsonrpc": "2.0", "result": ["hello", 5], "id": id}


@pytest.mark.parametrize("name", ["subtract", "calc.", ".subtract", "rpc.discover"])
async def test_names_that_do_not_address_an_agent_method(gateway, name):
    reply = answer(await gateway.rpc(request(name, [1, 2], 1)))
    assert reply["error"]["code"] == -32601
    assert reply["id"] == 1


async def test_method_name_is_split_at_the_last_dot(gateway, broker_url):
    identity = f"calc.dotted.{uuid.uuid4().hex[:6]}"
    async with Calc(identity, url=broker_url):
        reply = answer(await gateway.rpc(request(f"{identity}.subtract", [5, 2], 1)))
    assert reply["result"] == 3


async def test_invalid_params_from_the_agent(gateway, calc):
    m = f"{calc.identity}.subtract"
    assert answer(await gateway.rpc(request(m, ["a", 1], 1)))["error"]["code"] == -32602
    assert answer(await gateway.rpc(request(m, [1, 2, 3], 2)))["error"]["code"] == -32602
    assert answer(await gateway.rpc(request(m, {"minuend": 1}, 3)))["error"]["code"] == -32602


async def test_agent_errors_pass_through_unchanged(gateway, calc):
    reply = answer(await gateway.rpc(request(f"{calc.identity}.fail", id=1)))
    assert reply == {
        "jsonrpc": "2.0",
        "error": {"code": FAILURE_CODE, "message": "calc refuses", "data": {"why": "asked to"}},
        "id": 1,
    }
    reply = answer(await gateway.rpc(request(f"{calc.identity}.crash", id=2)))
    assert reply["error"]["code"] == -32000
    assert reply["error"]["data"] == {"type": "ZeroDivisionError"}


@pytest.mark.parametrize("kind", ["inf", "-inf", "nan", "nested-inf", "nested-nan"])
async def test_a_result_json_cannot_carry_is_an_error_not_null(gateway, calc, kind):
    """inf and NaN have no JSON spelling: the agent answers -32603, never a silent null."""
    reply = answer(await gateway.rpc(request(f"{calc.identity}.non_finite", [kind], 1)))
    assert "result" not in reply, reply
    assert reply["error"]["code"] == INTERNAL_ERROR
    assert reply["id"] == 1
    response = await gateway.http.post(f"/agents/{calc.identity}/call/non_finite", json=[kind])
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == INTERNAL_ERROR


async def test_unknown_agent(gateway):
    reply = answer(await gateway.rpc(request(f"nobody-{uuid.uuid4().hex[:8]}.ping", id=1)))
    assert reply["error"]["code"] == -32001
    assert reply["id"] == 1


async def test_string_that_looks_nested_is_not_counted_as_nesting(gateway, calc):
    value = "[" * 100 + '{"\\"[' + "]" * 3
    reply = answer(await gateway.rpc(request(f"{calc.identity}.echo", [value], 1)))
    assert reply["result"] == value


# -- limits and failures -------------------------------------------------------------


async def test_timeout(broker_url, calc):
    settings = GatewaySettings(url=broker_url, call_timeout=0.2)
    async with running_gateway(settings) as gw:
        reply = answer(await gw.rpc(request(f"{calc.identity}.slow", [2.0], 1)))
        assert reply["error"]["code"] == -32002
        assert reply["id"] == 1
        assert gw.app.state.in_flight == 0  # the slot was given back


async def wait_for_in_flight(gw: Gateway, n: int) -> None:
    while gw.app.state.in_flight != n:
        await asyncio.sleep(0.01)


async def test_overload_answers_at_once_with_a_server_error(broker_url, calc):
    settings = GatewaySettings(url=broker_url, max_in_flight=1)
    async with running_gateway(settings) as gw:
        slow = asyncio.create_task(gw.rpc(request(f"{calc.identity}.slow", [1.0], 1)))
        await asyncio.wait_for(wait_for_in_flight(gw, 1), 5)
        reply = answer(await gw.rpc(request(f"{calc.identity}.get_data", id=2)))
        assert reply["error"]["code"] == -32000
        assert "overloaded" in reply["error"]["message"]
        assert reply["id"] == 2
        assert answer(await slow)["result"] == 1.0
        # Once the slot is free, calls go through again.
        assert answer(await gw.rpc(request(f"{calc.identity}.get_data", id=3)))["id"] == 3


async def test_overload_inside_a_batch(broker_url, calc):
    settings = GatewaySettings(url=broker_url, max_in_flight=1)
    async with running_gateway(settings) as gw:
        batch = [request(f"{calc.identity}.slow", [0.2], i) for i in (1, 2)]
        first, second = answer(await gw.rpc(batch))
        assert first == {"jsonrpc": "2.0", "result": 0.2, "id": 1}
        assert second["error"]["code"] == -32000
        assert second["id"] == 2


async def test_batch_size_limit(broker_url, calc):
    settings = GatewaySettings(url=broker_url, max_batch=3)
    async with running_gateway(settings) as gw:
        batch = [request(f"{calc.identity}.get_data", id=i) for i in range(4)]
        reply = answer(await gw.rpc(batch))
        assert isinstance(reply, dict)
        assert reply["error"]["code"] == -32600
        assert "batch" in reply["error"]["message"]
        assert len(answer(await gw.rpc(batch[:3]))) == 3


async def test_body_too_large(broker_url, calc):
    settings = GatewaySettings(url=broker_url, max_body_bytes=1000)
    async with running_gateway(settings) as gw:
        response = await gw.rpc(request(f"{calc.identity}.echo", ["x" * 2000], 1))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == -32600
        small = await gw.rpc(request(f"{calc.identity}.echo", ["x" * 100], 2))
        assert answer(small)["result"] == "x" * 100


async def test_body_reading_stops_at_the_limit(broker_url):
    """No Content-Length, a body streamed in 100-byte chunks: refused after the limit."""
    settings = GatewaySettings(url=broker_url, max_body_bytes=1000)
    async with running_gateway(settings) as gw:
        reads = 0

        async def receive():
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b" " * 100, "more_body": reads < 100}

        sent = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/jsonrpc",
            "raw_path": b"/jsonrpc",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await gw.app(scope, receive, send)
        assert sent[0]["status"] == 413
        assert reads <= 11
        assert json.loads(sent[1]["body"])["error"]["code"] == -32600


def chunks(*parts: bytes):
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]
    reads = []

    async def receive():
        reads.append(1)
        return messages[len(reads) - 1]

    return receive, reads


async def test_read_body_joins_chunks_up_to_the_declared_length():
    receive, reads = chunks(b"12345", b"67890", b"")
    assert await read_body(receive, 100, b"10") == b"1234567890"
    # The declared length is complete after two chunks: the empty closing one is not awaited.
    assert len(reads) == 2
    receive, reads = chunks(b"12345", b"67890", b"")
    assert await read_body(receive, 100, None) == b"1234567890"
    assert len(reads) == 3


async def test_read_body_refuses_a_declared_length_above_the_limit_without_reading():
    receive, reads = chunks(b"x" * 50)
    with pytest.raises(BodyTooLarge):
        await read_body(receive, 10, b"50")
    assert reads == []
    receive, reads = chunks(b"x" * 6, b"x" * 6)  # a Content-Length that understates
    with pytest.raises(BodyTooLarge):
        await read_body(receive, 10, b"5")


async def test_deep_nesting_is_refused_before_decoding(gateway, calc):
    deep = 0
    for _ in range(40):
        deep = [deep]
    reply = answer(await gateway.rpc(request(f"{calc.identity}.echo", [deep], 1)))
    assert reply["error"]["code"] == -32600
    assert "nested" in reply["error"]["message"]
    assert reply["id"] is None
    shallow = [[[1]]]
    reply = answer(await gateway.rpc(request(f"{calc.identity}.echo", [shallow], 2)))
    assert reply["result"] == shallow


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (b"[[[]]]", False),
        (b"[[[[]]]]", True),
        (b'{"a": {"b": [1]}}', False),
        (b'{"a": {"b": [[1]]}}', True),
        (b'["[[[[[[[[", "{{{{{{"]', False),
        (b'["\\"[[[[[[", "]"]', False),  # an escaped quote does not end the string
        (b"[[[1]], [[2]], [[3]]]", False),  # depth, not the count of brackets
        (b"[" + b",".join([b"[]"] * 50) + b"]", False),
        (b'["\\\\", [[[]]]]', True),  # an escaped backslash, then the string ends
        (b'["\\\\\\"[[[[", 1]', False),  # an escaped backslash and an escaped quote
        (b"[" * 5000 + b"]" * 5000, True),
        (b"[" + b",".join([b"[[]]", b"[{}]"] * 200) + b"]", False),  # wide, not deep
        (b"[[[" + b",".join([b"[]"] * 100) + b"]]]", True),
        (b'"' + b"[" * 50, False),  # inside an unterminated string: the decoder's -32700
    ],
)
def test_json_depth_prescan(body, too_deep):
    assert json_too_deep(body, 3) is too_deep


def nesting(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ab,:', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=json_values, max_depth=st.integers(0, 8))
def test_json_depth_prescan_agrees_with_the_decoder(value, max_depth):
    body = msgspec.json.encode(value)
    assert json_too_deep(body, max_depth) is (nesting(value) > max_depth)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
async def test_json_body_under_another_content_type_is_taken(gateway, calc, content_type):
    """`curl -d` sends application/x-www-form-urlencoded: a JSON body is still JSON-RPC."""
    body = json.dumps(request(f"{calc.identity}.get_data", id=1)).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    response = await gateway.http.post("/jsonrpc", content=body, headers=headers)
    assert answer(response) == {"jsonrpc": "2.0", "result": ["hello", 5], "id": 1}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
)
@pytest.mark.parametrize("body", [b"method=x.notify_hello&params=1", b"", b'{"jsonrpc": "2.0",'])
async def test_non_json_body_under_another_content_type_is_refused(
    gateway, calc, content_type, body
):
    headers = {} if content_type is None else {"content-type": content_type}
    response = await gateway.http.post("/jsonrpc", content=body, headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    reply = response.json()
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None
    assert calc.hellos == []  # not called


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("body", [b"1", b"true", b"null", b'"x"', b"2.5"])
async def test_a_json_scalar_under_another_content_type_is_refused(gateway, content_type, body):
    """A form body `1` is JSON by accident: only an object or array is taken as JSON-RPC."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = await gateway.http.post("/jsonrpc", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == -32600


async def test_a_json_scalar_under_json_content_type_is_an_invalid_request(gateway):
    response = await post_raw(gateway, b"1", "application/json")
    assert answer(response)["error"]["code"] == -32600


async def test_non_json_body_under_json_content_type_is_a_parse_error(gateway):
    response = await post_raw(gateway, b"method=x.notify_hello", "application/json")
    assert answer(response)["error"]["code"] == -32700


async def test_content_type_with_parameters_is_json(gateway, calc):
    body = json.dumps(request(f"{calc.identity}.get_data", id=1)).encode()
    response = await post_raw(gateway, body, "Application/JSON; charset=utf-8")
    assert answer(response)["result"] == ["hello", 5]


async def test_only_post(gateway):
    response = await gateway.http.get("/jsonrpc")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == 405


async def test_unexpected_failure_is_an_internal_error_and_the_worker_goes_on(gateway, calc):
    mesh = gateway.app.state.mesh
    real_call = mesh.call

    async def broken_call(*args, **kwargs):
        raise RuntimeError("boom")

    mesh.call = broken_call
    try:
        reply = answer(await gateway.rpc(request(f"{calc.identity}.get_data", id=1)))
    finally:
        mesh.call = real_call
    assert reply["error"]["code"] == -32603
    assert "Traceback" not in reply["error"]["message"]
    assert reply["id"] == 1
    assert gateway.app.state.in_flight == 0
    assert answer(await gateway.rpc(request(f"{calc.identity}.get_data", id=2)))["id"] == 2
