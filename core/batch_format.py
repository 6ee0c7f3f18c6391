"""The batch wire format: several logical messages carried by one AMQP message.

RabbitMQ routes, stores and delivers per AMQP message, so N small messages packed into one
cost the broker about 1/N of their cost one by one. A batch is an ordinary AMQP message:

- content type `application/vnd.munggoggo.batch+msgpack` (`BATCH_CONTENT_TYPE`);
- header `x-munggoggo-batch`: the number of items (`BATCH_COUNT_HEADER`; written by every
  writer, checked by readers when present);
- the other properties (app_id, type, timestamp, delivery_mode, ...) belong to every item;
- the body: a msgpack array of items; each item is a msgpack array
  `[body, content_type, headers]` where body is bin, content_type a str or nil and
  headers a map with str keys or nil. Trailing nils may be left out: `[body]` is an item
  without content type or headers.

Items of one batch share the exchange and routing key of the AMQP message. Readers refuse a
body that is not such an array, an empty array, or more than `MAX_ITEMS` items (4096)
(`BatchFormatError`): the AMQP message is then handled as any undecodable message.
`MAX_ITEMS` bounds a consumer's memory: a prefetch of P AMQP messages holds at most
P x `MAX_ITEMS` items (each a `Message` over a `Delivery`, about 350 bytes besides its body).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .envelope import DecodeError

BATCH_CONTENT_TYPE = "application/vnd.munggoggo.batch+msgpack"
BATCH_COUNT_HEADER = "x-munggoggo-batch"
# A reader's bound: a batch of more items is refused. Prefetch counts AMQP messages, not
# items: this caps what one prefetched batch costs in memory (see the module docstring).
MAX_ITEMS = 4096

# One item as a writer gives it: (body, content type or None, headers or None).
Item = tuple[bytes, str | None, dict[str, Any] | None]


class BatchFormatError(DecodeError):
    """A batch body that is not a msgpack array of items (see the module docstring)."""


class BatchItem(msgspec.Struct, array_like=True, gc=False):
    """One item of a batch as read from the wire.

    Attributes:
        body: the item's body.
        content_type: the item's content type, None if not given.
        headers: the item's headers, None if not given.
    """

    body: bytes
    content_type: str | None = None
    headers: dict[str, Any] | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[BatchItem])


# What an item `[body, content_type, headers]` adds besides the bytes of its body, content
# type and encoded headers, at most: its array header (1), the bin header of its body (up to
# 5), the str header of its content type (up to 2: at most 255 bytes) and a nil (1) for
# headers left empty.
ITEM_OVERHEAD = 9


def item_overhead(content_type: str | None, encoded_headers: int) -> int:
    """Bytes an item adds to a batch besides its body, counted from above.

    Args:
        content_type: the item's content type, or None.
        encoded_headers: the length of the item's headers encoded as msgpack (0: none).

    Returns:
        The bound in bytes.
    """
    size = ITEM_OVERHEAD + encoded_headers
    if content_type:
        size += len(content_type.encode("utf-8", "surrogateescape"))
    return size


def pack_items(items: list[Item]) -> bytes:
    """The body of a batch holding `items`, in order.

    Args:
        items: (body, content type or None, headers or None) per logical message.

    Returns:
        The msgpack body.

    Raises:
        ValueError: no items, or more than `MAX_ITEMS`.
        TypeError: a header value msgpack cannot carry.
    """
    if not items or len(items) > MAX_ITEMS:
        raise ValueError(f"a batch holds 1 to {MAX_ITEMS} items, got {len(items)}")
    return _encoder.encode(items)


def unpack_items(body: bytes, declared_count: Any = None) -> list[BatchItem]:
    """The items of a batch body, in order.

    Args:
        body: the AMQP message's body.
        declared_count: the `x-munggoggo-batch` header's value, or None when absent.

    Returns:
        The items.

    Raises:
        BatchFormatError: not a msgpack array of items, empty, more than `MAX_ITEMS`, or
            a different number of items than `declared_count` says; any failure to decode
            it (nested too deep for the decoder: RecursionError) is one of these.
    """
    try:
        items = _decoder.decode(body)
    except Exception as exc:
        raise BatchFormatError(f"malformed batch body: {type(exc).__name__}: {exc}") from None
    if not items or len(items) > MAX_ITEMS:
        raise BatchFormatError(f"a batch holds 1 to {MAX_ITEMS} items, got {len(items)}")
    if declared_count is not None and declared_count != len(items):
        raise BatchFormatError(
            f"the batch header says {declared_count!r} items, the body holds {len(items)}"
        )
    return items
