"""Serving the gateway with granian (`munggoggo gateway`).

granian forks `workers` processes; each imports `munggoggo.gateway.app:create_app`, calls it
(factory) and runs its lifespan, which reads `GatewaySettings.from_env()`. So the settings
travel as `MUNGGOGGO_GATEWAY_*` environment variables set here before the workers start.
HTTP/1 only (granian's fast path; WebSockets included), uvloop.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from .state import GatewaySettings

APP_FACTORY = "munggoggo.gateway.app:create_app"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def log_config(level: str) -> dict[str, Any]:
    """granian's logging setup plus our own `munggoggo` loggers at the same level."""
    from granian.log import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
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
    """Serve the gateway until SIGINT/SIGTERM (blocking)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    os.environ.update(settings.to_env())
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
    server.serve()
