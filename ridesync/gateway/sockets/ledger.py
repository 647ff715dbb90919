"""Who gets which notification: decided from one ordered feed, the same on
every gateway worker, with no I/O here. Each call returns what this worker
is to do, as plain values (Deliver, Start, Cut), which the hub applies.

The feed (a RabbitMQ stream, sockets/feed.py) holds every
notification for a user's socket and, between them, markers of the sockets'
comings and goings: `connected` when a socket opens, `leaving` when it
closes, and `left` with what it had been given but had not written. Every
worker reads all of it in the same order, so each knows, at each point of
the feed, which session of a user is theirs to serve, and keeps, for a user
with no open socket, what they are owed for the reconnect window.

A session's notifications end where it is cut: at its own `leaving`, or at
a newer session's `connected`. Up to the cut they are its worker's to write;
what it did not write travels in its `left`, which the next session (on any
worker) takes first, then what was kept while no one had the user, then
what comes after."""
import logging
from collections import namedtuple

from ridesync.contract import ROLE_HEADER
from ridesync.ride.tracking import without_locations

log = logging.getLogger(__name__)

Notice = namedtuple("Notice", "offset type message_id body headers")
# What this worker does, in the order given:
Deliver = namedtuple("Deliver", "session notice")  # the session writes it, after what it was given before
Start = namedtuple("Start", "session first")  # the session writes: first these, then what it was given
Cut = namedtuple("Cut", "session")  # it gets nothing more; its `left` says what it did not write
# Not a setting: a marker is published again only after a reconnect of the
# feed, long before a user has had eight more sessions.
PAST_SESSIONS = 8  # sessions remembered per user, so a repeated marker changes nothing


class Ledger:
    def __init__(self, window, handover_wait, max_owed, roles, clock):
        """roles: role -> notification types its sockets take. handover_wait:
        seconds a new session waits for the `left` of the one it cut before
        it starts without it (that worker died). max_owed: notifications kept
        for one away user; the oldest go first."""
        self._window = window
        self._handover_wait = handover_wait
        self._max_owed = max_owed
        self._roles = roles
        self._clock = clock
        self._entries = {}  # (role, user id) -> _Entry
        self._here = set()  # sessions of this worker's sockets

    # This worker's own sockets.

    def register(self, session):
        """A socket is opening here; its `connected` marker follows in the feed."""
        self._here.add(session)

    def forget(self, session):
        self._here.discard(session)

    # The feed, in order: each returns what this worker does.

    def connected(self, role, user_id, session):
        entry = self._entry(role, user_id)
        if session == entry.open or session in entry.past:
            return []  # a marker published again after a reconnect
        decided = []
        if entry.open is not None:
            decided += self._cut(entry, entry.open)
        elif not entry.known and entry.owed:
            # Kept before this worker heard of the user: another worker may
            # have a socket of theirs that this one is about to cut.
            entry.awaiting = _UNKNOWN
        entry.known = True
        entry.open = session
        entry.waiting_since = self._clock()
        entry.forfeited = entry.dropping = False
        if entry.awaiting is not None:
            return decided  # it starts, on whichever worker has it, once the cut one's `left` is in
        if session not in self._here:
            entry.owed = []  # the worker that has the socket gives them
            return decided
        return decided + [self._hand_owed(entry, session, [], -1)]

    def leaving(self, role, user_id, session):
        entry = self._entry(role, user_id)
        decided = []
        if entry.open == session:
            decided = self._cut(entry, session)
        elif session not in entry.past and session not in entry.settled:
            # Opened before this worker's feed began: what was kept for the
            # user until now was that socket's, and its `left` says what it missed.
            _remember(entry.past, session)
            entry.awaiting = session
            entry.owed.clear()
        entry.known = True
        entry.expires = self._clock() + self._window
        return decided

    def left(self, role, user_id, session, cut, unwritten, forfeit=False):
        """cut: the feed offset where the session was cut; unwritten: the
        notices before it that its socket was given but did not write.
        forfeit: published by the worker of the session that waited for
        this one's `left` in vain; what was kept is all still owed."""
        entry = self._entry(role, user_id)
        if session in entry.settled:
            return []
        _remember(entry.settled, session)
        entry.known = True
        if entry.awaiting in (session, _UNKNOWN) or forfeit:
            entry.awaiting = None
        # What was kept before the cut of a session this worker never saw
        # open was that session's; for one it saw, it is still owed.
        since = -1 if forfeit or session in entry.past else cut
        if entry.open in self._here:
            return [self._hand_owed(entry, entry.open, unwritten, since)]
        if entry.open is None:
            entry.owed = unwritten + [notice for notice in entry.owed if notice.offset > since]
            entry.expires = self._clock() + self._window
        elif entry.awaiting is None:
            entry.owed = []  # the open session's worker has started it with them
        return []

    def notice(self, user_id, notice):
        named = notice.headers.get(ROLE_HEADER)
        decided = []
        for role, types in self._roles.items():
            if notice.type not in types or (named in self._roles and named != role):
                continue  # a trip's rider r1 and its driver r1 are two users
            entry = self._entry(role, user_id)
            here = entry.open in self._here
            if entry.open is None or (here and entry.awaiting is not None):
                entry.owed.append(notice)  # until someone connects, or the one here may start
                if len(entry.owed) > self._max_owed:
                    del entry.owed[0]
                    if not entry.dropping:  # one log line while they are away, not one per notification
                        log.warning("%s %s is away with over %d notifications; dropping the oldest",
                                    role, user_id, self._max_owed)
                        entry.dropping = True
            elif here:
                decided.append(Deliver(entry.open, notice))
        return decided

    def expire(self):
        """Forgets users away longer than the window. Returns the sessions
        whose `left` a socket here waited for too long (its worker died):
        [(role, user id, session)], for this worker to publish a forfeit
        `left` for each, so that every worker goes on at the same point."""
        now = self._clock()
        forfeits = []
        for key, entry in list(self._entries.items()):
            if (entry.awaiting is not None and not entry.forfeited and entry.open in self._here
                    and now - entry.waiting_since > self._handover_wait):
                awaited = f"unknown-{entry.open}" if entry.awaiting is _UNKNOWN else entry.awaiting
                log.warning("%s %s: no `left` for session %s within %.0fs; going on without what it held",
                            key[0], key[1], awaited, self._handover_wait)
                entry.forfeited = True
                forfeits.append((key[0], key[1], awaited))
            if entry.open is None and now > entry.expires:
                del self._entries[key]
        return forfeits

    @property
    def users(self):
        return len(self._entries)

    def _entry(self, role, user_id):
        entry = self._entries.get((role, user_id))
        if entry is None:
            entry = self._entries[(role, user_id)] = _Entry(self._clock() + self._window)
        return entry

    def _cut(self, entry, session):
        """The open session gets nothing more; its worker, if it is this
        one, publishes its `left`."""
        entry.open = None
        _remember(entry.past, session)
        if session not in entry.settled:
            entry.awaiting = session
        return [Cut(session)] if session in self._here else []

    @staticmethod
    def _hand_owed(entry, session, unwritten, cut):
        """The open session starts: first what the cut one did not write,
        then what was kept after that cut (but no driver's location: the
        last one is in its `trip.state`), then what comes."""
        first = without_locations(unwritten + [notice for notice in entry.owed if notice.offset > cut])
        entry.owed = []
        return Start(session, first)


_UNKNOWN = object()  # awaiting the `left` of a session this worker never saw open


def _remember(sessions, session):
    sessions.append(session)
    del sessions[:-PAST_SESSIONS]


class _Entry:
    """What the feed says of one user in one role."""

    __slots__ = ("open", "awaiting", "waiting_since", "owed", "expires", "past", "settled", "known", "forfeited",
                 "dropping")

    def __init__(self, expires):
        self.open = None  # the session that gets this user's notifications now
        self.awaiting = None  # a cut session whose `left` has not come yet
        self.waiting_since = 0.0
        self.owed = []  # kept while no session takes them, oldest first
        self.expires = expires  # while no session is open: forgotten after this
        self.past = []  # sessions cut, newest last
        self.settled = []  # sessions whose `left` was seen, newest last
        self.known = False  # a marker of this user was seen
        self.forfeited = False  # this worker gave up waiting for the awaited `left`
        self.dropping = False  # over max_owed: the oldest of what was kept are being dropped
