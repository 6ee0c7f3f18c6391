"""Fitting publishes kept for republishing to the frame_max of the connection they go out on.

A confirm channel keeps each unconfirmed publish as the frames it was packed into (method,
content header, body frames), split for the frame_max of its day. After a reconnect to a
broker that negotiated a smaller frame_max, those frames may be too large: the broker would
close the connection with 501 FRAME_ERROR, and recovery would send the same bytes again,
forever. `fit_to_frame_max` re-splits the body; a content header that no longer fits at all
raises `PropertiesTooLarge`, the error a fresh publish of the same message would raise.

Rare path (once per reconnect, per kept publish): plain Python, no hot-path constraints.
"""

from __future__ import annotations

import struct

from . import _speedups
from ._speedups import FRAME_BODY, FRAME_HEADER, FRAME_METHOD

__all__ = ["fit_to_frame_max"]

_FRAME_HEAD = struct.Struct(">BHI")
_FRAME_OVERHEAD = 8  # 7-byte frame header + frame-end octet


def _frames(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, channel, payload start, payload end) of each frame in `data`."""
    frames = []
    pos = 0
    while pos < len(data):
        ftype, channel, size = _FRAME_HEAD.unpack_from(data, pos)
        frames.append((ftype, channel, pos + 7, pos + 7 + size))
        pos += 7 + size + 1
    return frames


def fit_to_frame_max(data: bytes, frame_max: int) -> bytes:
    """The frames of one packed publish, re-split for `frame_max` when any is too large.

    Args:
        data: one publish as `_speedups.pack_publish` packed it (method frame, content
            header frame, body frames).
        frame_max: the negotiated frame_max of the connection it is sent on (0: no limit).

    Returns:
        `data` itself when every frame fits, otherwise the same publish packed anew.

    Raises:
        PropertiesTooLarge: the content header alone exceeds `frame_max`.
        ValueError: `data` is not one packed publish.
    """
    frames = _frames(data)
    if not frame_max or all(
        end - start + _FRAME_OVERHEAD <= frame_max for _, _, start, end in frames
    ):
        return data
    if len(frames) < 2 or frames[0][0] != FRAME_METHOD or frames[1][0] != FRAME_HEADER:
        raise ValueError("not a packed publish: method and content header frames expected")
    _, channel, method_start, method_end = frames[0]
    _, _, header_start, header_end = frames[1]
    method_frame = data[method_start - 7 : method_end + 1]
    properties = data[header_start + 12 : header_end]  # after class, weight, body size
    body = b"".join(data[start:end] for ftype, _, start, end in frames[2:] if ftype == FRAME_BODY)
    return _speedups.pack_publish(method_frame, channel, properties, body, frame_max)
