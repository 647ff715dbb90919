"""The broker side of this worker's sockets: the feed of notifications.

Every notification for a user's socket goes, besides the services' queues,
to one RabbitMQ stream (contract.NOTIFICATIONS_STREAM). Each gateway worker
reads all of it, from where it left off, and hands each record to its hub
(hub.py), whose Ledger says which socket here gets what. A socket's comings
and goings are markers in the same stream, published here, so every worker
sees them at the same point among the notifications. A user costs the
broker nothing: no queue, binding or consumer of their own; a connect is
one small publish.

One AMQP connection per worker, on pika's gevent adapter: its callbacks run
in gevent's hub and only hand records on; the greenlet that owns a socket
writes them. pika is used from this one OS thread only, and none of its
calls here block."""
import itertools
import logging
import uuid

import gevent
from pika import BasicProperties
from pika.spec import Basic
from pika.adapters.gevent_connection import GeventConnection

from ridesync import contract, rabbit

log = logging.getLogger(__name__)

CONNECTED, LEAVING, LEFT = "gateway.connected", "gateway.leaving", "gateway.left"


class Feed:
    def __init__(self, settings, name, reader):
        """settings: its FEED_* ones, RECONNECT_WINDOW and RECONNECT_PAUSE.
        reader: what takes the feed (the hub): take(offset, headers,
        message_id, body) for each record in order, in_feed(session) once a
        `connected` marker is, and tick() every FEED_ACK_PAUSE seconds."""
        self._nodes = itertools.cycle(rabbit.connection_parameters(settings.amqp_url, name))  # the next node each time
        self._replay = f"{int(settings.reconnect_window + settings.feed_replay_margin)}s"
        self._prefetch, self._ack_every = settings.feed_prefetch, settings.feed_ack_every
        self._ack_pause, self._reconnect_pause = settings.feed_ack_pause, settings.reconnect_pause
        self._reader = reader
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

    def mark(self, kind, role, user_id, session, body=b"", **extra):
        """Publishes a marker of a socket's coming or going; one the broker
        does not take now is published again until it does."""
        marker = uuid.uuid4().hex
        headers = {"type": kind, "role": role, "owner": user_id, "session": session, **extra}
        self._unseen[marker] = (headers, body)
        self._publish(self._channel, marker, headers, body)

    @property
    def offset(self):
        """Of the last record read."""
        return self._offset

    def stop(self):
        self._stopping = True
        if self._chores is not None:
            self._chores.kill(block=False)
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    @property
    def stopped(self):
        return self._stopping and (self._connection is None or self._connection.is_closed)

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
        log.warning("the feed lost the broker (%s); reconnecting in %.0fs", reason, self._reconnect_pause)
        gevent.spawn_later(self._reconnect_pause, self._connect)

    def _on_channel_open(self, channel):
        channel.add_on_close_callback(self._on_channel_closed)
        self._unconfirmed.clear()
        self._published = 0
        channel.confirm_delivery(self._on_confirm)
        rabbit.declare_topology(channel)  # the gateway may be the first process up
        channel.basic_qos(prefetch_count=self._prefetch, callback=lambda _ok: self._consume(channel))

    def _consume(self, channel):
        start = self._replay if self._offset is None else self._offset + 1
        channel.basic_consume(contract.NOTIFICATIONS_STREAM, self._on_record, arguments={"x-stream-offset": start})
        self._channel = channel
        log.info("reading the feed from %s; %d markers to publish", start, len(self._unseen))
        for marker, (headers, body) in list(self._unseen.items()):
            self._publish(channel, marker, headers, body)

    def _on_channel_closed(self, channel, reason):
        if channel is not self._channel:
            return
        self._channel = self._unacked = None
        connection = self._connection
        if not self._stopping and connection is not None and connection.is_open:
            log.warning("feed channel closed (%s); reopening in %.0fs", reason, self._reconnect_pause)
            gevent.spawn_later(self._reconnect_pause, self._reopen_channel, connection)

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
            self._reader.in_feed(headers["session"])

    def _on_record(self, channel, method, props, body):
        headers = props.headers or {}
        offset = headers.get("x-stream-offset")
        self._unacked = (channel, method.delivery_tag)
        self._read += 1
        if self._read % self._ack_every == 0:
            self._ack()
        if not isinstance(offset, int) or (self._offset is not None and offset <= self._offset):
            return  # a stream consumer may start a little before the offset asked for
        self._offset = offset
        try:
            self._reader.take(offset, headers, props.message_id, body)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("feed record %d (%s) is malformed, skipped: %r", offset, headers.get("type"), exc)
        self._unseen.pop(props.message_id, None)

    def _ack(self):
        if self._unacked is not None:
            channel, tag = self._unacked
            self._unacked = None
            if channel.is_open:
                channel.basic_ack(tag, multiple=True)

    def _every_so_often(self):
        while True:
            gevent.sleep(self._ack_pause)
            try:
                self._chore()
            except Exception:  # a bug of ours must not end the chores: sockets would wait for a dead worker's `left`
                log.exception("the feed's chores failed; trying again in %.1fs", self._ack_pause)

    def _chore(self):
        self._ack()
        self._reader.tick()
