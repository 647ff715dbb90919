"""A socket's inbox, without a broker: what the Mailroom hands it is written
once, in order, by a greenlet that runs only while there is something to
write; what it did not write when it is cut is handed on. And the feed's
records as Inboxes takes them, handed in without a broker."""
import json

import gevent
import pytest
from pika.exceptions import ChannelWrongStateError

from ridesync import contract
from ridesync.gateway.inboxes import CONNECTED, LEAVING, LEFT, Inbox, Inboxes
from ridesync.gateway.mailroom import Notice


class Owner:
    """Inboxes as an inbox sees it: markers published, and what it handed on."""

    def __init__(self):
        self.marks, self.handed_on = [], None

    def mark(self, kind, inbox):
        self.marks.append(kind)

    def leave(self, inbox, unwritten):
        self.handed_on = [n.offset for n in unwritten]

    def drop_if_done(self, inbox):
        pass


class Socket:
    """A phone's write: records what it wrote; `gone` makes it fail."""

    def __init__(self):
        self.written, self.gone, self.replaced = [], False, False

    def write(self, notice):
        if self.gone:
            return False
        gevent.sleep(0)  # a real write switches greenlets
        self.written.append(notice.offset)
        return True

    def replace(self):
        self.replaced = True


def notice(offset):
    return Notice(offset, contract.TRIP_CREATED, f"m{offset}", b"{}", {})


def written(inbox):
    """Until the inbox's writer, if one runs, has written all it can."""
    writer = inbox._writer
    if writer is not None:
        writer.join(timeout=5)
        assert writer.dead, "the writer did not finish within 5 s"


def open_inbox():
    owner, socket = Owner(), Socket()
    inbox = Inbox(owner, "rider", "rider-1", "s1")
    inbox.write_to(socket.write, socket.replace)
    return inbox, owner, socket


def test_everything_handed_over_is_written_once_in_order():
    inbox, _owner, socket = open_inbox()
    inbox.put(notice(3))
    inbox.release([notice(1), notice(2)])  # what the last socket left comes first
    written(inbox)
    inbox.put(notice(4))
    written(inbox)
    assert socket.written == [1, 2, 3, 4]


def test_nothing_is_written_until_the_mailroom_lets_it_start():
    inbox, _owner, socket = open_inbox()
    inbox.put(notice(1))
    assert inbox._writer is None  # no writer: nothing can be written
    inbox.release([])
    written(inbox)
    assert socket.written == [1]


def test_an_idle_inbox_holds_no_greenlet():
    inbox, _owner, socket = open_inbox()
    inbox.release([])
    assert inbox._writer is None
    inbox.put(notice(1))
    assert inbox._writer is not None
    written(inbox)
    assert inbox._writer is None and socket.written == [1]


def test_a_closed_socket_says_it_is_leaving_and_hands_on_what_it_did_not_write_when_cut():
    inbox, owner, socket = open_inbox()
    inbox.release([notice(1)])
    written(inbox)
    socket.gone = True
    inbox.put(notice(2))
    inbox.put(notice(3))
    written(inbox)
    inbox.close()
    assert owner.marks == [LEAVING]
    inbox.cut()
    assert owner.handed_on == [2, 3] and not inbox.replaced


def test_cut_while_open_means_replaced_and_stops_writing_at_once():
    inbox, owner, socket = open_inbox()
    inbox.put(notice(1))
    inbox.put(notice(2))
    inbox.release([])
    inbox.cut()  # before its writer ran
    assert inbox._writer is None and inbox.replaced
    gevent.wait(timeout=5)  # the socket is closed by a greenlet of its own
    assert socket.replaced
    assert socket.written == [] and owner.handed_on == [1, 2]
    inbox.close()
    assert owner.marks == []  # cut already: no `leaving`


class Record:
    """A stream record as pika hands it to Inboxes."""

    def __init__(self, offset, body=b"", message_id=None, **headers):
        self.delivery_tag, self.message_id = offset, message_id or f"record-{offset}"
        self.headers = {"x-stream-offset": offset, "role": "rider", "owner": "rider-1", **headers}
        self.body = body


def feed(inboxes, *records):
    for record in records:
        inboxes._on_record(None, record, record, record.body)


ENVELOPE = contract.envelope("rider-1", {"id": "t1"}).decode()


@pytest.mark.parametrize("body, headers", [
    ([[1, contract.TRIP_CREATED, "m1", ENVELOPE, "not headers"]], {"cut": 2}),
    ({"abcde": 1}, {"cut": 2}),
    ([], {"cut": "2"}),
    ([], {"cut": 2, "role": "operator"}),
])
def test_a_malformed_left_reaches_no_socket_and_a_good_one_still_does(caplog, body, headers):
    inboxes = Inboxes("amqp://127.0.0.1:1/", 30, "test")  # never started: the feed is handed in below
    newer = inboxes.open("rider", "rider-1", "s2")
    feed(inboxes,
         Record(1, type=CONNECTED, session="s1"),  # a socket on another worker
         Record(2, type=CONNECTED, session="s2"),  # this one cuts it, and waits for what it left
         Record(3, json.dumps(body).encode(), type=LEFT, session="s1", **headers))
    assert not newer.live and "feed record 3 (gateway.left) is malformed" in caplog.text
    feed(inboxes, Record(4, json.dumps([[1, contract.TRIP_CREATED, "m1", ENVELOPE, {}]]).encode(),
                         type=LEFT, session="s1", cut=2))
    assert newer.live


def test_inboxes_stopped_while_a_reconnect_waits_open_no_connection():
    inboxes = Inboxes("amqp://127.0.0.1:1/", 30, "test")
    inboxes.stop()
    inboxes._connect()  # the reconnect scheduled when the broker was lost
    assert inboxes.stopped and inboxes._connection is None


class Channel:
    """A feed channel: what was published on it; a closing one refuses, as pika's does."""

    def __init__(self, is_open=True):
        self.is_open, self.published = is_open, []

    def basic_publish(self, exchange, queue, body, properties):
        if not self.is_open:
            raise ChannelWrongStateError("Channel is closing.")
        self.published.append(properties.headers["type"])

    def basic_consume(self, *args, **kwargs):
        pass


def test_a_socket_that_opens_while_the_feed_channel_closes_opens_and_its_marker_goes_out_on_the_next():
    inboxes = Inboxes("amqp://127.0.0.1:1/", 30, "test")
    inboxes._channel = Channel(is_open=False)  # the broker closed it; its close callback has not run yet
    inboxes.open("rider", "rider-1", "s1")
    reopened = Channel()
    inboxes._consume(reopened)
    assert reopened.published == [CONNECTED]


def test_the_chores_go_on_after_one_fails(monkeypatch):
    inboxes = Inboxes("amqp://127.0.0.1:1/", 30, "test")
    expired, failures = [], [RuntimeError("a bug in expire")]

    def expire():
        expired.append(True)
        if failures:
            raise failures.pop()
        return []

    monkeypatch.setattr(inboxes.mailroom, "expire", expire)
    inboxes._chores = gevent.spawn(inboxes._every_so_often)  # start() without its connection
    try:
        with gevent.Timeout(5, AssertionError("the chores stopped after a failure")):
            while len(expired) < 2:
                gevent.sleep(0.05)
    finally:
        inboxes.stop()


def test_what_the_writer_holds_back_is_handed_on_first_when_cut():
    """A v1 rider's payment session held until its driver_assigned (dialects.py)."""
    owner, socket, held = Owner(), Socket(), []
    inbox = Inbox(owner, "rider", "rider-1", "s1")

    def write(notice):
        if notice.offset == 1:
            held.append(notice)
            return True
        return socket.write(notice)

    inbox.write_to(write, socket.replace, held)
    inbox.release([notice(1), notice(2)])
    written(inbox)
    socket.gone = True
    inbox.put(notice(3))
    written(inbox)
    inbox.cut()
    assert socket.written == [2] and owner.handed_on == [1, 3]
