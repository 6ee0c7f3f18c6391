"""`run()`: host agents in a process until SIGTERM/SIGINT, then drain them.

Installs uvloop when available, configures logging if nobody did, starts every agent,
and on the first signal stops them (each drains within its grace period). A second
signal during the drain exits at once. A `HealthServer` (core/health.py), if given, answers
probes about the agents from the first moment to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from .client import install_uvloop

log = logging.getLogger("munggoggo.run")


def run(*agents: Any, log_level: str = "INFO", health: Any = None) -> None:
    """Run agents until SIGTERM/SIGINT (blocking). The seed's `Worker(...).execute...`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(*agents, health=health))


async def serve(*agents: Any, stop: asyncio.Event | None = None, health: Any = None) -> None:
    """Start agents, wait for a signal (or `stop`), stop them. Usable from async code.
    `health`: a bound `HealthServer`, served while this runs (and closed at the end)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("received %s: draining %d agent(s)", signal.Signals(signum).name, len(agents))
            stop.set()
        else:
            log.warning("second signal: exiting without finishing the drain")
            sys.exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread there are no signal handlers: the caller uses `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
    started = []
    if health is not None:
        await health.start(agents)  # before they start: /readyz says "starting", /livez 200
    try:
        for agent in agents:
            await agent.start()
            started.append(agent)
        await stop.wait()
    finally:
        await asyncio.gather(*(agent.stop() for agent in reversed(started)), return_exceptions=True)
        if health is not None:
            health.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
