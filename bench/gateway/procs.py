"""The processes of `python -m bench gateway`: start, wait until ready, account, stop.

Every process is started in its own session (process group), so stopping it also stops
whatever it forked (granian's and uvicorn's workers): SIGTERM to the group, SIGKILL after a
grace period. `Processes` is a context manager that stops everything it started, in reverse
order, however the block ends. Output goes to temporary files, whose tail is shown when a
process dies early. CPU accounting reads /proc (Linux); elsewhere the figures are omitted.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Process:
    """One started process (the leader of its own process group)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready_line: bool = False,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())
        # stdout is a pipe only for a process that announces `ready` on it; it is drained
        # into nothing afterwards, so a chatty process never blocks on a full pipe.
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready_line else self.log,
            stderr=self.log,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def output_tail(self, limit: int = 2000) -> str:
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return text[-limit:].strip()

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with status {code}: {self.output_tail() or '(no output)'}"
            )

    def wait_ready_line(self, timeout: float) -> None:
        """Wait for the line `ready` on the process's stdout."""
        import selectors

        deadline = time.monotonic() + timeout
        stdout = self.popen.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} not ready within {timeout:g}s")
                if sel.select(min(left, 0.5)):
                    line = stdout.readline()
                    if not line:
                        self.popen.wait(5)
                        self.check_alive()
                    if line.strip() == b"ready":
                        threading.Thread(target=_drain, args=(stdout,), daemon=True).start()
                        return
                self.check_alive()

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # The leader may be gone while workers it forked live on: kill the group regardless.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(5)
        self.log.close()

    def tree(self) -> list[int]:
        """This process and all its descendants (pids)."""
        return [self.pid, *descendants(self.pid)]

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by this process and its living descendants."""
        total = None
        for pid in self.tree():
            cpu = pid_cpu_seconds(pid)
            if cpu is not None:
                total = (total or 0.0) + cpu
        return total


class Processes:
    """Starts processes; stops all of them, last started first, when the block ends."""

    def __init__(self) -> None:
        self.started: list[Process] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready_line: bool = False,
    ) -> Process:
        proc = Process(name, argv, env, ready_line)
        self.started.append(proc)
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        while self.started:
            self.started.pop().stop()


def _drain(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        while stream.read(65536):
            pass


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def pid_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def busiest(pids: list[int]) -> int:
    """The pid among `pids` that used the most CPU so far (a server's worker process)."""
    return max(pids, key=lambda pid: pid_cpu_seconds(pid) or 0.0)


# -- HTTP probes -------------------------------------------------------------------------


def post_jsonrpc(
    port: int, body: bytes, timeout: float = 5.0, conn: http.client.HTTPConnection | None = None
) -> tuple[int, Any]:
    """POST `body` to 127.0.0.1:`port`/jsonrpc; (HTTP status, decoded JSON body or None)."""
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        if own:
            conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


def wait_answering(
    port: int, body: bytes, expected: Any, timeout: float, procs: list[Process]
) -> None:
    """Poll until a JSON-RPC POST through the server is answered with `expected` (the
    server is up, connected to the broker, and the agent behind it answers)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        try:
            status, reply = post_jsonrpc(port, body, timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and isinstance(reply, dict) and reply.get("result") == expected:
                return
            last = f"HTTP {status}: {reply!r}"
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not answering within {timeout:g}s ({last})")


def sample_check(port: int, request: dict[str, Any], expected: Any, n: int = 5) -> int:
    """`n` direct requests on one connection, each with its own id; how many were wrong
    (not HTTP 200, no `result` equal to `expected`, or another `id` echoed back)."""
    bad = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        for i in range(n):
            rid = f"sample-{i}"
            body = json.dumps({**request, "id": rid}).encode()
            try:
                status, reply = post_jsonrpc(port, body, conn=conn)
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
                continue
            ok = (
                status == 200
                and isinstance(reply, dict)
                and reply.get("result") == expected
                and reply.get("id") == rid
            )
            bad += not ok
    finally:
        conn.close()
    return bad


# -- py-spy ----------------------------------------------------------------------------


NATIVE_THREAD = "(a thread without Python frames)"


def top_self_frames(raw_path: str, top: int = 15) -> list[tuple[str, float]]:
    """The frames with the most self time in a py-spy `-f raw` (collapsed stacks) file:
    [(frame, share of all samples in percent)], largest first."""
    self_samples: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            # A thread with no Python frame: granian's Rust runtime threads, say.
            self_samples[stack.rpartition(";")[2] or NATIVE_THREAD] += n
    if not total:
        return []
    return [(frame, round(100 * n / total, 1)) for frame, n in self_samples.most_common(top)]
