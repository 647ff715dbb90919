"""The broker side of this worker's sockets: for each notification kind of
each connected user, an inbox queue on RabbitMQ with one consumer.

One AMQP connection per worker, on pika's gevent adapter: its callbacks run
in gevent's hub and only hand deliveries to in-memory queues; the greenlets
that own the sockets take them from there, write them, and ack. pika is used
from this one OS thread only, and none of its calls here block.

An inbox queue is durable, lives the reconnect window after its consumer
goes (x-expires) and has a single active consumer, so a user who reconnects
elsewhere gets the messages they missed, in order, once."""
import json
import logging
import re
import uuid
from collections import namedtuple

import gevent
from gevent.event import Event
from pika.adapters.gevent_connection import GeventConnection

from ridesync import contract, rabbit

log = logging.getLogger(__name__)

PREFETCH = 16  # unacked deliveries per inbox consumer: bounds memory for slow sockets
RECONNECT_PAUSE = 1.0
_QUEUE_IN_ERROR = re.compile(r"queue '([^']+)'")

Delivery = namedtuple("Delivery", "channel tag message_id type data headers")


class Inbox:
    """One user's queue for one kind of notification. Once given a writer
    (write_to), its deliveries go to it one at a time, in order, each acked
    once written: a greenlet of its own runs while there is something to
    write, so an idle rider holds none (bench/RESULTS.md)."""

    __slots__ = ("user_id", "kind", "routing_keys", "queue", "tag", "ready", "_deliveries", "_unacked",
                 "_write", "_writer", "_owner")

    def __init__(self, owner, user_id, kind, routing_keys):
        self._owner = owner
        self.user_id, self.kind, self.routing_keys = user_id, kind, routing_keys
        self.queue = contract.inbox_queue(kind, user_id)
        self.tag = f"{self.queue}#{uuid.uuid4().hex[:8]}"
        self.ready = Event()  # set while the consumer is on the broker
        self._deliveries = []  # taken, not yet written, oldest first: at most PREFETCH
        self._unacked = {}  # delivery tag -> Delivery, on the current channel
        self._write = None  # write(delivery) -> False once the socket is gone
        self._writer = None  # the greenlet writing, while there is something to write

    def write_to(self, write):
        self._write = write
        self._wake()

    def ack(self, delivery):
        if self._unacked.get(delivery.tag) is delivery:
            del self._unacked[delivery.tag]
        if delivery.channel.is_open:  # a tag of a lost channel means nothing on a new one
            delivery.channel.basic_ack(delivery.tag)

    def close(self):
        if self._writer is not None:
            self._writer.kill(block=False)
        self._owner.close(self)

    def _take(self, delivery):
        self._unacked[delivery.tag] = delivery
        self._deliveries.append(delivery)
        self._wake()

    def _wake(self):
        if self._write is not None and self._writer is None and self._deliveries:
            self._writer = gevent.spawn(self._write_all)

    def _write_all(self):
        try:
            while self._deliveries:
                delivery = self._deliveries.pop(0)
                if not self._write(delivery):
                    self._write = None  # the socket is gone: the broker keeps what is unacked
                    return
                self.ack(delivery)
        finally:
            self._writer = None  # no switch since the list was seen empty: _take cannot slip in between

    def _give_back(self):
        """Returns what was delivered but not acked to the queue on the broker."""
        for delivery in self._unacked.values():
            if delivery.channel.is_open:
                delivery.channel.basic_nack(delivery.tag, requeue=True)
        self._unacked.clear()

    def _forget(self):
        """The channel is gone: the broker has already requeued what we held."""
        self._unacked.clear()
        self._deliveries.clear()
        self.ready.clear()


class Inboxes:
    def __init__(self, url, window_seconds, name, on_takeover):
        """on_takeover(role, user_id, session, since) is called when a
        socket of a user opened on any gateway process."""
        self._params = rabbit.connection_parameters(url, name)
        self._queue_arguments = {"x-expires": int(window_seconds * 1000), "x-single-active-consumer": True}
        self._on_takeover = on_takeover
        self._inboxes = {}  # consumer tag -> Inbox
        self._connection = None
        self._channel = None
        self._opening = None  # the channel being set up, until it is ready
        self._as_they_are = set()  # inbox queues to declare passively (see _learn_from)
        self._unannounced = {}  # (role, user id) -> session notice not yet published
        self._stopping = False

    def start(self):
        self._connect()
        return self

    def open(self, user_id, kind, routing_keys):
        inbox = Inbox(self, user_id, kind, routing_keys)
        self._inboxes[inbox.tag] = inbox
        if self._channel is not None:
            self._subscribe(self._channel, inbox)
        return inbox

    def close(self, inbox):
        if self._inboxes.pop(inbox.tag, None) is None:
            return
        if self._channel is not None and inbox.ready.is_set():
            self._channel.basic_cancel(inbox.tag)
        inbox._give_back()
        inbox.ready.clear()

    def announce(self, role, user_id, session, since):
        """Tells every gateway process that this user has a socket here,
        opened at `since` (unix time); older ones elsewhere are replaced. Told
        once the broker is back when it is away."""
        notice = json.dumps({"role": role, "userID": user_id, "session": session, "since": since})
        self._unannounced[(role, user_id)] = notice
        if self._channel is not None:
            self._announce_all(self._channel)

    def _announce_all(self, channel):
        for notice in self._unannounced.values():
            channel.basic_publish(contract.GATEWAY_SESSIONS_EXCHANGE, "", notice)
        self._unannounced.clear()

    def stop(self):
        self._stopping = True
        for inbox in list(self._inboxes.values()):
            self.close(inbox)
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    @property
    def stopped(self):
        return self._stopping and (self._connection is None or self._connection.is_closed)

    @property
    def open_count(self):
        return len(self._inboxes)

    @property
    def consuming(self):
        return sum(1 for inbox in self._inboxes.values() if inbox.ready.is_set())

    # The rest runs in gevent's hub, as pika callbacks.

    def _connect(self):
        self._connection = GeventConnection(
            self._params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel_open),
            on_open_error_callback=self._on_connection_lost,
            on_close_callback=self._on_connection_lost,
        )

    def _on_connection_lost(self, _connection, reason):
        self._lost_channel()
        if self._stopping:
            return
        log.warning("inboxes lost the broker (%s); reconnecting in %.0fs", reason, RECONNECT_PAUSE)
        gevent.spawn_later(RECONNECT_PAUSE, self._connect)

    def _on_channel_open(self, channel):
        self._opening = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(lambda frame: self._on_broker_cancel(channel, frame))
        rabbit.declare_topology(channel)  # the gateway may be the first process up
        channel.queue_declare("", exclusive=True, auto_delete=True,
                              callback=lambda ok: self._on_session_queue(channel, ok.method.queue))

    def _on_session_queue(self, channel, queue):
        channel.queue_bind(queue, contract.GATEWAY_SESSIONS_EXCHANGE)
        channel.basic_consume(queue, self._on_session_notice, auto_ack=True)
        channel.basic_qos(prefetch_count=PREFETCH, callback=lambda _ok: self._on_ready(channel))

    def _on_ready(self, channel):
        self._channel = channel
        self._announce_all(channel)
        log.info("inboxes connected to the broker; %d to subscribe", len(self._inboxes))
        for inbox in list(self._inboxes.values()):
            self._subscribe(channel, inbox)

    def _on_channel_closed(self, channel, reason):
        if channel is not self._channel and channel is not self._opening:
            return  # a channel of a connection already given up
        self._lost_channel()
        self._learn_from(reason)
        connection = self._connection
        if not self._stopping and connection is not None and connection.is_open:
            log.warning("inbox channel closed (%s); reopening in %.0fs", reason, RECONNECT_PAUSE)
            gevent.spawn_later(RECONNECT_PAUSE, self._reopen_channel, connection)

    def _reopen_channel(self, connection):
        if not self._stopping and connection is self._connection and connection.is_open:
            connection.channel(on_open_callback=self._on_channel_open)

    def _learn_from(self, reason):
        """An inbox queue left by a gateway with another RECONNECT_WINDOW has
        other arguments, and redeclaring it fails (406) for every socket on
        the channel: such a queue is then declared passively, as it is."""
        text = getattr(reason, "reply_text", "")
        name = _QUEUE_IN_ERROR.search(text)
        if name is None:
            return
        if getattr(reason, "reply_code", None) == 406:
            log.warning("inbox %s exists with other arguments; using it as it is (%s)", name[1], text)
            self._as_they_are.add(name[1])
        elif getattr(reason, "reply_code", None) == 404:
            self._as_they_are.discard(name[1])

    def _lost_channel(self):
        self._channel = self._opening = None
        for inbox in self._inboxes.values():
            inbox._forget()

    def _subscribe(self, channel, inbox):
        def bind(keys):
            if not keys:
                channel.basic_consume(inbox.queue, self._on_delivery, consumer_tag=inbox.tag, callback=consuming)
                return
            channel.queue_bind(inbox.queue, contract.TRIP_EXCHANGE, contract.inbox_routing_key(inbox.user_id, keys[0]),
                               callback=lambda _ok: bind(keys[1:]))

        def declared(_ok):
            bind(inbox.routing_keys)

        def consuming(_ok):
            if inbox.tag in self._inboxes:
                inbox.ready.set()
            else:  # closed while subscribing
                channel.basic_cancel(inbox.tag)

        if inbox.queue in self._as_they_are:
            channel.queue_declare(inbox.queue, passive=True, callback=declared)
        else:
            channel.queue_declare(inbox.queue, durable=True, arguments=self._queue_arguments, callback=declared)

    def _on_broker_cancel(self, channel, frame):
        inbox = self._inboxes.get(frame.method.consumer_tag)
        if inbox is not None and channel is self._channel:
            log.warning("broker cancelled inbox %s; subscribing again", inbox.queue)
            inbox.ready.clear()
            self._subscribe(channel, inbox)

    def _on_delivery(self, channel, method, props, body):
        inbox = self._inboxes.get(method.consumer_tag)
        if inbox is None:
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        try:
            _owner, data = contract.open_envelope(body)
        except ValueError as exc:
            log.error("inbox %s drops an unreadable message: %s", inbox.queue, exc)
            channel.basic_ack(method.delivery_tag)
            return
        kind = (props.headers or {}).get("type") or method.routing_key
        inbox._take(Delivery(channel, method.delivery_tag, props.message_id, kind, data, props.headers or {}))

    def _on_session_notice(self, _channel, _method, _props, body):
        try:
            notice = json.loads(body)
            self._on_takeover(notice["role"], notice["userID"], notice["session"], float(notice["since"]))
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed session notice: %r", body[:200])
