"""Pages generated from the code at build time, so they list what the code has.

- reference/cli.md: `<!-- cli-help -->` becomes the `--help` of `munggoggo` and of every
  subcommand, from `munggoggo.cli.build_parser()`.
- reference/metrics.md: `<!-- agent-metrics -->` and `<!-- gateway-metrics -->` become
  tables of every Prometheus family (name as scraped, type, labels, help), read from the
  collectors themselves: an agent with a behaviour and an exposed method on a memory://
  broker, and a gateway worker's `GatewayMetrics`. Needs prometheus_client (the
  `metrics` extra). `<!-- bench-metrics -->`: those of `munggoggo bench --metrics-port`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

CLI_MARK = "<!-- cli-help -->"
AGENT_METRICS_MARK = "<!-- agent-metrics -->"
GATEWAY_METRICS_MARK = "<!-- gateway-metrics -->"
BENCH_METRICS_MARK = "<!-- bench-metrics -->"
HELP_COLUMNS = "78"  # argparse wraps at $COLUMNS: fixed, so the page does not depend on a terminal

# The suffixes a scrape shows for each family type (the text exposition format).
SUFFIX = {"counter": "_total", "info": "_info"}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: fill the marks of the generated pages."""
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    if AGENT_METRICS_MARK in markdown:
        markdown = markdown.replace(AGENT_METRICS_MARK, metrics_table(agent_families()))
    if GATEWAY_METRICS_MARK in markdown:
        markdown = markdown.replace(GATEWAY_METRICS_MARK, metrics_table(gateway_families()))
    if BENCH_METRICS_MARK in markdown:
        markdown = markdown.replace(BENCH_METRICS_MARK, metrics_table(bench_families()))
    return markdown


# -- the command line ----------------------------------------------------------------


def cli_reference() -> str:
    """Markdown: a heading and the `--help` text of the command and each subcommand."""
    from munggoggo.cli import build_parser

    sections = []
    with _columns(HELP_COLUMNS):
        for prog, parser, depth in _walk(build_parser()):
            heading = "#" * min(depth + 2, 4)
            sections.append(
                f"{heading} `{prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"
            )
    return "\n".join(sections)


def _walk(
    parser: argparse.ArgumentParser, depth: int = 0
) -> Iterator[tuple[str, argparse.ArgumentParser, int]]:
    """The parser and its subcommands' parsers, depth first, in the order they were added."""
    yield parser.prog, parser, depth
    # argparse has no public way to list a parser's subcommands: its actions are the way.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:  # aliases map several names to one parser
                    seen.add(id(sub))
                    yield from _walk(sub, depth + 1)


@contextlib.contextmanager
def _columns(columns: str) -> Iterator[None]:
    """Set $COLUMNS for the block (argparse reads it when it formats help)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = columns
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


# -- metrics ---------------------------------------------------------------------------


def agent_families() -> list[Any]:
    """Every family an agent exports, from a real agent on an in-process broker."""
    from munggoggo import Agent, Behaviour, expose
    from munggoggo.memory import MemoryBroker
    from munggoggo.metrics import AgentCollector

    class Idle(Behaviour):
        async def run(self) -> None:
            await self.receive(timeout=0.01)

    class Example(Agent):
        async def setup(self) -> None:
            await self.add_behaviour(Idle(self, binding_keys=["docs.example"]))

        @expose
        def mul(self, a: int, b: int) -> int:
            return a * b

    name = f"docs-{uuid.uuid4().hex[:8]}"

    async def collect() -> list[Any]:
        url = f"memory://{name}"
        async with Example("example", url=url) as example, Agent("caller", url=url) as caller:
            await caller.call("example", "mul", 6, 7)
            collector = AgentCollector()
            collector.add(example)
            collector.add(caller)
            return list(collector.collect())

    try:
        return asyncio.run(collect())
    finally:
        MemoryBroker.reset(name)


def gateway_families() -> list[Any]:
    """Every family a gateway worker exports, with one route declared so labels show."""
    from munggoggo.gateway.metrics import GatewayMetrics
    from munggoggo.metrics import build_info_family

    metrics = GatewayMetrics(max_in_flight=1024)
    metrics.declare_routes([("/agents", "GET")])
    return [*metrics.registry.collect(), build_info_family()]


def bench_families() -> list[Any]:
    """Every family `munggoggo bench --metrics-port` exports (a run that has not started)."""
    from munggoggo.perf_metrics import BenchCollector
    from munggoggo.perf_run import RunStats

    return list(BenchCollector(RunStats(), "0a1b2c3d", options={"producers": "1"}).collect())


def metrics_table(families: list[Any]) -> str:
    """Markdown table of metric families: the name a scrape shows, type, labels, help."""
    rows = ["| series | type | labels | what |", "| --- | --- | --- | --- |"]
    seen = set()
    for family in families:
        if family.name in seen:
            continue
        seen.add(family.name)
        labels: dict[str, None] = {}
        for sample in family.samples:
            labels.update(dict.fromkeys(k for k in sample.labels if k != "le"))
        name = family.name + SUFFIX.get(family.type, "")
        what = family.documentation.replace("|", "\\|")
        shown = ", ".join(f"`{label}`" for label in labels) or "none"
        rows.append(f"| `{name}` | {family.type} | {shown} | {what} |")
    return "\n".join(rows)
