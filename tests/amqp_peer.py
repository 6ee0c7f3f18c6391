"""An in-memory AMQP 0-9-1 broker peer for the sans-IO tests, built on pamqp.

pamqp is the independent reference here: the peer parses whatever the client queued with
`pamqp.frame.unmarshal` and builds the server's frames with `pamqp.frame.marshal`, so a
test can join `AMQPConnection` and a "broker" in memory the way h11's tests join a client
and a server. Nothing here opens a socket or touches asyncio.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

from pamqp import body, commands, frame, header, heartbeat

FRAME_END = 0xCE


def method_frame(channel: int, method: Any) -> bytes:
    return frame.marshal(method, channel)


def method_payload(method: Any) -> bytes:
    """The payload of a method frame: class and method ids, then the arguments."""
    return frame.marshal(method, 0)[7:-1]


def body_chunks(data: bytes, chunk: int) -> list[bytes]:
    """`data` cut into pieces of at most `chunk` bytes (none for an empty body)."""
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def content_frames(
    channel: int,
    method: Any,
    data: bytes,
    properties: commands.Basic.Properties | None = None,
    *,
    frame_max: int = 131072,
    chunk: int | None = None,
) -> bytes:
    """A content-carrying method, its content header and body frames, encoded by pamqp.

    Body frames carry `chunk` bytes each (default: as many as frame_max allows).
    """
    chunk = chunk or frame_max - 8
    frames = [
        frame.marshal(method, channel),
        frame.marshal(header.ContentHeader(0, len(data), properties), channel),
    ]
    frames += [
        frame.marshal(body.ContentBody(piece), channel) for piece in body_chunks(data, chunk)
    ]
    return b"".join(frames)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, duplicates and out-of-range ones allowed)."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


class BrokerPeer:
    """The broker side of one connection: parses client bytes, queues server frames."""

    def __init__(self) -> None:
        self._in = b""
        self._out: list[bytes] = []
        self.protocol_header: bytes | None = None

    # -------------------------------------------------------------- client -> broker

    def receive(self, data: bytes) -> list[tuple[int, Any]]:
        """Every complete frame in `data` (plus what was buffered), as (channel, frame)."""
        self._in += bytes(data)
        frames = []
        while True:
            buf = self._in
            if buf[:4] == b"AMQP":
                if len(buf) < 8:
                    break
                self.protocol_header = buf[:8]
                self._in = buf[8:]
                continue
            if len(buf) < 8:
                break
            (size,) = struct.unpack_from(">I", buf, 3)
            if len(buf) < size + 8:
                break
            consumed, channel, parsed = frame.unmarshal(buf[: size + 8])
            assert consumed == size + 8
            frames.append((channel, parsed))
            self._in = buf[consumed:]
        return frames

    def receive_methods(self, data: bytes) -> list[tuple[int, Any]]:
        """Like receive(), but asserts that every frame is a method frame."""
        frames = self.receive(data)
        for _, parsed in frames:
            assert isinstance(parsed, commands.base.Frame), parsed
        return frames

    @property
    def pending_input(self) -> bytes:
        return self._in

    # -------------------------------------------------------------- broker -> client

    def send(self, channel: int, method: Any) -> BrokerPeer:
        self._out.append(frame.marshal(method, channel))
        return self

    def send_content(
        self,
        channel: int,
        method: Any,
        data: bytes,
        properties: commands.Basic.Properties | None = None,
        frame_max: int = 131072,
    ) -> BrokerPeer:
        self._out.append(content_frames(channel, method, data, properties, frame_max=frame_max))
        return self

    def send_heartbeat(self) -> BrokerPeer:
        self._out.append(heartbeat.Heartbeat().marshal())
        return self

    def send_raw(self, data: bytes) -> BrokerPeer:
        self._out.append(data)
        return self

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data


def start(
    mechanisms: str = "PLAIN AMQPLAIN", **server_properties: Any
) -> commands.Connection.Start:
    props = {
        "product": "RabbitMQ",
        "version": "4.0.0",
        "capabilities": {"publisher_confirms": True},
    }
    props.update(server_properties)
    return commands.Connection.Start(
        server_properties=props, mechanisms=mechanisms, locales="en_US"
    )


def handshake(
    conn: Any,
    peer: BrokerPeer,
    *,
    channel_max: int = 2047,
    frame_max: int = 131072,
    heartbeat: int = 60,
) -> tuple[list[Any], list[tuple[int, Any]]]:
    """Drive the handshake to OpenOk; returns (client events, frames the client sent)."""
    conn.initiate()
    sent = peer.receive(conn.data_to_send())
    events = conn.receive_data(peer.send(0, start()).data_to_send())
    sent += peer.receive(conn.data_to_send())
    tune = commands.Connection.Tune(channel_max, frame_max, heartbeat)
    events += conn.receive_data(peer.send(0, tune).data_to_send())
    sent += peer.receive(conn.data_to_send())
    events += conn.receive_data(peer.send(0, commands.Connection.OpenOk()).data_to_send())
    sent += peer.receive(conn.data_to_send())
    return events, sent


def open_channel(conn: Any, peer: BrokerPeer, channel: int) -> list[Any]:
    conn.open_channel(channel)
    (sent,) = peer.receive(conn.data_to_send())
    assert sent[0] == channel and isinstance(sent[1], commands.Channel.Open), sent
    return conn.receive_data(peer.send(channel, commands.Channel.OpenOk()).data_to_send())
