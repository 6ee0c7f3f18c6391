"""`munggoggo gateway` with its security flags as a real server: granian in a subprocess,
HTTP and WebSocket handshakes over real sockets, the `Calc` agent in this process, the real
RabbitMQ. The flags and the tokens file have to reach granian's workers (through the
environment), and the WebSocket refusal has to survive granian's handshake handling.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import httpx
import pytest
from gateway_tools import gateway_process, wait_ready
from mesh_tools import Calc

from munggoggo.testing import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]

TOKEN = "srv-" + uuid.uuid4().hex
ORIGIN = "https://app.example.com"


async def handshake(port: int, target: str, headers: dict[str, str] | None = None) -> str:
    """Open a WebSocket on a raw socket; the status line of the server's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        return status.decode("latin-1").strip()
    finally:
        writer.close()


async def test_gateway_command_with_tokens_cors_and_rate_limit(broker_url, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the gateway's clients\n{TOKEN}  # tests\n")
    tokens.chmod(0o600)
    port = free_port()
    log = tmp_path / "gateway.log"
    args = ["--port", str(port), "--url", broker_url, "--log-level", "info"]
    args += ["--tokens-file", str(tokens), "--cors-origin", ORIGIN]
    args += ["--rate-limit", "0.01", "--rate-burst", "8"]
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with (
        Calc(f"calc-{uuid.uuid4().hex[:8]}", url=broker_url) as calc,
        gateway_process(*args, log=log) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        await wait_ready(http, proc, log)  # /readyz: open, and not rate limited
        url = f"/agents/{calc.identity}/call/subtract"

        response = await http.post(url, json=[5, 2])
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith("missing credentials")
        response = await http.post(url, json=[5, 2], headers={"x-api-key": TOKEN})
        assert (response.status_code, response.json()) == (200, 3)
        response = await http.options(
            "/jsonrpc",
            headers={"origin": ORIGIN, "access-control-request-method": "POST"},
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == ORIGIN

        status = await handshake(port, "/ws")  # granian lets us answer the handshake
        assert status.split()[1] == "401", status
        status = await handshake(port, "/ws", {"Origin": "https://evil.example", **auth})
        assert status.split()[1] == "403", status
        status = await handshake(port, f"/ws?token={TOKEN}", {"Origin": ORIGIN})
        assert status.split()[1] == "101", status

        # The token's bucket held 8: one call and one handshake with the token so far (the
        # refusals before it counted against this address, not against the token).
        statuses = [(await http.get("/agents?wait=0", headers=auth)).status_code for _ in range(7)]
        assert statuses == [200] * 6 + [429], statuses

        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 15) == 0
    output = log.read_text()
    assert "gateway authentication on: 1 token(s)" in output
    assert TOKEN not in output
    assert "Traceback" not in output


async def test_gateway_command_refuses_a_bad_tokens_file_before_serving(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} and a space\n")
    log = tmp_path / "gateway.log"
    args = ["--port", str(free_port()), "--tokens-file", str(tokens)]
    async with gateway_process(*args, log=log) as proc:
        returncode = await asyncio.to_thread(proc.wait, 30)
    output = log.read_text()
    assert returncode == 1
    assert "line 1: a token cannot contain spaces" in output
    assert TOKEN not in output
