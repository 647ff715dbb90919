"""One gateway worker's sockets, and the one path of a notification to them:

    the stream ──Feed──> Hub.take ──Ledger decides──> Hub._apply ──> Connection ──> the WebSocket

The feed (feed.py) reads every record of the notifications stream and hands
it here; the Ledger (ledger.py, no I/O) says what this worker does with it:
give a notice to a socket, let a socket start writing (what an older socket
of the user did not write in front), or cut a socket off (a newer one opened,
here or on another worker); the Hub applies that to the Connection
(connection.py), whose one writer writes it. The Hub is the only registry of
this worker's sockets. Made on first use inside the worker process (after
gunicorn's fork and gevent's patching), never at import; drained when the
worker is told to stop."""
import json
import logging
import os
import time

import gevent
from gevent.event import Event

from ridesync import contract, telemetry
from ridesync.gateway.dialects import LOST_HANDOVER
from ridesync.gateway.sockets.feed import CONNECTED, LEAVING, LEFT, Feed
from ridesync.gateway.sockets.ledger import Cut, Deliver, Ledger, Notice, Start
from ridesync.rabbit import Publisher

log = logging.getLogger(__name__)

GOING_AWAY = (1001, "server shutting down; reconnect")
ROLES = {"rider": contract.RIDER_NOTIFICATION_KEYS, "driver": contract.DRIVER_NOTIFICATION_KEYS}


class Hub:
    def __init__(self, settings, clock=time.monotonic):
        self._settings = settings
        self._clock = clock
        self._pid = None
        self.draining = False
        self.registrar = None  # the greenlet keeping its drivers registered (drivers.py), once it has one

    # The sockets, as the routes open and close them.

    def track(self, connection):
        """A socket is being opened here: held until its teardown, and then
        until its `left` is in the feed (drain waits for both)."""
        self._started()._connections[connection.session] = connection

    def open(self, connection):
        """The socket's `connected` marker in the feed: from here on nothing
        for the user is missed, and an older socket of theirs is cut. False
        if the broker did not confirm it within MARKER_WAIT (it goes out when
        it can, and what comes before it is kept, not lost)."""
        session = connection.session
        self._unsettled.add(session)
        self._ledger.register(session)
        in_feed = self._in_feed[session] = Event()
        self._feed.mark(CONNECTED, connection.role, connection.user_id, session)
        try:
            return in_feed.wait(self._settings.marker_wait)
        finally:
            self._in_feed.pop(session, None)

    def close(self, connection):
        """Its socket is gone; what it did not write goes to the user's next one."""
        if connection.closed:
            return
        connection.hang_up()
        if connection.session in self._unsettled and not connection.cut_off:
            self._feed.mark(LEAVING, connection.role, connection.user_id, connection.session)
        self._drop_if_done(connection)

    def connections(self):
        return list(self._started()._connections.values())

    @property
    def publisher(self):
        return self._started()._publisher

    def stats(self):
        connections = self.connections()
        return {
            "sockets": {role: sum(1 for c in connections if c.role == role and c.connected) for role in ROLES},
            # The names the stats always had: a socket's queue here, and those let write.
            "inboxes": len(connections),
            "consuming": sum(1 for c in connections if c.started),
        }

    # The feed, in order (Feed calls these).

    def take(self, offset, headers, message_id, body):
        """One record: a marker of a socket, or a notification; ValueError
        (and nothing decided) for a malformed one."""
        kind, owner = headers.get("type"), headers.get("owner")
        if not isinstance(owner, str):
            raise ValueError("no owner header")
        if kind in (CONNECTED, LEAVING, LEFT):
            role, session = _marker(kind, headers)
        if kind == CONNECTED:
            self._apply(self._ledger.connected(role, owner, session))
            self.in_feed(session)  # read back before its confirm came
        elif kind == LEAVING:
            self._apply(self._ledger.leaving(role, owner, session))
        elif kind == LEFT:
            carried = _carried(body)
            self._apply(self._ledger.left(role, owner, session, headers["cut"], carried, bool(headers.get("forfeit"))))
            self._settle(session)
        else:
            self._apply(self._ledger.notice(owner, Notice(offset, kind, message_id, body, headers)))

    def in_feed(self, session):
        in_feed = self._in_feed.get(session)
        if in_feed is not None:
            in_feed.set()

    def tick(self):
        """For each socket here that waited too long for the `left` of the one
        it cut (that worker died), a forfeit `left`, so every worker goes on
        at the same point. It carries, in place of what that socket did not
        write, one notice saying it is lost (dialects.LOST_HANDOVER)."""
        for role, user_id, session in self._ledger.expire():
            lost = [[self._feed.offset, LOST_HANDOVER, f"lost-{session}", contract.envelope(user_id, {}).decode(), {}]]
            self._feed.mark(LEFT, role, user_id, session, json.dumps(lost).encode(), cut=self._feed.offset,
                            forfeit=True)

    def _apply(self, decided):
        for decision in decided:
            connection = self._connections[decision.session]
            if isinstance(decision, Deliver):
                connection.give(decision.notice)
            elif isinstance(decision, Start):
                connection.start(decision.first)
            elif isinstance(decision, Cut):
                self._leave(connection, connection.cut())

    def _leave(self, connection, unwritten):
        """Cut where the feed is now: its `left` says so, and carries what it did not write."""
        carried = [[n.offset, n.type, n.message_id, n.body.decode(), telemetry.text_only(n.headers)] for n in unwritten]
        self._feed.mark(LEFT, connection.role, connection.user_id, connection.session, json.dumps(carried).encode(),
                        cut=self._feed.offset)

    def _settle(self, session):
        self._unsettled.discard(session)
        connection = self._connections.get(session)
        if connection is not None:
            self._drop_if_done(connection)

    def _drop_if_done(self, connection):
        """Forgets a connection whose socket is gone and whose `left` is in the feed."""
        if connection.closed and connection.session not in self._unsettled:
            self._connections.pop(connection.session, None)
            self._ledger.forget(connection.session)

    # The worker process.

    def _started(self):
        if self._pid != os.getpid():
            name = f"gateway-{os.getpid()}"
            self._pid = os.getpid()
            self._connections = {}  # session -> Connection
            self._unsettled = set()  # sessions in the feed whose `left` is not yet read
            self._in_feed = {}  # session -> Event set once its `connected` marker is in the feed
            settings = self._settings
            self._ledger = Ledger(settings.reconnect_window, settings.handover_wait, settings.max_owed, ROLES,
                                  self._clock)
            self._feed = Feed(settings, name, self).start()
            self._publisher = Publisher(self._settings.amqp_url, name)
        return self

    def drain(self, timeout):
        """Closes every socket with 1001 (going away), waits for their
        teardown (drivers unregistered, and what each socket had not written
        handed on in the feed for its user's next socket), then closes the
        broker connections. Returns within timeout seconds."""
        self.draining = True
        if self._pid != os.getpid():
            return  # this worker never opened a socket
        deadline = time.monotonic() + timeout
        connected = [c for c in self._connections.values() if c.connected]
        log.info("draining: closing %d sockets (1001)", len(connected))
        for connection in connected:  # at once: one phone slow to take its frame holds up no other
            gevent.spawn(connection.close, *GOING_AWAY)
        _wait(lambda: not self._connections, deadline)
        if self._connections:
            log.warning("draining: %d sockets still tearing down or not yet handed on in the feed at the deadline",
                        len(self._connections))
        self._feed.stop()
        self._publisher.close()
        _wait(lambda: self._feed.stopped, deadline)
        log.info("drained: sockets closed, broker connections %s", "closed" if self._feed.stopped else "still closing")


def _wait(condition, deadline):
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.01)


def _marker(kind, headers):
    """(role, session) of a marker; ValueError before the Ledger is told
    anything of a malformed one (half a hand-over would leave a socket waiting)."""
    role, session = headers.get("role"), headers.get("session")
    if role not in ROLES or not isinstance(session, str) or (kind == LEFT and not isinstance(headers.get("cut"), int)):
        raise ValueError("a marker names a role, a session and, for a `left`, the offset of its cut")
    return role, session


def _carried(body):
    """The notices a `left` carries (what _leave wrote); ValueError unless
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
