"""The gateway baseline: what the original munggoggo did, a Starlette app served by uvicorn
that turns a JSON-RPC 2.0 POST into an aio-pika RPC call (`aio_pika.patterns.RPC`).

Two processes, each started by `python -m bench gateway` (and by the smoke test):

- `python -m bench.gateway.baseline_starlette worker --identity ID --url URL`: the agent side, an
  aio-pika RPC server registering `ID.echo(*, x)` and `ID.mul(*, a, b)` (aio-pika's pattern
  routes by method name: the queue `ID.mul` on the default exchange). It prints `ready` on
  stdout once both are registered.
- `python -m bench.gateway.baseline_starlette server --host H --port P --url URL`: the HTTP side,
  `POST /jsonrpc` with `{"jsonrpc": "2.0", "method": "ID.mul", "params": {"a": 6, "b": 7},
  "id": 1}`, answered with the JSON-RPC response object. It calls `rpc.call(method,
  kwargs=params)` as the pattern's documentation shows, on a `connect_robust` connection and
  a default channel (publisher confirms on, pickle serializer: aio-pika's defaults).

The pattern's default queues (non-durable, auto-delete, not exclusive) are a kind RabbitMQ 4
refuses, so each side's result queue is exclusive and each method queue durable and
auto-delete: the same routing, consumers and non-persistent messages, on queues both
RabbitMQ 3.10 and 4.3 accept (the bench's aio_pika_rpc scenario does the same).

The baseline gets the best serving stack uvicorn offers (uvloop, httptools, no access log),
so the comparison is with the original design, not with a slow configuration of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from ..common import broker_url

# JSON-RPC 2.0 error codes the baseline answers with
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

CALL_TIMEOUT = 5.0  # seconds, as the gateway's default call timeout


async def echo(*, x: Any) -> Any:
    return x


async def mul(*, a: int, b: int) -> int:
    return a * b


METHODS = {"echo": echo, "mul": mul}


# -- the HTTP side ---------------------------------------------------------------------


def create_app(url: str | None = None) -> Any:
    """The Starlette app: one aio-pika connection and RPC client per process (lifespan)."""
    import aio_pika
    from aio_pika.patterns import RPC
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(code: int, message: str, id: Any = None) -> JSONResponse:
        body = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}
        return JSONResponse(body)

    async def jsonrpc(request: Request) -> JSONResponse:
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return error(PARSE_ERROR, f"Parse error: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("method"), str):
            return error(INVALID_REQUEST, "Invalid Request")
        id = payload.get("id")
        params = payload.get("params") or {}
        if not isinstance(params, dict):
            # aio-pika's RPC pattern passes keyword arguments only
            return error(INVALID_PARAMS, "the baseline takes params by name only", id)
        try:
            result = await request.app.state.rpc.call(
                payload["method"], kwargs=params, expiration=CALL_TIMEOUT
            )
        except Exception as exc:
            return error(SERVER_ERROR, f"{type(exc).__name__}: {exc}", id)
        return JSONResponse({"jsonrpc": "2.0", "result": result, "id": id})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connection = await aio_pika.connect_robust(broker_url(url))
        try:
            app.state.rpc = await RPC.create(await connection.channel(), exclusive=True)
            yield
            await app.state.rpc.close()
        finally:
            await connection.close()

    return Starlette(routes=[Route("/jsonrpc", jsonrpc, methods=["POST"])], lifespan=lifespan)


def serve(host: str, port: int, url: str | None) -> None:
    import uvicorn

    uvicorn.run(
        create_app(url),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )


# -- the agent side --------------------------------------------------------------------


async def worker(identity: str, url: str | None) -> None:
    """aio-pika RPC server with `IDENTITY.echo` and `IDENTITY.mul`; runs until SIGTERM."""
    import aio_pika
    from aio_pika.patterns import RPC

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect_robust(broker_url(url))
    async with connection:
        rpc = await RPC.create(await connection.channel(), exclusive=True)
        for name, func in METHODS.items():
            await rpc.register(f"{identity}.{name}", func, durable=True, auto_delete=True)
        print("ready", flush=True)
        await stop.wait()
        await rpc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.baseline_starlette")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("server", help="the Starlette app under uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--url", default=None)
    p = sub.add_parser("worker", help="the aio-pika RPC server (the agent side)")
    p.add_argument("--identity", required=True)
    p.add_argument("--url", default=None)
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.host, args.port, args.url)
        return 0
    import uvloop

    uvloop.run(worker(args.identity, args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
