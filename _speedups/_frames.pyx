# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of `_frames_py`: frame split, delivery assembly, properties, publish packing.

Same names and behaviour as the pure-Python twin (tests hold both to identical output).
What it does differently is only how: it walks the buffer with a pointer, builds
Delivery/Properties as C-level objects, reuses the decoded string when a short string
repeats (consumer tag, exchange, routing key, content type, app id usually do), and packs
a publish into one allocation. Field tables and the error type are shared with the Python
twin: tables are off the hot path, and one FrameError class keeps `except` clauses honest.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cimport cython

from . import _frames_py
from ._frames_py import (  # noqa: F401  (re-exported: shared with the Python twin)
    DELIVER,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    CONTENT_HEADER_OVERHEAD,
    MAX_CACHED_FRAMES,
    PER_MESSAGE_FLAGS,
    EncodedTable,
    GET_OK,
    HEADER_SLACK,
    HEARTBEAT_FRAME,
    MAX_TABLE_DEPTH,
    PROPERTY_NAMES,
    R_CONFIRM,
    R_HEARTBEAT,
    R_METHOD,
    RETURN,
    FrameError,
    PropertiesTooLarge,
    check_header_fits,
    decode_table,
    encode_table,
)

import struct as _struct

cdef object _py_table = _frames_py._table
cdef object _struct_error = _struct.error
cdef object _py_encode_table = _frames_py.encode_table
cdef int _DELIVER = DELIVER
cdef int _GET_OK = GET_OK
cdef int _RETURN = RETURN
cdef Py_ssize_t _HEADER_OVERHEAD = CONTENT_HEADER_OVERHEAD
cdef Py_ssize_t _MAX_CACHED_FRAMES = MAX_CACHED_FRAMES
cdef uint16_t _PER_MESSAGE_FLAGS = PER_MESSAGE_FLAGS



# Records hold decoded wire data only, so they cannot be part of a reference cycle: the
# garbage collector need not track them (it showed up in the agent profile), and a
# freelist makes the per-message allocation cheap.
@cython.no_gc
@cython.freelist(512)
cdef class Properties:
    """AMQP basic properties, as they travel on the wire."""

    cdef public object content_type, content_encoding, headers, delivery_mode, priority
    cdef public object correlation_id, reply_to, expiration, message_id, timestamp
    cdef public object type, user_id, app_id, cluster_id

    def __init__(
        self,
        *,
        content_type=None,
        content_encoding=None,
        headers=None,
        delivery_mode=None,
        priority=None,
        correlation_id=None,
        reply_to=None,
        expiration=None,
        message_id=None,
        timestamp=None,
        type=None,
        user_id=None,
        app_id=None,
        cluster_id=None,
    ):
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.type = type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def __eq__(self, other):
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in PROPERTY_NAMES)

    def __repr__(self):
        fields = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in PROPERTY_NAMES if getattr(self, n) is not None
        )
        return f"Properties({fields})"


@cython.no_gc
@cython.freelist(512)
cdef class Delivery:
    """One assembled message: Basic.Deliver, Basic.GetOk or Basic.Return with its content.

    `properties_error`: None, or why the properties could not be decoded (then
    `properties` is empty); `properties_raw`: the encoded properties as received when they
    hold a header table, else None; see `_frames_py.Delivery`.
    """

    cdef public int channel, kind
    cdef public object consumer_tag, delivery_tag, exchange, routing_key, properties, body
    cdef public object properties_error, properties_raw
    cdef public object reply_text
    cdef public bint redelivered
    cdef public int reply_code
    cdef public object message_count

    def __init__(self, channel, kind):
        self.channel = channel
        self.kind = kind
        self.consumer_tag = ""
        self.delivery_tag = 0
        self.redelivered = False
        self.exchange = ""
        self.routing_key = ""
        self.properties = None
        self.properties_error = None
        self.properties_raw = None
        self.body = b""
        self.reply_code = 0
        self.reply_text = ""
        self.message_count = 0

    def __repr__(self):
        body = self.body
        return (
            f"Delivery(channel={self.channel}, kind={self.kind}, tag={self.delivery_tag}, "
            f"exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body={body[:32]!r}{'...' if len(body) > 32 else ''})"
        )


cdef inline Delivery _new_delivery(int channel, int kind):
    cdef Delivery d = Delivery.__new__(Delivery)
    d.channel = channel
    d.kind = kind
    d.consumer_tag = ""
    d.delivery_tag = 0
    d.redelivered = False
    d.exchange = ""
    d.routing_key = ""
    d.properties = None
    d.properties_error = None
    d.properties_raw = None
    d.body = b""
    d.reply_code = 0
    d.reply_text = ""
    d.message_count = 0
    return d


# --------------------------------------------------------------------------- decoding


cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _u64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>_u32(p) << 32) | _u32(p + 4)


cdef class _StrCache:
    """The last short string seen in one position, so a repeat costs a memcmp, not a decode."""

    cdef bytes raw
    cdef str value

    def __cinit__(self):
        self.raw = b""
        self.value = ""

    cdef str get(self, const uint8_t* p, Py_ssize_t n):
        cdef bytes raw = self.raw
        if PyBytes_GET_SIZE(raw) == n and memcmp(PyBytes_AS_STRING(raw), p, n) == 0:
            return self.value
        value = PyUnicode_DecodeUTF8(<const char*>p, n, "surrogateescape")
        if n <= 64:  # only cache the short, repeating kind
            self.raw = PyBytes_FromStringAndSize(<const char*>p, n)
            self.value = value
        return value


cdef inline Py_ssize_t _sstr_end(const uint8_t* p, Py_ssize_t pos, Py_ssize_t end) except -1:
    if pos >= end:
        raise FrameError("short string runs past the end of its frame")
    cdef Py_ssize_t stop = pos + 1 + p[pos]
    if stop > end:
        raise FrameError("short string runs past the end of its frame")
    return stop


cdef inline str _sstr(const uint8_t* p, Py_ssize_t pos, Py_ssize_t stop):
    return PyUnicode_DecodeUTF8(<const char*>(p + pos + 1), stop - pos - 1, "surrogateescape")


cdef class _PropsDecoder:
    """Decodes content-header properties, with string caches for the repeating fields."""

    cdef _StrCache content_type, app_id, type, reply_to, user_id
    # The encoded properties of the last decode, when they held a header table (sliced
    # once, for the table decoder, and kept for Delivery.properties_raw); else None.
    cdef public object raw
    # A FrameReader's decoder (share): the last Properties decoded without any of the
    # PER_MESSAGE_FLAGS fields, and their encoded bytes (flags onwards). Identical bytes
    # give that same object again: no decoding, no new object per delivery.
    cdef bint share
    cdef bytes _last_raw
    cdef Properties _last

    def __cinit__(self):
        self.content_type = _StrCache()
        self.app_id = _StrCache()
        self.type = _StrCache()
        self.reply_to = _StrCache()
        self.user_id = _StrCache()

    cdef Properties decode(self, bytes payload, Py_ssize_t start, Py_ssize_t end):
        """Decode [start, end) of payload: class..flags..properties. Sets body size in
        self.body_size."""
        self.raw = None
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(payload)
        cdef Py_ssize_t pos
        cdef Py_ssize_t stop
        cdef uint16_t flags
        if end - start < 14:
            raise FrameError("truncated content header: shorter than its fixed fields")
        if _u16(p + start) != 60:
            raise FrameError(f"content header for class {_u16(p + start)}, expected Basic (60)")
        flags = _u16(p + start + 12)
        if flags & 1:
            raise FrameError("property flags continuation is not used by class Basic")
        if flags & 0x2000:
            # Sliced once: the table decoder reads it, Delivery.properties_raw keeps it
            # (kept even when decoding fails, as the pure twin does).
            self.raw = payload[start + 12 : end]
        cdef bint shareable = self.share and not (flags & _PER_MESSAGE_FLAGS)
        cdef bytes last_raw = self._last_raw
        if shareable and last_raw is not None:
            if (
                PyBytes_GET_SIZE(last_raw) == end - start - 12
                and memcmp(PyBytes_AS_STRING(last_raw), p + start + 12, end - start - 12) == 0
            ):
                return self._last
        cdef Properties props = Properties.__new__(Properties)
        pos = start + 14
        if flags & 0x8000:
            stop = _sstr_end(p, pos, end)
            props.content_type = self.content_type.get(p + pos + 1, stop - pos - 1)
            pos = stop
        if flags & 0x4000:
            stop = _sstr_end(p, pos, end)
            props.content_encoding = _sstr(p, pos, stop)
            pos = stop
        if flags & 0x2000:
            if pos + 4 > end:
                raise FrameError("truncated content header: field table")
            try:
                # Only this header's properties: the reader's buffer may be much larger.
                props.headers, pos = _py_table(self.raw, pos - start - 12)
                pos += start + 12
            except FrameError:
                raise
            except (IndexError, ValueError, _struct_error) as exc:
                raise FrameError(f"truncated content header: {exc}") from None
        if flags & 0x1000:
            if pos + 1 > end:
                raise FrameError("truncated content header: delivery mode")
            props.delivery_mode = p[pos]
            pos += 1
        if flags & 0x0800:
            if pos + 1 > end:
                raise FrameError("truncated content header: priority")
            props.priority = p[pos]
            pos += 1
        if flags & 0x0400:
            stop = _sstr_end(p, pos, end)
            props.correlation_id = _sstr(p, pos, stop)
            pos = stop
        if flags & 0x0200:
            stop = _sstr_end(p, pos, end)
            props.reply_to = self.reply_to.get(p + pos + 1, stop - pos - 1)
            pos = stop
        if flags & 0x0100:
            stop = _sstr_end(p, pos, end)
            props.expiration = _sstr(p, pos, stop)
            pos = stop
        if flags & 0x0080:
            stop = _sstr_end(p, pos, end)
            props.message_id = _sstr(p, pos, stop)
            pos = stop
        if flags & 0x0040:
            if pos + 8 > end:
                raise FrameError("truncated content header: timestamp")
            props.timestamp = _u64(p + pos)
            pos += 8
        if flags & 0x0020:
            stop = _sstr_end(p, pos, end)
            props.type = self.type.get(p + pos + 1, stop - pos - 1)
            pos = stop
        if flags & 0x0010:
            stop = _sstr_end(p, pos, end)
            props.user_id = self.user_id.get(p + pos + 1, stop - pos - 1)
            pos = stop
        if flags & 0x0008:
            stop = _sstr_end(p, pos, end)
            props.app_id = self.app_id.get(p + pos + 1, stop - pos - 1)
            pos = stop
        if flags & 0x0004:
            stop = _sstr_end(p, pos, end)
            props.cluster_id = _sstr(p, pos, stop)
            pos = stop
        if pos != end:
            raise FrameError("content header length does not match its properties")
        if shareable:
            self._last = props
            self._last_raw = payload[start + 12 : end]
        return props


cdef _PropsDecoder _shared_props = _PropsDecoder()


def decode_properties(payload):
    """Decode a content-header payload (class, weight, size, flags, properties).

    Returns (body_size, Properties).
    """
    cdef bytes data = bytes(payload)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    props = _shared_props.decode(data, 0, PyBytes_GET_SIZE(data))
    return _u64(p + 4), props


# --------------------------------------------------------------------------- reader


cdef bint _one_consumer(list records):
    """Whether `records` (not empty) are all Basic.Deliver deliveries of one channel and
    one consumer tag."""
    cdef Py_ssize_t i, n = len(records)
    if n == 0 or type(records[0]) is not Delivery:
        return False
    cdef Delivery first = <Delivery>records[0]
    cdef Delivery d
    if first.kind != _DELIVER:
        return False
    for i in range(1, n):
        if type(records[i]) is not Delivery:
            return False
        d = <Delivery>records[i]
        if d.kind != _DELIVER or d.channel != first.channel:
            return False
        if d.consumer_tag is not first.consumer_tag and d.consumer_tag != first.consumer_tag:
            return False
    return True


@cython.no_gc
@cython.freelist(64)
cdef class _Partial:
    cdef Delivery delivery
    cdef bint header_seen
    cdef uint64_t body_size  # unsigned: the wire allows sizes past 2**63
    cdef list chunks
    cdef uint64_t received


cdef class FrameReader:
    """Turns a byte stream into records, keeping partial frames and content between calls.

    See `_frames_py.FrameReader` for the record shapes.
    """

    cdef public Py_ssize_t frame_max
    # Whether the records of the last feed() are all Basic.Deliver deliveries for one
    # consumer (one channel, one consumer tag): the connection then hands them on as they
    # are, without sorting them one by one.
    cdef readonly bint one_consumer
    cdef bytes _buf
    cdef dict _partial
    cdef _StrCache _ctag, _exchange, _rkey
    cdef _PropsDecoder _props

    def __init__(self, frame_max=131072):
        self.frame_max = frame_max
        self._buf = b""
        self._partial = {}
        self._ctag = _StrCache()
        self._exchange = _StrCache()
        self._rkey = _StrCache()
        self._props = _PropsDecoder()
        self._props.share = True

    def pending_content(self):
        """Channels with a delivery still waiting for its header or body frames."""
        return sorted(self._partial)

    def discard_channel(self, channel):
        """Forget partial content of a channel that was closed."""
        self._partial.pop(channel, None)

    def feed(self, data):
        cdef bytes buf
        if PyBytes_GET_SIZE(self._buf):
            buf = self._buf + bytes(data)
        elif type(data) is bytes:
            buf = <bytes>data
        else:
            buf = bytes(data)
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t end, start
        cdef uint8_t ftype
        cdef int channel
        cdef uint32_t size
        cdef Py_ssize_t limit = self.frame_max
        cdef list out = []
        while n - pos >= 7:
            ftype = p[pos]
            channel = _u16(p + pos + 1)
            size = _u32(p + pos + 3)
            if ftype == 0x41 and n - pos >= 4 and memcmp(p + pos, b"AMQP", 4) == 0:
                raise FrameError(
                    "the peer rejected AMQP 0-9-1 and answered with protocol header "
                    + repr(buf[pos : pos + 8])
                )
            if limit and <Py_ssize_t>size + FRAME_OVERHEAD > limit and (
                ftype != 2 or <Py_ssize_t>size + FRAME_OVERHEAD > limit + HEADER_SLACK
            ):
                raise FrameError(
                    f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {limit}"
                )
            end = pos + 7 + <Py_ssize_t>size
            if end >= n:
                break
            if p[end] != 0xCE:
                raise FrameError(f"frame end octet is {p[end]:#04x}, expected 0xce")
            start = pos + 7
            if ftype == 1:
                self._method(buf, p, start, end, channel, out)
            elif ftype == 3:
                self._body(buf, p, start, end, channel, out)
            elif ftype == 2:
                self._header(buf, start, end, channel, out)
            elif ftype == 8:
                out.append((R_HEARTBEAT, channel))
            else:
                raise FrameError(f"unknown frame type {ftype}")
            pos = end + 1
        self._buf = buf[pos:] if pos < n else b""
        self.one_consumer = _one_consumer(out)
        return out

    cdef int _method(self, bytes buf, const uint8_t* p, Py_ssize_t start, Py_ssize_t end,
                     int channel, list out) except -1:
        cdef uint16_t class_id, method_id
        cdef Py_ssize_t pos, stop
        cdef Delivery d
        cdef _Partial part
        if end - start < 4:
            raise FrameError("method frame shorter than its class and method ids")
        class_id = _u16(p + start)
        method_id = _u16(p + start + 2)
        if class_id == 60:
            pos = start + 4
            if method_id == 60:  # deliver
                self._expect_no_content(channel)
                d = _new_delivery(channel, _DELIVER)
                stop = _sstr_end(p, pos, end)
                d.consumer_tag = self._ctag.get(p + pos + 1, stop - pos - 1)
                pos = stop
                if pos + 9 > end:
                    raise FrameError("Basic.Deliver frame length does not match its fields")
                d.delivery_tag = _u64(p + pos)
                d.redelivered = p[pos + 8] & 1
                pos += 9
                stop = _sstr_end(p, pos, end)
                d.exchange = self._exchange.get(p + pos + 1, stop - pos - 1)
                pos = stop
                stop = _sstr_end(p, pos, end)
                d.routing_key = self._rkey.get(p + pos + 1, stop - pos - 1)
                if stop != end:
                    raise FrameError("Basic.Deliver frame length does not match its fields")
                self._start_content(channel, d)
                return 0
            if method_id == 80 or method_id == 120:  # ack / nack from the broker
                if end - pos != 9:
                    raise FrameError("Basic.Ack frame length does not match its fields")
                out.append((R_CONFIRM, channel, _u64(p + pos), (p[pos + 8] & 1) == 1, method_id == 120))
                return 0
            if method_id == 71:  # get-ok
                self._expect_no_content(channel)
                d = _new_delivery(channel, _GET_OK)
                if pos + 9 > end:
                    raise FrameError("Basic.GetOk frame length does not match its fields")
                d.delivery_tag = _u64(p + pos)
                d.redelivered = p[pos + 8] & 1
                pos += 9
                stop = _sstr_end(p, pos, end)
                d.exchange = self._exchange.get(p + pos + 1, stop - pos - 1)
                pos = stop
                stop = _sstr_end(p, pos, end)
                d.routing_key = self._rkey.get(p + pos + 1, stop - pos - 1)
                pos = stop
                if pos + 4 != end:
                    raise FrameError("Basic.GetOk frame length does not match its fields")
                d.message_count = _u32(p + pos)
                self._start_content(channel, d)
                return 0
            if method_id == 50:  # return
                self._expect_no_content(channel)
                d = _new_delivery(channel, _RETURN)
                if pos + 2 > end:
                    raise FrameError("Basic.Return frame length does not match its fields")
                d.reply_code = _u16(p + pos)
                pos += 2
                stop = _sstr_end(p, pos, end)
                d.reply_text = _sstr(p, pos, stop)
                pos = stop
                stop = _sstr_end(p, pos, end)
                d.exchange = _sstr(p, pos, stop)
                pos = stop
                stop = _sstr_end(p, pos, end)
                d.routing_key = _sstr(p, pos, stop)
                if stop != end:
                    raise FrameError("Basic.Return frame length does not match its fields")
                self._start_content(channel, d)
                return 0
        out.append((R_METHOD, channel, buf[start:end]))
        return 0

    cdef inline int _expect_no_content(self, int channel) except -1:
        if channel in self._partial:
            raise FrameError(
                f"channel {channel}: new content method before the last one completed"
            )
        return 0

    cdef inline void _start_content(self, int channel, Delivery d):
        cdef _Partial part = _Partial.__new__(_Partial)
        part.delivery = d
        part.header_seen = False
        part.body_size = 0
        part.chunks = None
        part.received = 0
        self._partial[channel] = part

    cdef int _header(self, bytes buf, Py_ssize_t start, Py_ssize_t end, int channel,
                     list out) except -1:
        cdef _Partial part = self._partial.get(channel)
        if part is None or part.header_seen:
            raise FrameError(f"channel {channel}: unexpected content header frame")
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf)
        if end - start < 14:
            raise FrameError("truncated content header: shorter than its fixed fields")
        cdef uint64_t body_size = _u64(p + start + 4)
        # The fixed fields frame the content: without them the stream cannot go on. The
        # properties only concern this message: if they cannot be decoded, the delivery
        # still goes out, marked, so that it can be settled as one bad message.
        if _u16(p + start) != 60:
            raise FrameError(f"content header for class {_u16(p + start)}, expected Basic (60)")
        if _u16(p + start + 12) & 1:
            raise FrameError("property flags continuation is not used by class Basic")
        try:
            part.delivery.properties = self._props.decode(buf, start, end)
        except FrameError as exc:
            part.delivery.properties = Properties.__new__(Properties)
            part.delivery.properties_error = str(exc)
        # A header table is kept as it came, for copies (the slice its decoder used).
        part.delivery.properties_raw = self._props.raw
        if body_size == 0:
            del self._partial[channel]
            out.append(part.delivery)
        else:
            part.header_seen = True
            part.body_size = body_size
        return 0

    cdef int _body(self, bytes buf, const uint8_t* p, Py_ssize_t start, Py_ssize_t end,
                   int channel, list out) except -1:
        cdef _Partial part = self._partial.get(channel)
        if part is None or not part.header_seen:
            raise FrameError(f"channel {channel}: unexpected content body frame")
        cdef Py_ssize_t length = end - start
        cdef uint64_t received = part.received + <uint64_t>length
        if received > part.body_size:
            raise FrameError(
                f"channel {channel}: body frames carry {received} bytes, "
                f"header said {part.body_size}"
            )
        cdef bytes chunk = PyBytes_FromStringAndSize(<const char*>(p + start), length)
        if received == part.body_size:
            if part.chunks is not None:
                part.chunks.append(chunk)
                part.delivery.body = b"".join(part.chunks)
            else:
                part.delivery.body = chunk
            del self._partial[channel]
            out.append(part.delivery)
        else:
            if part.chunks is None:
                part.chunks = [chunk]
            else:
                part.chunks.append(chunk)
            part.received = received
        return 0


# --------------------------------------------------------------------------- encoding


cdef inline Py_ssize_t _put_u16(char* out, Py_ssize_t pos, uint32_t v) noexcept nogil:
    out[pos] = <char>((v >> 8) & 0xFF)
    out[pos + 1] = <char>(v & 0xFF)
    return pos + 2


cdef inline Py_ssize_t _put_u32(char* out, Py_ssize_t pos, uint32_t v) noexcept nogil:
    out[pos] = <char>((v >> 24) & 0xFF)
    out[pos + 1] = <char>((v >> 16) & 0xFF)
    out[pos + 2] = <char>((v >> 8) & 0xFF)
    out[pos + 3] = <char>(v & 0xFF)
    return pos + 4


cdef inline Py_ssize_t _put_u64(char* out, Py_ssize_t pos, uint64_t v) noexcept nogil:
    _put_u32(out, pos, <uint32_t>(v >> 32))
    return _put_u32(out, pos + 4, <uint32_t>v)  # truncation keeps the low 32 bits


cdef bytes _shortstr_bytes(value):
    cdef bytes raw
    if isinstance(value, str):
        raw = (<str>value).encode("utf-8", "surrogateescape")
    else:
        raw = bytes(value)
    if PyBytes_GET_SIZE(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {raw[:40]!r}...")
    return raw


def encode_properties(props):
    """Encode Properties as property flags followed by the present fields.

    Raises ValueError for values the wire cannot carry.
    """
    if props is None:
        return b"\x00\x00"
    cdef uint16_t flags = 0
    cdef list parts = [b""]
    if props.content_type is not None:
        flags |= 0x8000
        parts.append(_pack_sstr(props.content_type))
    if props.content_encoding is not None:
        flags |= 0x4000
        parts.append(_pack_sstr(props.content_encoding))
    if props.headers is not None:
        flags |= 0x2000
        parts.append(_py_encode_table(props.headers))
    if props.delivery_mode is not None:
        flags |= 0x1000
        parts.append(_pack_octet(props.delivery_mode, "delivery_mode"))
    if props.priority is not None:
        flags |= 0x0800
        parts.append(_pack_octet(props.priority, "priority"))
    if props.correlation_id is not None:
        flags |= 0x0400
        parts.append(_pack_sstr(props.correlation_id))
    if props.reply_to is not None:
        flags |= 0x0200
        parts.append(_pack_sstr(props.reply_to))
    if props.expiration is not None:
        flags |= 0x0100
        parts.append(_pack_sstr(props.expiration))
    if props.message_id is not None:
        flags |= 0x0080
        parts.append(_pack_sstr(props.message_id))
    if props.timestamp is not None:
        flags |= 0x0040
        parts.append(_pack_u64(props.timestamp))
    if props.type is not None:
        flags |= 0x0020
        parts.append(_pack_sstr(props.type))
    if props.user_id is not None:
        flags |= 0x0010
        parts.append(_pack_sstr(props.user_id))
    if props.app_id is not None:
        flags |= 0x0008
        parts.append(_pack_sstr(props.app_id))
    if props.cluster_id is not None:
        flags |= 0x0004
        parts.append(_pack_sstr(props.cluster_id))
    parts[0] = bytes(((flags >> 8) & 0xFF, flags & 0xFF))
    return b"".join(parts)


cdef bytes _pack_sstr(value):
    cdef bytes raw = _shortstr_bytes(value)
    return bytes((PyBytes_GET_SIZE(raw),)) + raw


cdef bytes _pack_octet(value, str name):
    if not isinstance(value, int) or value < 0 or value > 255:
        raise ValueError(f"property out of range for AMQP: {name}={value!r} is not an octet")
    return bytes((value,))


cdef bytes _pack_u64(value):
    if not isinstance(value, int) or value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"property out of range for AMQP: timestamp={value!r}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8)
    _put_u64(PyBytes_AS_STRING(out), 0, <uint64_t>value)
    return out


def publish_method_frame(channel, exchange, routing_key, mandatory=False):
    """A complete Basic.Publish method frame; callers cache it per (exchange, routing key)."""
    cdef bytes ex = _shortstr_bytes(exchange)
    cdef bytes rk = _shortstr_bytes(routing_key)
    cdef Py_ssize_t ex_len = PyBytes_GET_SIZE(ex)
    cdef Py_ssize_t rk_len = PyBytes_GET_SIZE(rk)
    cdef Py_ssize_t payload = 6 + 1 + ex_len + 1 + rk_len + 1
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, 7 + payload + 1)
    cdef char* out = PyBytes_AS_STRING(frame)
    cdef Py_ssize_t pos = 0
    out[0] = 1
    pos = _put_u16(out, 1, channel)
    pos = _put_u32(out, pos, <uint32_t>payload)
    memcpy(out + pos, b"\x00\x3c\x00\x28\x00\x00", 6)
    pos += 6
    out[pos] = <char>ex_len
    memcpy(out + pos + 1, PyBytes_AS_STRING(ex), ex_len)
    pos += 1 + ex_len
    out[pos] = <char>rk_len
    memcpy(out + pos + 1, PyBytes_AS_STRING(rk), rk_len)
    pos += 1 + rk_len
    out[pos] = 1 if mandatory else 0
    out[pos + 1] = <char>0xCE
    return frame


def pack_publish(bytes method_frame not None, int channel, bytes properties not None, body,
                 Py_ssize_t frame_max):
    """Frames of one publish in one allocation: method frame, content header, body frames.

    Raises PropertiesTooLarge when the content header alone exceeds frame_max.
    """
    return _pack_publish(method_frame, channel, properties, body, frame_max)


cdef bytes _pack_publish(bytes method_frame, int channel, bytes properties, body,
                         Py_ssize_t frame_max):
    cdef bytes body_bytes
    if type(body) is bytes:
        body_bytes = <bytes>body
    else:
        body_bytes = bytes(body)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(body_bytes)
    cdef Py_ssize_t mlen = PyBytes_GET_SIZE(method_frame)
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(properties)
    if frame_max and plen + _HEADER_OVERHEAD > frame_max:
        check_header_fits(plen, frame_max)  # raises PropertiesTooLarge, nothing is packed
    cdef Py_ssize_t chunk = frame_max - FRAME_OVERHEAD if frame_max else size
    if chunk <= 0:
        chunk = size if size else 1
    cdef Py_ssize_t nframes = (size + chunk - 1) // chunk if size else 0
    cdef Py_ssize_t total = mlen + 7 + 12 + plen + 1 + nframes * FRAME_OVERHEAD + size
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, total)
    cdef char* out = PyBytes_AS_STRING(frame)
    cdef const char* src = PyBytes_AS_STRING(body_bytes)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t offset = 0
    cdef Py_ssize_t piece
    memcpy(out, PyBytes_AS_STRING(method_frame), mlen)
    pos = mlen
    out[pos] = 2
    pos = _put_u16(out, pos + 1, channel)
    pos = _put_u32(out, pos, <uint32_t>(12 + plen))
    memcpy(out + pos, b"\x00\x3c\x00\x00", 4)
    pos = _put_u64(out, pos + 4, <uint64_t>size)
    memcpy(out + pos, PyBytes_AS_STRING(properties), plen)
    pos += plen
    out[pos] = <char>0xCE
    pos += 1
    while offset < size:
        piece = size - offset
        if piece > chunk:
            piece = chunk
        out[pos] = 3
        pos = _put_u16(out, pos + 1, channel)
        pos = _put_u32(out, pos, <uint32_t>piece)
        memcpy(out + pos, src + offset, piece)
        pos += piece
        out[pos] = <char>0xCE
        pos += 1
        offset += piece
    return frame


# Matches no exchange or routing key: the identity cache's value before the first publish.
cdef object _NO_ROUTE = object()


cdef class ChannelPublisher:
    """Basic.Publish on one channel of one connection in one call (see `_frames_py`):
    the method frame cached per (exchange, routing key, mandatory) -- the last one by
    identity, the others in a bounded dict --, packed with properties and body, appended
    to the connection's out buffer and numbered by the channel's ConfirmTracker."""

    cdef readonly int channel
    cdef bytearray _out
    cdef dict _frames
    cdef object _last_exchange, _last_routing_key
    cdef bint _last_mandatory
    cdef bytes _last_frame
    cdef public Py_ssize_t frame_max
    cdef public bint is_open
    cdef public object confirms

    def __init__(self, int channel, bytearray out, Py_ssize_t frame_max):
        self.channel = channel
        self._out = out
        self._frames = {}
        # Not None: publish(None, None, ...) must miss the cache and fail as the twin does.
        self._last_exchange = _NO_ROUTE
        self._last_routing_key = _NO_ROUTE
        self._last_mandatory = False
        self._last_frame = None
        self.frame_max = frame_max
        self.is_open = False
        self.confirms = None

    def publish(self, exchange, routing_key, bytes properties not None, body,
                bint mandatory=False):
        """Queue one publish; returns its confirm sequence number (0 without confirms),
        or -1 with nothing queued when the channel is not open."""
        cdef bytes method_frame
        cdef tuple key
        if not self.is_open:
            return -1
        if (
            exchange is self._last_exchange
            and routing_key is self._last_routing_key
            and mandatory == self._last_mandatory
        ):
            method_frame = self._last_frame
        else:
            key = (exchange, routing_key, mandatory)
            method_frame = self._frames.get(key)
            if method_frame is None:
                method_frame = publish_method_frame(self.channel, exchange, routing_key, mandatory)
                if len(self._frames) < _MAX_CACHED_FRAMES:  # routing keys may be unbounded
                    self._frames[key] = method_frame
            self._last_exchange = exchange
            self._last_routing_key = routing_key
            self._last_mandatory = mandatory
            self._last_frame = method_frame
        cdef bytes data = _pack_publish(method_frame, self.channel, properties, body, self.frame_max)
        cdef bytearray out = self._out
        cdef Py_ssize_t used = PyByteArray_GET_SIZE(out)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        PyByteArray_Resize(out, used + size)
        memcpy(PyByteArray_AS_STRING(out) + used, PyBytes_AS_STRING(data), size)
        confirms = self.confirms
        if confirms is not None:
            return confirms.add(data)
        return 0


def pack_ack(int channel, delivery_tag, multiple, nack=False, requeue=True):
    """A Basic.Ack (or Basic.Nack) method frame from the client."""
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, 21)
    cdef char* out = PyBytes_AS_STRING(frame)
    out[0] = 1
    _put_u16(out, 1, channel)
    _put_u32(out, 3, 13)
    _put_u16(out, 7, 60)
    _put_u16(out, 9, 120 if nack else 80)
    _put_u64(out, 11, <uint64_t>delivery_tag)
    if nack:
        out[19] = (1 if multiple else 0) | (2 if requeue else 0)
    else:
        out[19] = 1 if multiple else 0
    out[20] = <char>0xCE
    return frame
