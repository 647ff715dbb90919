"""The broker side of this worker's sockets: the feed of notifications.

Every notification for a user's socket goes, besides the services' queues,
to one RabbitMQ stream (contract.NOTIFICATIONS_STREAM). Each gateway worker
reads all of it, from where it left off, and its Mailroom (mailroom.py)
says which socket here gets what. A socket's comings and goings are markers
in the same stream, so every worker sees them at the same point among the
notifications. A user costs the broker nothing: no queue, binding or
consumer of their own; a connect is one small publish.

One AMQP connection per worker, on pika's gevent adapter: its callbacks run
in gevent's hub and only hand notices to in-memory lists; the greenlet that
owns a socket writes them. pika is used from this one OS thread only, and
none of its calls here block."""
import itertools
import json
import logging
import time
import uuid

import gevent
from gevent.event import Event
from pika import BasicProperties
from pika.spec import Basic
from pika.adapters.gevent_connection import GeventConnection

from ridesync import contract, rabbit, telemetry
from ridesync.gateway.mailroom import Mailroom, Notice

log = logging.getLogger(__name__)

FEED_PREFETCH = 1000  # stream records in flight to this worker (a stream consumer needs a prefetch)
ACK_EVERY = 100  # records acked at once: a stream ack only grants credit
ACK_PAUSE = 0.2  # seconds after which records read are acked anyway
REPLAY_MARGIN = 30  # seconds read before the window when a worker starts
HANDOVER_WAIT = 5.0  # seconds a socket waits for the `left` of the one it replaced
MARKER_WAIT = 5.0  # seconds an upgrade waits for its `connected` marker to be in the stream
RECONNECT_PAUSE = 1.0
CONNECTED, LEAVING, LEFT = "gateway.connected", "gateway.leaving", "gateway.left"
_ROLES = {"rider": contract.RIDER_NOTIFICATION_KEYS, "driver": contract.DRIVER_NOTIFICATION_KEYS}


class Inbox:
    """One socket's notifications on this worker: what the Mailroom hands
    it is written, in order, by a greenlet that runs only while there is
    something to write (an idle rider holds none, bench/RESULTS.md)."""

    __slots__ = ("role", "user_id", "session", "live", "replaced", "left_in_feed", "closed", "in_feed", "_owner",
                 "_deliveries", "_held", "_write", "_writer", "_cut", "_on_replaced")

    def __init__(self, owner, role, user_id, session):
        self._owner = owner
        self.role, self.user_id, self.session = role, user_id, session
        self.live = False  # the Mailroom has let it start
        self.replaced = False  # a newer socket of the user took over
        self._deliveries = []  # handed to this socket, not yet written, oldest first
        self._held = []  # taken by the socket's writer and held back (dialects.py), older than any delivery
        self._write = None  # write(notice) -> False once the socket is gone
        self._writer = None  # the greenlet writing, while there is something to write
        self._cut = False  # gets nothing more
        self.closed = False  # the socket is gone
        self.left_in_feed = False  # its `left` is in the feed: nothing of it needs this worker
        self.in_feed = Event()  # set once the broker has its `connected` marker
        self._on_replaced = None

    def wait_in_feed(self):
        """Until the `connected` marker is in the stream: whatever is published
        for the user after that comes after it. Returns False if the broker
        did not confirm it within MARKER_WAIT (it is published when it can be,
        and what comes before it is kept, not lost)."""
        in_feed = self.in_feed.wait(MARKER_WAIT)
        self.in_feed = None
        return in_feed

    def write_to(self, write, on_replaced, held=()):
        """The socket is open: write(notice) writes to it, or keeps it in the
        list held until it can; on_replaced() closes it."""
        self._write, self._on_replaced, self._held = write, on_replaced, held
        if self.replaced:
            on_replaced()
        self._wake()

    def close(self):
        """The socket is gone; what it did not write goes to the user's next one."""
        if self.closed:
            return
        self.closed = True
        self._write = None
        self._stop_writing()
        if not self._cut:
            self._owner.mark(LEAVING, self)
        self._owner.drop_if_done(self)

    # Called by the Mailroom, in the hub.

    def put(self, notice):
        self._deliveries.append(notice)
        self._wake()

    def release(self, first):
        self._deliveries[:0] = first
        self.live = True
        self._wake()

    def cut(self):
        self._cut = True
        self._stop_writing()
        if not self.closed:
            self.replaced = True
            if self._on_replaced is not None:
                gevent.spawn(self._on_replaced)
        self._owner.leave(self, [*self._held, *self._deliveries])
        self._deliveries = []

    def _wake(self):
        if self.live and self._write is not None and self._writer is None and self._deliveries and not self._cut:
            self._writer = gevent.spawn(self._write_all)

    def _write_all(self):
        try:
            while self._deliveries and not self._cut:
                if not self._write(self._deliveries[0]):
                    self._write = None  # the socket is gone: close() hands on what is left
                    return
                self._deliveries.pop(0)
        finally:
            self._writer = None  # no switch since the list was seen empty: put cannot slip in between

    def _stop_writing(self):
        if self._writer is not None:
            self._writer.kill(block=False)  # one it was writing stays in the list: at worst, sent again
            self._writer = None


class Inboxes:
    def __init__(self, url, window_seconds, name, clock=time.monotonic):
        self._nodes = itertools.cycle(rabbit.connection_parameters(url, name))  # the next node at each reconnect
        self._replay = f"{int(window_seconds + REPLAY_MARGIN)}s"
        self.mailroom = Mailroom(window_seconds, HANDOVER_WAIT, _ROLES, clock)
        self._inboxes = {}  # session -> Inbox, until its `left` is in the feed
        self._unseen = {}  # marker id -> (headers, body): published, not yet read back from the feed
        self._unconfirmed = {}  # delivery tag -> marker id, published on the current channel
        self._published = 0  # delivery tags given on the current channel
        self._offset = None  # the last record read
        self._unacked = None  # (channel, delivery tag) of the last record read and not acked
        self._read = 0
        self._connection = None
        self._channel = None
        self._stopping = False
        self._chores = None

    def start(self):
        self._connect()
        self._chores = gevent.spawn(self._every_so_often)
        return self

    def open(self, role, user_id, session):
        """A socket of this user is opening here: from the `connected` marker
        on, nothing for them is missed, whatever the broker is doing."""
        inbox = Inbox(self, role, user_id, session)
        self._inboxes[inbox.session] = inbox
        self.mailroom.register(inbox)
        self.mark(CONNECTED, inbox)
        return inbox

    def mark(self, kind, inbox, body=b"", **extra):
        self._mark(kind, inbox.role, inbox.user_id, inbox.session, body, **extra)

    def _mark(self, kind, role, user_id, session, body=b"", **extra):
        marker = uuid.uuid4().hex
        headers = {"type": kind, "role": role, "owner": user_id, "session": session, **extra}
        self._unseen[marker] = (headers, body)
        self._publish(self._channel, marker, headers, body)

    def leave(self, inbox, unwritten):
        """The inbox was cut where the feed is now: its `left` says so, and
        carries what it did not write."""
        carried = [[n.offset, n.type, n.message_id, n.body.decode(), telemetry.text_only(n.headers)] for n in unwritten]
        self.mark(LEFT, inbox, json.dumps(carried).encode(), cut=self._offset)

    def stop(self):
        self._stopping = True
        if self._chores is not None:
            self._chores.kill(block=False)
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    @property
    def settled(self):
        """Every socket that closed here has its `left` in the feed."""
        return not self._inboxes

    @property
    def stopped(self):
        return self._stopping and (self._connection is None or self._connection.is_closed)

    @property
    def open_count(self):
        return len(self._inboxes)

    @property
    def consuming(self):
        return sum(1 for inbox in self._inboxes.values() if inbox.live)

    # The rest runs in gevent's hub, as pika callbacks.

    def _connect(self):
        if self._stopping:
            return  # stopped while this reconnect waited
        self._connection = GeventConnection(
            next(self._nodes),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel_open),
            on_open_error_callback=self._on_connection_lost,
            on_close_callback=self._on_connection_lost,
        )

    def _on_connection_lost(self, _connection, reason):
        self._channel = self._unacked = None
        if self._stopping:
            return
        log.warning("inboxes lost the broker (%s); reconnecting in %.0fs", reason, RECONNECT_PAUSE)
        gevent.spawn_later(RECONNECT_PAUSE, self._connect)

    def _on_channel_open(self, channel):
        channel.add_on_close_callback(self._on_channel_closed)
        self._unconfirmed.clear()
        self._published = 0
        channel.confirm_delivery(self._on_confirm)
        rabbit.declare_topology(channel)  # the gateway may be the first process up
        channel.basic_qos(prefetch_count=FEED_PREFETCH, callback=lambda _ok: self._consume(channel))

    def _consume(self, channel):
        start = self._replay if self._offset is None else self._offset + 1
        channel.basic_consume(contract.NOTIFICATIONS_STREAM, self._on_record, arguments={"x-stream-offset": start})
        self._channel = channel
        log.info("inboxes reading the feed from %s; %d sockets here", start, len(self._inboxes))
        for marker, (headers, body) in list(self._unseen.items()):
            self._publish(channel, marker, headers, body)

    def _on_channel_closed(self, channel, reason):
        if channel is not self._channel:
            return
        self._channel = self._unacked = None
        connection = self._connection
        if not self._stopping and connection is not None and connection.is_open:
            log.warning("feed channel closed (%s); reopening in %.0fs", reason, RECONNECT_PAUSE)
            gevent.spawn_later(RECONNECT_PAUSE, self._reopen_channel, connection)

    def _reopen_channel(self, connection):
        if not self._stopping and connection is self._connection and connection.is_open:
            connection.channel(on_open_callback=self._on_channel_open)

    def _publish(self, channel, marker, headers, body):
        """Publishes a marker, unless the channel is gone or closing: then it
        waits in _unseen for the next channel, which publishes it (_consume)."""
        if channel is None or not channel.is_open:
            return
        channel.basic_publish("", contract.NOTIFICATIONS_STREAM, body,
                              BasicProperties(message_id=marker, headers=headers, delivery_mode=2))
        self._published += 1
        self._unconfirmed[self._published] = marker

    def _on_confirm(self, frame):
        """The broker has (ack) or has not (nack: published again) a marker."""
        method = frame.method
        tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag] if method.multiple \
            else [method.delivery_tag]
        for tag in tags:
            marker = self._unconfirmed.pop(tag, None)
            if marker is not None:
                self._confirmed(marker, isinstance(method, Basic.Ack))

    def _confirmed(self, marker, taken):
        unseen = self._unseen.get(marker)
        if unseen is None:
            return
        headers, body = unseen
        if not taken:
            log.warning("broker refused the %s marker of %s %s; publishing it again",
                        headers["type"], headers["role"], headers["owner"])
            self._publish(self._channel, marker, headers, body)
        elif headers["type"] == CONNECTED:
            self._in_feed(headers["session"])

    def _in_feed(self, session):
        inbox = self._inboxes.get(session)
        if inbox is not None and inbox.in_feed is not None:
            inbox.in_feed.set()

    def _on_record(self, channel, method, props, body):
        headers = props.headers or {}
        offset = headers.get("x-stream-offset")
        self._unacked = (channel, method.delivery_tag)
        self._read += 1
        if self._read % ACK_EVERY == 0:
            self._ack()
        if not isinstance(offset, int) or (self._offset is not None and offset <= self._offset):
            return  # a stream consumer may start a little before the offset asked for
        self._offset = offset
        try:
            self._take(offset, headers, props.message_id, body)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("feed record %d (%s) is malformed, skipped: %r", offset, headers.get("type"), exc)

    def _take(self, offset, headers, message_id, body):
        kind, owner = headers.get("type"), headers.get("owner")
        if not isinstance(owner, str):
            raise ValueError("no owner header")
        if kind in (CONNECTED, LEAVING, LEFT):
            role, session = _marker(kind, headers)
        if kind == CONNECTED:
            self.mailroom.connected(role, owner, session)
            self._in_feed(session)  # read back before its confirm came
        elif kind == LEAVING:
            self.mailroom.leaving(role, owner, session)
        elif kind == LEFT:
            self.mailroom.left(role, owner, session, headers["cut"], _carried(body), bool(headers.get("forfeit")))
            self._settle(session)
        else:
            self.mailroom.notice(owner, Notice(offset, kind, message_id, body, headers))
        self._unseen.pop(message_id, None)

    def _settle(self, session):
        inbox = self._inboxes.get(session)
        if inbox is not None:
            inbox.left_in_feed = True
            self.drop_if_done(inbox)

    def drop_if_done(self, inbox):
        """Forgets an inbox whose socket is gone and whose `left` is in the feed."""
        if inbox.closed and inbox.left_in_feed and self._inboxes.pop(inbox.session, None) is not None:
            self.mailroom.forget(inbox)

    def _ack(self):
        if self._unacked is not None:
            channel, tag = self._unacked
            self._unacked = None
            if channel.is_open:
                channel.basic_ack(tag, multiple=True)

    def _every_so_often(self):
        while True:
            gevent.sleep(ACK_PAUSE)
            try:
                self._chore()
            except Exception:  # a bug of ours must not end the chores: sockets would wait for a dead worker's `left`
                log.exception("inboxes: acking or expiring failed; trying again in %.1fs", ACK_PAUSE)

    def _chore(self):
        self._ack()
        for role, user_id, session in self.mailroom.expire():
            self._mark(LEFT, role, user_id, session, b"[]", cut=self._offset, forfeit=True)


def _marker(kind, headers):
    """(role, session) of a marker; ValueError before the Mailroom is told
    anything of a malformed one (half a hand-over would leave a socket waiting)."""
    role, session = headers.get("role"), headers.get("session")
    if role not in _ROLES or not isinstance(session, str) or (kind == LEFT and not isinstance(headers.get("cut"), int)):
        raise ValueError("a marker names a role, a session and, for a `left`, the offset of its cut")
    return role, session


def _carried(body):
    """The notices a `left` carries (what leave() wrote); ValueError unless
    every one is as it wrote them: one malformed record must not reach a socket."""
    carried = json.loads(body)
    if not isinstance(carried, list):
        raise ValueError("a `left` carries a list of notices")
    for item in carried:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], int)
                and all(isinstance(value, str) for value in item[1:4]) and isinstance(item[4], dict)):
            raise ValueError(f"a carried notice is not [offset, type, message id, body, headers]: {item!r:.100}")
    return [Notice(offset, kind, message_id, body.encode(), headers)
            for offset, kind, message_id, body, headers in carried]
