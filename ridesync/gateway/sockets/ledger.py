"""Who gets which notification on this gateway worker, decided with no I/O:
each call returns what the worker does, as plain values the hub applies.

Two orders reach it. The registry (a stream of markers, read whole, in the
same order by every worker) says who holds whom: `connected` when a socket
opens, `leaving` when it closes, `left` when its worker has cut it, carrying
what it did not write. The worker's own queue, in its own order, brings the
notifications of the users bound to it, and the `connected` markers (M) of
those users. A hand-over of user U from socket a (worker A) to b (worker B,
maybe A itself):

1. B registers b and binds U's key to its queue (Bind); from then on what
   it reads for U is kept for b, its buffer.
2. B publishes M = connected(b), to the registry and to every queue bound
   to U: A's and its own.
3. Every worker reads connected(b) in the registry: a is awaited, unless its
   `left` is in or it was away longer than the window.
4. A reads M in ITS queue and cuts a there (Cut): what came before M was a's
   (written, unwritten, or owed while away), what comes after is dropped.
   Its `left` carries the unwritten and owed, and the ids a had lately
   (seen). A keeps U bound for the window, dropping what comes, then
   unbinds U unless it holds a socket of theirs again: so a socket of U
   opened on A meanwhile buffers from where A's queue is read, with no
   gap. (Unbound at once, what A had not read yet of its queue, b's,
   came first in that buffer; b's `left` names only the ids b had lately,
   so older ones were written twice, in front of newer.)
5. B has read left(a) in the registry and M in its own queue: b starts
   (Start) with what it carried, then its buffer (what B's queue held in
   front of M) less the ids carried or seen; then it is given what comes,
   in order. (Started on left(a) alone, with B's queue read behind its
   registry, the buffer was only the front of that, older than any id
   a's `left` names, and was written twice, as was what came up to M.)

No left(a) within HANDOVER_WAIT (A died): B forfeits a (Forfeit) and goes
on. A socket that closed stays held, bound, and owed what comes for the
window, then is cut with nothing. A drained worker's `left` is kept by
every worker for the user's next socket, which first catches up (CatchUp)
from the notifications stream what reached no queue meanwhile.

A queue that lost what it held (gone when the feed reconnected: a broker
restart, a deletion) is made anew and its users bound again; every user
held here then reads back from the record what it lost (Recover), and what
the new queue brings for them waits behind that, in its order."""
import itertools
import logging
from collections import namedtuple

from ridesync.contract import CONNECTED, ROLE_HEADER
from ridesync.ride.tracking import without_locations

log = logging.getLogger(__name__)

Notice = namedtuple("Notice", "type message_id body headers")
# What this worker does, in the order given:
Deliver = namedtuple("Deliver", "session notice")  # the socket writes it, after what it was given
Start = namedtuple("Start", "session first")  # the socket writes: first these, then what it was given
# its `left`: unwritten + owed, and seen; drained, since lost_since (epoch s) when its user was recovering
Cut = namedtuple("Cut", "session owed seen drained lost_since", defaults=(False, None))
Bind = namedtuple("Bind", "role user_id")  # the user's key to this worker's queue
Unbind = namedtuple("Unbind", "role user_id")
CatchUp = namedtuple("CatchUp", "role user_id session since skip")  # read back from since (epoch s) until M(session)
Forfeit = namedtuple("Forfeit", "role user_id session")  # a `left` for it: its worker died holding it
Recover = namedtuple("Recover", "role user_id since")  # read back what the lost queue held, from since (epoch s)

_Left = namedtuple("_Left", "session carried seen drained_at")  # a `left` read, for the socket after it
# Not settings: a marker comes again only after a broker reconnect, long
# before a user has had eight more sockets; and a hand-over's overlap is the
# few ms between the new socket's bind-ok and its M, far under 64 notices.
PAST_SESSIONS = 8  # sessions remembered per user, so a repeated marker changes nothing
SEEN_IDS = 64  # ids a socket had lately: a `left` names them, and a repeated notice is dropped


class Ledger:
    def __init__(self, window, handover_wait, max_owed, catchup_margin, roles, clock):
        """roles: role -> notification types its sockets take. max_owed:
        notices kept for one socket not writing; the oldest go first.
        catchup_margin: seconds a catch-up reads back before the time it is
        given (clocks differ)."""
        self._window, self._handover_wait = window, handover_wait
        self._max_owed, self._catchup_margin = max_owed, catchup_margin
        self._roles, self._clock = roles, clock
        self._entries = {}  # (role, user id) -> _Entry
        self._here = {}  # session -> _Held: this worker's sockets, until cut
        # What expire() looks at, so that it costs nothing per user held or known:
        self._waiting = {}  # session -> _Held awaiting `left`s, oldest first
        self._expiring = {}  # (role, user id) -> _Entry whose newest session left, soonest to expire first
        self._unbinding = {}  # (role, user id) -> when its binding goes: its sockets here were cut, soonest first

    # This worker's sockets.

    def register(self, role, user_id, session):
        """A socket opening here, before its bind and its marker."""
        entry = self._entry(role, user_id)
        held = self._here[session] = _Held(session, role, user_id)
        entry.here = (*(entry.here or ()), held)
        return [Bind(role, user_id)] if len(entry.here) == 1 else []

    def late(self, role, user_id, session, since):
        """Its bind-ok came late (MARKER_WAIT): what was published from since
        (epoch s) may be only in the notifications stream; it catches up."""
        held = self._here.get(session)
        if held is not None:
            held.late_since = since
        return []

    def forget(self, session):
        """Its socket is gone and its `left` is in the registry."""
        held = self._here.pop(session, None)
        return [] if held is None else self._drop(self._entries[held.role, held.user_id], held)

    # The registry, in order.

    def connected(self, role, user_id, session):
        entry = self._entry(role, user_id)
        order = entry.order()
        if session in order:
            return []  # published again after a broker reconnect
        if entry.last is not None:
            entry.past = _remember(entry.past, entry.last)
            if not entry.settled and not entry.expired(self._clock()):
                entry.awaiting = [*(entry.awaiting or ()), entry.last]
        entry.last, entry.settled, entry.expires = session, False, None
        self._expiring.pop((role, user_id), None)
        decided = []
        for held in list(entry.here or ()):
            if not held.started and held.session in order:
                decided += self._cut(entry, held)  # replaced before it started: its buffer goes on
        lefts, entry.lefts = entry.lefts, None  # its worker takes them
        held = self._here.get(session)
        if held is None:
            return decided
        held.lefts, held.waiting_since = lefts, self._clock()
        if entry.awaiting:
            self._waiting[session] = held
        return decided + self._ready(entry)

    def leaving(self, role, user_id, session):
        entry = self._entry(role, user_id)
        held = self._here.get(session)
        if held is not None:
            held.away = True  # what comes for it is owed
        if session == entry.last or entry.last is None:  # None: it opened before this worker's registry began
            entry.last = session
            self._expires((role, user_id), entry)
        return []

    def left(self, role, user_id, session, carried, seen, forfeit=False, drained_at=None):
        """carried: what the session was given and did not write, and was
        owed; seen: ids it had lately. forfeit: published by the worker of
        the socket that waited for it in vain. drained_at: its worker
        stopped then (epoch s); what came after reached only the stream."""
        entry = self._entries.get((role, user_id))
        if entry is None and drained_at is None:
            return []  # no socket of the user here, nor kept for one
        entry = entry or self._entry(role, user_id)
        part = _Left(session, carried, seen, drained_at)
        held = self._here.get(session)
        decided = self._cut(entry, held) if held is not None else []  # forfeited: its M never reached this queue
        mine = self._here.get(entry.last)
        if session in (entry.awaiting or ()):
            entry.awaiting = [s for s in entry.awaiting if s != session] or None
            if mine is not None:
                mine.lefts = [*(mine.lefts or ()), part]
        elif session == entry.last or entry.last is None:
            if entry.settled:
                return decided
            entry.last, entry.settled, entry.lefts = session, True, [part]  # for the user's next socket
            self._expires((role, user_id), entry)
        elif session not in (entry.past or ()):  # opened before this worker's registry began: nobody awaited it
            entry.past = [session, *(entry.past or ())][:PAST_SESSIONS]
            if mine is not None and mine.started:
                return decided + self._give_late(mine, carried)
            if mine is not None:
                mine.lefts = [*(mine.lefts or ()), part]
        return decided + self._ready(entry)

    # This worker's queue, in its order.

    def notice(self, user_id, notice):
        decided = []
        for role in self._roles_taking(notice):  # a trip's rider r1 and its driver r1 are two users
            entry = self._entries.get((role, user_id))
            if entry is None or not entry.here:
                continue  # not held here (an unbind on its way)
            if entry.recovering is not None:
                entry.recovering.append(notice)
            else:
                decided += self._give(entry, notice)
        return decided

    def marker(self, role, user_id, session):
        """M(session): the socket held here that was writing is cut, unless
        the marker is of a socket older than it (a repeat)."""
        entry = self._entries.get((role, user_id))
        if entry is not None and entry.recovering is not None:
            entry.recovering.append(session)
            return []
        return [] if entry is None else self._cut_at(entry, session)

    def queue_lost(self, since):
        """This worker's queue lost what it held or was routed from since
        (epoch s) on: every user held here reads it back from the record;
        what the queue made anew brings for them waits until then."""
        decided = []
        for (role, user_id), entry in self._entries.items():
            if entry.here:
                entry.recovering = entry.recovering or []
                entry.lost_since = min(since, entry.lost_since or since)
                decided.append(Recover(role, user_id, since - self._catchup_margin))
        return decided

    def recovered(self, role, user_id, records):
        """What the lost queue held for the user, read back from the record
        in its order (notices and `connected` markers), less what the
        user's sockets had; then what the new queue brought meanwhile, less
        what the record had (all of it: more than SEEN_IDS may be in both)."""
        entry = self._entries.get((role, user_id))
        if entry is None or entry.recovering is None:
            return []
        read = {record.message_id for record in records}
        waited = [record for record in entry.recovering if isinstance(record, str) or record.message_id not in read]
        entry.recovering, entry.lost_since = None, None
        had = max((held.seen or [] for held in entry.here or ()), key=len, default=[])
        decided = []
        for record in [*_from_seen(records, had), *waited]:
            if isinstance(record, str):
                decided += self._cut_at(entry, record)
            elif record.type == CONNECTED:
                if record.headers.get("role") == role:
                    decided += self._cut_at(entry, record.headers.get("session"))
            elif role in self._roles_taking(record):
                decided += self._give(entry, record)
        return decided

    def caught_up(self, role, user_id, session, notices):
        """A catch-up's records for the user, in stream order: those up to the
        last one the cut sockets had (seen or carried) were theirs."""
        held = self._here.get(session)
        if held is None or not held.catching:
            return []
        held.catching = False
        skip = _skip(held.lefts)
        had = [i for i, notice in enumerate(notices) if notice.message_id in skip]
        caught = [notice for notice in notices[had[-1] + 1 if had else 0:] if role in self._roles_taking(notice)]
        return self._start(held, caught)

    # Every FEED_ACK_PAUSE, and at the end.

    def expire(self):
        """Forfeits of sockets that waited too long for a `left` (its worker
        died); cuts of sockets away longer than the window; forgets users;
        unbinds users whose sockets here were replaced a window ago."""
        now = self._clock()
        decided = []
        for session, held in list(self._waiting.items()):
            entry = self._entries.get((held.role, held.user_id))
            if self._here.get(session) is not held or entry.last != session or not entry.awaiting:
                del self._waiting[session]  # it started, or was cut
            elif now - held.waiting_since > self._handover_wait:
                log.warning("%s %s: no `left` for session(s) %s within %.0fs; going on without what they held",
                            held.role, held.user_id, ", ".join(entry.awaiting), self._handover_wait)
                del self._waiting[session]
                decided += [Forfeit(held.role, held.user_id, awaited) for awaited in entry.awaiting]
        for key, entry in list(itertools.takewhile(lambda item: item[1].expires < now, self._expiring.items())):
            del self._expiring[key]
            for held in [held for held in entry.here or () if held.away]:
                decided += self._cut(entry, held, expired=True)
            if not entry.here:
                self._entries.pop(key, None)  # (a cut above forgot it already)
        for key, at in list(itertools.takewhile(lambda item: item[1] < now, self._unbinding.items())):
            del self._unbinding[key]
            entry = self._entries.get(key)
            if entry is None or not entry.here:
                decided.append(Unbind(*key))
        return decided

    def drain(self):
        """The worker stops: every socket held here is cut, its `left` drained."""
        return [decision for held in list(self._here.values())
                for decision in self._cut(self._entries[held.role, held.user_id], held, drained=True)]

    @property
    def users(self):
        return len(self._entries)

    @property
    def bound(self):
        return {key for key, entry in self._entries.items() if entry.here} | set(self._unbinding)

    def _expires(self, key, entry):
        """Its newest session left: the user is forgotten after the window."""
        if entry.expires is None:
            entry.expires = self._clock() + self._window
            self._expiring[key] = entry

    def _entry(self, role, user_id):
        entry = self._entries.get((role, user_id))
        if entry is None:
            entry = self._entries[role, user_id] = _Entry()
        return entry

    def _give(self, entry, notice):
        writing = [held for held in entry.here or () if held.started]
        decided = []
        for held in writing or entry.here or ():  # before M, the started socket's; else the new ones' buffers
            decided += self._take(held, notice)
        return decided

    def _cut_at(self, entry, session):
        """M(session), read in order: the socket writing here before it is
        cut; the socket of that session, if here, has its buffer whole."""
        decided = []
        for held in entry.here or ():
            if held.started and held.session != session and not entry.older(session, held.session):
                decided = self._cut(entry, held)
                break
        mine = self._here.get(session)
        if mine is None:
            return decided
        mine.marked = True
        return decided + self._ready(entry)

    def _roles_taking(self, notice):
        named = notice.headers.get(ROLE_HEADER)
        return [role for role, types in self._roles.items()
                if notice.type in types and (named not in self._roles or named == role)]

    def _take(self, held, notice):
        if notice.message_id in (held.seen or ()):
            return []  # read again after a broker reconnect
        held.seen = _noted(held.seen, [notice.message_id])
        if held.started and not held.away:
            return [Deliver(held.session, notice)]
        held.kept = held.kept or []
        held.kept.append(notice)
        if len(held.kept) > self._max_owed:
            del held.kept[0]
            if not held.dropping:  # one log line per socket, not one per notice
                log.warning("%s %s: over %d notices kept for a socket not writing; dropping the oldest",
                            held.role, held.user_id, self._max_owed)
                held.dropping = True
        return []

    def _ready(self, entry):
        """The user's newest socket, if here, its marker read in this
        worker's queue and awaiting nothing more, starts (or first catches
        up what reached only the stream)."""
        held = self._here.get(entry.last)
        if held is None or held.started or held.catching or entry.awaiting or not held.marked:
            return []
        if held.lefts:
            held.lefts.sort(key=lambda part: entry.position(part.session))
        since = [part.drained_at for part in held.lefts or () if part.drained_at is not None]
        since += [held.late_since] if held.late_since is not None else []
        if not since:
            return self._start(held, [])
        held.catching = True
        return [CatchUp(held.role, held.user_id, held.session, min(since) - self._catchup_margin,
                        frozenset(_skip(held.lefts)))]

    def _start(self, held, caught):
        """First what the sockets before it carried, what was caught up, its
        buffer, each less what came before (no driver's location: the last
        one is in `trip.state`); then what it is given. Owed, if its socket
        closed meanwhile."""
        first = without_locations(_first(held, caught)[0])
        held.started, held.lefts, held.kept = True, None, first if held.away and first else None
        held.seen = _noted(held.seen, [notice.message_id for notice in first])
        return [] if held.away else [Start(held.session, first)]

    def _give_late(self, held, carried):
        """A `left` no one here awaited, for a socket already writing: what it
        carried, less what the socket had, goes in front of what it was given."""
        first = without_locations([notice for notice in carried if notice.message_id not in (held.seen or ())])
        held.seen = _noted(held.seen, [notice.message_id for notice in first])
        return [Start(held.session, first)] if first else []

    def _cut(self, entry, held, drained=False, expired=False):
        self._here.pop(held.session, None)
        owed, seen = ([], []) if expired else _first(held, [])
        unbind = self._drop(entry, held)
        cut = Cut(held.session, owed, seen, drained, entry.lost_since if drained else None)
        if drained:
            return [cut]  # a stopping queue just expires
        if unbind and not expired:  # replaced: bound for the window yet (the module's step 4)
            key, unbind = (held.role, held.user_id), []
            self._unbinding.pop(key, None)
            self._unbinding[key] = self._clock() + self._window
        return [cut, *unbind]

    def _drop(self, entry, held):
        entry.here = tuple(other for other in entry.here if other is not held) or None
        if entry.here:
            return []
        key = (held.role, held.user_id)
        if entry.last is None or (entry.expired(self._clock()) and key not in self._expiring):
            del self._entries[key]  # never in the registry, or expire() passed it by while a socket was opening
        return [Unbind(held.role, held.user_id)]


def _first(held, caught):
    """What a socket hands on or starts with, oldest first, each notice
    once, and the ids it had (seen)."""
    first, skip, seen = [], set(), ()
    for part in held.lefts or ():
        first += _fresh(part.carried, skip)
        skip.update(part.seen)
        seen = part.seen
    first += _fresh(caught, skip)
    first += _fresh(_from_seen(held.kept or [], seen), skip)
    return first, [*skip.difference(notice.message_id for notice in first), *(held.seen or ())]


def _from_seen(buffer, seen):
    """The buffer from the first notice the socket before had among the
    last SEEN_IDS it had: when it had that many, what comes before in the
    buffer (one publisher's order is every queue's) it had too."""
    if len(seen) < SEEN_IDS:
        return buffer  # seen names all it had
    seen = set(seen)
    return next((buffer[i:] for i, notice in enumerate(buffer) if notice.message_id in seen), buffer)


def _fresh(notices, skip):
    fresh = [notice for notice in notices if notice.message_id not in skip]
    skip.update(notice.message_id for notice in notices)
    return fresh


def _skip(lefts):
    return {i for part in lefts or () for i in (*part.seen, *(notice.message_id for notice in part.carried))}


def _remember(sessions, session):
    return [*(sessions or ()), session][-PAST_SESSIONS:]


def _noted(seen, ids):
    """seen and then ids, the last SEEN_IDS; None while there are none (an idle socket holds no list)."""
    if not ids:
        return seen
    seen = seen or []
    seen += ids
    del seen[:-SEEN_IDS]
    return seen


class _Entry:
    """One user in one role: the registry's view, and this worker's sockets."""

    __slots__ = ("last", "settled", "expires", "awaiting", "past", "lefts", "here", "recovering", "lost_since")

    def __init__(self):
        self.last = None  # the newest session in the registry
        self.settled = False  # its `left` is in
        self.expires = None  # it left: forgotten after this
        self.awaiting = None  # older sessions whose `left` it waits for, oldest first
        self.past = None  # older sessions, oldest first
        self.lefts = None  # the `left` of the newest session, for the user's next one
        self.here = None  # a tuple of _Held: the user's sockets on this worker, oldest first
        self.recovering = None  # while it reads back what the lost queue held: what the new queue brought
        self.lost_since = None  # meanwhile: from when (epoch s)

    def order(self):
        return [*(self.past or ()), *([self.last] if self.last is not None else [])]

    def position(self, session):
        order = self.order()
        return order.index(session) if session in order else -1

    def older(self, session, than):
        """session is known to the registry, ahead of than."""
        order = self.order()
        return session in order and than in order and order.index(session) < order.index(than)

    def expired(self, now):
        return self.expires is not None and now > self.expires


class _Held:
    """One socket of this worker, from its registration to its cut."""

    __slots__ = ("session", "role", "user_id", "started", "away", "catching", "dropping", "marked", "kept", "seen",
                 "lefts", "waiting_since", "late_since")

    def __init__(self, session, role, user_id):
        self.session, self.role, self.user_id = session, role, user_id
        self.started = False  # it writes: Start was decided
        self.away = False  # its socket closed: what comes is owed
        self.catching = False  # a CatchUp is out for it
        self.dropping = False  # over max_owed: the oldest kept are being dropped
        self.marked = False  # its `connected` marker was read in this worker's queue: its buffer is whole
        self.kept = None  # its buffer before it starts, what it is owed once away; oldest first
        self.seen = None  # the last SEEN_IDS ids it had
        self.lefts = None  # _Left of the sockets before it, read before it started
        self.waiting_since = 0.0  # its `connected` was read then
        self.late_since = None  # its bind-ok came late: catch up from then (epoch s)
