"""Types of the compiled AMQP 0-9-1 hot paths (`_frames.pyx`).

The pure-Python twin (`_frames_py.py`) has the same public names and behaviour; this stub
describes both, and `munggoggo._speedups` exposes whichever was loaded under these types.
"""

from collections.abc import Mapping
from typing import Any, Final, Self

FRAME_METHOD: Final[int]
FRAME_HEADER: Final[int]
FRAME_BODY: Final[int]
FRAME_HEARTBEAT: Final[int]
FRAME_END: Final[int]
FRAME_OVERHEAD: Final[int]
HEADER_SLACK: Final[int]
R_METHOD: Final[int]
R_CONFIRM: Final[int]
R_HEARTBEAT: Final[int]
DELIVER: Final[int]
GET_OK: Final[int]
RETURN: Final[int]
HEARTBEAT_FRAME: Final[bytes]
MAX_TABLE_DEPTH: Final[int]
CONTENT_HEADER_OVERHEAD: Final[int]
PROPERTY_NAMES: Final[tuple[str, ...]]

class FrameError(ValueError):
    """The peer sent bytes that are not valid AMQP 0-9-1 framing."""

class PropertiesTooLarge(ValueError):
    """A publish's encoded properties do not fit one content header frame of frame_max."""

    size: int
    frame_max: int
    def __init__(self, size: int, frame_max: int) -> None: ...

def check_header_fits(properties_len: int, frame_max: int) -> None:
    """Raise PropertiesTooLarge when the properties do not fit one content header frame."""

class Properties:
    """AMQP basic properties, as they travel on the wire."""

    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any] | None
    delivery_mode: int | None
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: str | None
    message_id: str | None
    timestamp: int | None
    type: str | None
    user_id: str | None
    app_id: str | None
    cluster_id: str | None
    def __init__(
        self,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: int | None = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None: ...
    def __eq__(self, other: object, /) -> bool: ...

class Delivery:
    """One assembled message: Basic.Deliver, Basic.GetOk or Basic.Return with its content.

    `properties` is set once the content header arrived (every delivery handed out has
    it); `properties_error` says why they could not be decoded (then they are empty).
    """

    channel: int
    kind: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: Properties
    properties_error: str | None
    properties_raw: bytes | None
    body: bytes
    reply_code: int
    reply_text: str
    message_count: int
    def __init__(self, channel: int, kind: int) -> None: ...

def decode_table(data: bytes) -> dict[str, Any]:
    """Decode a complete encoded field table (length prefix included) into a dict."""

def decode_properties(payload: bytes) -> tuple[int, Properties]:
    """Decode a content-header payload; returns (body_size, Properties)."""

class FrameReader:
    """Turns a byte stream into records, keeping partial frames and content between calls.

    `feed` returns, in wire order: `Delivery` objects, `(R_CONFIRM, channel, tag, multiple,
    is_nack)`, `(R_HEARTBEAT, channel)` and `(R_METHOD, channel, payload)` tuples.
    Deliveries whose encoded properties are identical to the last ones decoded share one
    `Properties` object (read it, never change it), unless they hold one of the
    `PER_MESSAGE_FLAGS` fields.
    """

    frame_max: int
    # Whether the records of the last feed() are all Basic.Deliver deliveries for one
    # consumer (one channel, one consumer tag).
    @property
    def one_consumer(self) -> bool: ...
    def __init__(self, frame_max: int = 131072) -> None: ...
    def pending_content(self) -> list[int]:
        """Channels with a delivery still waiting for its header or body frames."""
    def discard_channel(self, channel: int) -> None:
        """Forget partial content of a channel that was closed."""
    def feed(self, data: bytes) -> list[Delivery | tuple[Any, ...]]:
        """Parse `data` (after what was kept of earlier calls) into records."""

class EncodedTable(dict[str, Any]):
    """A header table that travels as `wire`, its exact encoding, and reads as a dict."""

    wire: bytes
    def __init__(self, values: Mapping[str, Any], wire: bytes) -> None: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: dict[int, Any], /) -> Self: ...

def encode_table(table: Mapping[str, Any]) -> bytes:
    """Encode a dict as an AMQP field table, length prefix included."""

def encode_properties(props: Properties | None) -> bytes:
    """Encode Properties as property flags followed by the present fields."""

def publish_method_frame(
    channel: int, exchange: str, routing_key: str, mandatory: bool = False
) -> bytes:
    """A complete Basic.Publish method frame."""

def pack_publish(
    method_frame: bytes, channel: int, properties: bytes, body: bytes, frame_max: int
) -> bytes:
    """Frames of one publish: the cached method frame, a content header, body frames."""

MAX_CACHED_FRAMES: int
# Property flags of the fields that change from one message to the next by nature (a header
# table, a correlation id, a message id): properties holding one are never shared.
PER_MESSAGE_FLAGS: int

class ChannelPublisher:
    """Basic.Publish on one channel of one connection in one call: cached method frame,
    packed frames appended to the connection's out buffer, numbered by `confirms`."""

    channel: int
    frame_max: int
    is_open: bool
    confirms: Any
    def __init__(self, channel: int, out: bytearray, frame_max: int) -> None: ...
    def publish(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        mandatory: bool = False,
    ) -> int:
        """Queue one publish; its confirm sequence number (0 without confirms), or -1 with
        nothing queued when the channel is not open."""

def pack_ack(
    channel: int, delivery_tag: int, multiple: bool, nack: bool = False, requeue: bool = True
) -> bytes:
    """A Basic.Ack (or Basic.Nack) method frame from the client."""
