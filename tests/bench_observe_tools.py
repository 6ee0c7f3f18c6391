"""`munggoggo bench --metrics-port` as a subprocess, scraped while it runs (for
test_bench_observe.py and test_dashboards.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from munggoggo.testing import free_port


@dataclass
class BenchProcess:
    """A running bench with its /metrics URL; `out`/`err`/`status` once it has ended."""

    proc: subprocess.Popen[str]
    url: str
    out: str = ""
    err: str = ""
    status: int | None = None
    scrapes: list[str] = field(default_factory=list)

    def scrape(self, timeout: float = 15.0) -> str:
        """The /metrics text, waiting for the server to answer first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.get(self.url, timeout=2.0)
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            assert response.status_code == 200
            self.scrapes.append(response.text)
            return response.text


@contextlib.contextmanager
def bench_with_metrics(broker_url: str, *argv: str) -> Iterator[BenchProcess]:
    """Run `munggoggo bench --url URL --metrics-port PORT ARGV`; wait for it at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "munggoggo",
            "bench",
            "--url",
            broker_url,
            "--metrics-port",
            str(port),
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = BenchProcess(proc, f"http://127.0.0.1:{port}/metrics")
    try:
        yield run
    finally:
        try:
            run.out, run.err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        run.status = proc.returncode


def samples(text: str) -> dict[str, list[object]]:
    """Sample name -> its samples (prometheus_client's parser)."""
    found: dict[str, list[object]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found
