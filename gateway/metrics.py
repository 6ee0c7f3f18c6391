"""A minimal Prometheus text exposition of one gateway worker's counters (`GET /metrics`).

Stands alone so the metrics issue can replace it with prometheus-client series: it only
reads `state.counters`, `state.in_flight` and `state.started_at`.
"""

from __future__ import annotations

import re
import time
from typing import Any

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "munggoggo_gateway_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def render(state: Any) -> bytes:
    lines = []
    for name, value in sorted(state.counters.items()):
        metric = f"{_PREFIX}{_INVALID.sub('_', name)}_total"
        lines.append(f"# TYPE {metric} counter")
        lines.append(f"{metric} {value}")
    lines.append(f"# HELP {_PREFIX}in_flight calls waiting for an agent in this worker")
    lines.append(f"# TYPE {_PREFIX}in_flight gauge")
    lines.append(f"{_PREFIX}in_flight {state.in_flight}")
    lines.append(f"# TYPE {_PREFIX}max_in_flight gauge")
    lines.append(f"{_PREFIX}max_in_flight {state.settings.max_in_flight}")
    lines.append(f"# TYPE {_PREFIX}uptime_seconds gauge")
    lines.append(f"{_PREFIX}uptime_seconds {time.time() - state.started_at:.3f}")
    return ("\n".join(lines) + "\n").encode()
