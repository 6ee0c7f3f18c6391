"""`munggoggo gateway` as a real server: granian in a subprocess, HTTP over a real socket,
the `Calc` agent in this process, everything through the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from gateway_tools import gateway_process, wait_ready
from mesh_tools import Calc
from prometheus_client.parser import text_string_to_metric_families

from munggoggo.testing import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]


async def test_gateway_command_serves_jsonrpc_and_rest(broker_url, tmp_path):
    port = free_port()
    log = tmp_path / "gateway.log"
    args = ["--port", str(port), "--url", broker_url, "--call-timeout", "2"]
    args += ["--max-in-flight", "77", "--log-level", "info"]
    async with (
        Calc(f"calc-{uuid.uuid4().hex[:8]}", url=broker_url) as calc,
        gateway_process(*args, log=log) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        await wait_ready(http, proc, log)
        c = calc.identity

        response = await http.post(
            "/jsonrpc",
            json={"jsonrpc": "2.0", "method": f"{c}.subtract", "params": [42, 23], "id": 1},
        )
        assert response.status_code == 200
        assert response.json() == {"jsonrpc": "2.0", "result": 19, "id": 1}

        batch = [
            {"jsonrpc": "2.0", "method": f"{c}.sum", "params": [1, 2, 4], "id": "a"},
            {"jsonrpc": "2.0", "method": f"{c}.notify_hello", "params": [7]},
            {"jsonrpc": "2.0", "method": f"{c}.slow", "params": [5], "id": "t"},
        ]
        reply = (await http.post("/jsonrpc", json=batch)).json()
        assert reply[0] == {"jsonrpc": "2.0", "result": 7, "id": "a"}
        assert reply[1]["error"]["code"] == -32002  # --call-timeout reached the worker
        assert calc.hellos == [7]

        response = await http.post(
            f"/agents/{c}/call/subtract", json={"minuend": 1, "subtrahend": 3}
        )
        assert (response.status_code, response.json()) == (200, -2)
        response = await http.get(f"/agents/{c}")
        assert response.status_code == 200
        assert response.json()["identity"] == c
        response = await http.post(f"/agents/{c}/call/nope")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == -32601
        response = await http.post(
            "/jsonrpc", content=b"not json", headers={"content-type": "text/plain"}
        )
        assert response.status_code == 415

        metrics = (await http.get("/metrics")).text
        # The value, not how prometheus_client happens to print a float.
        unlabelled = {
            sample.name: sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if not sample.labels
        }
        assert unlabelled["munggoggo_gateway_max_in_flight"] == 77  # --max-in-flight too
        assert (await http.get("/openapi.json")).json()["openapi"] == "3.1.0"
        assert (await http.get("/docs")).status_code == 200  # the page was installed with us

        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 15) == 0
    assert "Traceback" not in log.read_text()


async def test_gateway_command_exits_without_a_broker(tmp_path):
    log = tmp_path / "gateway.log"
    args = ["--port", str(free_port()), "--url", "amqp://guest:guest@127.0.0.1:1/"]
    async with gateway_process(*args, log=log) as proc:
        returncode = await asyncio.to_thread(proc.wait, 30)
    assert returncode != 0
    assert "127.0.0.1:1" in log.read_text()
