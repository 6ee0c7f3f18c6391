"""Securing the gateway: tokens and API keys, CORS, cross-origin writes, the per-client rate
limit, and the WebSocket's origin and credential checks (gateway/guard.py and the modules it
uses). The ASGI app runs in process with its lifespan, the `Calc` agent too, on the real
RabbitMQ; refused requests are shown not to reach the agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import httpx
import pytest
from gateway_tools import WsClient, handshake, running_gateway

from munggoggo.gateway import auth
from munggoggo.gateway.auth import TokenSet, load_tokens
from munggoggo.gateway.cors import normalize_origin, same_origin
from munggoggo.gateway.guard import Guard
from munggoggo.gateway.ratelimit import RateLimiter
from munggoggo.gateway.state import GatewaySettings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

TOKEN = "t0ken-" + "a" * 26
OTHER = "other-" + "b" * 26
WRONG = "wr0ng-" + "c" * 26
ORIGIN = "https://app.example.com"
EVIL = "https://evil.example"
WAIT = 10.0


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


@contextlib.asynccontextmanager
async def secured(broker_url: str, **overrides: Any):
    # The in-process client reaches the gateway as "gateway": one of its host names.
    settings = GatewaySettings(
        url=broker_url, call_timeout=3.0, tokens=(TOKEN, OTHER), allowed_hosts=("gateway",)
    )
    async with running_gateway(settings.__class__(**{**settings.__dict__, **overrides})) as gw:
        yield gw


# -- authentication ------------------------------------------------------------------------


async def test_without_tokens_the_gateway_is_open_and_says_so(broker_url, calc, caplog):
    caplog.set_level(logging.INFO, logger="munggoggo.gateway")
    async with running_gateway(GatewaySettings(url=broker_url)) as gw:
        response = await gw.http.post(f"/agents/{calc.identity}/call/get_data")
        assert response.status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("authentication is OFF" in text for text in warnings), warnings


async def test_missing_credentials_are_refused_and_nothing_runs(broker_url, calc, caplog):
    caplog.set_level(logging.INFO, logger="munggoggo.gateway")
    async with secured(broker_url) as gw:
        url = f"/agents/{calc.identity}/call/notify_hello"
        response = await gw.http.post(url, json=[1])
        error = error_of(response, 401)
        assert error["code"] == 401
        assert error["message"].startswith("missing credentials")
        assert response.headers["www-authenticate"].startswith("Bearer")
        for path in ("/agents", f"/agents/{calc.identity}", "/metrics", "/nowhere"):
            assert (await gw.http.get(path)).status_code == 401, path
        # The agent is called in order: once an accepted call answered, the refused one
        # would have run before it.
        response = await gw.http.post(url, json=[2], headers=bearer(TOKEN))
        assert response.status_code == 200
        assert calc.hellos == [2]
    assert any("authentication on: 2 token(s)" in r.getMessage() for r in caplog.records)


async def test_invalid_credentials_are_refused_without_echoing_them(broker_url, calc, caplog):
    caplog.set_level(logging.DEBUG)
    async with secured(broker_url) as gw:
        url = f"/agents/{calc.identity}/call/get_data"
        attempts = [
            bearer(WRONG),
            {"x-api-key": WRONG},
            {"authorization": f"Basic {WRONG}"},
            {"authorization": f"bearer {TOKEN}x"},
            {"authorization": "Bearer "},
            {"authorization": f"Bearer {WRONG}", "x-api-key": TOKEN},  # a wrong header wins
        ]
        for headers in attempts:
            response = await gw.http.post(url, headers=headers)
            error = error_of(response, 401)
            assert error["message"].startswith("invalid credentials"), headers
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            assert WRONG not in response.text and TOKEN not in response.text
    assert WRONG not in caplog.text and TOKEN not in caplog.text


async def test_bearer_tokens_and_api_keys_are_accepted(broker_url, calc):
    async with secured(broker_url) as gw:
        url = f"/agents/{calc.identity}/call/subtract"
        for headers in (
            bearer(TOKEN),
            bearer(OTHER),
            {"authorization": f"bEaReR   {TOKEN} "},
            {"x-api-key": TOKEN},
            {"x-api-key": OTHER},
        ):
            response = await gw.http.post(url, json=[5, 3], headers=headers)
            assert (response.status_code, response.json()) == (200, 2), headers
        rpc = {"jsonrpc": "2.0", "method": f"{calc.identity}.subtract", "params": [9, 1], "id": 7}
        response = await gw.rpc(rpc, headers=bearer(TOKEN))
        assert response.json() == {"jsonrpc": "2.0", "result": 8, "id": 7}


async def test_probes_pages_and_docs_stay_open(broker_url):
    async with secured(broker_url) as gw:
        for path in ("/healthz", "/readyz", "/", "/static/dashboard.js", "/docs", "/openapi.json"):
            assert (await gw.http.get(path)).status_code == 200, path
        assert (await gw.http.get("/metrics")).status_code == 401
        assert (await gw.http.get("/metrics", headers=bearer(TOKEN))).status_code == 200
    async with secured(broker_url, metrics_public=True) as gw:
        assert (await gw.http.get("/metrics")).status_code == 200
        assert (await gw.http.get("/agents")).status_code == 401


async def test_jsonrpc_refusals_are_jsonrpc_errors(broker_url, calc):
    async with secured(broker_url) as gw:
        rpc = {"jsonrpc": "2.0", "method": f"{calc.identity}.notify_hello", "params": [1]}
        response = await gw.rpc(rpc)
        assert response.status_code == 401
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["id"] is None
        assert body["error"]["code"] == -32600
        assert "missing credentials" in body["error"]["message"]
        response = await gw.rpc(rpc, headers={"x-api-key": WRONG})
        assert "invalid credentials" in response.json()["error"]["message"]
        await gw.rpc({**rpc, "id": 1}, headers=bearer(TOKEN))
        assert calc.hellos == [1]


def test_every_token_is_compared_whatever_matched(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = TokenSet(["first-token", "second-token", "third-token"])
    assert tokens.match(b"first-token") is not None
    assert len(compared) == 3  # no early exit on the first (matching) token
    assert {len(a) for a, _ in compared} == {32}  # digests: lengths leak nothing
    compared.clear()
    assert tokens.match(b"nope") is None
    assert len(compared) == 3
    # The key names the client (one per token) without being the token.
    assert tokens.match(b"first-token") != tokens.match(b"second-token")
    assert b"first-token" not in tokens.match(b"first-token")


def test_tokens_file_comments_and_errors(tmp_path, caplog):
    path = tmp_path / "tokens"
    path.write_text(
        f"# gateway tokens\n\n{TOKEN}\n   {OTHER}   # the dashboard's\n{TOKEN}\n  # end\n"
    )
    path.chmod(0o600)
    settings = GatewaySettings(tokens=("from-env-" + "x" * 20,), tokens_file=str(path))
    assert load_tokens(settings) == ("from-env-" + "x" * 20, TOKEN, OTHER)

    path.write_text("# only comments\n\n")
    with pytest.raises(ValueError, match="contains no tokens"):
        load_tokens(GatewaySettings(tokens_file=str(path)))
    path.write_text(f"{TOKEN}\n{WRONG} and more\n")
    with pytest.raises(ValueError, match="line 2: a token cannot contain spaces") as exc:
        load_tokens(GatewaySettings(tokens_file=str(path)))
    assert WRONG not in str(exc.value)
    path.write_text(f"{WRONG},{TOKEN}\n")
    with pytest.raises(ValueError, match="line 1: the token contains a comma") as exc:
        load_tokens(GatewaySettings(tokens_file=str(path)))
    assert WRONG not in str(exc.value)
    with pytest.raises(OSError, match="cannot read the tokens file"):
        load_tokens(GatewaySettings(tokens_file=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="token 2 of MUNGGOGGO_GATEWAY_TOKENS"):
        load_tokens(GatewaySettings(tokens=(TOKEN, "caf\u00e9-token-with-accent")))

    caplog.set_level(logging.WARNING)
    path.write_text("short\n")
    path.chmod(0o644)
    assert load_tokens(GatewaySettings(tokens_file=str(path))) == ("short",)
    text = caplog.text
    assert "only 5 characters" in text and "can be read by other users" in text
    assert "short\n" not in text and "'short'" not in text


async def test_a_bad_tokens_file_stops_the_worker_without_showing_a_token(broker_url, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN}\n{WRONG} {TOKEN}\n")
    with pytest.raises(RuntimeError, match="line 2") as exc:
        async with running_gateway(GatewaySettings(url=broker_url, tokens_file=str(path))):
            pass
    assert TOKEN not in str(exc.value) and WRONG not in str(exc.value)


def test_settings_travel_through_the_environment_without_showing_tokens():
    settings = GatewaySettings(
        tokens=(TOKEN, OTHER),
        tokens_file="/run/secrets/gateway",
        metrics_public=True,
        cors_origins=(ORIGIN, "http://localhost:3000"),
        rate_limit=2.5,
        rate_burst=7,
    )
    env = settings.to_env()
    assert env["MUNGGOGGO_GATEWAY_TOKENS"] == f"{TOKEN},{OTHER}"
    assert env["MUNGGOGGO_GATEWAY_METRICS_PUBLIC"] == "1"
    assert GatewaySettings.from_env(env) == settings
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    parsed = GatewaySettings.from_env(
        {
            "MUNGGOGGO_GATEWAY_TOKENS": f" {TOKEN} ,, {OTHER}",
            "MUNGGOGGO_GATEWAY_METRICS_PUBLIC": "no",
        }
    )
    assert parsed.tokens == (TOKEN, OTHER) and parsed.metrics_public is False
    with pytest.raises(ValueError, match="MUNGGOGGO_GATEWAY_METRICS_PUBLIC must be"):
        GatewaySettings.from_env({"MUNGGOGGO_GATEWAY_METRICS_PUBLIC": "maybe"})
    with pytest.raises(ValueError, match="MUNGGOGGO_GATEWAY_RATE_LIMIT must be a number"):
        GatewaySettings.from_env({"MUNGGOGGO_GATEWAY_RATE_LIMIT": "fast"})


# -- CORS and cross-origin writes ----------------------------------------------------------


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": "authorization, content-type",
    }


async def test_preflight_from_a_listed_origin(broker_url):
    async with secured(broker_url, cors_origins=(ORIGIN + "/", "http://localhost:3000")) as gw:
        response = await gw.http.options("/jsonrpc", headers=preflight(ORIGIN))
        assert response.status_code == 204, response.text  # no credentials needed
        headers = response.headers
        assert headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in headers["access-control-allow-methods"]
        allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-api-key"} <= allowed
        assert "Origin" in headers["vary"]
        assert int(headers["access-control-max-age"]) > 0
        response = await gw.http.options(
            "/agents", headers=preflight("http://localhost:3000", "GET")
        )
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        response = await gw.http.options("/agents", headers=preflight(ORIGIN, "DELETE"))
        assert response.status_code == 403


async def test_preflight_from_another_origin_is_403(broker_url):
    async with secured(broker_url, cors_origins=(ORIGIN,)) as gw:
        for origin in (EVIL, "https://app.example.com.evil.example", "null", ORIGIN + ":8443"):
            response = await gw.http.options("/jsonrpc", headers=preflight(origin))
            error = error_of(response, 403)
            assert "not allowed" in error["message"]
            assert "access-control-allow-origin" not in response.headers
    settings = GatewaySettings(url=broker_url, allowed_hosts=("gateway",))
    async with running_gateway(settings) as gw:  # no list: none
        response = await gw.http.options("/jsonrpc", headers=preflight(ORIGIN))
        assert response.status_code == 403


async def test_cors_headers_only_for_listed_origins(broker_url, calc):
    async with secured(broker_url, cors_origins=(ORIGIN,)) as gw:
        url = f"/agents/{calc.identity}/call/get_data"
        response = await gw.http.post(url, headers={"origin": ORIGIN, **bearer(TOKEN)})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["vary"] == "Origin"
        assert "retry-after" in response.headers["access-control-expose-headers"]
        # A page must be able to read why it was refused.
        response = await gw.http.post(url, headers={"origin": ORIGIN})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == ORIGIN
        response = await gw.http.get("/agents", headers={"origin": EVIL, **bearer(TOKEN)})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        assert response.headers["vary"] == "Origin"
        response = await gw.http.get("/agents", headers=bearer(TOKEN))
        assert "access-control-allow-origin" not in response.headers
    async with secured(broker_url, cors_origins=("*",)) as gw:
        response = await gw.http.get("/agents", headers={"origin": EVIL, **bearer(TOKEN)})
        assert response.headers["access-control-allow-origin"] == "*"


async def test_cross_origin_writes_from_unlisted_pages_are_refused(broker_url, calc):
    settings = GatewaySettings(url=broker_url, cors_origins=(ORIGIN,), allowed_hosts=("gateway",))
    async with running_gateway(settings) as gw:
        url = f"/agents/{calc.identity}/call/notify_hello"
        # A form-like POST from another site, no preflight: CORS would only hide the answer.
        response = await gw.http.post(url, json=[1], headers={"origin": EVIL})
        error = error_of(response, 403)
        assert "cross-origin request" in error["message"] and EVIL in error["message"]
        rpc = {"jsonrpc": "2.0", "method": f"{calc.identity}.notify_hello", "params": [1]}
        response = await gw.rpc(rpc, headers={"origin": EVIL})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == -32600
        # The gateway's own pages, a listed origin and non-browser clients go through.
        assert (await gw.http.post(url, json=[2], headers={"origin": "http://gateway"})).is_success
        assert (await gw.http.post(url, json=[3], headers={"origin": ORIGIN})).is_success
        assert (await gw.http.post(url, json=[4])).is_success
        assert calc.hellos == [2, 3, 4]


def test_origins_are_normalized_and_checked():
    assert normalize_origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert normalize_origin("http://localhost:3000") == "http://localhost:3000"
    assert normalize_origin("http://[::1]:8000") == "http://[::1]:8000"
    for bad in ("app.example.com", "ftp://x", "https://x/path", "null", "https://x:99999"):
        with pytest.raises(ValueError):
            normalize_origin(bad)
    with pytest.raises(ValueError, match="CORS origin"):
        Guard(GatewaySettings(cors_origins=("example.com",)))
    assert same_origin(b"http://gateway:8000", b"gateway:8000")
    assert same_origin(b"https://gateway", b"gateway:443")
    assert same_origin(b"http://[::1]:8000", b"[::1]:8000")
    assert not same_origin(b"http://gateway:8001", b"gateway:8000")
    assert not same_origin(b"http://evil", b"gateway")
    assert not same_origin(b"null", b"gateway")
    assert not same_origin(b"http://gateway", None)


# -- rate limit ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket():
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 100
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refilled to the burst, no more
    assert RateLimiter(4.0).burst == 8  # burst 0: twice the rate
    assert RateLimiter(0.1).burst == 1
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(1, -1)


def test_rate_limit_memory_is_bounded():
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, max_clients=100, clock=clock)
    for i in range(10_000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter) <= 100
    # Idle clients (refilled anyway) are swept once a minute, so the table shrinks back.
    limiter.take("busy")
    limiter.take("busy")
    clock.now += 61
    limiter.take("newcomer")
    assert len(limiter) == 1
    # An evicted idle client gets the same answer it would have got.
    assert limiter.take("busy") == 0.0


async def test_rate_limited_requests_get_429_with_retry_after(broker_url, calc):
    settings = {"rate_limit": 0.01, "rate_burst": 3}  # no refill within the test
    async with secured(broker_url, **settings) as gw:
        url = f"/agents/{calc.identity}/call/notify_hello"
        for n in range(3):
            response = await gw.http.post(url, json=[n], headers=bearer(TOKEN))
            assert response.status_code == 200
        response = await gw.http.post(url, json=[99], headers=bearer(TOKEN))
        error = error_of(response, 429)
        assert error["message"].startswith("rate limit exceeded")
        assert int(response.headers["retry-after"]) >= 1
        assert error["data"]["retry_after"] > 0
        # Per credential: the other token has its own bucket; probes are not limited.
        assert (await gw.http.post(url, json=[5], headers=bearer(OTHER))).status_code == 200
        for _ in range(5):
            assert (await gw.http.get("/healthz")).status_code == 200
        rpc = {"jsonrpc": "2.0", "method": f"{calc.identity}.notify_hello", "params": [7], "id": 1}
        response = await gw.rpc(rpc, headers=bearer(TOKEN))
        assert response.status_code == 429
        assert response.json()["error"]["code"] == -32000
        assert calc.hellos == [0, 1, 2, 5]


async def test_unauthenticated_clients_are_limited_by_address(broker_url, calc):
    async with secured(broker_url, rate_limit=0.01, rate_burst=2) as gw:
        for _ in range(2):
            assert (await gw.http.get("/agents")).status_code == 401
        # Guessing tokens is throttled too: the address's bucket is empty now.
        response = await gw.http.get("/agents", headers=bearer(WRONG))
        assert response.status_code == 429
        # Another address has its own bucket.
        transport = httpx.ASGITransport(app=gw.app, client=("192.0.2.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as other:
            assert (await other.get("/agents")).status_code == 401
            assert (await other.get("/static/dashboard.css")).status_code == 200
            assert (await other.get("/static/dashboard.css")).status_code == 429


# -- WebSocket ----------------------------------------------------------------------------


ACCEPTED = [{"type": "websocket.accept"}]
REFUSED = [{"type": "websocket.close", "code": 1008}]


async def test_websocket_origin_check(gateway_state):
    state = await gateway_state(cors_origins=(ORIGIN,), allowed_hosts=("gw",))
    assert await handshake(state) == ACCEPTED  # not a browser
    assert await handshake(state, {"origin": ORIGIN}) == ACCEPTED
    assert await handshake(state, {"origin": "http://gw:8000", "host": "gw:8000"}) == ACCEPTED
    assert await handshake(state, {"origin": EVIL, "host": "gw:8000"}) == REFUSED
    start, body = await handshake(state, {"origin": EVIL}, http_response=True)
    assert start["status"] == 403
    message = json.loads(body["body"])["error"]["message"]
    assert EVIL in message and "allow-list" in message
    assert state.counters["ws_connected"] == 3  # the accepted ones only


async def test_websocket_credentials(gateway_state):
    state = await gateway_state(tokens=(TOKEN,))
    assert await handshake(state) == REFUSED
    assert await handshake(state, query=f"token={WRONG}") == REFUSED
    assert await handshake(state, bearer(WRONG)) == REFUSED
    assert await handshake(state, query=f"token={TOKEN}") == ACCEPTED
    assert await handshake(state, query=f"a=1&token={TOKEN.replace('-', '%2D')}") == ACCEPTED
    assert await handshake(state, bearer(TOKEN)) == ACCEPTED
    assert await handshake(state, {"x-api-key": TOKEN}) == ACCEPTED
    start, body = await handshake(state, http_response=True)
    assert start["status"] == 401
    assert dict(start["headers"])[b"www-authenticate"].startswith(b"Bearer")
    assert json.loads(body["body"])["error"]["message"].startswith("missing credentials")
    start, body = await handshake(state, query=f"token={WRONG}", http_response=True)
    assert json.loads(body["body"])["error"]["message"].startswith("invalid credentials")
    assert WRONG.encode() not in body["body"]
    assert state.counters.get("ws_connected") == 4


async def test_websocket_frames_share_the_clients_rate_limit(gateway_state, calc):
    state = await gateway_state(rate_limit=0.01, rate_burst=4)
    client = WsClient(state)
    client.scope["client"] = ("127.0.0.1", 5000)
    async with client:  # the handshake takes one
        reply = await client.request({"op": "publish", "topic": "t.x", "body": 1, "id": "p"})
        assert reply == {"op": "published", "topic": "t.x", "id": "p"}
        call = {"jsonrpc": "2.0", "method": f"{calc.identity}.notify_hello", "params": [1]}
        assert await client.request({**call, "id": 1}) == {
            "jsonrpc": "2.0",
            "result": None,
            "id": 1,
        }
        assert calc.hellos == [1]
        reply = await client.request({"op": "subscribe", "topic": "t.*", "id": "s"})
        assert reply["op"] == "subscribed"
        # The bucket is empty now.
        reply = await client.request({"op": "subscribe", "topic": "u.*", "id": "s2"})
        assert reply["op"] == "error" and reply["id"] == "s2"
        assert reply["error"].startswith("rate limit exceeded")
        reply = await client.request({**call, "params": [2], "id": 2})
        assert reply["id"] == 2 and reply["error"]["code"] == -32000
        assert reply["error"]["data"]["retry_after"] > 0
        reply = await client.request([{**call, "params": [3], "id": 3}, {**call, "params": [4]}])
        assert [r["id"] for r in reply] == [3]
        reply = await client.request("not json at all")
        assert reply["op"] == "error" and "rate limit" in reply["error"]
    assert calc.hellos == [1]
    # The same address is refused at the next handshake too.
    start, body = await handshake(state, http_response=True)
    assert start["status"] == 429
    assert json.loads(body["body"])["error"]["message"].startswith("rate limit exceeded")
    assert int(dict(start["headers"])[b"retry-after"]) >= 1
