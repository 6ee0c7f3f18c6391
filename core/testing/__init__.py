"""Testing agents: the pytest kit, fault injection and broker tools.

The kit for your agents' tests (docs/how-to/testing.md):

- the pytest plugin (pytest_plugin), loaded by pytest once munggoggo is installed: the
  `mesh_url` fixture (a fresh memory:// broker per test, or `--munggoggo-url amqp://...`)
  and `mesh_name` (names unique to a test);
- `MessageRecorder` (recorder): a behaviour that keeps what it receives;
  `await recorder.wait(n, timeout=...)` returns the first n messages or raises
  `RecorderTimeout` with those that came.

munggoggo's own tests and benchmarks use the rest, and so can yours (nothing here is
imported by the runtime):

- `FaultProxy` (fault_proxy): a loopback TCP proxy between your agents and the broker that
  can cut, freeze, slow or refuse connections: a broker outage or a partition without
  touching the broker (`Agent(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")`);
- broker_faults: rabbitmqctl helpers that hurt the broker itself (close a connection by
  name, stop_app/start_app, a memory alarm) and `BrokerFaultLock`, the flock that keeps two
  such faults (of several test runs on one machine) from overlapping;
- `Cluster` (cluster): a local 3-node RabbitMQ cluster on ports 5681-5683, for failover;
- `free_port()` (ports): a free loopback port for a server a test starts.

broker_faults and cluster drive the broker under test's `rabbitmqctl` (MUNGGOGGO_RABBITMQCTL,
else the machine's) and are for POSIX machines (flock, process groups); each name is
imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker_faults import BrokerFaultLock, broker_address, rabbitmqctl
    from .cluster import Cluster, ClusterError
    from .fault_proxy import FaultProxy
    from .ports import free_port
    from .recorder import MessageRecorder, RecorderTimeout

# name -> submodule. Loaded on first use: `from munggoggo.testing import FaultProxy` works
# where the POSIX-only parts (flock, process groups) cannot be imported.
_EXPORTS = {
    "BrokerFaultLock": "broker_faults",
    "broker_address": "broker_faults",
    "rabbitmqctl": "broker_faults",
    "Cluster": "cluster",
    "ClusterError": "cluster",
    "FaultProxy": "fault_proxy",
    "free_port": "ports",
    "MessageRecorder": "recorder",
    "RecorderTimeout": "recorder",
}

__all__ = [
    "BrokerFaultLock",
    "Cluster",
    "ClusterError",
    "FaultProxy",
    "MessageRecorder",
    "RecorderTimeout",
    "broker_address",
    "free_port",
    "rabbitmqctl",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
