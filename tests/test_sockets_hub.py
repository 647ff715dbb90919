"""A worker's sockets without a broker: what the hub gives a Connection is
written once, in order, by a greenlet that runs only while there is
something to write; what it did not write when it is cut is handed on in
its `left`. And the feed's records as the Hub and the Feed take them,
handed in without a broker. (Moved from test_inbox.py with the code: an
Inbox is now a Connection's queue, Inboxes the Hub and the Feed.)"""
import json
from dataclasses import replace

import gevent
import pytest
from gevent.event import Event
from pika.exceptions import ChannelWrongStateError

from ridesync import contract
from ridesync.gateway import dialects
from ridesync.gateway.sockets.connection import REPLACED, Connection
from ridesync.gateway.sockets.feed import CONNECTED, LEAVING, LEFT, Feed
from ridesync.gateway.sockets.hub import Hub
from ridesync.gateway.sockets.ledger import Notice
from ridesync.settings import process_settings
NO_BROKER = replace(process_settings(), amqp_url="amqp://127.0.0.1:1/")


class WebSocket:
    """A phone's socket: records the trip id of each frame written; `gone` makes writes fail."""

    def __init__(self):
        self.sock, self.written, self.gone, self.close_reason = None, [], False, None
        self.event = Event()

    def send(self, frame):
        if self.gone:
            raise OSError("the phone is gone")
        gevent.sleep(0)  # a real write switches greenlets
        self.written.append(json.loads(frame)["data"]["id"])

    def close(self, code, reason):
        self.close_reason = (code, reason)


def notice(offset):
    return Notice(offset, contract.TRIP_CREATED, f"m{offset}", contract.envelope("rider-1", {"id": offset}), {})


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
    session = Notice(1, contract.PAYMENT_SESSION_CREATED, "m1",
                     contract.envelope("rider-1", {"id": 1, "tripID": "t1", "sessionID": "p1"}), {})
    connection.start([session, notice(2)])
    written(connection)
    ws.gone = True
    connection.give(notice(3))
    written(connection)
    assert ws.written == [2] and [n.offset for n in connection.cut()] == [1, 3]


class Record:
    """A stream record as pika hands it to the Feed."""

    def __init__(self, offset, body=b"", message_id=None, **headers):
        self.delivery_tag, self.message_id = offset, message_id or f"record-{offset}"
        self.headers = {"x-stream-offset": offset, "role": "rider", "owner": "rider-1", **headers}
        self.body = body


class Channel:
    """A feed channel: what was published on it; a closing one refuses, as pika's does."""

    def __init__(self, is_open=True):
        self.is_open, self.published = is_open, []

    def basic_publish(self, exchange, queue, body, properties):
        if not self.is_open:
            raise ChannelWrongStateError("Channel is closing.")
        self.published.append((properties.headers["type"], properties.headers["session"], body))

    def basic_consume(self, *args, **kwargs):
        pass


@pytest.fixture
def hub(monkeypatch):
    """A worker's Hub whose Feed never connects: records are handed in with feed(), markers land on .channel."""
    monkeypatch.setattr(Feed, "start", lambda feed: feed)
    made = Hub(replace(process_settings(), marker_wait=0.01))._started()
    made.channel = made._feed._channel = Channel()
    yield made
    made._publisher.close()


def feed(hub, *records):
    for record in records:
        hub._feed._on_record(None, record, record, record.body)


def open_here(hub, session):
    connection, ws = Connection("rider", "rider-1", v2=True, read_trip=lambda: None), WebSocket()
    connection.session = session
    hub.track(connection)
    hub.open(connection)
    connection.open(ws)
    connection.greet()
    return connection, ws


def test_a_closed_socket_says_it_is_leaving_and_hands_on_what_it_did_not_write_when_cut(hub):
    connection, ws = open_here(hub, "s1")
    feed(hub, Record(1, type=CONNECTED, session="s1"))
    feed(hub, Record(2, contract.envelope("rider-1", {"id": 2}), type=contract.TRIP_CREATED))
    written(connection)
    ws.gone = True
    feed(hub, Record(3, contract.envelope("rider-1", {"id": 3}), type=contract.TRIP_CREATED),
         Record(4, contract.envelope("rider-1", {"id": 4}), type=contract.TRIP_CREATED))
    written(connection)
    hub.close(connection)
    assert [kind for kind, _session, _body in hub.channel.published] == [CONNECTED, LEAVING]
    feed(hub, Record(5, type=LEAVING, session="s1"))
    kind, session, body = hub.channel.published[-1]
    assert (kind, session) == (LEFT, "s1") and [n[0] for n in json.loads(body)] == [3, 4]
    assert not connection.replaced and ws.written == [2]


def test_cut_while_open_means_replaced_and_stops_writing_at_once(hub):
    connection, ws = open_here(hub, "s1")
    feed(hub, Record(1, type=CONNECTED, session="s1"),
         Record(2, contract.envelope("rider-1", {"id": 2}), type=contract.TRIP_CREATED),
         Record(3, contract.envelope("rider-1", {"id": 3}), type=contract.TRIP_CREATED),
         Record(4, type=CONNECTED, session="s2"))  # before its writer ran: a newer socket, on another worker
    assert connection._writer is None and connection.replaced
    gevent.wait(timeout=5)  # the socket is closed by a greenlet of its own
    assert ws.close_reason == REPLACED
    kind, session, body = hub.channel.published[-1]
    assert ws.written == [] and (kind, session) == (LEFT, "s1") and [n[0] for n in json.loads(body)] == [2, 3]
    hub.close(connection)
    assert hub.channel.published[-1][0] == LEFT  # cut already: no `leaving`


ENVELOPE = contract.envelope("rider-1", {"id": "t1"}).decode()


@pytest.mark.parametrize("body, headers", [
    ([[1, contract.TRIP_CREATED, "m1", ENVELOPE, "not headers"]], {"cut": 2}),
    ({"abcde": 1}, {"cut": 2}),
    ([], {"cut": "2"}),
    ([], {"cut": 2, "role": "operator"}),
])
def test_a_malformed_left_reaches_no_socket_and_a_good_one_still_does(hub, caplog, body, headers):
    newer, _ws = open_here(hub, "s2")
    feed(hub,
         Record(1, type=CONNECTED, session="s1"),  # a socket on another worker
         Record(2, type=CONNECTED, session="s2"),  # this one cuts it, and waits for what it left
         Record(3, json.dumps(body).encode(), type=LEFT, session="s1", **headers))
    assert not newer.started and "feed record 3 (gateway.left) is malformed" in caplog.text
    feed(hub, Record(4, json.dumps([[1, contract.TRIP_CREATED, "m1", ENVELOPE, {}]]).encode(),
                     type=LEFT, session="s1", cut=2))
    assert newer.started


def test_a_feed_stopped_while_a_reconnect_waits_opens_no_connection():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream.stop()
    stream._connect()  # the reconnect scheduled when the broker was lost
    assert stream.stopped and stream._connection is None


def test_a_socket_that_opens_while_the_feed_channel_closes_opens_and_its_marker_goes_out_on_the_next():
    stream = Feed(NO_BROKER, "test", reader=None)
    stream._channel = Channel(is_open=False)  # the broker closed it; its close callback has not run yet
    stream.mark(CONNECTED, "rider", "rider-1", "s1")
    reopened = Channel()
    stream._consume(reopened)
    assert [kind for kind, _session, _body in reopened.published] == [CONNECTED]


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
