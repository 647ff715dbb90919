"""A worker's sockets without a broker: what the hub gives a Connection is
written once, in order, by a greenlet that runs only while there is
something to write; what it did not write when it is cut is handed on in
its `left`. The Hub's inputs (its queue, the registry, catch-ups) handed in
by hand, with a feed that records what the Hub asks of the broker; and the
Feed's own bookkeeping with stand-in channels."""
import json
import time
from dataclasses import replace

import gevent
import pytest
from gevent.event import Event
from pika.exceptions import ChannelWrongStateError

from ridesync import contract
from ridesync.contract import CONNECTED, LEAVING, LEFT, REFILLED, live_key
from ridesync.gateway import dialects
from ridesync.gateway.sockets import hub as hub_module
from ridesync.gateway.sockets.connection import REPLACED, Connection
from ridesync.gateway.sockets.feed import Feed
from ridesync.gateway.sockets.hub import Hub
from ridesync.gateway.sockets.ledger import Notice
from ridesync.settings import process_settings

NO_BROKER = replace(process_settings(), amqp_url="amqp://127.0.0.1:1/")


class WebSocket:
    """A phone's socket: records the trip id of each frame written; `gone` makes writes fail."""

    def __init__(self):
        self.sock, self.written, self.gone, self.close_reason = None, [], False, None
        self.event = Event()
        self.writable = None  # an Event a write waits for (a phone's full TCP buffer), when set here

    def send(self, frame):
        if self.gone:
            raise OSError("the phone is gone")
        gevent.sleep(0)  # a real write switches greenlets
        if self.writable is not None:
            self.writable.wait()
        self.written.append(json.loads(frame)["data"]["id"])

    def close(self, code, reason):
        self.close_reason = (code, reason)


def notice(n):
    return Notice(contract.TRIP_CREATED, f"m{n}", contract.envelope("rider-1", {"id": n}), {})


def written(connection):
    """Until the connection's writer, if one runs, has written all it can."""
    writer = connection._writer
    if writer is not None:
        writer.join(timeout=5)
        assert writer.dead, "the writer did not finish within 5 s"


def open_connection(session="s1"):
    connection, ws = Connection("rider", "rider-1", v2=True, read_trip=lambda: None), WebSocket()
    connection.session = session
    connection.open(ws)
    connection.greet()
    return connection, ws


def test_everything_handed_over_is_written_once_in_order():
    connection, ws = open_connection()
    connection.give(notice(3))
    connection.start([notice(1), notice(2)])  # what the last socket left comes first
    written(connection)
    connection.give(notice(4))
    written(connection)
    assert ws.written == [1, 2, 3, 4]


def test_nothing_is_written_until_the_hub_lets_it_start():
    connection, ws = open_connection()
    connection.give(notice(1))
    assert connection._writer is None  # no writer: nothing can be written
    connection.start([])
    written(connection)
    assert ws.written == [1]


def test_an_idle_connection_holds_no_greenlet():
    connection, ws = open_connection()
    connection.start([])
    assert connection._writer is None
    connection.give(notice(1))
    assert connection._writer is not None
    written(connection)
    assert connection._writer is None and ws.written == [1]


def test_what_the_dialect_holds_back_is_handed_on_first_when_cut():
    """A v1 rider's payment session held until its driver_assigned (dialects.py). (Moved from test_inbox.py.)"""
    connection, ws = open_connection()
    connection.dialect = dialects.V1Rider()
    connection._read_trip = lambda: dialects.UNREAD  # TripService does not answer: the session is held
    session = Notice(contract.PAYMENT_SESSION_CREATED, "m1",
                     contract.envelope("rider-1", {"id": 1, "tripID": "t1", "sessionID": "p1"}), {})
    connection.start([session, notice(2)])
    written(connection)
    ws.gone = True
    connection.give(notice(3))
    written(connection)
    assert connection.cut() is None  # its writer is done
    assert ws.written == [2] and [n.message_id for n in connection.unwritten()] == ["m1", "m3"]


class RecordingFeed:
    """The Hub's feed, recording what the Hub asks of the broker: binds are
    ok at once unless `slow`, then when the test says (bind_ok())."""

    def __init__(self, settings, name, reader):
        self.reader, self.slow = reader, False
        self.marks, self.bound_keys, self.unbound_keys, self.catch_ups, self.waiting = [], set(), [], [], {}
        self.queue, self.ready, self.received, self.publishing = "gateway.worker.test", True, 0, 0

    def start(self):
        return self

    def mark(self, kind, role, user_id, session, body=b"", **extra):
        self.marks.append((kind, session, json.loads(body) if body else None, extra))

    def bind(self, key, then=None):
        if key in self.bound_keys and key not in self.waiting:
            return then and then()
        self.bound_keys.add(key)
        self.waiting.setdefault(key, []).extend([then] if then else [])
        if not self.slow:
            self.bind_ok(key)

    def bind_ok(self, key):
        for then in self.waiting.pop(key):
            then()

    def unbind(self, key):
        self.bound_keys.discard(key)
        self.unbound_keys.append(key)

    @property
    def bound(self):
        return len(self.bound_keys)

    def catch_up(self, role, user_id, session, since):
        self.catch_ups.append((role, user_id, session, since))


class Clock:
    """The hub's clock, which a test moves on."""

    def __init__(self):
        self.ahead = 0.0

    def __call__(self):
        return time.monotonic() + self.ahead


@pytest.fixture
def hub(monkeypatch):
    """A worker's Hub whose feed is a RecordingFeed; its inputs are handed in with registry() and queued()."""
    monkeypatch.setattr(hub_module, "Feed", RecordingFeed)
    clock = Clock()
    made = Hub(replace(process_settings(), marker_wait=0.01, reconnect_window=30.0), clock)._started()
    made.feed, made.clock = made._feed, clock
    yield made
    made._publisher.close()


def registry(hub, kind, session, body=None, user_id="rider-1", **extra):
    hub.marker({"type": kind, "role": "rider", "owner": user_id, "session": session, **extra},
               json.dumps(body).encode() if body is not None else b"")


def queued(hub, *ids, user_id="rider-1"):
    for n in ids:
        hub.queued({"type": contract.TRIP_CREATED, "owner": user_id}, f"m{n}", contract.envelope(user_id, {"id": n}))


def marker_in_queue(hub, session, user_id="rider-1"):
    hub.queued({"type": CONNECTED, "role": "rider", "owner": user_id, "session": session}, f"marker-{session}", b"")


def open_here(hub, session):
    connection, ws = Connection("rider", "rider-1", v2=True, read_trip=lambda: None), WebSocket()
    connection.session = session
    hub.track(connection)
    hub.open(connection)
    connection.open(ws)
    connection.greet()
    return connection, ws


def writing_here(hub, session):
    """A socket opened here, in the registry, and written notice 1."""
    connection, ws = open_here(hub, session)
    registry(hub, CONNECTED, session)
    marker_in_queue(hub, session)
    queued(hub, 1)
    written(connection)
    return connection, ws


def kinds(hub):
    return [(kind, session) for kind, session, _body, _extra in hub.feed.marks]


def test_a_socket_is_bound_before_its_marker_goes_out_and_starts_once_the_marker_is_in_the_registry(hub):
    hub.feed.slow = True
    hub._settings = replace(hub._settings, marker_wait=10.0)
    opening = gevent.spawn(open_here, hub, "s1")
    gevent.sleep(0.01)
    assert hub.feed.marks == [] and live_key("rider", "rider-1") in hub.feed.bound_keys
    hub.feed.bind_ok(live_key("rider", "rider-1"))
    assert kinds(hub) == [(CONNECTED, "s1")]
    connection, ws = opening.get(timeout=5)  # upgraded once bound: the marker's confirm is not waited for
    queued(hub, 1)  # in its queue before its marker is read in the registry: kept for it
    assert not connection.started
    registry(hub, CONNECTED, "s1")
    marker_in_queue(hub, "s1")
    queued(hub, 2)
    written(connection)
    assert connection.started and ws.written == [1, 2]


def test_a_socket_replaced_on_another_worker_is_cut_where_the_newer_ones_marker_is_in_this_workers_queue(hub):
    connection, ws = writing_here(hub, "s1")
    registry(hub, CONNECTED, "s2")  # a newer socket, on another worker: s1 waits for its marker in this queue
    queued(hub, 2, 3)  # before the writer ran
    marker_in_queue(hub, "s2")
    queued(hub, 4)  # after the cut: the newer socket's, from its own worker's queue
    assert connection._writer is None and connection.replaced
    gevent.wait(timeout=5)  # the socket is closed by a greenlet of its own
    assert ws.close_reason == REPLACED and ws.written == [1]
    kind, session, body, _extra = hub.feed.marks[-1]
    assert (kind, session) == (LEFT, "s1")
    assert [n[1] for n in body["carried"]] == ["m2", "m3"] and "m1" in body["seen"]
    assert hub.feed.unbound_keys == []  # bound for the window yet (what comes is dropped)
    hub.clock.ahead = 31.0  # the window (30 s) is over
    hub.tick()
    assert hub.feed.unbound_keys == [live_key("rider", "rider-1")]  # it holds no other session of theirs
    hub.close(connection)
    assert kinds(hub)[-1] == (LEFT, "s1")  # cut already: no `leaving`


def test_a_notice_a_replaced_socket_was_writing_reaches_its_phone_or_the_next_socket_never_both(hub):
    connection, ws = writing_here(hub, "s1")
    ws.writable = Event()  # the phone's buffer is full: the next write waits
    queued(hub, 2, 3)
    gevent.sleep(0.01)  # the writer is in the middle of writing 2
    registry(hub, CONNECTED, "s2")
    ws.writable.set()  # the phone takes 2 just as the newer socket's marker is read: the writer is woken first
    marker_in_queue(hub, "s2")
    gevent.wait(timeout=5)
    assert ws.written == [1, 2] and ws.close_reason == REPLACED
    kind, session, body, _extra = hub.feed.marks[-1]
    assert (kind, session) == (LEFT, "s1")
    assert [n[1] for n in body["carried"]] == ["m3"]  # not m2 again


def test_a_notice_a_replaced_socket_could_not_write_in_time_goes_on_in_its_left(hub):
    hub._settings = replace(hub._settings, handover_wait=0.2)
    connection, ws = writing_here(hub, "s1")
    ws.writable = Event()  # the phone takes nothing more
    queued(hub, 2)
    gevent.sleep(0.01)
    registry(hub, CONNECTED, "s2")
    marker_in_queue(hub, "s2")
    gevent.wait(timeout=5)
    assert ws.written == [1]
    kind, session, body, _extra = hub.feed.marks[-1]
    assert (kind, session) == (LEFT, "s1") and [n[1] for n in body["carried"]] == ["m2"]


def test_a_closed_socket_says_it_is_leaving_and_hands_on_what_it_did_not_write_at_the_next_sockets_marker(hub):
    connection, ws = writing_here(hub, "s1")
    ws.gone = True
    queued(hub, 2, 3)
    written(connection)
    hub.close(connection)
    assert kinds(hub) == [(CONNECTED, "s1"), (LEAVING, "s1")]
    registry(hub, LEAVING, "s1")
    queued(hub, 4)  # the user is away: kept for them
    registry(hub, CONNECTED, "s2")
    marker_in_queue(hub, "s2")
    kind, session, body, _extra = hub.feed.marks[-1]
    assert (kind, session) == (LEFT, "s1") and [n[1] for n in body["carried"]] == ["m2", "m3", "m4"]
    assert not connection.replaced and ws.written == [1]
    registry(hub, LEFT, "s1", body)
    assert hub.connections() == []  # its `left` is in the registry: forgotten


def test_a_socket_whose_bind_came_after_its_upgrade_reads_back_what_came_before(hub):
    hub.feed.slow = True
    connection, ws = open_here(hub, "s1")  # MARKER_WAIT passes: it opens anyway
    hub.feed.bind_ok(live_key("rider", "rider-1"))
    registry(hub, CONNECTED, "s1")
    marker_in_queue(hub, "s1")
    queued(hub, 2)
    assert not connection.started and [c[2] for c in hub.feed.catch_ups] == ["s1"]
    hub.caught_up("rider", "rider-1", "s1", [({"type": contract.TRIP_CREATED, "owner": "rider-1"}, "m1",
                                               contract.envelope("rider-1", {"id": 1}))])
    written(connection)
    assert ws.written == [1, 2]


ENVELOPE = contract.envelope("rider-1", {"id": "t1"}).decode()


@pytest.mark.parametrize("body", [
    {"carried": [[contract.TRIP_CREATED, "m1", ENVELOPE, "not headers"]], "seen": []},
    {"carried": [[contract.TRIP_CREATED, "m1", ENVELOPE, {}]]},
    {"abcde": 1},
    [[contract.TRIP_CREATED, "m1", ENVELOPE, {}]],
])
def test_a_malformed_left_reaches_no_socket_and_a_good_one_still_does(hub, body):
    newer, _ws = open_here(hub, "s2")
    registry(hub, CONNECTED, "s1")  # a socket on another worker
    registry(hub, CONNECTED, "s2")  # this one cuts it, and waits for what it left
    marker_in_queue(hub, "s2")
    with pytest.raises(ValueError):
        registry(hub, LEFT, "s1", body)
    assert not newer.started
    registry(hub, LEFT, "s1", {"carried": [[contract.TRIP_CREATED, "m1", ENVELOPE, {}]], "seen": []})
    assert newer.started


class Channel:
    """A feed channel: what was published on it; a closing one refuses, as pika's does."""

    def __init__(self, is_open=True):
        self.is_open, self.published, self.bindings = is_open, [], []

    def basic_publish(self, exchange, routing_key, body, properties):
        if not self.is_open:
            raise ChannelWrongStateError("Channel is closing.")
        self.published.append((properties.headers["type"], properties.headers.get("session"), body))

    def basic_qos(self, prefetch_count, callback=None):
        if callback is not None:  # a binder's fence
            self.bindings.append(("fence", None, callback))

    def basic_consume(self, *args, **kwargs):
        pass

    def queue_bind(self, queue, exchange, routing_key, callback=None):
        assert callback is None, "a bind is sent without waiting for its bind-ok"
        self.bindings.append(("bind", routing_key, None))

    def queue_unbind(self, queue, exchange, routing_key):
        self.bindings.append(("unbind", routing_key, None))

    def add_on_close_callback(self, callback):
        pass

    def basic_ack(self, tag, multiple):
        pass

    def close(self):
        self.is_open = False


class AmqpConnection:
    """The feed's connection: channels it is asked to open, opened when the test says."""

    def __init__(self):
        self.opening, self.is_open, self.is_closed, self.is_closing = [], True, False, False

    def channel(self, on_open_callback):
        self.opening.append(on_open_callback)

    def close(self):
        self.is_open, self.is_closed = False, True


def test_a_feed_stopped_while_a_reconnect_waits_opens_no_connection():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream.stop()
    stream._connect()  # the reconnect scheduled when the broker was lost
    assert stream.stopped and stream._connection is None


def test_a_socket_that_opens_while_the_feed_channel_closes_opens_and_its_marker_goes_out_on_the_next():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream._connection = AmqpConnection()
    stream._channel = Channel(is_open=False)  # the broker closed it; its close callback has not run yet
    stream.mark(CONNECTED, "rider", "rider-1", "s1")
    reopened = Channel()
    stream._consume(reopened)
    assert [kind for kind, _session, _body in reopened.published] == [CONNECTED]


def binding_feed():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream._connection = AmqpConnection()
    stream._consume(Channel())
    binders = [Channel() for _ in stream._connection.opening]
    for open_it, binder in zip(stream._connection.opening, binders):
        open_it(binder)
    return stream, binders


def test_binds_go_out_without_waiting_and_the_fence_after_them_says_they_are_done():
    stream, binders = binding_feed()
    slot = stream._slot("live.rider.a")
    keys = ["live.rider.a", *(key for key in (f"live.rider.{n}" for n in range(100))
                              if stream._slot(key) == slot)][:3]  # three users whose keys share a channel
    called = []
    for key in keys:
        stream.bind(key, then=lambda key=key: called.append(key))
    binder = binders[slot]
    assert [(op, key) for op, key, _ in binder.bindings] == \
        [("bind", keys[0]), ("fence", None), ("bind", keys[1]), ("bind", keys[2])]
    binder.bindings[1][2](None)  # the first fence's ok: the binds after it wait for the next
    assert called == [keys[0]] and [op for op, _key, _ in binder.bindings[4:]] == ["fence"]
    binder.bindings[4][2](None)
    assert called == keys
    assert all(not other.bindings for other in binders if other is not binder)  # a user's key keeps to one channel


def test_for_a_key_bound_unbound_and_bound_again_only_the_fence_after_its_last_bind_says_it_is_bound():
    stream, binders = binding_feed()
    called = []
    stream.bind("live.rider.a", then=lambda: called.append("first"))
    stream.unbind("live.rider.a")
    stream.bind("live.rider.a", then=lambda: called.append("again"))
    stream.bind("live.rider.a", then=lambda: called.append("second socket"))
    [binder] = [binder for binder in binders if binder.bindings]
    assert [(op, key) for op, key, _ in binder.bindings] == \
        [("bind", "live.rider.a"), ("fence", None), ("unbind", "live.rider.a"), ("bind", "live.rider.a")]
    binder.bindings[1][2](None)
    assert called == []  # the fence before the unbind says nothing of the bind after it
    binder.bindings[-1][2](None)  # the fence sent after the first one's ok
    assert called == ["again", "second socket"]
    stream.bind("live.rider.a", then=lambda: called.append("bound already"))
    assert called[-1] == "bound already"


def test_a_reconnected_feed_binds_its_users_again_and_unbinds_those_it_let_go_meanwhile():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream.bind("live.rider.kept")
    stream.bind("live.rider.gone")
    stream.unbind("live.rider.gone")  # no channel open: unbound once one is
    stream._connection = AmqpConnection()
    stream._consume(Channel())
    binders = [Channel() for _ in stream._connection.opening]
    for open_it, binder in zip(stream._connection.opening, binders):
        open_it(binder)
    done = sorted((op, key) for binder in binders for op, key, _ in binder.bindings if op != "fence")
    assert done == [("bind", "live.rider.kept"), ("unbind", "live.rider.gone")]


def test_what_the_queue_gives_again_after_a_lost_connection_is_read_once():
    read = []

    class Reader:
        def queued(self, headers, message_id, body):
            read.append(message_id)

    class Method:
        def __init__(self, tag, redelivered=False):
            self.delivery_tag, self.redelivered = tag, redelivered

    class Props:
        def __init__(self, message_id):
            self.message_id, self.headers = message_id, {"type": contract.TRIP_CREATED, "owner": "rider-1"}
            self.timestamp = None

    stream = Feed(NO_BROKER, "test", reader=Reader())
    channel = Channel()
    for tag, message_id in enumerate(["m1", "m2"], 1):
        stream._on_queued(channel, Method(tag), Props(message_id), b"")
    stream._connection = connection = AmqpConnection()
    stream._on_connection_lost(connection, "test")  # before the ack: the queue gives both again
    stream._stopping = True  # no reconnect in this test
    for tag, message_id in enumerate(["m1", "m2", "m3"], 1):
        stream._on_queued(channel, Method(tag, redelivered=message_id != "m3"), Props(message_id), b"")
    assert read == ["m1", "m2", "m3"]


def test_a_queue_made_anew_is_refilled_once_every_user_held_is_bound_to_it_again():
    lost = []

    class Reader:
        def queue_lost(self, since):
            lost.append(since)

    stream = Feed(NO_BROKER, "test", reader=Reader())
    a = "live.rider.a"
    b = next(key for key in (f"live.rider.{n}" for n in range(100)) if stream._slot(key) != stream._slot(a))
    stream.bind(a)
    stream.bind(b)
    stream._connection = AmqpConnection()
    stream._gone, stream._lost_at, stream._lost_how = True, 1000.0, "with the connection"  # the passive declare's 404
    main = Channel()
    stream._consume(main)
    assert lost == [1000.0]
    binders = [Channel() for _ in stream._connection.opening]
    for open_it, binder in zip(stream._connection.opening, binders):
        open_it(binder)
    called = []
    stream.bind(a, then=lambda: called.append("a's next socket"))
    assert called == [], "bound to the lost queue, not yet to the new one"
    fences = {key: binder.bindings[i + 1][2] for binder in binders  # one bind on each: its fence after it
              for i, (op, key, _) in enumerate(binder.bindings) if op == "bind"}
    fences[a](None)
    assert called == ["a's next socket"] and main.published == []
    fences[b](None)
    assert [kind for kind, _session, _body in main.published] == [REFILLED]


def reading_feed(handover_wait):
    """A feed whose catch-ups record what they were given, and read(...) to hand it a record read back."""
    caught = []

    class Reader:
        def caught_up(self, role, user_id, session, records):
            caught.append((session, [message_id for _headers, message_id, _body in records]))

    class Method:
        delivery_tag = 1

    class Props:
        def __init__(self, message_id, at, **headers):
            self.message_id, self.timestamp, self.headers = message_id, at, headers

    stream = Feed(replace(NO_BROKER, handover_wait=handover_wait), "test", reader=Reader())
    stream._reading = AmqpConnection()

    def read(channel, message_id, at, **headers):
        stream._on_read_back(channel, Method(), Props(message_id, at, **headers), b"")
    return stream, caught, read


def test_one_read_of_the_record_serves_every_catch_up_each_from_its_own_time_until_its_marker():
    stream, caught, read = reading_feed(NO_BROKER.handover_wait)
    reading = stream._reading
    try:
        for n in range(100):  # a deploy's sockets: one read for all of them
            stream.catch_up("rider", f"r{n}", f"s{n}", 1000.0)
        assert len(reading.opening) == 1
        first = Channel()
        reading.opening[0](first)
        read(first, "m0", 1001, type=contract.TRIP_CREATED, owner="r0")
        read(first, "m1", 1001, type=contract.TRIP_CREATED, owner="r1")
        read(first, "c0", 1002, type=CONNECTED, role="rider", owner="r0", session="s0")
        read(first, "c9", 1002, type=CONNECTED, role="rider", owner="r9", session="s-later")
        assert caught == [("s0", ["m0"])]

        stream.catch_up("rider", "r9", "s-later", 1002.0)  # its marker was read already: it ends at once
        stream.catch_up("rider", "r1", "s1-again", 1003.0)  # after the read began: kept from its own time
        read(first, "m1b", 1003, type=contract.TRIP_CREATED, owner="r1")
        read(first, "c1", 1003, type=CONNECTED, role="rider", owner="r1", session="s1-again")
        assert caught[1:] == [("s-later", []), ("s1-again", ["m1b"])] and len(reading.opening) == 1

        stream.catch_up("rider", "r2", "s2-early", 900.0)  # before the read began: it begins again from there
        assert len(reading.opening) == 2 and first.is_open is False
        again = Channel()
        reading.opening[1](again)
        read(first, "m-stale", 1004, type=contract.TRIP_CREATED, owner="r2")  # the replaced read: nothing
        read(again, "m2", 950, type=contract.TRIP_CREATED, owner="r2")
        read(again, "c2", 1004, type=CONNECTED, role="rider", owner="r2", session="s2-early")
        assert caught[-1] == ("s2-early", ["m2"])

        stream._refilled = "refilled-1"
        stream.recover("rider", "r3", 1004.0)  # the queue was lost: in the same read, until the `refilled` marker
        read(again, "m3", 1004, type=contract.TRIP_CREATED, owner="r3")
        read(again, "c3", 1005, type=CONNECTED, role="rider", owner="r3", session="s3-elsewhere")
        read(again, "refilled-1", 1005, type=REFILLED)
        assert caught[-1] == (None, ["m3", "c3"]) and len(reading.opening) == 2  # its markers too: it cuts at them
    finally:
        stream.stop()


def test_a_catch_up_waits_for_a_slow_read_and_gives_up_only_when_the_read_brings_nothing():
    stream, caught, read = reading_feed(handover_wait=0.5)
    try:
        stream.catch_up("rider", "r1", "s1", 1000.0)
        stream.catch_up("rider", "r2", "s2", 1000.0)
        channel = Channel()
        stream._reading.opening[0](channel)
        for n in range(10):  # a read slowed down by a connect storm: 1 s in all, a record every 0.1 s
            gevent.sleep(0.1)
            read(channel, f"m{n}", 1001, type=contract.TRIP_CREATED, owner="r1")
        read(channel, "c1", 1002, type=CONNECTED, role="rider", owner="r1", session="s1")
        assert caught == [("s1", [f"m{n}" for n in range(10)])]
        deadline = time.monotonic() + 5
        while len(caught) < 2 and time.monotonic() < deadline:  # nothing more comes: s2's marker never does
            gevent.sleep(0.05)
        assert caught[1] == ("s2", [])
    finally:
        stream.stop()


def test_the_read_goes_on_a_while_after_the_last_catch_up_and_serves_the_next_from_what_it_read():
    stream, caught, read = reading_feed(handover_wait=0.5)
    reading = stream._reading
    try:
        stream.catch_up("rider", "r1", "s1", 1000.0)
        reading.opening[0](channel := Channel())
        for n in (1, 2):
            read(channel, f"m{n}", 1001, type=contract.TRIP_CREATED, owner=f"r{n}")
        for n in (1, 2):
            read(channel, f"c{n}", 1002, type=CONNECTED, role="rider", owner=f"r{n}", session=f"s{n}")
        stream.catch_up("rider", "r2", "s2", 1000.0)  # none waited a moment ago: the read went on
        assert caught == [("s1", ["m1"]), ("s2", ["m2"])] and len(reading.opening) == 1 and channel.is_open
        deadline = time.monotonic() + 5
        while channel.is_open and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert not channel.is_open and reading.is_open  # none waited for HANDOVER_WAIT: the read ended, not its connection
        stream.catch_up("rider", "r3", "s3", 1000.0)
        assert len(reading.opening) == 2  # the next catch-up begins another read
    finally:
        stream.stop()


def test_the_chores_go_on_after_one_fails():
    ticks, failures = [], [RuntimeError("a bug in expire")]

    class Reader:
        def tick(self):
            ticks.append(True)
            if failures:
                raise failures.pop()

    stream = Feed(NO_BROKER, "test", reader=Reader())
    stream._chores = gevent.spawn(stream._every_so_often)  # start() without its connection
    try:
        with gevent.Timeout(5, AssertionError("the chores stopped after a failure")):
            while len(ticks) < 2:
                gevent.sleep(0.05)
    finally:
        stream.stop()
