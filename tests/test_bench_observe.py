"""`munggoggo bench --metrics-port` and `--report`: Prometheus while running, HTML after.

Short runs on real RabbitMQ (-z 2 or 3 at a modest rate). The metrics are scraped from a
bench subprocess while it runs; the report is parsed with html.parser and held to the
run's own `--json` and `--csv` output.
"""

from __future__ import annotations

import html
import json
import re
import socket
import sys
import time
import uuid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from bench_observe_tools import bench_with_metrics, samples

from munggoggo.cli import main
from munggoggo.perf_metrics import LATENCY_BUCKETS_US, prometheus_buckets
from munggoggo.perf_report import line_chart
from munggoggo.perf_stats import LatencyHistogram

COUNTERS = (
    "published",
    "confirmed",
    "nacked",
    "returned",
    "consumed",
    "duplicates",
    "out_of_order",
    "untimed",
)


@pytest.mark.rabbitmq
@pytest.mark.timeout(90)
def test_metrics_are_served_while_the_run_goes(broker_url):
    run_id = f"obs-{uuid.uuid4().hex[:6]}"
    argv = ("-z", "3", "-r", "1000", "-c", "50", "-s", "100", "--run-id", run_id, "--json")
    with bench_with_metrics(broker_url, *argv) as run:

        def published_after(count: float) -> tuple[dict[str, list[Any]], float]:
            """The next scrape showing more than `count` published (the run lasts 3 s)."""
            while True:
                scrape = samples(run.scrape())
                value = scrape["munggoggo_bench_published_total"][0].value
                if value > count:
                    return scrape, value
                time.sleep(0.2)

        # The counters rise between two scrapes of the same run.
        first, published_first = published_after(0)
        later, published_later = published_after(published_first)
    assert run.status == 0, run.err
    assert published_later > published_first > 0
    assert later["munggoggo_bench_consumed_total"][0].value > 0
    labels = {"run_id": run_id, "mode": "queue"}
    for name in COUNTERS:
        (sample,) = later[f"munggoggo_bench_{name}_total"]
        assert sample.labels == labels
        assert sample.value >= first[f"munggoggo_bench_{name}_total"][0].value  # never falls
    (running,) = later["munggoggo_bench_running"]
    assert (running.labels, running.value) == (labels, 1.0)
    assert later["munggoggo_bench_lost"][0].labels == labels
    for hist in ("latency_seconds", "confirm_latency_seconds"):
        buckets = later[f"munggoggo_bench_{hist}_bucket"]
        bounds = [b.labels["le"] for b in buckets]
        assert bounds[-1] == "+Inf" and len(bounds) == len(LATENCY_BUCKETS_US) + 1
        assert float(bounds[0]) == 1e-05 and float(bounds[-2]) == 10.0
        assert all(b.labels["run_id"] == run_id for b in buckets)
        (count,) = later[f"munggoggo_bench_{hist}_count"]
        assert buckets[-1].value == count.value > 0
        values = [b.value for b in buckets]
        assert values == sorted(values)  # cumulative
    (info,) = later["munggoggo_bench_run_info"]
    assert (info.labels["run_id"], info.labels["rate"], info.labels["confirm"]) == (
        run_id,
        "1000.0",
        "50",
    )
    figures = json.loads(run.out.splitlines()[-1])
    assert figures["published"] >= published_later


class ReportParser(HTMLParser):
    """The report's svgs with their polylines, its figure cells and every URL-ish string."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[list[dict[str, str]]] = []
        self.figures: dict[str, str] = {}
        self.strings: list[str] = []
        self._cell: str | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        self.strings.extend(attrs.values())
        if tag == "svg":
            self.svgs.append([])
        elif tag == "polyline":
            self.svgs[-1].append(attrs)
        elif tag == "td" and "data-figure" in attrs:
            self._cell = attrs["data-figure"]

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        self.strings.append(data)
        if self._cell is not None:
            self.figures[self._cell] = self.figures.get(self._cell, "") + data


@pytest.mark.rabbitmq
@pytest.mark.timeout(60)
def test_report_draws_each_second_and_matches_the_json(capsys, broker_url, tmp_path):
    report, rows = tmp_path / "run.html", tmp_path / "rows.csv"
    status = main(
        [
            "bench",
            "--url",
            broker_url,
            "-z",
            "2.2",
            "-r",
            "800",
            "-c",
            "50",
            "-s",
            "100",
            "--report",
            str(report),
            "--csv",
            str(rows),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    figures = json.loads(out.splitlines()[-1])
    seconds = len(rows.read_text().splitlines()) - 1  # the CSV's rows, one per second
    assert seconds == sum(line.startswith("time ") for line in out.splitlines()) >= 2
    page = report.read_text()
    parser = ReportParser()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>")
    # Throughput, consumer latency, confirm latency: each a chart of one point per second.
    assert len(parser.svgs) == 3
    series = [p["data-series"] for p in parser.svgs[0]]
    assert series[:3] == ["sent", "confirmed", "received"]
    for svg in parser.svgs[1:]:
        assert [p["data-series"] for p in svg] == ["p50", "p95", "p99"]
    for svg in parser.svgs:
        for polyline in svg:
            assert len(polyline["points"].split()) == seconds
    # Self-contained: nothing to fetch.
    assert not [s for s in parser.strings if re.search(r"https?://", s)]
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    # The summary is --json's.
    for key in ("published", "confirmed", "consumed", "lost", "duplicates", "nacked"):
        assert int(parser.figures[key].replace(",", "")) == figures[key], key
    for key in ("publish_rate", "consume_rate", "seconds"):
        assert float(parser.figures[key].replace(",", "")) == pytest.approx(figures[key]), key
    for group in ("latency_us", "confirm_latency_us"):
        for q, value in figures[group].items():
            assert int(parser.figures[f"{group}.{q}"].replace(",", "")) == value
    assert figures["published"] > 0 and figures["lost"] == 0


def test_missing_metrics_extra_is_one_line(capsys, monkeypatch):
    # As if prometheus-client were not installed: importing it fails.
    for name in [m for m in sys.modules if m.partition(".")[0] == "prometheus_client"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    status = main(["bench", "--metrics-port", "0", "-C", "10"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""  # nothing ran
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("munggoggo bench needs the 'metrics' extra")
    assert lines[0].endswith("pip install 'munggoggo[metrics]'")


def test_metrics_port_in_use_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["bench", "--metrics-port", str(port), "-C", "10"])
    _, err = capsys.readouterr()
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("munggoggo bench: cannot serve metrics")


def test_report_in_a_missing_directory_is_an_option_error(capsys, tmp_path):
    status = main(["bench", "--report", str(tmp_path / "nope" / "r.html"), "-C", "10"])
    _, err = capsys.readouterr()
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "--report" in err


def test_prometheus_buckets_are_cumulative_seconds():
    hist = LatencyHistogram()
    for us in (5, 10, 11, 300, 2_000_000, 20_000_000):
        hist.record(us)
    buckets, total = prometheus_buckets(hist)
    by_le = dict(buckets)
    assert by_le["1e-05"] == 2  # 5 µs and 10 µs: a bound is inclusive
    assert by_le["2.5e-05"] == 3
    assert by_le["0.0005"] == 4
    assert by_le["2.5"] == 5
    assert by_le["10.0"] == 5 and by_le["+Inf"] == 6
    assert total == pytest.approx(22.000326)


def test_line_chart_has_one_point_per_x_and_rejects_ragged_series():
    svg = line_chart("t", [1.0, 2.0, 3.0], {"p50": [0, 100, 1000]}, log=True, unit="µs")
    (points,) = re.findall(r'points="([^"]*)"', svg)
    assert len(points.split()) == 3
    with pytest.raises(ValueError, match="series 'a' has 2 values for 3"):
        line_chart("t", [1.0, 2.0, 3.0], {"a": [1, 2]})


@pytest.mark.rabbitmq
def test_a_failed_run_still_writes_its_report(capsys, broker_url, tmp_path):
    parts = urlsplit(broker_url)
    bad = urlunsplit(
        parts._replace(
            netloc=f"guest:wrong-{uuid.uuid4().hex[:4]}@{parts.hostname}:{parts.port or 5672}"
        )
    )
    report = tmp_path / "failed.html"
    status = main(["bench", "--url", bad, "-C", "5", "--report", str(report), "--json"])
    out, err = capsys.readouterr()
    assert status == 1
    figures = json.loads(out.splitlines()[-1])
    parser = ReportParser()
    parser.feed(report.read_text())
    assert parser.svgs == []  # no second ran: no chart, a note instead
    assert int(parser.figures["published"]) == figures["published"] == 0
    page = html.unescape(report.read_text())
    assert "No per-second rows" in page
    # The line the command ended with is on the page.
    assert f"The run ended with an error: {err.strip().removeprefix('munggoggo bench: ')}" in page
    assert "wrong-" not in page  # the password is not printed


@pytest.mark.rabbitmq
@pytest.mark.timeout(90)
def test_metrics_of_a_run_over_processes_rise_while_it_goes(broker_url):
    argv = ("-z", "3", "-r", "500", "-x", "2", "-y", "2", "-s", "100", "--processes", "2")
    with bench_with_metrics(broker_url, *argv, "--json") as run:
        deadline = time.monotonic() + 30
        published = consumed = 0.0
        while (published == 0 or consumed == 0) and time.monotonic() < deadline:
            scrape = samples(run.scrape())
            published = scrape["munggoggo_bench_published_total"][0].value
            consumed = scrape["munggoggo_bench_consumed_total"][0].value
            time.sleep(0.2)
    assert run.status == 0, run.err
    # The children run the share: the scrape reads the parent's merged view, not zeros.
    assert published > 0 and consumed > 0
