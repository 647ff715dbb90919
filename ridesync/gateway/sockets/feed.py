"""The broker side of this worker's sockets: three inputs, each handed to
the hub (hub.py), whose Ledger says what to do with it.

- The worker's own queue (`gateway.worker.<host>.<pid>.<random>`): the
  notifications of the users it holds, and their sockets' `connected`
  markers. Both reach it by a CC, the user's live key (contract.live_key),
  which the worker binds on contract.LIVE_EXCHANGE while it holds the user.
  So a worker reads its own users' traffic only (issue 15).
- The registry (contract.SOCKETS_STREAM): every worker's sockets' markers,
  `connected`, `leaving` and `left`, in one order, read back over the
  reconnect window when the worker starts.
- Catch-ups: one user's notifications read back from the record
  (contract.NOTIFICATIONS_STREAM) from a point in time until a socket's
  `connected` marker there; for a socket whose user's last worker drained.
  Or, when the queue was lost (gone on reconnect: a broker restart lost
  it, or it was deleted), until this worker's `refilled` marker there,
  published once every user it holds is bound again to the queue made
  anew: whatever the lost queue held or missed is in the record between.

Markers are published to `trip`, confirmed, and published again on the
next channel until the broker takes them. The queue is not exclusive and
expires a while after its last consumer (x-expires): it and its bindings
outlive a lost connection, and a reconnect consumes it again; declared
passively then, so that a queue that is gone is noticed, not made again
unseen.

One AMQP connection per worker, on pika's gevent adapter: its callbacks run
in gevent's hub and only hand records on; the greenlet that owns a socket
writes them. pika is used from this one OS thread only, and none of its
calls here block."""
import collections
import datetime
import itertools
import logging
import os
import socket
import time
import uuid
import zlib

import gevent
from gevent.event import AsyncResult
from pika import BasicProperties
from pika.spec import Basic
from pika.adapters.gevent_connection import GeventConnection

from ridesync import contract, rabbit
from ridesync.contract import CONNECTED, REFILLED

log = logging.getLogger(__name__)

# Not a setting: records in flight to the one read back of the record
# (catch-ups are rare: a drain, an upgrade that outwaited its bind).
CATCHUP_PREFETCH = 500


class Feed:
    def __init__(self, settings, name, reader):
        """settings: its FEED_* ones, RECONNECT_WINDOW, RECONNECT_PAUSE,
        BIND_CHANNELS and HANDOVER_WAIT. reader: what takes the feed (the
        hub): marker(headers, body) for each registry record in order,
        queued(headers, message_id, body) for each message of the queue,
        caught_up(role, user_id, session, records) (session None: what the
        queue lost), queue_lost(since) when the queue turns out to have
        lost what it held from since (epoch s) on, and tick() every
        FEED_ACK_PAUSE."""
        self._nodes = itertools.cycle(rabbit.connection_parameters(settings.amqp_url, name))  # the next node each time
        self._reading_nodes = itertools.cycle(rabbit.connection_parameters(settings.amqp_url, f"{name}-catch-up"))
        self._replay = f"{int(settings.reconnect_window + settings.feed_replay_margin)}s"
        self._prefetch, self._ack_every = settings.feed_prefetch, settings.feed_ack_every
        self._ack_pause, self._reconnect_pause = settings.feed_ack_pause, settings.reconnect_pause
        self._catchup_wait = settings.handover_wait
        self._reader = reader
        self.queue = f"{contract.WORKER_QUEUE_PREFIX}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        expires = max(60.0, 2 * settings.reconnect_window)  # outlives a lost connection; gone soon after a SIGKILL
        # On a cluster (WORK_QUEUE_TYPE=quorum) replicated, so that it outlives its node too (bench.node_kill).
        self._durable = settings.work_queue_type == "quorum"
        self._queue_arguments = {"x-queue-type": settings.work_queue_type, "x-expires": int(expires * 1000)}
        self._binders = [None] * settings.bind_channels  # channels binding users' keys, by the key's hash
        self._bound = set()  # live keys bound to the queue (or to be, once a channel is open)
        self._unbound = set()  # keys unbound while no channel was open: unbound on the next
        self._waiting = {}  # key -> callbacks for its bind-ok
        self._in_flight = {}  # key -> binds sent on the current connection, not yet fenced
        self._unfenced = [[] for _ in self._binders]  # keys bound on each binder since its last fence was sent
        self._fences = [None] * len(self._binders)  # keys the fence awaited on each binder covers; None: none awaited
        self._declaring = None  # the main channel while it declares the queue
        self._queue_tag = None  # the consumer tag of the queue's consumer
        self._dropping = False  # the worker stops and deletes its queue: the broker cancels its consumer
        self._made = False  # the queue was declared once: from then on passively, to notice it gone
        self._gone = False  # the passive declare found it gone: the next declare makes it anew
        self._lost_at, self._lost_how = None, None  # when and how the queue may have lost what it held (epoch s)
        self._lag = 0.0  # seconds between the publish and the read of the last message read from the queue
        self._rebinding = set()  # keys to bind again to a queue made anew before its `refilled` marker goes
        self._refilled = None  # the id of that marker, which ends what the queue lost
        # The sockets waiting to catch up, and the one read back for them:
        self._catchups = _Catchups(settings.reconnect_window)
        self._watcher = None  # the greenlet watching the read back, while one is on
        self._progress = 0.0  # when the read back last brought a record, or began to be waited for (monotonic)
        self._idle_since = 0.0  # when the last catch-up waiting was served (monotonic)
        self._read_back_channel = None  # the channel reading the record back, while any catch-up waits
        self._read_backs = 0  # read backs begun: a channel of one begun since reads nothing
        self._unseen = {}  # marker id -> (routing key, headers, body): not yet confirmed
        self._unconfirmed = {}  # delivery tag -> marker id, published on the current channel
        self._published = 0  # delivery tags given on the current channel
        self._offset = None  # the last registry record read
        self._unacked = None  # (channel, delivery tag) of the last message read and not acked
        self._handled = set()  # message ids of the queue read since the last ack
        self._maybe_again = set()  # those when the connection was lost: the queue gives them again
        self._read = 0
        self.received = 0  # messages read from the queue (the idle-worker test counts them)
        self._connection = None
        self._reading = None  # the connection catch-ups read on
        self._channel = None
        self._stopping = False
        self._chores = None

    def start(self):
        self._connect()
        self._connect_reading()
        self._chores = gevent.spawn(self._every_so_often)
        return self

    @property
    def ready(self):
        """Its queue is declared and consumed."""
        return self._channel is not None and self._channel.is_open

    def mark(self, kind, role, user_id, session, body=b"", **extra):
        """Publishes a marker of a socket's coming or going; one the broker
        does not take now is published again until it does. A `connected`
        one also goes, by its CC, to every queue the user is bound to."""
        marker = uuid.uuid4().hex
        headers = {"type": kind, "role": role, "owner": user_id, "session": session, **extra}
        if kind == CONNECTED:
            headers["CC"] = [contract.live_key(role, user_id)]
        self._unseen[marker] = (kind, headers, body)
        self._publish(self._channel, marker, kind, headers, body)

    @property
    def publishing(self):
        """Markers the broker has not confirmed yet."""
        return len(self._unseen)

    def bind(self, key, then=None):
        """Binds a user's live key to the queue; then() once the broker has
        (at once when it already had)."""
        if key in self._bound and key not in self._waiting and key not in self._rebinding:
            if then is not None:
                then()
            return
        waiting = self._waiting.setdefault(key, [])
        if then is not None:
            waiting.append(then)
        if key not in self._bound:
            self._bound.add(key)
            self._unbound.discard(key)
            self._bind(key)

    def unbind(self, key):
        self._bound.discard(key)
        self._waiting.pop(key, None)
        self._rebound(key)
        binder = self._binder(key)
        if binder is None:
            self._unbound.add(key)
        else:
            binder.queue_unbind(self.queue, contract.LIVE_EXCHANGE, routing_key=key)

    @property
    def bound(self):
        return len(self._bound)

    def catch_up(self, role, user_id, session, since):
        """Reads the user's notifications back from the record, from since
        (epoch seconds) until the session's `connected` marker there, then
        hands them to the reader, all of them: the Ledger knows which the
        socket had. Every catch-up waiting is served by one read of the
        record (while any waits, and HANDOVER_WAIT after), on a connection of
        its own: a deploy's thousands of sockets cost one read of its
        stretch, and the registry and the queue never wait behind it.
        The marker is in the record already (the Ledger asks once the
        registry has it): a catch-up gives up, with what it has, only when
        the read brings nothing for HANDOVER_WAIT. A read slowed down by a
        connect storm (1,000 records/s, loaded) is waited for."""
        wanted = (role, user_id, session)
        if wanted not in self._catchups.waiting:
            self._catch_up(wanted, since, wanted)

    def recover(self, role, user_id, since):
        """Reads back what the lost queue held or missed for the user: from
        since until this worker's `refilled` marker in the record, then
        hands it to the reader with session None; in the same one read as
        every other catch-up, giving up as they do (HANDOVER_WAIT counted
        from that marker's publish)."""
        self._catch_up((role, user_id, None), since, self._refilled)

    def _catch_up(self, wanted, since, until):
        if not self._catchups.waiting:
            self._progress = time.monotonic()
        if self._catchups.add(wanted, since, until):
            self._read_back()
        elif self._catchups.marked(until):
            self._caught_up(wanted, self._catchups.take(wanted))
        if self._watcher is None:
            self._watcher = gevent.spawn(self._watch_read_back)

    def drop_queue(self):
        """The worker stops: its queue goes now, not at its expiry. An
        AsyncResult: True once the broker has deleted it, False at once
        when no open channel can ask (the queue then goes at its expiry)."""
        deleted = AsyncResult()
        channel = self._channel
        if channel is not None and channel.is_open:
            self._dropping = True
            channel.queue_delete(self.queue, callback=lambda _ok: deleted.set(True))
        else:
            deleted.set(False)
        return deleted

    def stop(self):
        self._stopping = True
        if self._chores is not None:
            self._chores.kill(block=False)
        if self._watcher is not None:
            self._watcher.kill(block=False)
        for connection in (self._connection, self._reading):
            if connection is not None and not (connection.is_closing or connection.is_closed):
                connection.close()  # one still opening too: a worker stopped as it boots waits for no broker

    @property
    def stopped(self):
        return self._stopping and all(connection is None or connection.is_closed
                                      for connection in (self._connection, self._reading))

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

    def _on_connection_lost(self, connection, reason):
        if connection is not self._connection:
            return
        self._channel = self._unacked = None
        self._binders = [None] * len(self._binders)
        self._in_flight = {}
        self._unfenced, self._fences = [[] for _ in self._binders], [None] * len(self._binders)
        self._maybe_again, self._handled = self._handled, set()
        self._may_have_lost("with the connection")
        if self._stopping:
            return
        log.warning("the feed lost the broker (%s); reconnecting in %.0fs", reason, self._reconnect_pause)
        gevent.spawn_later(self._reconnect_pause, self._connect)

    def _on_channel_open(self, channel):
        """The main channel: markers published, the queue and the registry read."""
        channel.add_on_close_callback(self._on_channel_closed)
        self._unconfirmed.clear()
        self._published = 0
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.confirm_delivery(self._on_confirm)
        rabbit.declare_topology(channel)  # the gateway may be the first process up
        self._declaring = channel
        channel.queue_declare(self.queue, passive=self._made and not self._gone, durable=self._durable,
                              arguments=self._queue_arguments, callback=lambda _ok: self._consume(channel))

    def _consume(self, channel):
        connection = self._connection
        self._declaring = None
        channel.basic_qos(prefetch_count=self._prefetch)
        self._queue_tag = channel.basic_consume(self.queue, self._on_queued)
        start = self._replay if self._offset is None else self._offset + 1
        channel.basic_consume(contract.SOCKETS_STREAM, self._on_marker, arguments={"x-stream-offset": start})
        self._channel = channel
        log.info("reading queue %s (%d users bound) and the registry from %s; %d markers to publish",
                 self.queue, len(self._bound), start, len(self._unseen))
        if self._gone:
            self._refill()
        self._made, self._gone, self._lost_at = True, False, None
        for marker, (kind, headers, body) in list(self._unseen.items()):
            self._publish(channel, marker, kind, headers, body)
        for n in range(len(self._binders)):
            connection.channel(on_open_callback=lambda binder, n=n: self._on_binder_open(n, binder))

    def _on_binder_open(self, n, binder):
        binder.add_on_close_callback(self._on_channel_closed)
        self._binders[n] = binder
        self._unfenced[n], self._fences[n] = [], None
        for key in [key for key in self._unbound if self._slot(key) == n]:
            self._unbound.discard(key)
            binder.queue_unbind(self.queue, contract.LIVE_EXCHANGE, routing_key=key)
        for key in [key for key in self._bound if self._slot(key) == n]:
            self._bind(key)

    def _refill(self):
        """The queue was made anew: every user held here reads back from the
        record what it lost, from when it was lost (earlier by the lag of
        the last message read, which was behind that much), until the
        `refilled` marker that goes once each is bound to it again."""
        self._refilled, self._rebinding = uuid.uuid4().hex, set(self._bound)
        since = self._lost_at - self._lag
        log.warning("queue %s was gone on reconnect (lost %s, at %s): %d users catch up from the record from %s"
                    " less CATCHUP_MARGIN", self.queue, self._lost_how, _when(self._lost_at), len(self._rebinding),
                    _when(since))
        self._reader.queue_lost(since)
        if not self._rebinding:
            self._mark_refilled()

    def _may_have_lost(self, how):
        if self._lost_at is None:
            self._lost_at, self._lost_how = time.time(), how

    def _rebound(self, key):
        if key in self._rebinding:
            self._rebinding.discard(key)
            if not self._rebinding:
                self._mark_refilled()

    def _mark_refilled(self):
        self._unseen[self._refilled] = (REFILLED, {"type": REFILLED, "queue": self.queue}, b"")
        self._publish(self._channel, self._refilled, REFILLED, *self._unseen[self._refilled][1:])
        self._progress = time.monotonic()  # HANDOVER_WAIT from the marker: binding thousands again takes a while

    def _on_cancelled(self, frame):
        """The broker cancelled a consumer of ours (its queue deleted, its
        node lost): the connection is made again, and the queue declared
        passively tells whether it is gone. Not when the worker deleted it
        itself (drop_queue): nothing is lost, and nothing connects again."""
        queue = frame.method.consumer_tag == self._queue_tag
        if queue and self._dropping:
            return
        if queue:
            self._may_have_lost("when the broker cancelled its consumer")
        log.warning("the broker cancelled the feed's consumer of %s; connecting again",
                    self.queue if queue else "the registry")
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _on_channel_closed(self, channel, reason):
        """A channel the broker closed (an error of ours, or of the broker):
        the connection is made again, and everything on it; but when it is
        the passive declare of the queue that found it gone, the queue is
        made anew on another channel."""
        connection = self._connection
        if self._stopping or connection is None or not connection.is_open or channel.connection is not connection:
            return
        if channel is self._declaring and getattr(reason, "reply_code", None) == 404:
            self._gone, self._declaring = True, None
            self._may_have_lost("while its connection was up")
            connection.channel(on_open_callback=self._on_channel_open)
            return
        log.warning("a feed channel closed (%s); connecting again", reason)
        connection.close()

    def _slot(self, key):
        return zlib.crc32(key.encode()) % len(self._binders)

    def _binder(self, key):
        """The channel a key is bound and unbound on, always the same one: a
        bind after an unbind is never overtaken by it. None while it is not open."""
        binder = self._binders[self._slot(key)]
        return binder if binder is not None and binder.is_open else None

    def _bind(self, key):
        """Sent without waiting for its bind-ok (pika would send a channel's
        binds one at a time, each after the last one's ok: in a connect
        storm, thousands of upgrades queued behind BIND_CHANNELS round
        trips); the binder's next fence says it is done."""
        binder = self._binder(key)
        if binder is not None:
            n = self._slot(key)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            binder.queue_bind(self.queue, contract.LIVE_EXCHANGE, routing_key=key)
            self._unfenced[n].append(key)
            if self._fences[n] is None:
                self._fence(n, binder)

    def _fence(self, n, binder):
        """A Basic.Qos (a no-op: binders consume nothing) after the binds sent
        since the last one: the broker does a channel's methods in order, so
        its ok says they are all done. One round trip for every bind sent
        meanwhile; those sent while it is out wait for the next one."""
        self._fences[n], self._unfenced[n] = self._unfenced[n], []
        binder.basic_qos(prefetch_count=0, callback=lambda _ok: self._on_fenced(n, binder))

    def _on_fenced(self, n, binder):
        """The binds the fence covers are done; for a key bound, unbound and
        bound again, only its last bind's fence says so."""
        if binder is not self._binders[n]:
            return  # of a connection lost since
        keys, self._fences[n] = self._fences[n], None
        if self._unfenced[n]:
            self._fence(n, binder)
        for key in keys:
            self._in_flight[key] -= 1
            if self._in_flight[key] == 0:
                del self._in_flight[key]
                if key in self._bound:
                    self._rebound(key)
                    for then in self._waiting.pop(key, None) or ():
                        then()

    def _publish(self, channel, marker, kind, headers, body):
        """Publishes a marker, unless the channel is gone or closing: then it
        waits in _unseen for the next channel, which publishes it (_consume)."""
        if channel is None or not channel.is_open:
            return
        # A `refilled` marker goes to the record only; the others by their type, through `trip`.
        exchange, key = ("", contract.NOTIFICATIONS_STREAM) if kind == REFILLED else (contract.TRIP_EXCHANGE, kind)
        channel.basic_publish(exchange, key, body, BasicProperties(
            message_id=marker, headers=headers, delivery_mode=2, timestamp=int(time.time())))
        self._published += 1
        self._unconfirmed[self._published] = marker

    def _on_confirm(self, frame):
        """The broker has (ack) or has not (nack: published again) a marker."""
        method = frame.method
        tags = list(itertools.takewhile(lambda tag: tag <= method.delivery_tag, self._unconfirmed)) \
            if method.multiple else [method.delivery_tag]  # tags are given, and kept, in order
        for tag in tags:
            marker = self._unconfirmed.pop(tag, None)
            if marker is not None:
                self._confirmed(marker, isinstance(method, Basic.Ack))

    def _confirmed(self, marker, taken):
        unseen = self._unseen.get(marker)
        if unseen is None:
            return
        kind, headers, body = unseen
        if not taken:
            log.warning("broker refused the %s marker of %s %s; publishing it again",
                        kind, headers.get("role"), headers.get("owner", self.queue))
            self._publish(self._channel, marker, kind, headers, body)
            return
        del self._unseen[marker]

    def _read_one(self, channel, method):
        self._unacked = (channel, method.delivery_tag)
        self._read += 1
        if self._read % self._ack_every == 0:
            self._ack()

    def _on_marker(self, channel, method, props, body):
        headers = props.headers or {}
        offset = headers.get("x-stream-offset")
        self._read_one(channel, method)
        if not isinstance(offset, int) or (self._offset is not None and offset <= self._offset):
            return  # a stream consumer may start a little before the offset asked for
        self._offset = offset
        try:
            self._reader.marker(headers, body)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("registry record %d (%s) is malformed, skipped: %r", offset, headers.get("type"), exc)

    def _on_queued(self, channel, method, props, body):
        self._read_one(channel, method)
        self.received += 1
        message_id = props.message_id
        if props.timestamp:
            self._lag = max(0.0, time.time() - props.timestamp)
        if method.redelivered and message_id in self._maybe_again:
            return  # read before the connection was lost, not acked: the queue gives it again
        self._handled.add(message_id)
        headers = props.headers or {}
        try:
            self._reader.queued(headers, message_id, body)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("a %s in queue %s is malformed, skipped: %r", headers.get("type"), self.queue, exc)

    def _read_back(self):
        """(Re)begins the one read of the record, from the earliest time a
        waiting catch-up asks for."""
        connection = self._reading
        if self._stopping or not self._catchups.waiting or connection is None or not connection.is_open:
            return  # (opening: its open callback begins it)
        self._stop_reading_back()
        self._read_backs += 1
        begun, since = self._read_backs, self._catchups.begin()
        connection.channel(on_open_callback=lambda channel: self._read_back_from(channel, since, begun))

    def _read_back_from(self, channel, since, begun):
        if begun != self._read_backs:
            channel.close()  # a read begun since replaces it
            return
        self._read_back_channel = channel
        channel.basic_qos(prefetch_count=CATCHUP_PREFETCH)
        channel.basic_consume(contract.NOTIFICATIONS_STREAM, self._on_read_back, arguments={
            "x-stream-offset": datetime.datetime.fromtimestamp(since, datetime.timezone.utc)})

    def _on_read_back(self, channel, method, props, body):
        if channel is not self._read_back_channel:
            return  # a read replaced by one from earlier
        self._progress = time.monotonic()
        if method.delivery_tag % (CATCHUP_PREFETCH // 2) == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)  # a stream's ack grants credit
        for wanted, records in self._catchups.read(props.headers or {}, props.message_id, body, props.timestamp):
            self._caught_up(wanted, records)

    def _connect_reading(self):
        """The connection catch-ups read on, open for the worker's life (an
        idle one costs nothing per event): opened for a deploy's first
        catch-up, in the connect storm, it took over 5 s (loaded)."""
        if self._stopping:
            return
        self._reading = GeventConnection(
            next(self._reading_nodes),
            on_open_callback=self._on_reading_open,
            on_open_error_callback=self._on_reading_lost,
            on_close_callback=self._on_reading_lost,
        )

    def _on_reading_open(self, connection):
        if self._stopping:
            connection.close()  # stopped while it opened
        else:
            self._read_back()

    def _on_reading_lost(self, connection, reason):
        if connection is not self._reading or self._stopping:
            return
        self._read_back_channel = None
        self._catchups.since = None  # a read begins again once it is back
        log.warning("the feed's catch-up connection lost the broker (%s); connecting again in %.0fs",
                    reason, self._reconnect_pause)
        gevent.spawn_later(self._reconnect_pause, self._connect_reading)

    def _watch_read_back(self):
        """While catch-ups wait, they give up when the read has brought
        nothing for HANDOVER_WAIT (the broker is gone, or a marker never
        came); once none has waited for HANDOVER_WAIT, the read ends (the
        next catch-up of a deploy is served by what it read)."""
        while True:
            gevent.sleep(self._catchup_wait / 5)
            now = time.monotonic()
            if self._catchups.waiting and now - self._progress > self._catchup_wait:
                log.warning("the read back of the record brought nothing for %.0fs; %d catch-ups give up waiting "
                            "for their marker", self._catchup_wait, len(self._catchups.waiting))
                for wanted in list(self._catchups.waiting):
                    self._caught_up(wanted, self._catchups.take(wanted))
            elif not self._catchups.waiting and now - self._idle_since > self._catchup_wait:
                break
        self._watcher = None
        self._catchups.end()
        self._stop_reading_back()

    def _caught_up(self, wanted, records):
        self._reader.caught_up(*wanted, records)
        if not self._catchups.waiting:
            self._idle_since = time.monotonic()

    def _stop_reading_back(self):
        channel, self._read_back_channel = self._read_back_channel, None
        if channel is not None and channel.is_open:
            channel.close()

    def _ack(self):
        if self._unacked is not None:
            channel, tag = self._unacked
            self._unacked = None
            self._handled = set()
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


def _when(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="seconds")


class _Catchups:
    """The catch-ups waiting, and what one read of the record has brought
    for them: from the earliest time any asked for, each record kept for
    its owner (notifications, and `connected` markers: a recovery cuts at
    them), each catch-up ending at the marker it waits for (at once, if the
    read is past it already): a socket's own `connected` marker, keyed
    (role, user id, session), or this worker's `refilled` one, keyed by its
    id. A record read more than keep seconds ago (RECONNECT_WINDOW: a
    deploy's riders are back by then) is dropped once no catch-up waiting
    takes it; one asking from before a dropped record begins the read
    again. No I/O."""

    def __init__(self, keep, clock=time.time):
        self.waiting = {}  # (role, user id, session or None) -> since (epoch s)
        self.since = None  # where the read began; None while none is reading
        self._keep, self._clock = keep, clock
        self._until = {}  # wanted -> the key of the marker that ends it
        self._ending = {}  # a marker's key -> the catch-ups it ends
        self._kept = {}  # owner -> [(headers, message id, body, timestamp)] of records read, in order
        self._marked = set()  # the keys of the markers read
        self._reads = collections.deque()  # (read at (epoch s), record, owner): the kept records with a time, in order
        self._kept_from = None  # records published before then (epoch s) may have been dropped
        self._next_drop = 0.0  # when to look for records to drop next (epoch s)

    def add(self, wanted, since, until):
        """True when the read must begin (again): none reads, or it began
        after since, or dropped records from since on."""
        since = self.waiting[wanted] = min(since, self.waiting.get(wanted, since))
        self._end_at(wanted, until)
        return self.since is None or since < self.since or (self._kept_from is not None and since < self._kept_from)

    def begin(self):
        self.since, self._kept, self._marked = min(self.waiting.values()), {}, set()
        self._reads, self._kept_from = collections.deque(), None
        return self.since

    def marked(self, until):
        return until in self._marked

    def read(self, headers, message_id, body, timestamp):
        """One record, in the record's order: [(wanted, records)] of the catch-ups it ends."""
        kind, owner = headers.get("type"), headers.get("owner")
        if kind == REFILLED:
            until = message_id
        else:
            record = (headers, message_id, body, timestamp)
            self._kept.setdefault(owner, []).append(record)
            if timestamp is not None:  # one with no time is kept: take() cannot tell which catch-ups want it
                self._reads.append((self._clock(), record, owner))
                self._drop_old()
            if kind != CONNECTED:
                return []
            until = (headers.get("role"), owner, headers.get("session"))
        self._marked.add(until)
        return [(wanted, self.take(wanted)) for wanted in list(self._ending.get(until, ()))]

    def take(self, wanted):
        """Ends a catch-up: the owner's records read from its since on (a
        record of a publisher that stamps no time is kept: it may be later);
        a socket's, its notifications only, a recovery's the markers too."""
        since = self.waiting.pop(wanted, None)
        self._end_at(wanted, None)
        markers = wanted[2] is None
        return [] if since is None else [
            (headers, message_id, body) for headers, message_id, body, at in self._kept.get(wanted[1], ())
            if (at is None or at >= int(since)) and (markers or headers.get("type") != CONNECTED)]

    def end(self):
        """The read ends: the next catch-up begins another."""
        self.since, self._kept, self._marked = None, {}, set()
        self._reads, self._kept_from = collections.deque(), None

    def _drop_old(self):
        """Records read more than keep seconds ago, oldest first, until one
        a catch-up waiting takes (from its since on); once a second at most."""
        now = self._clock()
        if now < self._next_drop or self._reads[0][0] > now - self._keep:
            return
        self._next_drop = now + 1.0
        taken_from = int(min(self.waiting.values(), default=now))  # as take() compares
        while self._reads and self._reads[0][0] <= now - self._keep and self._reads[0][1][3] < taken_from:
            _read_at, record, owner = self._reads.popleft()
            kept = self._kept[owner]
            del kept[next(i for i, other in enumerate(kept) if other is record)]
            if not kept:
                del self._kept[owner]
            self._kept_from = max(self._kept_from or 0, record[3] + 1)

    def _end_at(self, wanted, until):
        """wanted ends at the marker keyed until (None: at none)."""
        before = self._until.pop(wanted, None)
        if before is not None:
            ending = self._ending[before]
            ending.discard(wanted)
            if not ending:
                del self._ending[before]
        if until is not None:
            self._until[wanted] = until
            self._ending.setdefault(until, set()).add(wanted)
