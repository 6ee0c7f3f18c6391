"""What the broker must look like after a reconnect: exchanges, queues and bindings we declared.

The client records every successful declare/bind (and forgets on delete/unbind) so a
recovery can replay them in the original order. Server-named queues get a new name on
redeclare; `renamed()` carries the new name into the bindings that used the old one.
Consumers and qos belong to channels and are restored by the channel itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class QueueRecord:
    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any] | None
    server_named: bool


@dataclass(frozen=True, slots=True)
class BindingRecord:
    kind: str  # "queue" or "exchange"
    destination: str
    source: str
    routing_key: str
    arguments: dict[str, Any] | None


class Topology:
    """Declarations in the order they were made; replaying keeps dependencies satisfied."""

    def __init__(self) -> None:
        self.exchanges: dict[str, ExchangeRecord] = {}
        self.queues: dict[str, QueueRecord] = {}
        self.bindings: list[BindingRecord] = []

    def add_exchange(self, record: ExchangeRecord) -> None:
        if record.name:  # the default exchange is never declared
            self.exchanges[record.name] = record

    def remove_exchange(self, name: str) -> None:
        self.exchanges.pop(name, None)
        self.bindings = [
            b
            for b in self.bindings
            if b.source != name and not (b.kind == "exchange" and b.destination == name)
        ]

    def add_queue(self, record: QueueRecord) -> None:
        self.queues[record.name] = record

    def remove_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        self.bindings = [
            b for b in self.bindings if not (b.kind == "queue" and b.destination == name)
        ]

    def add_binding(self, record: BindingRecord) -> None:
        if record not in self.bindings:
            self.bindings.append(record)

    def remove_binding(self, record: BindingRecord) -> None:
        if record in self.bindings:
            self.bindings.remove(record)

    def renamed(self, old: str, new: str) -> None:
        """A server-named queue came back under a new name after recovery."""
        record = self.queues.pop(old, None)
        if record is not None:
            self.queues[new] = replace(record, name=new)
        self.bindings = [
            replace(b, destination=new) if b.kind == "queue" and b.destination == old else b
            for b in self.bindings
        ]

    def __len__(self) -> int:
        return len(self.exchanges) + len(self.queues) + len(self.bindings)
