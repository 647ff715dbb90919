"""One gateway worker's sockets, and the one path of a notification to them:

    its queue ──Feed──> Hub.queued ──Ledger decides──> Hub._apply ──> Connection ──> the WebSocket

The feed (feed.py) reads this worker's own queue, where the broker routes
the notifications of the users it holds (bound while a socket of theirs is
open here, or away within the reconnect window), and the registry of every
worker's sockets' markers, and hands each here; the Ledger (ledger.py, no
I/O) says what this worker does with it: give a notice to a socket, let a
socket start writing (what an older socket of the user did not write in
front), cut a socket off (a newer one opened, here or on another worker)
and hand on what it did not write in its `left`, bind or unbind a user,
read a user's notifications back from the record. The Hub applies that to
the Connection (connection.py), whose one writer writes it, and to the
feed. The Hub is the only registry of this worker's sockets. Made on first
use inside the worker process (after gunicorn's fork and gevent's
patching), never at import; drained when the worker is told to stop.

A socket's upgrade: its user's key bound here (bind-ok): from then on
nothing for the user is missed. Then its `connected` marker goes out
(published again until the broker confirms it), and an older socket of
theirs, on any worker, is cut where that marker is in its worker's queue
(bench/RESULTS.md, pitfall 1); the upgrade does not wait for that."""
import json
import logging
import os
import time

import gevent
from gevent.event import Event

from ridesync import contract, telemetry
from ridesync.contract import CONNECTED, LEAVING, LEFT, live_key
from ridesync.gateway.dialects import LOST_HANDOVER
from ridesync.gateway.sockets.feed import Feed
from ridesync.gateway.sockets.ledger import (Bind, CatchUp, Cut, Deliver, Forfeit, Ledger, Notice, Recover, Start,
                                              Unbind)
from ridesync.rabbit import Publisher

log = logging.getLogger(__name__)

GOING_AWAY = (1001, "server shutting down; reconnect")
ROLES = contract.ROLES


class Hub:
    def __init__(self, settings, clock=time.monotonic):
        self._settings = settings
        self._clock = clock
        self._pid = None
        self.draining = False
        self.registrar = None  # the greenlet keeping its drivers registered (drivers.py), once it has one

    def start(self):
        """Its broker side opens now, in the worker process, before it takes
        a socket: started by the first socket instead, a deploy's new worker
        opened its connection and channels and declared its queue in the
        connect storm, and 1,124 of 5,000 upgrades passed MARKER_WAIT
        (bench.reconnect, loaded)."""
        self._started()

    # The sockets, as the routes open and close them.

    def track(self, connection):
        """A socket is being opened here: held until its teardown, and then
        until its `left` is in the registry (drain waits for both)."""
        self._started()._connections[connection.session] = connection

    def open(self, connection):
        """The user bound here: from here on nothing for the user is missed.
        The socket's `connected` marker then goes out, which cuts an older
        socket of theirs; the upgrade does not wait for its confirm (in a
        connect storm, 1-1.5 s p50 of a 1.5-2 s upgrade, loaded), as the
        socket writes nothing before the registry has it. False if the
        broker did not bind within MARKER_WAIT: the socket opens anyway, and
        reads back from the record what came for its user before its bind."""
        session, role, user_id = connection.session, connection.role, connection.user_id
        self._unsettled.add(session)
        self._unmarked[session] = time.time()
        bound = self._bound[session] = Event()
        self._apply(self._ledger.register(role, user_id, session))
        self._feed.bind(live_key(role, user_id), then=lambda: self._marked(connection))
        try:
            if bound.wait(self._settings.marker_wait):
                return True
            if session in self._unmarked:
                self._late.add(session)
            return False
        finally:
            self._bound.pop(session, None)

    def close(self, connection):
        """Its socket is gone; what it did not write goes to the user's next one."""
        if connection.closed:
            return
        connection.hang_up()
        session = connection.session
        if session in self._unsettled and not connection.cut_off and not self.draining:
            if session in self._unmarked:
                self._leaving_early.add(session)  # after its `connected`, once its bind is done
            else:
                self._feed.mark(LEAVING, connection.role, connection.user_id, session)
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
            "queue": self._feed.queue if self._feed.ready else None,
            "received": self._feed.received,  # messages read from this worker's queue
            "bound": self._feed.bound,  # users' keys bound to it
        }

    # The feed (Feed calls these).

    def marker(self, headers, body):
        """A registry record, in the registry's order; ValueError (and
        nothing decided) for a malformed one."""
        kind, owner = headers.get("type"), _owner(headers)
        role, session = _marker(kind, headers)
        if kind == CONNECTED:
            self._apply(self._ledger.connected(role, owner, session))
        elif kind == LEAVING:
            self._apply(self._ledger.leaving(role, owner, session))
        else:
            carried, seen = _left(body)
            drained_at = headers.get("drained_at")
            self._apply(self._ledger.left(role, owner, session, carried, seen, bool(headers.get("forfeit")),
                                          drained_at if isinstance(drained_at, int) else None))
            self._settle(session)

    def queued(self, headers, message_id, body):
        """A message of this worker's queue, in its order: a notification,
        or the `connected` marker of a user held here (where to cut)."""
        kind, owner = headers.get("type"), _owner(headers)
        if kind == CONNECTED:
            role, session = _marker(kind, headers)
            self._apply(self._ledger.marker(role, owner, session))
        else:
            self._apply(self._ledger.notice(owner, Notice(kind, message_id, body, headers)))

    def caught_up(self, role, user_id, session, records):
        """A socket's catch-up (session None: what the lost queue held for the user)."""
        notices = [Notice(headers["type"], message_id, body, headers) for headers, message_id, body in records]
        self._apply(self._ledger.recovered(role, user_id, notices) if session is None
                    else self._ledger.caught_up(role, user_id, session, notices))

    def queue_lost(self, since):
        """The queue lost what it held from since (epoch s) on; it is made anew."""
        self._apply(self._ledger.queue_lost(since))

    def tick(self):
        """Forfeits, and users away past the window forgotten (ledger.expire)."""
        self._apply(self._ledger.expire())

    def _marked(self, connection):
        """Its user is bound here: its `connected` marker goes out."""
        session, role, user_id = connection.session, connection.role, connection.user_id
        opened = self._unmarked.pop(session, None)
        if opened is None:
            return
        if session in self._late:
            self._late.discard(session)
            log.warning("%s %s: bound after the socket opened; reading back what came before", role, user_id)
            self._apply(self._ledger.late(role, user_id, session, opened))
        self._feed.mark(CONNECTED, role, user_id, session)
        bound = self._bound.get(session)
        if bound is not None:
            bound.set()
        if session in self._leaving_early:
            self._leaving_early.discard(session)
            self._feed.mark(LEAVING, role, user_id, session)

    def _apply(self, decided):
        for decision in decided:
            if isinstance(decision, Deliver):
                self._connections[decision.session].give(decision.notice)
            elif isinstance(decision, Start):
                self._connections[decision.session].start(decision.first)
            elif isinstance(decision, Cut):
                self._leave(decision)
            elif isinstance(decision, Bind):
                self._feed.bind(live_key(decision.role, decision.user_id))
            elif isinstance(decision, Unbind):
                self._feed.unbind(live_key(decision.role, decision.user_id))
            elif isinstance(decision, CatchUp):
                self._feed.catch_up(decision.role, decision.user_id, decision.session, decision.since)
            elif isinstance(decision, Recover):
                self._feed.recover(decision.role, decision.user_id, decision.since)
            elif isinstance(decision, Forfeit):
                self._forfeit(decision)

    def _leave(self, cut):
        """A session cut here: its `left` carries what its socket did not
        write and what was kept for it, and the ids it handled lately; sent
        once a notice its socket was in the middle of writing is written or
        not, so that it reaches the phone or the next socket, never both."""
        connection = self._connections[cut.session]
        writer = connection.cut()
        if writer is None:
            self._hand_on(connection, cut)
        else:
            gevent.spawn(self._hand_on_once_written, writer, connection, cut)

    def _hand_on_once_written(self, writer, connection, cut):
        # Well inside HANDOVER_WAIT, for which the next socket waits for this `left`; a phone
        # slower than that loses its socket anyway, and the notice goes on in the `left`.
        writer.join(self._settings.handover_wait / 2)
        writer.kill()
        self._hand_on(connection, cut)

    def _hand_on(self, connection, cut):
        carried = connection.unwritten() + list(cut.owed)
        # Whole seconds: AMQP tables have no floats. Of a user recovering, from the loss: it was not read back.
        extra = {"drained_at": int(cut.lost_since or time.time())} if cut.drained else {}
        self._feed.mark(LEFT, connection.role, connection.user_id, cut.session, _left_body(carried, cut.seen), **extra)

    def _forfeit(self, forfeit):
        """A socket here waited too long for the `left` of the one it cut
        (that worker died): a forfeit `left` for it, so that every worker
        goes on at the same point. It carries, in place of what that socket
        did not write, one notice saying it is lost (dialects.LOST_HANDOVER)."""
        lost = Notice(LOST_HANDOVER, f"lost-{forfeit.session}", contract.envelope(forfeit.user_id, {}), {})
        self._feed.mark(LEFT, forfeit.role, forfeit.user_id, forfeit.session, _left_body([lost], []), forfeit=True)

    def _settle(self, session):
        self._unsettled.discard(session)
        connection = self._connections.get(session)
        if connection is not None:
            self._drop_if_done(connection)

    def _drop_if_done(self, connection):
        """Forgets a connection whose socket is gone and whose `left` is in the registry."""
        if connection.closed and connection.session not in self._unsettled:
            self._connections.pop(connection.session, None)
            self._apply(self._ledger.forget(connection.session))

    # The worker process.

    def _started(self):
        if self._pid != os.getpid():
            name = f"gateway-{os.getpid()}"
            self._pid = os.getpid()
            self._connections = {}  # session -> Connection
            self._unsettled = set()  # sessions whose `left` is not yet read in the registry
            self._unmarked = {}  # session -> when its socket began to open, until its `connected` is published
            self._bound = {}  # session -> Event set once its user is bound and its `connected` marker published
            self._late = set()  # sessions whose upgrade gave up waiting for their bind
            self._leaving_early = set()  # sessions whose socket closed before their `connected` was published
            settings = self._settings
            self._ledger = Ledger(settings.reconnect_window, settings.handover_wait, settings.max_owed,
                                  settings.catchup_margin, ROLES, self._clock)
            self._feed = Feed(settings, name, self).start()
            self._publisher = Publisher(self._settings.amqp_url, name)
        return self

    def drain(self, timeout):
        """Closes every socket with 1001 (going away) and waits for their
        teardown (drivers unregistered); then publishes a drained `left` for
        every user held here, open or away, carrying what was not written,
        from which the user's next socket, on any worker, reads back the
        record; deletes this worker's queue and closes the broker
        connections. Returns within timeout seconds."""
        self.draining = True
        if self._pid != os.getpid():
            return  # this worker never opened a socket
        began = time.monotonic()
        deadline = began + timeout
        connected = [c for c in self._connections.values() if c.connected]
        log.info("draining: closing %d sockets (1001)", len(connected))
        for connection in connected:  # at once: one phone slow to take its frame holds up no other
            gevent.spawn(connection.close, *GOING_AWAY)
        _wait(lambda: all(c.closed for c in self._connections.values()), deadline)
        closed = time.monotonic()
        drained = self._ledger.drain()
        self._apply(drained)
        # A drained `left` is confirmed once the registry has it: not read back, as the `left` of a
        # socket cut before the drain is (that one may still wait for its writer, unpublished).
        earlier = self._unsettled.difference(cut.session for cut in drained)
        _wait(lambda: self._unsettled.isdisjoint(earlier) and not self._feed.publishing, deadline)
        if not self._unsettled.isdisjoint(earlier) or self._feed.publishing:
            log.warning("draining: %d sockets not yet handed on, %d markers unconfirmed at the deadline",
                        len(self._unsettled & earlier), self._feed.publishing)
        handed_on = time.monotonic()
        deleted = self._feed.drop_queue().wait(max(0.0, deadline - time.monotonic()))
        dropped = time.monotonic()
        self._feed.stop()
        self._publisher.close()
        _wait(lambda: self._feed.stopped, deadline)
        log.info("drained: sockets closed, queue %s, broker connections %s (%.1f s: %d sockets closed in %.1f s, "
                 "%d `left`s confirmed in %.1f s, the queue's delete %.1f s)", "deleted" if deleted else "kept",
                 "closed" if self._feed.stopped else "still closing", time.monotonic() - began, len(connected),
                 closed - began, len(drained), handed_on - closed, dropped - handed_on)


def _wait(condition, deadline):
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.01)


def _owner(headers):
    owner = headers.get("owner")
    if not isinstance(owner, str):
        raise ValueError("no owner header")
    return owner


def _marker(kind, headers):
    """(role, session) of a marker; ValueError before the Ledger is told
    anything of a malformed one (half a hand-over would leave a socket waiting)."""
    role, session = headers.get("role"), headers.get("session")
    if kind not in (CONNECTED, LEAVING, LEFT) or role not in ROLES or not isinstance(session, str):
        raise ValueError("a marker has a marker's type and names a role and a session")
    return role, session


def _left_body(carried, seen):
    return json.dumps({
        "carried": [[n.type, n.message_id, n.body.decode(), telemetry.text_only(n.headers)] for n in carried],
        "seen": list(seen or ()),
    }).encode()


def _left(body):
    """(carried notices, seen ids) of a `left` (as _left_body wrote them);
    ValueError unless every notice is as it wrote them: one malformed record
    must not reach a socket."""
    left = json.loads(body)
    if not (isinstance(left, dict) and isinstance(left.get("carried"), list) and isinstance(left.get("seen"), list)):
        raise ValueError("a `left` is {carried: [notices], seen: [message ids]}")
    for item in left["carried"]:
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
                and isinstance(item[1], (str, type(None))) and isinstance(item[2], str) and isinstance(item[3], dict)):
            raise ValueError(f"a carried notice is not [type, message id, body, headers]: {item!r:.100}")
    return ([Notice(kind, message_id, body.encode(), headers) for kind, message_id, body, headers in left["carried"]],
            left["seen"])
