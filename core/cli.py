"""The `munggoggo` command: `run` agents, control a mesh with `ctl`, try it with `demo`.

`ctl` joins the mesh as a short-lived client agent (identity `ctl-<random>`), so every
command is an ordinary RPC, publish or send on the wire contract.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import math
import os
import platform
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from . import _speedups, cli_bench, cli_deadletters
from ._version import __version__
from .agent import Agent, open_connection
from .amqp.errors import AMQPError
from .asyncapi import asyncapi_document
from .client import install_uvloop
from .extras import MissingExtra
from .rpc import UNKNOWN_AGENT, RpcError
from .runner import run, serve
from .url import URLError, parse_urls
from .wire import GATEWAY_PREFIX


def main(argv: list[str] | None = None) -> int:
    """Run the `munggoggo` command.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 done, 1 the command failed (one line on stderr says why), 2 a
        usage error or a missing extra (one line naming the `pip install` that adds it).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except MissingExtra as exc:
        print(exc.explain(f"munggoggo {args.command}"), file=sys.stderr)
        return 2
    except (URLError, AMQPError, RpcError, ImportError, ValueError, KeyError, OSError) as exc:
        print(f"munggoggo {args.command}: {exc}", file=sys.stderr)
        return 1


def version_text() -> str:
    """What `munggoggo --version` prints.

    Returns:
        `munggoggo <version>` on the first line; the Python running it and whether the
        compiled speedups loaded on the second.
    """
    if _speedups.USING_EXTENSIONS:
        speedups = "compiled speedups"
    elif _speedups.NO_EXTENSIONS:
        speedups = "pure-Python speedups (MUNGGOGGO_NO_EXTENSIONS is set)"
    else:
        speedups = "pure-Python speedups (the compiled extensions are not built)"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"munggoggo {__version__}\n{python}, {speedups}"


class _Version(argparse.Action):
    """`--version`: print `version_text()` and exit 0 (argparse's own version action would
    rewrap the two lines into one)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(version_text())
        parser.exit()


URL_HELP = (
    "broker URL, or several comma-separated for failover, tried in order "
    "(default: $MUNGGOGGO_URL or local RabbitMQ)"
)
HEALTH_HELP = "serve GET /livez and /readyz (connected, consumers up) on this port"


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0 (nan and inf are refused: a timer
    of nan seconds fails inside the event loop, one of inf never fires)."""
    return _seconds(text, zero_ok=False)


def seconds_or_zero(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    return _seconds(text, zero_ok=True)


def _seconds(text: str, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        least = "0 or more" if zero_ok else "more than 0"
        raise argparse.ArgumentTypeError(f"seconds must be a finite number, {least}: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `munggoggo` argument parser, every subcommand included.

    `--url` is accepted before the subcommand and after it (by every subcommand that talks
    to a broker); given in both places, the one after the subcommand wins.

    Returns:
        The parser; each subcommand sets `handler`, the function that runs it.
    """
    parser = argparse.ArgumentParser(prog="munggoggo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("--url", help=URL_HELP)
    # The subcommands' own --url: absent unless given (SUPPRESS), so the one given before
    # the subcommand stays; given, argparse copies it over that one.
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="run an agent class: MODULE:CLASS", parents=[url])
    p.add_argument("target", help="e.g. myagents:PingAgent")
    p.add_argument("--identity", help="agent identity (default: generated)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--health-port", type=int, help=HEALTH_HELP)
    p.add_argument(
        "--queue-type",
        choices=["transient", "quorum"],
        help="behaviour queues: transient (fast) or quorum (durable mode: replicated, on disk, "
        "persistent messages); default $MUNGGOGGO_QUEUE_TYPE or transient",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "demo",
        help="run the demo agents (falls back to memory:// without a broker)",
        parents=[url],
    )
    p.add_argument("--seconds", type=seconds, default=None, help="stop after this long")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--health-port", type=int, help=HEALTH_HELP)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser(
        "gateway", help="serve the HTTP/WebSocket gateway to the mesh (granian)", parents=[url]
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--call-timeout", type=seconds, help="seconds an RPC may take (default 5)")
    p.add_argument("--max-in-flight", type=int, help="concurrent calls per worker (default 1024)")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    g = p.add_argument_group(
        "security", "see README, Securing the gateway; each flag overrides its environment variable"
    )
    g.add_argument(
        "--tokens-file",
        metavar="PATH",
        help="accept the bearer tokens / API keys in this file, one a line, # comments "
        "($MUNGGOGGO_GATEWAY_TOKENS_FILE); without any token the gateway is open to anyone",
    )
    g.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        help="accept this token (repeatable; $MUNGGOGGO_GATEWAY_TOKENS, comma-separated). "
        "Other users can read command lines: prefer --tokens-file",
    )
    g.add_argument(
        "--metrics-public",
        action="store_true",
        default=None,
        help="serve /metrics without a token ($MUNGGOGGO_GATEWAY_METRICS_PUBLIC)",
    )
    g.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="a web page origin allowed to call the gateway and open /ws, e.g. "
        "https://app.example.com, or * for any (repeatable; $MUNGGOGGO_GATEWAY_CORS_ORIGINS)",
    )
    g.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST",
        help="a host name browsers may reach the gateway by, e.g. gateway.example.com "
        "(repeatable; $MUNGGOGGO_GATEWAY_ALLOWED_HOSTS). Always allowed: localhost, "
        "127.0.0.1, [::1], the --host address and the --cors-origin hosts; * for any",
    )
    g.add_argument(
        "--rate-limit",
        type=float,
        metavar="RPS",
        help="requests per second per client and worker, 0 for none "
        "($MUNGGOGGO_GATEWAY_RATE_LIMIT; default 0)",
    )
    g.add_argument(
        "--rate-burst",
        type=int,
        metavar="N",
        help="requests a client may make at once (default: twice --rate-limit)",
    )
    p.set_defaults(handler=cmd_gateway)

    ctl = sub.add_parser("ctl", help="control a running mesh", parents=[url])
    ctl.add_argument("--timeout", type=seconds, default=5.0, help="seconds to wait for answers")
    csub = ctl.add_subparsers(dest="ctl_command", required=True)
    c = csub.add_parser("peers", help="list running agents", parents=[url])
    c.add_argument("--wait", type=seconds_or_zero, default=0.5, help="how long to collect answers")
    c = csub.add_parser("status", help="an agent's status", parents=[url])
    c.add_argument("identity")
    c = csub.add_parser(
        "call",
        help="call an exposed method: call ID METHOD [JSON args...] [-k name=JSON]",
        parents=[url],
    )
    c.add_argument("identity")
    c.add_argument("method")
    c.add_argument("params", nargs="*", help="positional params as JSON (bare words are strings)")
    c.add_argument("-k", "--kwarg", action="append", default=[], help="named param name=JSON")
    c = csub.add_parser("send", help="send a direct message", parents=[url])
    c.add_argument("identity")
    c.add_argument("body")
    c = csub.add_parser("broadcast", help="send to every agent", parents=[url])
    c.add_argument("body")
    c = csub.add_parser("publish", help="publish on a topic", parents=[url])
    c.add_argument("routing_key")
    c.add_argument("body")
    c = csub.add_parser(
        "behaviours", help="list, start or stop an agent's behaviours", parents=[url]
    )
    c.add_argument("identity")
    c.add_argument("action", nargs="?", choices=["list", "start", "stop"], default="list")
    c.add_argument("name", nargs="?")
    c = csub.add_parser("traces", help="the last messages an agent saw", parents=[url])
    c.add_argument("identity")
    c.add_argument("--limit", type=int, default=20)
    c = csub.add_parser(
        "asyncapi",
        help="the running agents' contracts as an AsyncAPI 3.0 document (JSON)",
        parents=[url],
    )
    c.add_argument("--wait", type=seconds_or_zero, default=0.5, help="how long to collect answers")
    c.add_argument("--out", metavar="FILE", help="write the document to FILE (default: stdout)")
    cli_deadletters.add_parser(csub, parents=[url])
    ctl.set_defaults(handler=cmd_ctl)
    cli_bench.add_parser(sub)
    return parser


# -- run ---------------------------------------------------------------------------


def load_agent_class(target: str) -> type[Agent]:
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"expected MODULE:CLASS, got {target!r}")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {class_name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ValueError(f"{target} is not an Agent subclass")
    return cls


def cmd_run(args: argparse.Namespace) -> int:
    cls = load_agent_class(args.target)
    agent = cls(args.identity, url=args.url)
    if args.queue_type:  # the flag wins over a config the class chose itself
        agent.config = dataclasses.replace(agent.config, queue_type=args.queue_type)
    health = bind_health(args.health_port)  # a port in use fails here, before the agent starts
    if args.metrics_port is not None:
        from .metrics import serve_metrics

        serve_metrics(args.metrics_port)  # so does this one
    run(agent, log_level=args.log_level, health=health)
    return 0


def bind_health(port: int | None) -> Any:
    if port is None:
        return None
    from .health import HealthServer

    return HealthServer(port)


# -- demo --------------------------------------------------------------------------


def broker_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether any broker of the URL (or failover list) accepts a TCP connection."""
    for parsed in parse_urls(url):
        try:
            socket.create_connection((parsed.host, parsed.port), timeout=timeout).close()
        except OSError:
            continue
        return True
    return False


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_agents

    url = args.url or os.environ.get("MUNGGOGGO_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    urls = parse_urls(url)
    if not urls[0].is_memory and not broker_answers(url):
        print(
            f"no broker answers at {', '.join(map(str, urls))}; "
            "running the demo on memory:// instead",
            flush=True,
        )
        url = "memory://demo"
    agents = demo_agents(url)
    health = bind_health(args.health_port)
    if args.metrics_port is not None:
        from .metrics import serve_metrics

        serve_metrics(args.metrics_port)
    if args.seconds is None:
        run(*agents, health=health)
        return 0
    install_uvloop()

    async def timed() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(args.seconds, stop.set)
        await serve(*agents, stop=stop, health=health)

    asyncio.run(timed())
    return 0


# -- gateway -----------------------------------------------------------------------


def cmd_gateway(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .gateway.guard import Guard
    from .gateway.server import serve as serve_gateway
    from .gateway.state import GatewaySettings

    settings = GatewaySettings.from_env()
    overrides: dict[str, Any] = {}
    if args.url:
        overrides["url"] = args.url
    if args.call_timeout is not None:
        overrides["call_timeout"] = args.call_timeout
    if args.max_in_flight is not None:
        overrides["max_in_flight"] = args.max_in_flight
    for name in ("tokens", "cors_origins", "allowed_hosts"):
        if getattr(args, name):
            overrides[name] = tuple(getattr(args, name))
    for name in ("tokens_file", "metrics_public", "rate_limit", "rate_burst"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if overrides.get("url"):
        parse_urls(overrides["url"])  # a bad URL fails here, not in every worker
    settings = replace(settings, **overrides)
    Guard(settings)  # so does a bad token, tokens file, origin, host or rate limit
    serve_gateway(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


# -- ctl ---------------------------------------------------------------------------


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word is a string


def cmd_ctl(args: argparse.Namespace) -> int:
    install_uvloop()
    if args.ctl_command == "dead-letters":
        return asyncio.run(_dead_letters(args))
    result = asyncio.run(_ctl(args))
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


async def _dead_letters(args: argparse.Namespace) -> int:
    # A plain connection: reading a queue needs no agent identity, inbox or behaviours.
    connection = await open_connection(parse_urls(args.url), f"ctl-{uuid.uuid4().hex[:8]}")
    try:
        return await cli_deadletters.run(connection, args)
    finally:
        await connection.close()


def _asyncapi(args: argparse.Namespace, agents: list[dict[str, Any]]) -> Any:
    """The document (printed by `cmd_ctl`), or None once written to `--out`."""
    document = asyncapi_document(agents, server_url=args.url)
    if not args.out:
        return document
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    return None


async def _ctl(args: argparse.Namespace) -> Any:
    client = Agent(f"ctl-{uuid.uuid4().hex[:8]}", url=args.url)
    async with client:
        cmd, timeout = args.ctl_command, args.timeout
        if cmd == "peers":
            return await client.peers(timeout=args.wait)
        if cmd == "asyncapi":
            found = await client.peers(timeout=args.wait)
            # The gateway workers' client agents are no agents of the mesh (as in the
            # gateway's own /asyncapi.json).
            agents = [p for p in found if not p["identity"].startswith(GATEWAY_PREFIX)]
            return _asyncapi(args, agents)
        if cmd == "status":
            return await client.call(args.identity, "status", timeout=timeout)
        if cmd == "call":
            kwargs = {}
            for item in args.kwarg:
                name, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"-k expects name=JSON, got {item!r}")
                kwargs[name] = _json_arg(value)
            params = [_json_arg(p) for p in args.params]
            return await client.call(args.identity, args.method, *params, timeout=timeout, **kwargs)
        returned = client.stats.returned
        if cmd == "send":
            await client.send(args.identity, _json_arg(args.body))
        elif cmd == "broadcast":
            await client.broadcast(_json_arg(args.body))
        elif cmd == "publish":
            await client.publish(_json_arg(args.body), args.routing_key)
        elif cmd == "behaviours":
            if args.action == "list":
                return await client.call(args.identity, "list_behaviours", timeout=timeout)
            if not args.name:
                raise ValueError(f"behaviours {args.action} needs a behaviour name")
            return await client.call(
                args.identity, f"{args.action}_behaviour", args.name, timeout=timeout
            )
        elif cmd == "traces":
            return await client.call(args.identity, "traces", args.limit, timeout=timeout)
        await client.flush(timeout=timeout)
        # The broker returns an unroutable direct message before it confirms it; memory://
        # hands the return over from the loop right after.
        await asyncio.sleep(0)
        if cmd == "send" and client.stats.returned > returned:
            raise RpcError(
                UNKNOWN_AGENT,
                f"unknown agent {args.identity!r}: the broker returned the message "
                "(no inbox queue of that name)",
            )
        return {"ok": True}
