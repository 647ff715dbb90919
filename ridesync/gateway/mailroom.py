"""Who gets which notification: decided from one ordered feed, the same on
every gateway worker, with no I/O here.

The feed (a RabbitMQ stream, ridesync/gateway/inboxes.py) holds every
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
MAX_OWED = 1000  # notifications kept for one away user; the oldest go first
PAST_SESSIONS = 8  # sessions remembered per user, so a repeated marker changes nothing


class Mailroom:
    def __init__(self, window, handover_wait, roles, clock):
        """roles: role -> notification types its sockets take. handover_wait:
        seconds a new session waits for the `left` of the one it cut before
        it starts without it (that worker died)."""
        self._window = window
        self._handover_wait = handover_wait
        self._roles = roles
        self._clock = clock
        self._lines = {}  # (role, user id) -> _Line
        self._here = {}  # session -> this worker's inbox for it

    # This worker's own sockets.

    def register(self, inbox):
        """A socket is opening here; its `connected` marker follows in the feed."""
        self._here[inbox.session] = inbox

    def forget(self, inbox):
        self._here.pop(inbox.session, None)

    # The feed, in order.

    def connected(self, role, user_id, session):
        line = self._line(role, user_id)
        if session == line.open or session in line.past:
            return  # a marker published again after a reconnect
        if line.open is not None:
            self._cut(line, line.open)
        elif not line.known and line.owed:
            # Kept before this worker heard of the user: another worker may
            # have a socket of theirs that this one is about to cut.
            line.awaiting = _UNKNOWN
        line.known = True
        line.open = session
        line.waiting_since = self._clock()
        line.forfeited = line.dropping = False
        inbox = self._here.get(session)
        if line.awaiting is not None:
            return  # it starts, on whichever worker has it, once the cut one's `left` is in
        if inbox is None:
            line.owed = []  # the worker that has the socket gives them
        else:
            self._hand_owed(line, inbox, [], -1)

    def leaving(self, role, user_id, session):
        line = self._line(role, user_id)
        if line.open == session:
            self._cut(line, session)
        elif session not in line.past and session not in line.settled:
            # Opened before this worker's feed began: what was kept for the
            # user until now was that socket's, and its `left` says what it missed.
            _remember(line.past, session)
            line.awaiting = session
            line.owed.clear()
        line.known = True
        line.expires = self._clock() + self._window

    def left(self, role, user_id, session, cut, unwritten, forfeit=False):
        """cut: the feed offset where the session was cut; unwritten: the
        notices before it that its socket was given but did not write.
        forfeit: published by the worker of the session that waited for
        this one's `left` in vain; what was kept is all still owed."""
        line = self._line(role, user_id)
        if session in line.settled:
            return
        _remember(line.settled, session)
        line.known = True
        if line.awaiting in (session, _UNKNOWN) or forfeit:
            line.awaiting = None
        # What was kept before the cut of a session this worker never saw
        # open was that session's; for one it saw, it is still owed.
        since = -1 if forfeit or session in line.past else cut
        inbox = self._here.get(line.open)
        if inbox is not None:
            self._hand_owed(line, inbox, unwritten, since)
        elif line.open is None:
            line.owed = unwritten + [notice for notice in line.owed if notice.offset > since]
            line.expires = self._clock() + self._window
        elif line.awaiting is None:
            line.owed = []  # the open session's worker has started it with them

    def notice(self, user_id, notice):
        named = notice.headers.get(ROLE_HEADER)
        for role, types in self._roles.items():
            if notice.type not in types or (named in self._roles and named != role):
                continue  # a trip's rider r1 and its driver r1 are two users
            line = self._line(role, user_id)
            inbox = self._here.get(line.open)
            if line.open is None or (inbox is not None and line.awaiting is not None):
                line.owed.append(notice)  # until someone connects, or the one here may start
                if len(line.owed) > MAX_OWED:
                    del line.owed[0]
                    if not line.dropping:  # one line while they are away, not one per notification
                        log.warning("%s %s is away with over %d notifications; dropping the oldest",
                                    role, user_id, MAX_OWED)
                        line.dropping = True
            elif inbox is not None:
                inbox.put(notice)

    def expire(self):
        """Forgets users away longer than the window. Returns the sessions
        whose `left` a socket here waited for too long (its worker died):
        [(role, user id, session)], for this worker to publish a forfeit
        `left` for each, so that every worker goes on at the same point."""
        now = self._clock()
        forfeits = []
        for key, line in list(self._lines.items()):
            if (line.awaiting is not None and not line.forfeited and line.open in self._here
                    and now - line.waiting_since > self._handover_wait):
                awaited = f"unknown-{line.open}" if line.awaiting is _UNKNOWN else line.awaiting
                log.warning("%s %s: no `left` for session %s within %.0fs; going on without what it held",
                            key[0], key[1], awaited, self._handover_wait)
                line.forfeited = True
                forfeits.append((key[0], key[1], awaited))
            if line.open is None and now > line.expires:
                del self._lines[key]
        return forfeits

    @property
    def users(self):
        return len(self._lines)

    def _line(self, role, user_id):
        line = self._lines.get((role, user_id))
        if line is None:
            line = self._lines[(role, user_id)] = _Line(self._clock() + self._window)
        return line

    def _cut(self, line, session):
        """The open session gets nothing more; its worker, if it is this
        one, publishes its `left`."""
        line.open = None
        _remember(line.past, session)
        if session not in line.settled:
            line.awaiting = session
        inbox = self._here.get(session)
        if inbox is not None:
            inbox.cut()

    @staticmethod
    def _hand_owed(line, inbox, unwritten, cut):
        """The open session starts: first what the cut one did not write,
        then what was kept after that cut (but no driver's location: the
        last one is in its `trip.state`), then what comes."""
        inbox.release(without_locations(unwritten + [notice for notice in line.owed if notice.offset > cut]))
        line.owed = []


_UNKNOWN = object()  # awaiting the `left` of a session this worker never saw open


def _remember(sessions, session):
    sessions.append(session)
    del sessions[:-PAST_SESSIONS]


class _Line:
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
        self.dropping = False  # over MAX_OWED: the oldest of what was kept are being dropped
