"""Serving the gateway with granian (`munggoggo gateway`).

granian forks `workers` processes; each imports `munggoggo.gateway.app:create_app`, calls it
(factory) and runs its lifespan, which reads `GatewaySettings.from_env()`. So the settings
travel as `MUNGGOGGO_GATEWAY_*` environment variables set here before the workers start.
HTTP/1 only (granian's fast path; WebSockets included), uvloop. With several workers it
also turns on prometheus_client's multiprocess mode so one scrape sees them all.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import sys
import tempfile
from typing import Any

from .state import GatewaySettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to multiprocess mode
APP_FACTORY = "munggoggo.gateway.app:create_app"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def log_config(level: str) -> dict[str, Any]:
    """The logging setup of granian plus our own `munggoggo` loggers at the same level.

    Args:
        level: a level name of LOG_LEVELS.

    Returns:
        A `logging.config.dictConfig` configuration.
    """
    from granian.log import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["munggoggo"] = {
        "()": "logging.Formatter",
        "fmt": "[%(levelname)s] %(name)s: %(message)s",
    }
    config["handlers"]["munggoggo"] = {
        "formatter": "munggoggo",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["munggoggo"] = {
        "handlers": ["munggoggo"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def serve(
    settings: GatewaySettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the gateway until SIGINT/SIGTERM (blocking).

    The settings reach the workers as `MUNGGOGGO_GATEWAY_*` environment variables.

    Args:
        settings: the gateway's settings.
        host: the address to listen on (browsers may reach the gateway by it).
        port: the port to listen on.
        workers: worker processes, each with its own client agent.
        log_level: one of LOG_LEVELS.
        access_log: log every request.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    # Browsers may reach the gateway by the address it listens on (gateway/hosts.py).
    settings = dataclasses.replace(settings, bind_address=settings.bind_address or host)
    os.environ.update(settings.to_env())
    own_dir = _prepare_multiprocess_metrics(workers)
    server = Granian(
        APP_FACTORY,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=True,
        log_level=LogLevels(log_level),
        log_dictconfig=log_config(log_level),
        log_access=access_log,
    )
    try:
        server.serve()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _prepare_multiprocess_metrics(workers: int) -> str | None:
    """Make every worker's metrics visible in each worker's `/metrics`.

    With more than one worker, prometheus_client's multiprocess mode: values in per-process
    files under PROMETHEUS_MULTIPROC_DIR, summed at scrape time. A directory we create is
    ours to remove (returned); one the user set is emptied of old files first, as
    prometheus_client requires, since files of dead processes would count again.
    The variable must be set before workers create metrics; workers are forked or spawned
    after this, and a prometheus_client imported earlier in this process is told too.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    created = None
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    elif workers > 1:
        directory = created = tempfile.mkdtemp(prefix="munggoggo-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = directory
    else:
        return None
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Forked workers inherit the value class chosen at import; choose again now.
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]  # a module
    return created
