"""A 3-node RabbitMQ cluster on this one machine: for failover tests and the cluster bench.

`python -m bench cluster start|stop|status` or the `Cluster` class
(`from munggoggo.testing import Cluster`). Nodes are named
`rabbit-c1@localhost`, `rabbit-c2@localhost`, ... and listen on 127.0.0.1 only: AMQP on
5681, 5682, ... and Erlang distribution on 25681, 25682, ... . Everything a node writes
(data, logs, its rabbitmq.conf, an empty plugin list, an empty rabbitmq-env.conf so the
system one is not read) lives under one directory, `/var/tmp/munggoggo-cluster`
(`MUNGGOGGO_CLUSTER_DIR`), which `stop` deletes after halting the nodes.

The nodes share a fresh random Erlang cookie given with `-setcookie`, to the servers through
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS and to rabbitmqctl through RABBITMQ_CTL_ERL_ARGS; HOME
points into the directory too, so no cookie file of the system (root's, or the rabbitmq
user's) is read or written, and a rabbitmqctl aimed at the main broker (rabbit@localhost on
5672, another cookie) by mistake is refused instead of obeyed. Nodes 2.. join node 1 the
manual way (`stop_app`, `join_cluster`, `start_app`). It runs the package's own scripts in
/usr/lib/rabbitmq/bin (Debian, RPM; `RABBITMQ_SCRIPTS_DIR` elsewhere) as the current user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .._speedups import MunggoggoError
from .broker_faults import broker_answers

BASE = Path(os.environ.get("MUNGGOGGO_CLUSTER_DIR", "/var/tmp/munggoggo-cluster"))
SCRIPTS = Path(os.environ.get("RABBITMQ_SCRIPTS_DIR", "/usr/lib/rabbitmq/bin"))
HOST = "localhost"  # the main broker's node is rabbit@localhost too: names differ by prefix
FIRST_PORT = 5681
DIST_OFFSET = 20000  # RabbitMQ's own default: distribution port = AMQP port + 20000


class ClusterError(MunggoggoError, RuntimeError):
    """The cluster could not be started, joined, stopped or asked."""


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its Erlang name, AMQP and distribution ports, directory.

    Attributes:
        index: its number, from 1.
        name: its Erlang node name (`rabbit-c<index>@<host>`).
        port: its AMQP port on 127.0.0.1.
        dist_port: its Erlang distribution port.
        home: its directory (data, logs, configuration).
    """

    index: int
    name: str
    port: int
    dist_port: int
    home: Path

    @property
    def url(self) -> str:
        """Its AMQP URL (guest/guest on 127.0.0.1)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        """Where its Erlang VM writes its process id."""
        return self.home / "mnesia" / f"{self.name}.pid"


class Cluster:
    """`size` nodes under `base`; `start()` brings them up joined, `stop()` removes all.

    Args:
        base: the directory the nodes live under (deleted by `stop()`).
        size: how many nodes.
        first_port: the first node's AMQP port; the others follow.
    """

    def __init__(self, base: Path = BASE, size: int = 3, first_port: int = FIRST_PORT) -> None:
        self.base = Path(base)
        self.nodes = [
            Node(
                i,
                f"rabbit-c{i}@{HOST}",
                first_port + i - 1,
                first_port + i - 1 + DIST_OFFSET,
                self.base / f"c{i}",
            )
            for i in range(1, size + 1)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's AMQP URL: a failover list (Agent(url=cluster.urls))."""
        return [n.url for n in self.nodes]

    # -- rabbitmqctl -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.base),  # an Erlang that wants a cookie file finds it here
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_CTL_ERL_ARGS=f"-setcookie {self._cookie()}",
        )
        return env

    def _cookie(self) -> str:
        try:
            return (self.base / "cookie").read_text().strip()
        except OSError:
            raise ClusterError(f"no cluster under {self.base} (start it first)") from None

    def ctl(self, node: Node, *args: str, timeout: float = 90) -> str:
        """Run rabbitmqctl against `node` with the cluster's cookie.

        Args:
            node: the node asked.
            *args: rabbitmqctl's arguments (`-q -n <node>` are added).
            timeout: seconds it may take.

        Returns:
            Its stdout.

        Raises:
            ClusterError: it could not run, took too long, or failed (its message says why).
        """
        try:
            result = subprocess.run(
                [str(SCRIPTS / "rabbitmqctl"), "-q", "-n", node.name, *args],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"rabbitmqctl -n {node.name} {' '.join(args)}: {exc}") from None
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ClusterError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} failed: "
                + (detail[0] if detail else f"exit status {result.returncode}")
            )
        return result.stdout

    def _answers(self, node: Node) -> bool:
        try:
            self.ctl(node, "ping", "--timeout", "5", timeout=20)
        except ClusterError:
            return False
        return True

    # -- start -----------------------------------------------------------------------

    def start(self, timeout: float = 150) -> None:
        """Start the nodes, join them to node 1, and wait until all run as one cluster.
        Leftovers of an earlier run under `base` are stopped and removed first; a start
        that fails stops what it started.

        Args:
            timeout: seconds the whole start may take.

        Raises:
            ClusterError: RabbitMQ's scripts are missing, a port is in use, a node did not
                boot in time, or the cluster formed with fewer nodes.
        """
        server = SCRIPTS / "rabbitmq-server"
        if not os.access(server, os.X_OK):
            raise ClusterError(f"{server} not found: RabbitMQ's package scripts are needed")
        if self.base.exists():
            self.stop()
        for node in self.nodes:
            for port in (node.port, node.dist_port):
                if not _port_free(port):
                    raise ClusterError(f"port {port} on 127.0.0.1 is in use ({node.name})")
        deadline = time.monotonic() + timeout
        try:
            self._write_files()
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self._wait_booted(node, deadline)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", first.name)
                self.ctl(node, "start_app")
            for node in self.nodes:
                self._wait_booted(node, deadline)
            running = self.running_nodes()
            if sorted(running) != sorted(n.name for n in self.nodes):
                raise ClusterError(f"cluster formed with {running} only")
        except BaseException:
            self.stop()
            raise

    def _write_files(self) -> None:
        self.base.mkdir(parents=True)
        cookie = self.base / "cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o600)
        (self.base / "rabbitmq-env.conf").write_text("# the system's is not read\n")
        for node in self.nodes:
            (node.home / "mnesia").mkdir(parents=True)
            (node.home / "log").mkdir()
            (node.home / "enabled_plugins").write_text("[].\n")  # no management: no ports
            (node.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )

    def _spawn(self, node: Node) -> None:
        env = self._env()
        env.update(
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_MNESIA_BASE=str(node.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.home / "log"),
            RABBITMQ_CONFIG_FILE=str(node.home / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(node.home / "advanced.config"),  # none
            RABBITMQ_ENABLED_PLUGINS_FILE=str(node.home / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                f"-setcookie {self._cookie()} -kernel inet_dist_use_interface {{127,0,0,1}}"
            ),
        )
        env.pop("RABBITMQ_CTL_ERL_ARGS")
        with open(node.home / "stdout.log", "wb") as out:
            # Its own session: a Ctrl-C in the terminal that started it does not reach it.
            subprocess.Popen(
                [str(SCRIPTS / "rabbitmq-server")],
                env=env,
                cwd=node.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_booted(self, node: Node, deadline: float) -> None:
        """Until the node's app runs and its AMQP listener answers."""
        while True:
            if self._answers(node) and broker_answers(port=node.port):
                try:
                    self.ctl(node, "await_startup", "--timeout", "30", timeout=45)
                    return
                except ClusterError:
                    pass
            if time.monotonic() > deadline:
                log = node.home / "log" / f"{node.name}.log"
                raise ClusterError(f"{node.name} did not start in time (see {log})")
            time.sleep(0.5)

    # -- faults ----------------------------------------------------------------------

    def stop_app(self, node: Node) -> None:
        """Stop RabbitMQ on `node` (the Erlang node keeps running): its clients are cut.

        Args:
            node: the node.

        Raises:
            ClusterError: rabbitmqctl failed.
        """
        self.ctl(node, "stop_app")

    def start_app(self, node: Node, timeout: float = 90) -> None:
        """Start RabbitMQ on `node` again and wait until it answers.

        Args:
            node: the node.
            timeout: seconds to wait for it.

        Raises:
            ClusterError: rabbitmqctl failed, or the node did not answer in time.
        """
        self.ctl(node, "start_app")
        self._wait_booted(node, time.monotonic() + timeout)

    # -- status and stop -----------------------------------------------------------------

    def running_nodes(self) -> list[str]:
        """Nodes running RabbitMQ, as the first node that answers sees the cluster.

        Returns:
            Their Erlang names (empty when no node answers).
        """
        for node in self.nodes:
            try:
                status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
            except (ClusterError, ValueError):
                continue
            return list(status.get("running_nodes", []))
        return []

    def status(self) -> dict[str, object]:
        """Per node: whether the Erlang node answers and whether its AMQP port does.

        Returns:
            `running`, `dir`, `cluster` (the running nodes) and `nodes`: per node name,
            `erlang`, `amqp` (booleans) and `url`.
        """
        if not self.base.exists():
            return {"running": False, "dir": str(self.base), "nodes": {}}
        nodes = {
            n.name: {
                "erlang": self._answers(n),
                "amqp": broker_answers(port=n.port),
                "url": n.url,
            }
            for n in self.nodes
        }
        return {
            "running": any(v["erlang"] for v in nodes.values()),
            "dir": str(self.base),
            "cluster": self.running_nodes(),
            "nodes": nodes,
        }

    def stop(self) -> None:
        """Halt every node (rabbitmqctl stop, SIGKILL if that fails) and delete `base`."""
        if not self.base.exists():
            return
        for node in self.nodes:
            pid = _read_pid(node.pid_file)
            if (self.base / "cookie").exists():
                with contextlib.suppress(ClusterError):
                    self.ctl(node, "stop", timeout=60)
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        shutil.rmtree(self.base, ignore_errors=True)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
