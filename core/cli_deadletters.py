"""`munggoggo ctl dead-letters list|requeue|purge`: argument parsing and output only.

The work is done by `munggoggo.deadletters` (usable from Python and the gateway); this
module turns its results into a table or JSON and an exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .deadletters import DeadLetter, DeadLetters, DeadLettersTimeout, PurgeResult, RequeueResult
from .engine import ConnectionProtocol


def add_parser(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add `dead-letters` to the `ctl` subcommands.

    Args:
        commands: the `ctl` subparsers (what `add_subparsers()` returned).
        parents: parsers whose options `dead-letters` and each of its actions accept too
            (the command line's `--url`).
    """
    p = commands.add_parser(
        "dead-letters",
        help="list, requeue or purge dead letters (munggoggo.dead-letters)",
        parents=list(parents),
    )
    actions = p.add_subparsers(dest="dl_action", required=True)
    a = actions.add_parser(
        "list",
        help="show dead letters, oldest first (the queue is unchanged)",
        parents=list(parents),
    )
    a.add_argument("--limit", type=int, default=50, help="show at most N (default 50)")
    a.add_argument("--agent", help="only those an agent with this identity gave up on")
    a.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    for name, what in (
        ("requeue", "send dead letters back to their queue with a fresh retry count"),
        ("purge", "delete dead letters for good"),
    ):
        a = actions.add_parser(name, help=what, parents=list(parents))
        choice = a.add_mutually_exclusive_group(required=True)
        choice.add_argument("--id", dest="ids", action="append", metavar="ID", help="repeatable")
        choice.add_argument("--all", action="store_true", help="every dead letter")
        a.add_argument("--agent", help="only those an agent with this identity gave up on")


async def run(connection: ConnectionProtocol, args: argparse.Namespace) -> int:
    """Do the action and print its outcome; the exit status is 1 if anything asked for was
    not done (an unknown id, a dead letter kept, an operation cut short).

    Raises:
        DeadLettersBusy: another reader kept the queue past the lock wait (the command
            line reports it like any failure).
    """
    dead = DeadLetters(connection)
    if args.dl_action == "list":
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        letters = await dead.list(args.limit, agent=args.agent)
        if args.json:
            now = time.time()
            for letter in letters:
                print(json.dumps(letter.as_dict(now)))
        else:
            print(format_table(letters))
        return 0
    try:
        if args.dl_action == "requeue":
            return _print_requeued(await dead.requeue(args.ids, agent=args.agent, all=args.all))
        return _print_purged(await dead.purge(args.ids, agent=args.agent, all=args.all))
    except DeadLettersTimeout as exc:
        # What was done before it stopped, then why it stopped.
        if isinstance(exc.result, RequeueResult):
            _print_requeued(exc.result)
        elif isinstance(exc.result, PurgeResult):
            _print_purged(exc.result)
        print(f"munggoggo ctl dead-letters {args.dl_action}: {exc}", file=sys.stderr)
        return 1


def _print_requeued(result: RequeueResult) -> int:
    print(f"requeued {len(result.requeued)} dead letter(s)")
    for letter_id in result.requeued:
        print(f"  {letter_id}")
    for letter_id, why in result.kept.items():
        print(f"kept {letter_id}: {why}")
    for letter_id in result.missing:
        print(f"not found: {letter_id}")
    return 1 if result.kept or result.missing else 0


def _print_purged(purged: PurgeResult) -> int:
    print(f"purged {purged.purged} dead letter(s)")
    for letter_id in purged.missing:
        print(f"not found: {letter_id}")
    if purged.left:
        print(f"{purged.left} dead letter(s) still in the queue (arrived meanwhile, or held")
        print("by a reader that does not take the lock)")
    return 1 if purged.missing or purged.left else 0


def format_table(letters: list[DeadLetter], now: float | None = None) -> str:
    if not letters:
        return "no dead letters"
    now = time.time() if now is None else now
    rows = [("ID", "AGE", "RETRIES", "AGENT/BEHAVIOUR", "QUEUE", "ROUTING KEY", "REASON")]
    for d in letters:
        who = d.agent or "-"
        if d.behaviour:
            who = f"{who}/{d.behaviour}"
        rows.append(
            (
                d.id,
                format_age(d.age(now)),
                str(d.retries),
                who,
                d.queue or "-",
                d.routing_key or "-",
                " ".join(d.reason.split())[:80],  # one line, whatever the exception said
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    ]
    return "\n".join(lines)


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
