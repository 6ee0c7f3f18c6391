"""Messages inside the memory:// broker: one published `Content`, one `Entry` per queue.

A publish is routed once and its `Content` shared by every queue it reached; it is never
mutated. Its properties are kept encoded (the form the wire would carry), decoded afresh
for each delivery so a consumer mutating its copy affects nobody else. An `Entry` is the
message in one queue: its place there (publish order), redelivered flag and expiry.
"""

from __future__ import annotations

from .. import _speedups
from .._speedups import Delivery, Properties

EMPTY_PROPERTIES = _speedups.encode_properties(None)
# decode_properties wants a whole content-header payload: class 60, weight, body size.
_HEADER_PREFIX = b"\x00\x3c\x00\x00" + bytes(8)


def decode(raw: bytes) -> Properties:
    """Decode encoded basic properties (raising like the client for malformed ones)."""
    return _speedups.decode_properties(_HEADER_PREFIX + raw)[1]


class Content:
    """One published message, shared by every queue it was routed to; never mutated."""

    __slots__ = ("_props", "body", "exchange", "raw", "routes", "routing_key", "ttl")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        ttl: int | None,
        routes: tuple[str, ...] = (),
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.raw = raw  # encoded properties, the form the wire would carry
        self._props = props
        self.ttl = ttl
        self.routes = routes  # CC and BCC routing keys, routed like routing_key

    @property
    def routing_keys(self) -> tuple[str, ...]:
        """Every key the message is routed by: the publish's, then CC and BCC."""
        return (self.routing_key, *self.routes)

    def properties(self) -> Properties:
        """A private copy for one delivery: a consumer mutating it affects nobody else."""
        if self.raw == EMPTY_PROPERTIES:
            return Properties()
        return decode(self.raw)

    def peek(self) -> Properties:
        """Decoded once, read-only, for the broker's own use (headers routing)."""
        if self._props is None:
            self._props = decode(self.raw)
        return self._props

    def delivery(self, channel_id: int, kind: int) -> Delivery:
        """A Delivery of this message (Basic.Deliver, Get-Ok or Return) for a channel,
        with its own copy of the properties; tags and counts are the caller's to set."""
        d = Delivery(channel_id, kind)
        d.exchange = self.exchange
        d.routing_key = self.routing_key
        d.properties = self.properties()
        d.properties_raw = self.raw
        d.body = self.body
        return d


class Entry:
    """A message in one queue: its position, redelivered flag and expiry there."""

    __slots__ = ("content", "expires_at", "redelivered", "seq")

    def __init__(self, content: Content, seq: int) -> None:
        self.content = content
        self.seq = seq  # publish order: requeued messages go back to their old place
        self.redelivered = False
        self.expires_at: float | None = None
