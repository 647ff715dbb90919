"""Who gets which notification, from the feed alone: the Ledger of each
worker, fed the same records in the same order, with no broker; what it
decides is applied to stand-in sockets as the hub applies it."""
import pytest

from ridesync.gateway.sockets.ledger import Cut, Deliver, Ledger, Notice, Start

ROLES = {"rider": {"trip.event.created", "trip.event.completed"},
         "driver": {"driver.cmd.trip_request", "trip.event.completed"}}
WINDOW, HANDOVER_WAIT, MAX_OWED = 30.0, 5.0, 1000


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Inbox:
    """A socket as the Ledger's decisions reach it: what it was handed, in the order it would write it."""

    def __init__(self, session, role="rider", user_id="r1"):
        self.session, self.role, self.user_id = session, role, user_id
        self.written, self.live, self.cut_off = [], False, False

    def put(self, notice):
        assert not self.cut_off, "a cut inbox gets nothing more"
        self.written.append(notice.message_id)  # held until live: order is what counts here

    def release(self, first):
        self.written[:0] = [notice.message_id for notice in first]
        self.live = True

    def cut(self):
        self.cut_off = True


class Worker:
    """A worker's Ledger, its decisions applied to the sockets registered here."""

    def __init__(self, ledger):
        self._ledger, self._inboxes = ledger, {}

    def register(self, inbox):
        self._inboxes[inbox.session] = inbox
        self._ledger.register(inbox.session)

    def __getattr__(self, name):
        method = getattr(self._ledger, name)
        if name not in ("connected", "leaving", "left", "notice"):
            return method
        return lambda *args: self._apply(method(*args))

    def _apply(self, decided):
        for decision in decided:
            inbox = self._inboxes[decision.session]
            if isinstance(decision, Deliver):
                inbox.put(decision.notice)
            elif isinstance(decision, Start):
                inbox.release(decision.first)
            else:
                assert isinstance(decision, Cut)
                inbox.cut()

    @property
    def users(self):
        return self._ledger.users


class Feed:
    """Records in offset order, to one or more workers' Ledgers."""

    def __init__(self, *mailrooms):
        self.mailrooms, self.offset = list(mailrooms), 0

    def _next(self):
        self.offset += 1
        return self.offset

    def event(self, user_id, kind="trip.event.created", message_id=None):
        offset = self._next()
        notice = Notice(offset, kind, message_id or f"m{offset}", b"{}", {})
        for room in self.mailrooms:
            room.notice(user_id, notice)
        return notice

    def connected(self, session, role="rider", user_id="r1"):
        self._next()
        for room in self.mailrooms:
            room.connected(role, user_id, session)

    def opened(self, room, *inboxes):
        """Sockets opening on the worker of room."""
        for inbox in inboxes:
            room.register(inbox)
            self.connected(inbox.session, inbox.role, inbox.user_id)

    def leaving(self, session, role="rider", user_id="r1"):
        offset = self._next()
        for room in self.mailrooms:
            room.leaving(role, user_id, session)
        return offset

    def left(self, session, cut, unwritten=(), role="rider", user_id="r1", forfeit=False):
        self._next()
        for room in self.mailrooms:
            room.left(role, user_id, session, cut, list(unwritten), forfeit)


def mailroom(clock):
    return Worker(Ledger(WINDOW, HANDOVER_WAIT, MAX_OWED, ROLES, clock))


def test_a_connected_user_gets_their_events_in_order_and_no_one_elses():
    clock = Clock()
    room = mailroom(clock)
    mine, theirs = Inbox("s1"), Inbox("s2", user_id="r2")
    feed = Feed(room)
    feed.opened(room, mine, theirs)
    first, second = feed.event("r1"), feed.event("r1")
    other = feed.event("r2")
    assert mine.live and mine.written == [first.message_id, second.message_id]
    assert theirs.written == [other.message_id]


def test_a_type_goes_only_to_the_roles_that_take_it():
    clock = Clock()
    room = mailroom(clock)
    rider, driver = Inbox("s1"), Inbox("s2", role="driver")
    feed = Feed(room)
    feed.opened(room, rider, driver)
    request = feed.event("r1", "driver.cmd.trip_request")
    completed = feed.event("r1", "trip.event.completed")
    assert rider.written == [completed.message_id]
    assert driver.written == [request.message_id, completed.message_id]


def test_a_notification_naming_its_role_goes_only_to_that_role_of_the_owner_here_or_kept_elsewhere():
    clock = Clock()
    here, there = mailroom(clock), mailroom(clock)
    feed = Feed(here, there)
    rider = Inbox("s1")
    feed.opened(here, rider)
    for_rider = Notice(feed._next(), "trip.event.completed", "for-rider", b"{}", {"role": "rider"})
    for room in (here, there):
        room.notice("r1", for_rider)
    driver = Inbox("s2", role="driver")
    feed.opened(there, driver)  # a driver r1 after the rider r1's event, on another worker
    for_driver = feed.event("r1", "driver.cmd.trip_request")
    assert rider.written == ["for-rider"]
    assert driver.written == [for_driver.message_id]


def test_what_a_closed_socket_did_not_write_and_what_came_while_away_reach_the_next_socket_elsewhere_in_order():
    clock = Clock()
    here, there = mailroom(clock), mailroom(clock)
    feed = Feed(here, there)
    old = Inbox("s1")
    here.register(old)
    feed.connected("s1")
    written, unwritten = feed.event("r1"), feed.event("r1")
    cut = feed.leaving("s1")
    assert old.cut_off
    away = [feed.event("r1"), feed.event("r1")]
    feed.left("s1", cut, [unwritten])
    clock.now += WINDOW - 1
    new = Inbox("s2")
    there.register(new)
    feed.connected("s2")
    after = feed.event("r1")
    assert new.live
    assert new.written == [n.message_id for n in [unwritten, *away, after]]
    assert written.message_id not in new.written


def test_a_newer_socket_cuts_the_older_one_and_waits_for_what_it_did_not_write():
    clock = Clock()
    here, there = mailroom(clock), mailroom(clock)
    feed = Feed(here, there)
    old, new = Inbox("s1"), Inbox("s2")
    here.register(old)
    there.register(new)
    feed.connected("s1")
    unwritten = feed.event("r1")
    feed.connected("s2")
    assert old.cut_off and not new.live
    during = feed.event("r1")  # before the old socket's worker said what it held
    feed.left("s1", cut=feed.offset - 1, unwritten=[unwritten])
    after = feed.event("r1")
    assert new.live and new.written == [unwritten.message_id, during.message_id, after.message_id]


def test_a_repeated_marker_of_an_older_socket_changes_nothing():
    clock = Clock()
    room = mailroom(clock)
    feed = Feed(room)
    old, new = Inbox("s1"), Inbox("s2")
    room.register(old)
    room.register(new)
    feed.connected("s1")
    feed.connected("s2")
    feed.left("s1", cut=feed.offset)
    feed.connected("s1")  # published again after a broker reconnect
    event = feed.event("r1")
    assert new.written == [event.message_id] and not new.cut_off


def test_a_worker_that_started_after_the_socket_opened_drops_what_that_socket_had():
    """Its feed began after the `connected`: the user looked away, but what
    it kept was the open socket's, which says in its `left` what it missed."""
    clock = Clock()
    late = mailroom(clock)
    feed = Feed(late)
    written, unwritten = feed.event("r1"), feed.event("r1")
    cut = feed.leaving("s1")
    away = feed.event("r1")
    feed.left("s1", cut, [unwritten])
    new = Inbox("s2")
    late.register(new)
    feed.connected("s2")
    assert new.written == [unwritten.message_id, away.message_id]
    assert written.message_id not in new.written


def test_a_late_worker_waits_for_the_left_of_a_socket_it_never_saw_before_giving_what_it_kept():
    clock = Clock()
    late = mailroom(clock)
    feed = Feed(late)
    written = feed.event("r1")  # for a socket open on another worker since before this one's feed
    new = Inbox("s2")
    late.register(new)
    feed.connected("s2")
    assert not new.live
    feed.left("s1", cut=feed.offset, unwritten=[])
    assert new.live and new.written == []
    assert written.message_id not in new.written


def test_without_the_older_sockets_left_the_new_ones_worker_forfeits_it_for_every_worker():
    clock = Clock()
    here, there = mailroom(clock), mailroom(clock)
    feed = Feed(here, there)
    feed.connected("s1")  # on a worker that then died
    new = Inbox("s2")
    here.register(new)
    feed.connected("s2")
    during = feed.event("r1")
    assert here.expire() == [] and not new.live
    clock.now += HANDOVER_WAIT + 0.1
    assert there.expire() == []  # only the worker that has the waiting socket speaks
    assert here.expire() == [("rider", "r1", "s1")]
    assert here.expire() == []  # once
    feed.left("s1", cut=feed.offset, forfeit=True)
    assert new.live and new.written == [during.message_id]
    feed.left("s1", cut=feed.offset, unwritten=[feed.event("r2")])  # the real one, too late: ignored
    assert new.written == [during.message_id]


def test_a_user_away_longer_than_the_window_is_forgotten():
    clock = Clock()
    room = mailroom(clock)
    feed = Feed(room)
    room.register(Inbox("s1"))
    feed.connected("s1")
    cut = feed.leaving("s1")
    feed.left("s1", cut)
    feed.event("r1")
    clock.now += WINDOW + 1
    room.expire()
    assert room.users == 0
    new = Inbox("s2")
    room.register(new)
    feed.connected("s2")
    assert new.live and new.written == []


@pytest.mark.parametrize("extra", [1, 5])
def test_what_is_kept_for_an_away_user_is_bounded(extra, caplog):
    clock = Clock()
    room = mailroom(clock)
    feed = Feed(room)
    events = [feed.event("r9") for _ in range(MAX_OWED + extra)]
    room.register(inbox := Inbox("s1", user_id="r9"))
    feed.connected("s1", user_id="r9")
    clock.now += HANDOVER_WAIT + 0.1  # never seen connected: it might have had a socket elsewhere
    ((role, user_id, unknown),) = room.expire()
    feed.left(unknown, cut=feed.offset, user_id="r9", forfeit=True)
    assert inbox.written == [n.message_id for n in events[extra:]]
    assert caplog.text.count("dropping the oldest") == 1


def test_what_came_before_a_late_connected_marker_is_still_owed_after_that_socket_leaves():
    """The worker's broker connection was not up yet: its markers land after
    events published meanwhile, and those reach the user's next socket."""
    clock = Clock()
    room = mailroom(clock)
    feed = Feed(room)
    early = [feed.event("r1"), feed.event("r1")]
    room.register(Inbox("s1"))
    feed.connected("s1")
    cut = feed.leaving("s1")
    feed.left("s1", cut)
    room.register(new := Inbox("s2"))
    feed.connected("s2")
    assert new.live and new.written == [n.message_id for n in early]


def test_what_came_before_a_late_marker_on_another_worker_is_kept_there_and_here_alike():
    """Both workers keep what no socket has taken until the one that opened
    and left says, in its `left`, that it took none of it."""
    clock = Clock()
    here, there = mailroom(clock), mailroom(clock)
    feed = Feed(here, there)
    early = feed.event("r1")
    here.register(Inbox("s1"))
    feed.connected("s1")
    cut = feed.leaving("s1")
    feed.left("s1", cut)
    there.register(new := Inbox("s2"))
    feed.connected("s2")
    assert new.live and new.written == [early.message_id]
