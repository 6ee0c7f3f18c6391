"""Tests for munggoggo.amqp.AMQPConnection, the sans-IO protocol layer.

The connection is joined in memory to a pamqp-based broker peer (tests/amqp_peer.py): the
peer parses every byte the client queues and produces the broker's frames. No sockets, no
event loop.
"""

from __future__ import annotations

import struct

import pytest
from amqp_peer import (
    BrokerPeer,
    content_frames,
    handshake,
    method_frame,
    open_channel,
    split,
    start,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, header, heartbeat
from twins import CONFIRM_TWINS, FRAME_TWINS

from munggoggo import _speedups
from munggoggo.amqp import (
    AMQPConnection,
    AuthenticationError,
    BrokerError,
    ChanState,
    ConnState,
    LocalProtocolError,
    RemoteProtocolError,
    errors,
    events,
)

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

# Each test runs on every twin of the hot paths, as tests/test_frames.py does: the layer
# looks up `_speedups.FrameReader`, `pack_publish`, ... when it runs, so pointing those names
# at one twin's module makes the whole layer (parser fuzzing included) run on it.
TWINS = list(zip(("pure-python", "compiled"), FRAME_TWINS, CONFIRM_TWINS, strict=False))
_FRAMES_NAMES = (
    "FrameReader",
    "Delivery",
    "Properties",
    "encode_properties",
    "decode_properties",
    "encode_table",
    "decode_table",
    "publish_method_frame",
    "pack_publish",
    "pack_ack",
)
_CONFIRMS_NAMES = ("ConfirmTracker", "AckTracker")


@pytest.fixture(scope="module", params=TWINS, ids=lambda twin: twin[0], autouse=True)
def twin(request):
    _, frames, confirms = request.param
    with pytest.MonkeyPatch.context() as patch:
        for attr in _FRAMES_NAMES:
            patch.setattr(_speedups, attr, getattr(frames, attr))
        for attr in _CONFIRMS_NAMES:
            patch.setattr(_speedups, attr, getattr(confirms, attr))
        yield request.param


def test_the_protocol_layer_runs_on_the_twin_under_test(twin):
    _, frames, confirms = twin
    conn, peer = with_channel(1)
    assert type(conn._reader) is frames.FrameReader
    conn.publish(1, "", "q", b"x", b"\x00\x00")
    assert [f.name for _, f in sent(conn, peer)] == [
        "Basic.Publish",
        "ContentHeader",
        "ContentBody",
    ]
    assert isinstance(_speedups.ConfirmTracker(), confirms.ConfirmTracker)


def test_tls_where_amqp_was_expected_says_use_amqps():
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    tls_alert = b"\x15\x03\x03\x00\x02\x02\x46"  # what a TLS port answers to AMQP bytes
    with pytest.raises(RemoteProtocolError, match=r"answered with TLS.*amqps://"):
        conn.receive_data(tls_alert)


def connected(frame_max=131072, **kwargs):
    """An open connection and its broker peer (frames of the handshake already consumed).

    `frame_max` is what the broker offers in Tune; kwargs go to AMQPConnection.
    """
    conn = AMQPConnection(username="user", password="s3cret", **kwargs)
    peer = BrokerPeer()
    evs, _ = handshake(conn, peer, frame_max=frame_max)
    assert [type(e) for e in evs] == [events.ConnectionOpened]
    return conn, peer


def with_channel(channel=1, **kwargs):
    conn, peer = connected(**kwargs)
    assert open_channel(conn, peer, channel) == [events.ChannelOpened(channel)]
    return conn, peer


def sent(conn, peer):
    """The frames the client queued since the last look, as (channel, pamqp frame)."""
    return peer.receive(conn.data_to_send())


def one_sent(conn, peer):
    """The one method frame the client queued."""
    frames = sent(conn, peer)
    assert len(frames) == 1, frames
    return frames[0]


def deliver(conn, peer, channel, method, data=b"", properties=None, frame_max=131072):
    return conn.receive_data(
        peer.send_content(channel, method, data, properties, frame_max).data_to_send()
    )


def receive(conn, peer, channel, method):
    return conn.receive_data(peer.send(channel, method).data_to_send())


# --------------------------------------------------------------------------- handshake


def test_full_handshake():
    conn = AMQPConnection(
        username="user",
        password="pass",
        vhost="/prod",
        heartbeat=30,
        frame_max=65536,
        channel_max=100,
        connection_name="orders-service",
    )
    peer = BrokerPeer()
    assert conn.state is ConnState.IDLE
    conn.initiate()
    assert sent(conn, peer) == []
    assert peer.protocol_header == b"AMQP\x00\x00\x09\x01"
    assert conn.state is ConnState.AWAIT_START

    assert receive(conn, peer, 0, start(cluster_name="rabbit@test")) == []
    ((channel, start_ok),) = sent(conn, peer)
    assert channel == 0
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == "\0user\0pass"
    assert start_ok.locale == "en_US"
    props = start_ok.client_properties
    assert props["product"] == "munggoggo"
    assert props["connection_name"] == "orders-service"
    for capability in (
        "consumer_cancel_notify",
        "publisher_confirms",
        "connection.blocked",
        "authentication_failure_close",
    ):
        assert props["capabilities"][capability] is True, capability
    assert conn.state is ConnState.AWAIT_TUNE

    assert receive(conn, peer, 0, commands.Connection.Tune(2047, 131072, 60)) == []
    (_, tune_ok), (_, open_) = sent(conn, peer)
    assert isinstance(tune_ok, commands.Connection.TuneOk)
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (100, 65536, 30)
    assert isinstance(open_, commands.Connection.Open)
    assert open_.virtual_host == "/prod"
    assert conn.state is ConnState.AWAIT_OPEN_OK

    (opened,) = receive(conn, peer, 0, commands.Connection.OpenOk())
    assert opened == events.ConnectionOpened(
        {
            "product": "RabbitMQ",
            "version": "4.0.0",
            "capabilities": {"publisher_confirms": True},
            "cluster_name": "rabbit@test",
        },
        100,
        65536,
        30,
    )
    assert conn.state is ConnState.OPEN
    assert sent(conn, peer) == []


def test_secure_challenge_is_answered_with_the_plain_response():
    conn = AMQPConnection(username="user", password="pass")
    peer = BrokerPeer()
    conn.initiate()
    receive(conn, peer, 0, start())
    sent(conn, peer)
    assert receive(conn, peer, 0, commands.Connection.Secure(challenge="")) == []
    ((_, secure_ok),) = sent(conn, peer)
    assert isinstance(secure_ok, commands.Connection.SecureOk)
    assert secure_ok.response == "\0user\0pass"
    assert conn.state is ConnState.AWAIT_TUNE


@pytest.mark.parametrize(
    ("ours", "theirs", "agreed"),
    [
        # (channel_max, frame_max, heartbeat)
        ((2047, 131072, 60), (2047, 131072, 60), (2047, 131072, 60)),
        ((100, 65536, 10), (2047, 131072, 60), (100, 65536, 10)),
        ((2047, 131072, 60), (50, 8192, 5), (50, 8192, 5)),
        ((2047, 131072, 60), (0, 0, 0), (2047, 131072, 60)),  # broker: no limits
        ((0, 0, 60), (300, 16384, 30), (300, 16384, 30)),  # client: no limits
        ((0, 0, 60), (0, 0, 0), (65535, 131072, 60)),
        ((2047, 131072, 0), (2047, 131072, 60), (2047, 131072, 0)),  # client disables
        ((2047, 1000, 60), (2047, 131072, 60), (2047, 4096, 60)),  # frame-min-size
    ],
)
def test_tune_negotiation(ours, theirs, agreed):
    channel_max, frame_max, heartbeat_ = ours
    conn = AMQPConnection(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat_)
    peer = BrokerPeer()
    evs, frames = handshake(
        conn, peer, channel_max=theirs[0], frame_max=theirs[1], heartbeat=theirs[2]
    )
    (tune_ok,) = [f for _, f in frames if isinstance(f, commands.Connection.TuneOk)]
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == agreed
    assert evs == [events.ConnectionOpened(dict(start().server_properties), *agreed)]
    assert (conn.channel_max, conn.frame_max, conn.heartbeat) == agreed


def test_negotiated_frame_max_limits_incoming_frames():
    conn, peer = with_channel(frame_max=4096)
    method = commands.Basic.Deliver("c", 1, False, "", "rk")
    assert deliver(conn, peer, 1, method, b"x" * 4088, frame_max=4096)[0].body == b"x" * 4088
    with pytest.raises(RemoteProtocolError, match="exceeds frame_max 4096"):
        deliver(conn, peer, 1, method, b"x" * 4089, frame_max=4097)


HANDSHAKE_BYTES = b"".join(
    [
        method_frame(0, start()),
        method_frame(0, commands.Connection.Tune(2047, 4096, 60)),
        method_frame(0, commands.Connection.OpenOk()),
    ]
)


def normalize(event):
    if isinstance(event, _speedups.Delivery):
        props = event.properties
        return (
            "delivery",
            event.channel,
            event.kind,
            event.consumer_tag,
            event.delivery_tag,
            event.redelivered,
            event.exchange,
            event.routing_key,
            event.reply_code,
            event.reply_text,
            event.message_count,
            {n: getattr(props, n) for n in _speedups.PROPERTY_NAMES},
            bytes(event.body),
        )
    if isinstance(event, events.MethodReply):
        return ("reply", event.channel, event.method.name, dict(event.method))
    if isinstance(event, events.ChannelClosed) and event.error is not None:
        e = event.error
        return ("channel-closed", event.channel, type(e), e.reply_code, e.reply_text)
    return event


def _content(channel, method, data, properties=None):
    return content_frames(channel, method, data, properties, frame_max=4096)


# What the broker says after the handshake, in three rounds; the client acts between them.
ROUND_1 = method_frame(1, commands.Channel.OpenOk()) + method_frame(2, commands.Channel.OpenOk())
ROUND_2 = b"".join(
    [
        method_frame(1, commands.Confirm.SelectOk()),
        method_frame(2, commands.Basic.ConsumeOk("ctag")),
        _content(2, commands.Basic.Deliver("ctag", 1, False, "ex", "a.b"), b"d" * 9000),
        method_frame(1, commands.Basic.Ack(1, False)),
        _content(1, commands.Basic.Return(312, "NO_ROUTE", "ex", "nowhere"), b"r" * 5000),
        method_frame(1, commands.Basic.Ack(2, True)),
        method_frame(0, commands.Connection.Blocked("low on memory")),
        heartbeat.Heartbeat().marshal(),
        _content(
            2,
            commands.Basic.Deliver("ctag", 2, True, "ex", "a.c"),
            b"",
            commands.Basic.Properties(content_type="text/plain", headers={"n": 1}),
        ),
        method_frame(0, commands.Connection.Unblocked()),
        _content(1, commands.Basic.GetOk(5, False, "", "q", 7), b"got"),
        method_frame(1, commands.Basic.Nack(3, False, False)),
        method_frame(2, commands.Basic.Cancel("ctag")),
    ]
)
ROUND_3 = method_frame(1, commands.Basic.GetEmpty()) + method_frame(
    2, commands.Channel.Close(404, "NOT_FOUND - no queue 'q'", 60, 20)
)


def run_rounds(cuts):
    """Drive a whole session; the broker's bytes of each round arrive cut at `cuts`."""
    conn = AMQPConnection(username="user", password="pass")
    peer = BrokerPeer()
    conn.initiate()
    client_out = bytearray()
    seen = []

    def broker_says(data):
        for piece in split(data, cuts):
            seen.extend(conn.receive_data(piece))
            client_out.extend(conn.data_to_send())

    broker_says(HANDSHAKE_BYTES)
    conn.open_channel(1)
    conn.open_channel(2)
    broker_says(ROUND_1)
    conn.enable_confirms(1, _speedups.ConfirmTracker())
    conn.send_method(2, commands.Basic.Consume(queue="q", consumer_tag="ctag"))
    for body in (b"one", b"two" * 3000, b"three"):
        conn.publish(1, "ex", "nowhere", body, b"\x00\x00", mandatory=True)
    conn.send_method(1, commands.Basic.Get(queue="q"))
    broker_says(ROUND_2)
    conn.send_method(1, commands.Basic.Get(queue="q"))
    broker_says(ROUND_3)
    client_out.extend(conn.data_to_send())
    peer.receive(client_out)  # the client's bytes must all be well-formed frames
    assert peer.pending_input == b""
    return [normalize(e) for e in seen], bytes(client_out)


def test_session_events_in_wire_order():
    evs, _ = run_rounds([])
    kinds = [e[0] if isinstance(e, tuple) else type(e).__name__ for e in evs]
    assert kinds == [
        "ConnectionOpened",
        "ChannelOpened",
        "ChannelOpened",
        "reply",  # Confirm.SelectOk
        "reply",  # Basic.ConsumeOk
        "delivery",
        "delivery",  # the Return
        "ConfirmsSettled",  # acks 1 and 2 before the Blocked method frame
        "Blocked",
        "delivery",
        "Unblocked",
        "delivery",  # GetOk
        "ConfirmsSettled",  # the nack: reported with its seq and frames
        "ConsumerCancelled",
        "GetEmpty",
        "channel-closed",
    ]
    assert evs[5][-1] == b"d" * 9000
    assert evs[6][2] == _speedups.RETURN
    assert evs[7] == events.ConfirmsSettled(1, 2, [])
    nack = evs[12]
    assert (nack.channel, nack.confirmed_through) == (1, 3)
    ((seq, frames),) = nack.failed
    assert seq == 3
    assert frames.endswith(b"three\xce")
    assert evs[15] == ("channel-closed", 2, errors.NotFound, 404, "NOT_FOUND - no queue 'q'")


def observable(evs):
    """What must not depend on how the bytes were cut.

    Acks without failures are coalesced per receive_data() call, so how many
    ConfirmsSettled events come out depends on the cuts. What may not: every other event
    and its order, the watermark each channel has reached when a method-borne event is
    reported (confirms are flushed before methods), the failed publishes, the final
    watermark.
    """
    watermark, failed, out = {}, [], []
    for e in evs:
        if isinstance(e, events.ConfirmsSettled):
            watermark[e.channel] = e.confirmed_through
            failed += e.failed
        elif isinstance(e, tuple) and e[0] == "delivery":
            out.append(e)  # content frames do not flush pending acks
        else:
            out.append((e, dict(watermark)))
    return out, failed, watermark


@SETTINGS
@given(cuts=st.lists(st.integers(0, 25000), max_size=40))
def test_session_is_the_same_however_the_bytes_are_cut(cuts):
    evs, client_bytes = run_rounds(cuts)
    reference_evs, reference_bytes = run_rounds([])
    assert observable(evs) == observable(reference_evs)
    assert client_bytes == reference_bytes


def test_session_fed_byte_by_byte():
    evs, client_bytes = run_rounds(list(range(25000)))
    reference_evs, reference_bytes = run_rounds([])
    assert observable(evs) == observable(reference_evs)
    assert client_bytes == reference_bytes


# --------------------------------------------------------------------------- refused logins


def _until_start_ok(conn, peer):
    conn.initiate()
    receive(conn, peer, 0, start())
    sent(conn, peer)


def test_refused_credentials_during_handshake():
    conn = AMQPConnection(username="alice", password="hunter2")
    peer = BrokerPeer()
    _until_start_ok(conn, peer)
    refusal = commands.Connection.Close(403, "ACCESS_REFUSED - Login was refused", 0, 0)
    (closed,) = receive(conn, peer, 0, refusal)
    assert isinstance(closed, events.ConnectionClosed)
    error = closed.error
    assert isinstance(error, AuthenticationError)
    assert isinstance(error, OSError)  # a connect error, as socket failures are
    assert "'alice'" in str(error)
    assert "hunter2" not in str(error) and "hunter2" not in repr(error)
    assert error.reply_code == 403
    assert conn.state is ConnState.CLOSED
    assert conn.closed_by is error
    ((_, close_ok),) = sent(conn, peer)
    assert isinstance(close_ok, commands.Connection.CloseOk)


def test_refused_vhost_during_handshake():
    conn = AMQPConnection(username="alice", password="hunter2", vhost="/secret")
    peer = BrokerPeer()
    _until_start_ok(conn, peer)
    receive(conn, peer, 0, commands.Connection.Tune(2047, 131072, 60))
    sent(conn, peer)
    refusal = commands.Connection.Close(530, "NOT_ALLOWED - access to vhost refused", 10, 40)
    (closed,) = receive(conn, peer, 0, refusal)
    assert isinstance(closed.error, AuthenticationError)
    assert "'/secret'" in str(closed.error)
    assert "'alice'" in str(closed.error)
    assert "hunter2" not in str(closed.error)
    assert closed.error.reply_code == 530
    assert isinstance(sent(conn, peer)[0][1], commands.Connection.CloseOk)


def test_broker_without_plain_is_a_protocol_error():
    conn = AMQPConnection()
    peer = BrokerPeer()
    conn.initiate()
    with pytest.raises(RemoteProtocolError, match="PLAIN"):
        receive(conn, peer, 0, start(mechanisms="AMQPLAIN EXTERNAL"))
    assert conn.state is ConnState.CLOSED
    assert sent(conn, peer) == []  # nothing was said: no StartOk with our password


# --------------------------------------------------------------------------- channels


def test_client_closes_a_channel_and_reopens_it():
    conn, peer = with_channel(3)
    conn.close_channel(3)
    ((channel, close),) = sent(conn, peer)
    assert channel == 3
    assert isinstance(close, commands.Channel.Close)
    assert close.reply_code == 200
    assert conn.channels[3].state is ChanState.CLOSING
    # a reply in flight before our Close is dropped, as the spec says
    assert receive(conn, peer, 3, commands.Basic.QosOk()) == []
    assert receive(conn, peer, 3, commands.Channel.CloseOk()) == [events.ChannelClosed(3, None)]
    assert conn.channels[3].state is ChanState.CLOSED
    assert open_channel(conn, peer, 3) == [events.ChannelOpened(3)]


def test_broker_closes_a_channel():
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Queue.Declare(queue="missing", passive=True))
    sent(conn, peer)
    close = commands.Channel.Close(404, "NOT_FOUND - no queue 'missing'", 50, 10)
    (closed,) = receive(conn, peer, 1, close)
    assert closed.channel == 1
    error = closed.error
    assert isinstance(error, errors.NotFound)
    assert isinstance(error, BrokerError)
    assert (error.reply_code, error.reply_text) == (404, "NOT_FOUND - no queue 'missing'")
    assert (error.class_id, error.method_id, error.scope) == (50, 10, "channel")
    assert "Queue.Declare" in str(error)
    ((channel, close_ok),) = sent(conn, peer)
    assert channel == 1
    assert isinstance(close_ok, commands.Channel.CloseOk)
    assert conn.channels[1].state is ChanState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.publish(1, "", "q", b"x", b"\x00\x00")


def test_a_close_whose_text_is_not_utf8_is_still_a_close():
    """RabbitMQ 3.x quotes a client's bytes raw in its reply text: the close is read (the
    text with replacement characters), the connection stays open."""
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Queue.Declare(queue="q", passive=True))
    sent(conn, peer)
    text = b"PRECONDITION_FAILED - bad x-match \xff"
    payload = (
        struct.pack(">I", commands.Channel.Close.index)
        + struct.pack(">HB", 406, len(text))
        + text
        + struct.pack(">HH", 50, 20)
    )
    frame = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    (closed,) = conn.receive_data(frame)
    assert closed.channel == 1
    assert closed.error.reply_code == 406
    assert closed.error.reply_text.startswith("PRECONDITION_FAILED - bad x-match ")
    assert conn.state is ConnState.OPEN
    ((_, close_ok),) = sent(conn, peer)
    assert isinstance(close_ok, commands.Channel.CloseOk)
    assert open_channel(conn, peer, 2) == [events.ChannelOpened(2)]


def test_a_method_that_cannot_be_encoded_leaves_the_channel_as_it_was():
    """A binding argument the wire cannot carry raises at once, with nothing expected: the
    channel's next method is answered as usual."""
    conn, peer = with_channel(1)
    with pytest.raises((TypeError, ValueError)):
        conn.send_method(
            1, commands.Queue.Bind(queue="q", exchange="x", arguments={"bad": object()})
        )
    assert sent(conn, peer) == []
    assert conn.send_method(1, commands.Queue.Declare(queue="q", passive=True))
    sent(conn, peer)
    (reply,) = receive(conn, peer, 1, commands.Queue.DeclareOk("q", 0, 0))
    assert isinstance(reply, events.MethodReply)
    assert conn.state is ConnState.OPEN


def test_both_sides_close_a_channel_at_once():
    conn, peer = with_channel(1)
    conn.close_channel(1)
    sent(conn, peer)
    (closed,) = receive(conn, peer, 1, commands.Channel.Close(406, "PRECONDITION_FAILED", 0, 0))
    assert isinstance(closed.error, errors.PreconditionFailed)
    assert isinstance(sent(conn, peer)[0][1], commands.Channel.CloseOk)
    assert conn.channels[1].state is ChanState.CLOSED


def test_partial_content_of_a_closed_channel_is_dropped():
    conn, peer = with_channel(1)
    data = content_frames(1, commands.Basic.Deliver("c", 1, False, "", "k"), b"abcd")
    body_frame = 7 + len(b"abcd") + 1
    assert conn.receive_data(data[:-body_frame]) == []  # method + header, body to come
    receive(conn, peer, 1, commands.Channel.Close(320, "CONNECTION_FORCED", 0, 0))
    assert isinstance(one_sent(conn, peer)[1], commands.Channel.CloseOk)
    open_channel(conn, peer, 1)
    # the old delivery's body would now be a frame without a header
    with pytest.raises(RemoteProtocolError, match="unexpected content body"):
        conn.receive_data(data[-body_frame:])


def test_deliveries_for_one_consumer_come_as_they_are():
    conn, _peer = with_channel(1)

    def deliver(tag, consumer="c"):
        method = commands.Basic.Deliver(consumer, tag, False, "", "k")
        return content_frames(1, method, b"x%d" % tag)

    got = conn.receive_data(deliver(1) + deliver(2))
    assert [(d.consumer_tag, d.delivery_tag, d.body) for d in got] == [
        ("c", 1, b"x1"),
        ("c", 2, b"x2"),
    ]
    assert conn.one_consumer
    got = conn.receive_data(deliver(3) + deliver(4, "other"))
    assert [(d.consumer_tag, d.delivery_tag) for d in got] == [("c", 3), ("other", 4)]
    assert not conn.one_consumer
    got = conn.receive_data(deliver(5) + method_frame(1, commands.Basic.Cancel("c")))
    assert got[0].delivery_tag == 5 and isinstance(got[1], events.ConsumerCancelled)
    assert not conn.one_consumer


# --------------------------------------------------------------------------- sync methods


SYNC_METHODS = [
    (
        commands.Exchange.Declare(
            exchange="orders",
            exchange_type="topic",
            durable=True,
            arguments={"alternate-exchange": "unrouted"},
        ),
        commands.Exchange.DeclareOk(),
    ),
    (commands.Exchange.Declare(exchange="orders", passive=True), commands.Exchange.DeclareOk()),
    (
        commands.Exchange.Bind(destination="a", source="b", routing_key="k.#", arguments={"x": 1}),
        commands.Exchange.BindOk(),
    ),
    (
        commands.Exchange.Unbind(destination="a", source="b", routing_key="k.#"),
        commands.Exchange.UnbindOk(),
    ),
    (commands.Exchange.Delete(exchange="orders", if_unused=True), commands.Exchange.DeleteOk()),
    (
        commands.Queue.Declare(
            queue="work",
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "dlx",
                "x-message-ttl": 60000,
                "x-max-length": 10_000_000_000,
            },
        ),
        commands.Queue.DeclareOk("work", 12, 3),
    ),
    (
        commands.Queue.Declare(queue="", exclusive=True, auto_delete=True),
        commands.Queue.DeclareOk("amq.gen-abc", 0, 0),
    ),
    (
        commands.Queue.Declare(queue="work", passive=True),
        commands.Queue.DeclareOk("work", 5, 1),
    ),
    (
        commands.Queue.Bind(queue="work", exchange="orders", routing_key="order.*"),
        commands.Queue.BindOk(),
    ),
    (
        commands.Queue.Unbind(queue="work", exchange="orders", routing_key="order.*"),
        commands.Queue.UnbindOk(),
    ),
    (commands.Queue.Purge(queue="work"), commands.Queue.PurgeOk(42)),
    (commands.Queue.Delete(queue="work", if_empty=True), commands.Queue.DeleteOk(7)),
    (commands.Basic.Qos(prefetch_count=50), commands.Basic.QosOk()),
    (
        commands.Basic.Consume(
            queue="work", consumer_tag="c1", exclusive=True, arguments={"x-priority": 5}
        ),
        commands.Basic.ConsumeOk("c1"),
    ),
    (commands.Basic.Cancel(consumer_tag="c1"), commands.Basic.CancelOk("c1")),
    (commands.Confirm.Select(), commands.Confirm.SelectOk()),
]


@pytest.mark.parametrize(
    ("request_", "reply"),
    SYNC_METHODS,
    ids=[f"{r.name}-{i}" for i, (r, _) in enumerate(SYNC_METHODS)],
)
def test_sync_method_round_trip(request_, reply):
    conn, peer = with_channel(5)
    assert conn.send_method(5, request_) is True
    channel, on_wire = one_sent(conn, peer)
    assert channel == 5
    assert type(on_wire) is type(request_)
    assert dict(on_wire) == dict(request_)  # arguments tables and flags survive
    (event,) = receive(conn, peer, 5, reply)
    assert isinstance(event, events.MethodReply)
    assert event.channel == 5
    assert type(event.method) is type(reply)
    assert dict(event.method) == dict(reply)


def test_replies_are_matched_in_order():
    conn, _ = with_channel(1)
    conn.send_method(1, commands.Queue.Declare(queue="a"))
    conn.send_method(1, commands.Queue.Bind(queue="a", exchange="x"))
    conn.send_method(1, commands.Basic.Qos(prefetch_count=1))
    data = b"".join(
        method_frame(1, m)
        for m in (
            commands.Queue.DeclareOk("a", 0, 0),
            commands.Queue.BindOk(),
            commands.Basic.QosOk(),
        )
    )
    assert [e.method.name for e in conn.receive_data(data)] == [
        "Queue.DeclareOk",
        "Queue.BindOk",
        "Basic.QosOk",
    ]


def test_nowait_methods_expect_no_reply():
    conn, peer = with_channel(1)
    assert conn.send_method(1, commands.Queue.Declare(queue="a", nowait=True)) is False
    assert conn.send_method(1, commands.Basic.Ack(1)) is False  # asynchronous method
    assert len(sent(conn, peer)) == 2
    with pytest.raises(RemoteProtocolError, match="expected nothing"):
        receive(conn, peer, 1, commands.Queue.DeclareOk("a", 0, 0))


def test_per_consumer_qos_stays_per_consumer():
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Basic.Qos(prefetch_count=250))
    _, qos = one_sent(conn, peer)
    assert (qos.prefetch_count, qos.prefetch_size, qos.global_) == (250, 0, False)


def test_broker_cancels_a_consumer():
    conn, peer = with_channel(1)
    (event,) = receive(conn, peer, 1, commands.Basic.Cancel(consumer_tag="c1"))
    assert event == events.ConsumerCancelled(1, "c1")
    channel, cancel_ok = one_sent(conn, peer)
    assert channel == 1
    assert isinstance(cancel_ok, commands.Basic.CancelOk)
    assert cancel_ok.consumer_tag == "c1"
    (event,) = receive(conn, peer, 1, commands.Basic.Cancel(consumer_tag="c2", nowait=True))
    assert event == events.ConsumerCancelled(1, "c2")
    assert sent(conn, peer) == []


def test_channel_flow_is_acknowledged():
    conn, peer = with_channel(1)
    (event,) = receive(conn, peer, 1, commands.Channel.Flow(active=False))
    assert event == events.ChannelFlow(1, False)
    _, flow_ok = one_sent(conn, peer)
    assert isinstance(flow_ok, commands.Channel.FlowOk)
    assert flow_ok.active is False


# --------------------------------------------------------------------------- publish / deliver


def test_publish_frames_on_the_wire():
    conn, peer = with_channel(1)
    props = _speedups.encode_properties(
        _speedups.Properties(content_type="application/json", headers={"k": "v"}, priority=3)
    )
    assert conn.publish(1, "orders", "order.created", b'{"id": 1}', props, mandatory=True) == 0
    (_, publish), (_, content_header), (_, content) = sent(conn, peer)
    assert isinstance(publish, commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key) == ("orders", "order.created")
    assert publish.mandatory is True
    assert isinstance(content_header, header.ContentHeader)
    assert content_header.body_size == 9
    assert content_header.properties.content_type == "application/json"
    assert content_header.properties.headers == {"k": "v"}
    assert content_header.properties.priority == 3
    assert isinstance(content, pamqp_body.ContentBody)
    assert content.value == b'{"id": 1}'


def test_publish_splits_bodies_larger_than_frame_max():
    conn, peer = with_channel(1, frame_max=4096)
    body = bytes(range(256)) * 64  # 16 KiB
    conn.publish(1, "", "q", body, b"\x00\x00")
    raw = conn.data_to_send()
    frames = peer.receive(raw)
    bodies = [f.value for _, f in frames if isinstance(f, pamqp_body.ContentBody)]
    assert len(bodies) == 5
    assert all(len(b) <= 4096 - 8 for b in bodies)
    assert b"".join(bodies) == body


def test_publish_with_mandatory_and_a_return():
    conn, peer = with_channel(1)
    conn.publish(1, "ex", "nowhere", b"lost", b"\x00\x00", mandatory=True)
    sent(conn, peer)
    method = commands.Basic.Return(312, "NO_ROUTE", "ex", "nowhere")
    (returned,) = deliver(conn, peer, 1, method, b"lost")
    assert isinstance(returned, _speedups.Delivery)
    assert returned.kind == _speedups.RETURN
    assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
    assert (returned.exchange, returned.routing_key, returned.body) == ("ex", "nowhere", b"lost")


def test_deliveries_are_records():
    conn, peer = with_channel(2, frame_max=4096)
    properties = commands.Basic.Properties(
        content_type="text/plain",
        correlation_id="abc",
        reply_to="amq.rabbitmq.reply-to",
        app_id="ping-1",
        message_type="rpc",
        headers={"attempt": 2, "trace": ["a", "b"]},
        delivery_mode=2,
    )
    method = commands.Basic.Deliver("ctag", 99, True, "munggoggo.topic", "ping")
    body = b"z" * 20000
    (d,) = deliver(conn, peer, 2, method, body, properties, frame_max=4096)
    assert (d.channel, d.kind, d.consumer_tag, d.delivery_tag, d.redelivered) == (
        2,
        _speedups.DELIVER,
        "ctag",
        99,
        True,
    )
    assert (d.exchange, d.routing_key) == ("munggoggo.topic", "ping")
    assert d.body == body
    p = d.properties
    assert (p.content_type, p.correlation_id, p.reply_to, p.app_id, p.type) == (
        "text/plain",
        "abc",
        "amq.rabbitmq.reply-to",
        "ping-1",
        "rpc",
    )
    assert p.headers == {"attempt": 2, "trace": ["a", "b"]}
    assert p.delivery_mode == 2


def test_get_ok_and_get_empty():
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Basic.Get(queue="q"))
    _, get = one_sent(conn, peer)
    assert get.queue == "q"
    (d,) = deliver(conn, peer, 1, commands.Basic.GetOk(4, False, "", "q", 10), b"payload")
    assert (d.kind, d.delivery_tag, d.message_count, d.body) == (
        _speedups.GET_OK,
        4,
        10,
        b"payload",
    )
    conn.send_method(1, commands.Basic.Get(queue="q"))
    assert receive(conn, peer, 1, commands.Basic.GetEmpty()) == [events.GetEmpty(1)]
    with pytest.raises(RemoteProtocolError, match=r"Basic\.GetOk"):
        deliver(conn, peer, 1, commands.Basic.GetOk(5, False, "", "q", 0), b"unasked")


def test_client_ack_nack_reject_bytes():
    conn, peer = with_channel(4)
    conn.ack(4, 10)
    conn.ack(4, 20, multiple=True)
    conn.nack(4, 21)
    conn.nack(4, 30, multiple=True, requeue=False)
    conn.reject(4, 31, requeue=False)
    frames = sent(conn, peer)
    assert all(channel == 4 for channel, _ in frames)
    got = [(f.name, *(v for _, v in f)) for _, f in frames]
    assert got == [
        ("Basic.Ack", 10, False),
        ("Basic.Ack", 20, True),
        ("Basic.Nack", 21, False, True),
        ("Basic.Nack", 30, True, False),
        ("Basic.Reject", 31, False),
    ]


# --------------------------------------------------------------------------- confirms


def confirming(channel=1):
    conn, peer = with_channel(channel)
    tracker = _speedups.ConfirmTracker()
    conn.enable_confirms(channel, tracker)
    _, select = one_sent(conn, peer)
    assert isinstance(select, commands.Confirm.Select)
    (reply,) = receive(conn, peer, channel, commands.Confirm.SelectOk())
    assert reply.method.name == "Confirm.SelectOk"
    return conn, peer, tracker


def test_confirms_settle_with_multiple_acks():
    conn, peer, tracker = confirming()
    seqs = [conn.publish(1, "", "q", b"m%d" % i, b"\x00\x00") for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    sent(conn, peer)
    assert receive(conn, peer, 1, commands.Basic.Ack(3, True)) == [events.ConfirmsSettled(1, 3, [])]
    # several acks in one read: one event, carrying the new watermark
    data = method_frame(1, commands.Basic.Ack(5, False)) + method_frame(
        1, commands.Basic.Ack(4, False)
    )
    assert conn.receive_data(data) == [events.ConfirmsSettled(1, 5, [])]
    assert tracker.confirmed_through == 5


def test_confirm_nacks_report_failed_publishes():
    conn, peer, _ = confirming()
    frames = {}
    for i in range(1, 5):
        before = len(conn._out)
        seq = conn.publish(1, "", "q", b"m%d" % i, b"\x00\x00")
        frames[seq] = bytes(conn._out[before:])
    sent(conn, peer)
    (event,) = receive(conn, peer, 1, commands.Basic.Nack(2, True, False))
    assert event == events.ConfirmsSettled(1, 2, [(1, frames[1]), (2, frames[2])])
    (event,) = receive(conn, peer, 1, commands.Basic.Nack(4, False, False))
    assert event.failed == [(4, frames[4])]
    assert event.confirmed_through == 2  # 3 is still open
    # the failed frames are complete publishes, ready to be sent again
    frames_again = BrokerPeer().receive(event.failed[0][1])
    assert isinstance(frames_again[0][1], commands.Basic.Publish)
    assert frames_again[-1][1].value == b"m4"


def test_confirm_without_confirm_mode_is_a_protocol_error():
    conn, peer = with_channel(1)
    with pytest.raises(RemoteProtocolError, match="without confirm mode"):
        receive(conn, peer, 1, commands.Basic.Ack(1, False))


# --------------------------------------------------------------------------- connection


def test_blocked_and_unblocked():
    conn, peer = connected()
    assert receive(conn, peer, 0, commands.Connection.Blocked("low on memory")) == [
        events.Blocked("low on memory")
    ]
    assert conn.blocked is True
    assert receive(conn, peer, 0, commands.Connection.Unblocked()) == [events.Unblocked()]
    assert conn.blocked is False


def test_heartbeats_both_ways():
    conn, peer = connected()
    conn.heartbeat_frame()
    ((channel, beat),) = sent(conn, peer)
    assert channel == 0
    assert isinstance(beat, heartbeat.Heartbeat)
    assert conn.receive_data(peer.send_heartbeat().data_to_send()) == []
    assert sent(conn, peer) == []  # heartbeats are not answered
    with pytest.raises(RemoteProtocolError, match="heartbeat frame on channel 3"):
        conn.receive_data(b"\x08\x00\x03\x00\x00\x00\x00\xce")


def test_client_closes_the_connection():
    conn, peer = connected()
    conn.close()
    ((channel, close),) = sent(conn, peer)
    assert channel == 0
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.reply_text) == (200, "Normal shutdown")
    assert conn.state is ConnState.CLOSING
    conn.close()  # already closing: nothing more
    assert sent(conn, peer) == []
    assert receive(conn, peer, 0, commands.Connection.CloseOk()) == [events.ConnectionClosed(None)]
    assert conn.state is ConnState.CLOSED


def test_broker_closes_the_connection():
    conn, peer = with_channel(1)
    close = commands.Connection.Close(320, "CONNECTION_FORCED - shutdown", 0, 0)
    (closed,) = receive(conn, peer, 0, close)
    assert isinstance(closed.error, errors.ConnectionForced)
    assert closed.error.scope == "connection"
    assert conn.state is ConnState.CLOSED
    assert conn.closed_by is closed.error
    assert isinstance(one_sent(conn, peer)[1], commands.Connection.CloseOk)


def test_both_sides_close_the_connection_at_once():
    conn, peer = connected()
    conn.close()
    sent(conn, peer)
    (closed,) = receive(conn, peer, 0, commands.Connection.Close(320, "CONNECTION_FORCED", 0, 0))
    assert isinstance(closed.error, errors.ConnectionForced)
    assert isinstance(one_sent(conn, peer)[1], commands.Connection.CloseOk)
    assert conn.state is ConnState.CLOSED


def test_close_during_handshake_sends_nothing():
    conn = AMQPConnection()
    peer = BrokerPeer()
    conn.initiate()
    sent(conn, peer)
    conn.close()
    assert conn.state is ConnState.CLOSED
    assert sent(conn, peer) == []


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (403, errors.AccessRefused),
        (404, errors.NotFound),
        (405, errors.ResourceLocked),
        (406, errors.PreconditionFailed),
        (320, errors.ConnectionForced),
        (530, errors.NotAllowed),
        (541, errors.InternalError),
        (599, BrokerError),  # unknown codes still carry code and text
    ],
)
def test_broker_errors_map_to_classes(code, cls):
    conn, peer = with_channel(1)
    (closed,) = receive(conn, peer, 1, commands.Channel.Close(code, "TEXT", 50, 10))
    assert type(closed.error) is cls
    assert (closed.error.reply_code, closed.error.reply_text) == (code, "TEXT")
    # after the handshake even 403 / 530 are broker errors, not login failures
    (closed,) = receive(conn, peer, 0, commands.Connection.Close(code, "TEXT", 0, 0))
    assert type(closed.error) is cls
    assert closed.error.scope == "connection"


# --------------------------------------------------------------------------- protocol errors


def assert_aborted(conn, peer, code=501):
    """The connection gave up and told the broker why."""
    assert conn.state is ConnState.CLOSED
    frames = sent(conn, peer)
    assert frames, "no Connection.Close was queued for the broker"
    channel, close = frames[-1]
    assert channel == 0
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == code
    assert close.reply_text


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\x00",  # bad frame-end octet
        b"\x07\x00\x00\x00\x00\x00\x00\xce",  # unknown frame type
        b"AMQP\x00\x00\x09\x01",
        b"\x03\x00\x01\x00\x00\x00\x02hi\xce",  # body without header
        b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x09\x99\xce",  # unknown method 10.2457
        b"\x01\x00\x00\x00\x00\x00\x05\x00\x32\x00\x0b\xff\xce",  # DeclareOk, truncated
    ],
    ids=["frame-end", "frame-type", "protocol-header", "body", "method", "truncated-method"],
)
def test_garbage_is_a_remote_protocol_error(data):
    conn, peer = with_channel(1)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(data)
    assert str(info.value)
    assert_aborted(conn, peer)


@pytest.mark.parametrize(
    ("channel", "method", "message"),
    [
        (1, commands.Exchange.DeclareOk(), "expected nothing"),
        (1, commands.Channel.OpenOk(), "Channel.OpenOk"),
        (7, commands.Basic.ConsumeOk("c"), "never opened"),
        (0, commands.Connection.Start(), "Connection.Start"),
        (0, commands.Connection.Tune(), "Connection.Tune"),
        (0, commands.Connection.OpenOk(), "Connection.OpenOk"),
        (0, commands.Connection.CloseOk(), "Connection.CloseOk"),
        (0, commands.Basic.QosOk(), "channel 0"),
        (1, commands.Channel.CloseOk(), "Channel.CloseOk"),
    ],
    ids=lambda v: v.name if hasattr(v, "name") else None,
)
def test_unexpected_methods_are_remote_protocol_errors(channel, method, message):
    conn, peer = with_channel(1)
    with pytest.raises(RemoteProtocolError, match=message):
        receive(conn, peer, channel, method)
    assert_aborted(conn, peer)


def test_reply_out_of_order_is_a_protocol_error():
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Queue.Declare(queue="a"))
    conn.send_method(1, commands.Basic.Qos(prefetch_count=1))
    sent(conn, peer)
    with pytest.raises(RemoteProtocolError, match=r"expected Queue\.DeclareOk"):
        receive(conn, peer, 1, commands.Basic.QosOk())
    assert_aborted(conn, peer)


def test_handshake_out_of_order_is_a_protocol_error():
    conn = AMQPConnection()
    peer = BrokerPeer()
    conn.initiate()
    with pytest.raises(RemoteProtocolError, match=r"Connection\.Tune"):
        receive(conn, peer, 0, commands.Connection.Tune(2047, 131072, 60))
    assert conn.state is ConnState.CLOSED


def test_get_ok_on_a_channel_never_opened_is_a_remote_error():
    conn, peer = connected()
    with pytest.raises(RemoteProtocolError):
        deliver(conn, peer, 9, commands.Basic.GetOk(1, False, "", "q", 0), b"x")
    assert_aborted(conn, peer)


random_frames = st.lists(
    st.tuples(
        st.sampled_from([1, 1, 1, 2, 3, 8]),
        st.integers(0, 2),
        st.one_of(
            st.binary(max_size=30),
            st.tuples(st.sampled_from(sorted(commands.INDEX_MAPPING)), st.binary(max_size=30)).map(
                lambda ib: ib[0].to_bytes(4, "big") + ib[1]
            ),
        ),
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(frames=random_frames)
def test_random_frames_give_events_or_remote_protocol_error(frames):
    conn, peer = with_channel(1)
    conn.send_method(1, commands.Basic.Get(queue="q"))
    data = b"".join(
        struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"
        for ftype, channel, payload in frames
    )
    try:
        conn.receive_data(data)
    except RemoteProtocolError:
        assert conn.state is ConnState.CLOSED
    peer.receive(conn.data_to_send())  # whatever it answered is well-formed


# --------------------------------------------------------------------------- local misuse


def test_publish_on_a_channel_that_is_not_open():
    conn, peer = connected()
    with pytest.raises(LocalProtocolError, match="channel 1"):
        conn.publish(1, "", "q", b"x", b"\x00\x00")
    conn.open_channel(1)
    with pytest.raises(LocalProtocolError, match="opening"):
        conn.publish(1, "", "q", b"x", b"\x00\x00")
    receive(conn, peer, 1, commands.Channel.OpenOk())
    conn.close_channel(1)
    with pytest.raises(LocalProtocolError, match="closing"):
        conn.publish(1, "", "q", b"x", b"\x00\x00")
    with pytest.raises(LocalProtocolError):
        conn.send_method(1, commands.Basic.Qos(prefetch_count=1))


def test_misuse_is_a_local_protocol_error():
    conn = AMQPConnection(channel_max=10)
    with pytest.raises(LocalProtocolError):
        conn.open_channel(1)  # not connected yet
    peer = BrokerPeer()
    handshake(conn, peer)
    for bad in (0, 11):
        with pytest.raises(LocalProtocolError, match="outside"):
            conn.open_channel(bad)
    open_channel(conn, peer, 1)
    with pytest.raises(LocalProtocolError, match=r"Channel\.Open"):
        conn.open_channel(1)  # already open
    with pytest.raises(LocalProtocolError, match="never opened"):
        conn.close_channel(2)
    with pytest.raises(LocalProtocolError, match="initiate"):
        conn.initiate()


# --------------------------------------------------------------------------- output buffer


def test_data_to_send_coalesces():
    conn, peer = with_channel(1)
    assert not conn.has_data_to_send
    conn.publish(1, "", "q", b"a", b"\x00\x00")
    conn.ack(1, 1)
    conn.send_method(1, commands.Basic.Qos(prefetch_count=5))
    conn.heartbeat_frame()
    assert conn.has_data_to_send
    data = conn.data_to_send()
    names = [f.name for _, f in peer.receive(data)]
    assert names == [
        "Basic.Publish",
        "ContentHeader",
        "ContentBody",
        "Basic.Ack",
        "Basic.Qos",
        "Heartbeat",
    ]
    assert not conn.has_data_to_send
    assert conn.data_to_send() == b""
    handed_out = bytes(data)
    conn.ack(1, 2)
    assert data == handed_out  # the buffer handed out is not written to again
    assert [f.name for _, f in sent(conn, peer)] == ["Basic.Ack"]


# --------------------------------------------------------------------------- one bad message


def _nested_headers_content(channel, tag, levels=3000):
    """Basic.Deliver of a message whose headers nest `levels` tables (RabbitMQ forwards
    those from any publisher), encoded by hand: no encoder here would produce them.
    Deeper than the ~600 that exhaust a default stack: hypothesis raises the recursion
    limit while it runs a test."""
    table = b"\x00\x00\x00\x00"
    for _ in range(levels):
        table = struct.pack(">I", len(table) + 3) + b"\x01hF" + table
    body = b"poison"
    payload = struct.pack(">HHQH", 60, 0, len(body), 0x2000) + table
    method = method_frame(channel, commands.Basic.Deliver("ctag", tag, False, "ex", "k"))
    head = struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"
    return method + head + struct.pack(">BHI", 3, channel, len(body)) + body + b"\xce"


@SETTINGS
@given(cuts=st.lists(st.integers(0, 24000), max_size=8))
def test_undecodable_headers_are_one_bad_delivery_not_a_dead_connection(cuts):
    conn, peer = with_channel(1)
    good = content_frames(1, commands.Basic.Deliver("ctag", 2, False, "ex", "k"), b"next")
    evs = []
    for piece in split(_nested_headers_content(1, 1) + good, cuts):
        evs += conn.receive_data(piece)
    assert conn.state is ConnState.OPEN
    assert conn.data_to_send() == b""  # no Connection.Close went out
    bad, after = evs
    assert (bad.delivery_tag, bad.body) == (1, b"poison")
    assert "nested deeper than" in bad.properties_error
    assert (after.delivery_tag, after.body, after.properties_error) == (2, b"next", None)
    # the bad one is settled like any other delivery
    conn.reject(1, bad.delivery_tag, requeue=False)
    ((_, reject),) = sent(conn, peer)
    assert isinstance(reject, commands.Basic.Reject)
    assert (reject.delivery_tag, reject.requeue) == (1, False)


def test_publish_with_properties_over_frame_max_is_refused_and_sends_nothing():
    conn, peer, tracker = confirming()
    props = _speedups.encode_properties(_speedups.Properties(headers={"h": "x" * 200_000}))
    with pytest.raises(_speedups.PropertiesTooLarge, match="frame_max of 131072"):
        conn.publish(1, "", "q", b"body", props)
    assert conn.data_to_send() == b""
    assert tracker.last_seq == 0  # no confirm number was taken
    assert conn.publish(1, "", "q", b"fine", b"\x00\x00") == 1
    publish, *_ = sent(conn, peer)
    assert isinstance(publish[1], commands.Basic.Publish)
