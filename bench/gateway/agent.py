"""The agent behind the gateway in `python -m bench gateway`, in a process of its own:
`python -m bench.gateway.agent --identity ID [--url URL]`.

A plain munggoggo agent exposing `echo(x)` and `mul(a, b)` with `@expose`, on its default
configuration, on uvloop. It prints `ready` on stdout once it is running (its inbox
consumed) and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from munggoggo import Agent, expose
from munggoggo.client import install_uvloop

from ..common import broker_url


class BenchEcho(Agent):
    @expose
    async def echo(self, x: Any) -> Any:
        return x

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b


async def serve(identity: str, url: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with BenchEcho(identity, url=broker_url(url)):
        print("ready", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.agent")
    parser.add_argument("--identity", required=True)
    parser.add_argument("--url", default=None)
    args = parser.parse_args(argv)
    install_uvloop()
    asyncio.run(serve(args.identity, args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
