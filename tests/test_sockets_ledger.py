"""The Ledger alone, with no broker: workers, each with its own queue and
Ledger, read one registry in the same order; a stand-in broker routes a
user's notices, at publish, to the queues that have the user bound, and
keeps every notice in a stream for catch-ups. Each test says when each
worker reads what, so a hand-over meets the orders it can meet."""
import itertools
import logging
from collections import defaultdict

import pytest

from ridesync import contract
from ridesync.gateway.sockets.ledger import (SEEN_IDS, Bind, CatchUp, Cut, Deliver, Forfeit, Ledger, Notice, Recover,
                                             Start, Unbind, _Entry, _Held)

CREATED, COMPLETED, LOCATION, REQUEST = (contract.TRIP_CREATED, contract.TRIP_COMPLETED, contract.TRIP_DRIVER_LOCATION,
                                         contract.DRIVER_TRIP_REQUEST)
ROLES = {"rider": {CREATED, COMPLETED, LOCATION}, "driver": {REQUEST, COMPLETED}}
WINDOW, HANDOVER_WAIT, MAX_OWED, MARGIN = 30.0, 5.0, 100, 5.0  # MAX_OWED > SEEN_IDS, as in settings
LOST = "gateway.lost"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Broker:
    def __init__(self):
        self.clock = Clock()
        self.registry = []  # (kind, role, user id, session, arguments)
        self.stream = []  # (time, user id, Notice or the session of a `connected` marker)
        self.bound = defaultdict(set)  # (role, user id) -> workers
        self._ids = itertools.count(1)

    def event(self, user_id="r1", kind=CREATED, role=None):
        notice = Notice(kind, f"m{next(self._ids)}", b"{}", {"role": role} if role else {})
        roles = [role] if role else [r for r, types in ROLES.items() if kind in types]
        for worker in {worker for r in roles for worker in self.bound[r, user_id]}:
            worker.queue.append(("notice", user_id, notice))
        self.stream.append((self.clock.now, user_id, notice))
        return notice.message_id

    def mark(self, kind, role, user_id, session, **arguments):
        self.registry.append((kind, role, user_id, session, arguments))
        if kind == "connected":  # and by its CC, to the queues holding the user
            for worker in self.bound[role, user_id]:
                worker.queue.append(("marker", role, user_id, session))
            self.stream.append((self.clock.now, user_id, session))


class Phone:
    """A socket as the hub drives it: it writes what it is given once started, unless stalled."""

    sessions = itertools.count(1)

    def __init__(self, role, user_id):
        self.role, self.user_id, self.session = role, user_id, f"s{next(self.sessions)}"
        self.given, self.written = [], []
        self.started = self.stalled = self.closed = self.cut_off = False

    def give(self, notice):
        assert not self.cut_off, "a cut socket gets nothing more"
        self.given.append(notice)
        self.write()

    def start(self, first):
        self.given[:0] = first
        self.started = True
        self.write()

    def write(self):
        if self.started and not (self.stalled or self.closed):
            self.written += [notice.message_id for notice in self.given]
            self.given = []

    def cut(self):
        self.cut_off = True
        unwritten, self.given = self.given, []
        return unwritten


class Worker:
    """A gateway worker: its Ledger, its queue, its sockets; decisions applied as the hub applies them."""

    def __init__(self, broker, since=0):
        """since: where in the registry it begins reading (a worker started later)."""
        self.broker, self.queue, self.phones, self.catchups, self.decided = broker, [], {}, [], []
        self.recoveries = []
        self.ledger = Ledger(WINDOW, HANDOVER_WAIT, MAX_OWED, MARGIN, ROLES, broker.clock)
        self._read = since

    def open(self, user_id="r1", role="rider", marked=True):
        phone = Phone(role, user_id)
        self.phones[phone.session] = phone
        self.apply(self.ledger.register(role, user_id, phone.session))
        if marked:
            self.mark(phone)
        return phone

    def mark(self, phone):
        self.broker.mark("connected", phone.role, phone.user_id, phone.session)

    def close(self, phone):
        phone.closed = True
        self.broker.mark("leaving", phone.role, phone.user_id, phone.session)

    def read(self):
        self.read_queue()
        self.read_registry()

    def read_queue(self):
        while self.queue:
            kind, *record = self.queue.pop(0)
            self.apply((self.ledger.notice if kind == "notice" else self.ledger.marker)(*record))

    def read_registry(self):
        for kind, role, user_id, session, arguments in self.broker.registry[self._read:]:
            self._read += 1
            self.apply(getattr(self.ledger, kind)(role, user_id, session, **arguments))
            if kind == "left" and session in self.phones:
                self.apply(self.ledger.forget(session))

    def expire(self):
        decided = self.ledger.expire()
        self.apply(decided)
        return decided

    def catch_up(self):
        """Each CatchUp: the stream from its since until the session's marker."""
        for role, user_id, session, since, _skip in self.catchups:
            records = [(owner, item) for at, owner, item in self.broker.stream if at >= since and owner == user_id]
            read = list(itertools.takewhile(lambda record: record[1] != session, records))
            notices = [item for _owner, item in read if isinstance(item, Notice)]
            self.apply(self.ledger.caught_up(role, user_id, session, notices))
        self.catchups = []

    def lose_queue(self):
        """The queue is gone with what it held, and its bindings: what comes reaches only the stream."""
        self.queue.clear()
        for bound in self.broker.bound.values():
            bound.discard(self)

    def make_queue_anew(self, lost_at):
        """Made anew, and every user held bound again to it."""
        self.apply(self.ledger.queue_lost(lost_at))
        for recovery in self.recoveries:
            self.broker.bound[recovery.role, recovery.user_id].add(self)

    def recover(self):
        """Each Recover: the stream from its since until the `refilled` marker (published now), markers too."""
        refilled = len(self.broker.stream)
        for role, user_id, since in self.recoveries:
            records = [item if isinstance(item, Notice) else
                       Notice(contract.CONNECTED, f"m-{item}", b"", {"role": role, "session": item})
                       for at, owner, item in self.broker.stream[:refilled] if at >= since and owner == user_id]
            self.apply(self.ledger.recovered(role, user_id, records))
        self.recoveries = []

    def apply(self, decided):
        self.decided += decided
        for decision in decided:
            if isinstance(decision, Recover):
                self.recoveries.append(decision)
            elif isinstance(decision, (Bind, Unbind)):
                bound = self.broker.bound[decision.role, decision.user_id]
                bound.add(self) if isinstance(decision, Bind) else bound.discard(self)
            elif isinstance(decision, CatchUp):
                self.catchups.append(decision)
            elif isinstance(decision, Forfeit):
                lost = Notice(LOST, f"lost-{decision.session}", b"{}", {})
                self.broker.mark("left", decision.role, decision.user_id, decision.session, carried=[lost], seen=[],
                                 forfeit=True)
            else:
                phone = self.phones[decision.session]
                if isinstance(decision, Deliver):
                    phone.give(decision.notice)
                elif isinstance(decision, Start):
                    phone.start(decision.first)
                else:
                    assert isinstance(decision, Cut)
                    self.broker.mark("left", phone.role, phone.user_id, phone.session,
                                     carried=phone.cut() + decision.owed, seen=decision.seen,
                                     drained_at=(decision.lost_since or self.broker.clock.now) if decision.drained
                                     else None)


@pytest.fixture
def broker():
    return Broker()


def everything(*workers):
    """Each reads what it has, until nothing changes."""
    while any(w.queue or w._read < len(w.broker.registry) or w.catchups for w in workers):
        for worker in workers:
            worker.read()
            worker.catch_up()


def away(broker):
    """Two workers; a socket of r1 opened on the first, and closed."""
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    a_worker.close(a)
    everything(a_worker, b_worker)
    return a_worker, b_worker, a


def test_a_socket_gets_its_users_notices_in_order_and_an_idle_worker_gets_none(broker):
    here, idle = Worker(broker), Worker(broker)
    mine, theirs = here.open("r1"), here.open("r2")
    everything(here, idle)
    sent = [broker.event("r1"), broker.event("r1")]
    other = broker.event("r2")
    everything(here, idle)
    assert mine.written == sent and theirs.written == [other]
    assert here.ledger.bound == {("rider", "r1"), ("rider", "r2")} and not idle.ledger.bound and not idle.queue


def test_a_rider_and_a_driver_of_the_same_id_are_two_users(broker):
    """A type goes to the roles that take it; a `role` header names one."""
    a, b = Worker(broker), Worker(broker)
    rider, driver = a.open("u1", "rider"), b.open("u1", "driver")
    everything(a, b)
    both, request = broker.event("u1", COMPLETED), broker.event("u1", REQUEST)
    for_rider = broker.event("u1", COMPLETED, role="rider")
    everything(a, b)
    assert rider.written == [both, for_rider]
    assert driver.written == [both, request]


@pytest.mark.parametrize("stalled", [False, True], ids=["written", "carried"])
@pytest.mark.parametrize("b_reads_first", [False, True])
def test_an_event_a_reads_before_the_new_sockets_marker_is_as_and_b_skips_its_copy(broker, stalled, b_reads_first):
    """Pitfall 1, both interleavings: only_a is routed before B's bind-ok
    (A's queue only); both reaches both queues before M, so A has it and
    B skips its copy; after comes after M, A drops it, B writes it."""
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    a.stalled = stalled
    only_a = broker.event()
    b = b_worker.open(marked=False)
    both = broker.event()
    b_worker.mark(b)
    after = broker.event()
    if b_reads_first:
        everything(b_worker)
        assert not b.started  # it awaits left(a)
    everything(a_worker, b_worker)
    assert a.cut_off and b.started
    assert a.written + b.written == [only_a, both, after]
    assert a.written == ([] if stalled else [only_a, both])
    assert_unbound_after_the_window(a_worker, broker, {b_worker})


def assert_unbound_after_the_window(worker, broker, holders):
    """A worker whose socket was replaced keeps its user bound for the window (dropping what comes), then unbinds."""
    assert broker.bound["rider", "r1"] == {worker, *holders}
    broker.clock.now += WINDOW + 1
    everything(worker, *holders)
    worker.expire()
    assert broker.bound["rider", "r1"] == set(holders) and not worker.ledger.bound


def test_more_events_between_the_new_sockets_bind_and_its_marker_than_a_left_names_are_still_skipped(broker):
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    b = b_worker.open(marked=False)
    both = [broker.event() for _ in range(SEEN_IDS + 5)]  # one publisher: the same order in both queues
    b_worker.mark(b)
    after = broker.event()
    everything(a_worker, b_worker)
    assert a.written == both and b.written == [after]


def test_an_event_routed_after_the_marker_is_dropped_by_a_and_written_by_b(broker):
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    b = b_worker.open()
    after = [broker.event(), broker.event()]
    a_worker.read_queue()  # M, then both events: dropped here
    assert a.cut_off and a.written == []
    everything(a_worker, b_worker)
    assert b.written == after


def test_a_hand_over_on_one_worker_cuts_exactly_at_the_marker_and_keeps_the_binding(broker):
    worker = Worker(broker)
    a = worker.open()
    everything(worker)
    before = broker.event()
    b = worker.open(marked=False)  # bound already: no second Bind
    during = [broker.event() for _ in range(SEEN_IDS + 5)]  # more than a `left` names
    worker.mark(b)
    after = broker.event()
    everything(worker)
    assert a.written == [before, *during] and b.written == [after]
    assert [d for d in worker.decided if isinstance(d, (Bind, Unbind))] == [Bind("rider", "r1")]  # a user, a binding
    assert worker.ledger.bound == {("rider", "r1")} and worker.ledger.users == 1


def one_written(broker):
    """Two workers; a socket of r1 on the first, which has written one event."""
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    written = broker.event()
    everything(a_worker)
    return a_worker, b_worker, a, written


def test_an_away_user_reconnecting_elsewhere_gets_what_was_owed_then_what_comes(broker):
    a_worker, b_worker, a, written = one_written(broker)
    a_worker.close(a)
    everything(a_worker, b_worker)
    owed = [broker.event(), broker.event()]
    everything(a_worker, b_worker)
    assert a.written == [written] and broker.bound["rider", "r1"] == {a_worker}  # held for the window
    b = b_worker.open()
    after = broker.event()
    everything(a_worker, b_worker)
    assert b.written == owed + [after]
    assert_unbound_after_the_window(a_worker, broker, {b_worker})


def test_an_away_user_past_the_window_is_not_awaited_then_cut_with_nothing_and_unbound(broker):
    a_worker, b_worker, a = away(broker)
    broker.event()  # owed, for the window only
    everything(a_worker, b_worker)
    broker.clock.now += WINDOW + 1
    b = b_worker.open()
    b_worker.read()
    assert b.started  # no wait for A's `left`
    ((session, owed, seen, drained, _lost_since), unbind) = a_worker.expire()
    assert (session, owed, seen, drained, unbind) == (a.session, [], [], False, Unbind("rider", "r1"))
    assert a_worker.ledger.users == 0 and broker.bound["rider", "r1"] == {b_worker}  # forgotten, unbound
    after = broker.event()
    everything(a_worker, b_worker)
    assert b.written == [after]


def test_without_the_older_sockets_left_the_new_ones_worker_forfeits_it_once(broker):
    dead, b_worker, other = Worker(broker), Worker(broker), Worker(broker)
    gone = dead.open()
    everything(dead, b_worker, other)
    b = b_worker.open()
    during = broker.event()
    everything(b_worker, other)  # the dead worker reads nothing more
    assert b_worker.expire() == [] and not b.started
    broker.clock.now += HANDOVER_WAIT + 0.1
    assert other.expire() == []  # only the worker holding the waiting socket speaks
    assert b_worker.expire() == [Forfeit("rider", "r1", gone.session)]
    assert b_worker.expire() == []  # once
    everything(b_worker, other)
    assert b.written == [f"lost-{gone.session}", during]
    dead.read()  # not dead after all: its `left` now changes nothing
    everything(b_worker, other)
    assert gone.cut_off and b.written == [f"lost-{gone.session}", during]


@pytest.mark.parametrize("next_worker", ["running", "started after the drain"])
def test_a_drained_left_makes_the_next_socket_catch_up_what_reached_no_queue(broker, next_worker):
    a_worker, running = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, running)
    written = [broker.event() for _ in range(SEEN_IDS + 5)]  # more than its `left` names: the catch-up reads them
    everything(a_worker)
    a.stalled = True
    unwritten = broker.event()
    everything(a_worker)
    a_worker.close(a)
    everything(a_worker)
    owed = broker.event()
    everything(a_worker)
    decided = a_worker.ledger.drain()
    assert [(type(d), d.drained) for d in decided] == [(Cut, True)]  # no Unbind: the queue goes with the worker
    a_worker.apply(decided)
    gap = broker.event()  # after the drain, before any bind-ok: only in the stream
    b_worker = running if next_worker == "running" else Worker(broker)
    everything(b_worker)
    b = b_worker.open(marked=False)
    buffered = broker.event()
    b_worker.mark(b)
    after = broker.event()
    b_worker.read()
    ((role, user_id, session, since, skip),) = b_worker.catchups
    assert (session, since) == (b.session, broker.clock.now - MARGIN) and set(written[-SEEN_IDS + 2:]) <= skip
    everything(b_worker)
    assert b.written == [unwritten, owed, gap, buffered, after]
    assert set(a.written) == set(written)


def test_what_a_lost_queue_held_or_missed_is_read_back_and_what_the_new_one_brings_waits_behind_it(broker):
    worker = Worker(broker)
    a, other = worker.open("r1"), worker.open("r2")
    everything(worker)
    written = broker.event("r1")
    everything(worker)
    held = broker.event("r1")  # in the queue, not yet read, when it is lost
    worker.lose_queue()
    missed = broker.event("r1")
    worker.make_queue_anew(broker.clock.now)
    assert worker.recoveries == [Recover("rider", "r1", broker.clock.now - MARGIN),
                                 Recover("rider", "r2", broker.clock.now - MARGIN)]
    twice = broker.event("r1")  # bound again before the `refilled` marker: in both
    worker.read_queue()
    assert a.written == [written], "what the new queue brings waits behind what the lost one held"
    worker.recover()
    after = broker.event("r1")
    everything(worker)
    assert a.written == [written, held, missed, twice, after] and other.written == []


def test_more_events_between_the_bind_again_and_refilled_than_a_socket_remembers_are_each_written_once(broker):
    worker = Worker(broker)
    a = worker.open()
    everything(worker)
    worker.lose_queue()
    missed = broker.event()
    worker.make_queue_anew(broker.clock.now)
    twice = [broker.event() for _ in range(SEEN_IDS + 5)]  # in the record and in the new queue
    worker.read_queue()
    worker.recover()
    after = broker.event()
    everything(worker)
    assert a.written == [missed, *twice, after]


def test_a_hand_over_while_the_queue_was_lost_cuts_where_the_new_sockets_marker_is_in_the_record(broker):
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    before = broker.event()
    a_worker.lose_queue()
    during = broker.event()
    b = b_worker.open()  # its marker reaches the record and b's queue, not a's
    after = broker.event()
    a_worker.make_queue_anew(broker.clock.now)
    everything(b_worker)
    assert not b.started  # it awaits left(a)
    a_worker.recover()
    everything(a_worker, b_worker)
    assert a.cut_off and a.written == [before, during] and b.written == [after]


def test_a_worker_drained_while_recovering_hands_on_the_loss_and_the_next_socket_reads_it_back(broker):
    a_worker, b_worker, a, written = one_written(broker)
    a_worker.lose_queue()
    lost_at = broker.clock.now
    missed = broker.event()
    broker.clock.now += 2 * MARGIN  # the drain comes later than a catch-up's margin reaches back
    a_worker.make_queue_anew(lost_at)
    a_worker.apply(a_worker.ledger.drain())  # before its recovery came
    b = b_worker.open()
    after = broker.event()
    everything(a_worker, b_worker)
    assert a.written == [written] and b.written == [missed, after]


def test_a_late_bind_catches_up_from_the_upgrade(broker):
    worker = Worker(broker)
    phone = worker.open(marked=False)
    upgraded = broker.clock.now
    broker.bound.clear()  # its bind-ok is late: what is published meanwhile reaches only the stream
    missed = broker.event()
    worker.apply(worker.ledger.late("rider", "r1", phone.session, upgraded))
    broker.bound["rider", "r1"].add(worker)
    worker.mark(phone)
    after = broker.event()
    everything(worker)
    assert phone.written == [missed, after]


def test_a_socket_replaced_twice_before_it_started_hands_everything_on_once(broker):
    a_worker, b_worker, c_worker = Worker(broker), Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker, c_worker)
    a.stalled = True
    first = broker.event()
    b = b_worker.open()
    second = broker.event()
    c = c_worker.open()
    third = broker.event()
    everything(c_worker, b_worker)  # both read the registry before A's `left`
    assert not b.started and b.cut_off
    everything(a_worker, b_worker, c_worker)
    assert not b.started and c.written == [first, second, third]


def test_a_left_of_a_socket_opened_before_this_worker_began_still_reaches_the_next_socket(broker):
    a_worker = Worker(broker)
    a = a_worker.open()
    everything(a_worker)
    a.stalled = True
    unwritten = broker.event()
    everything(a_worker)
    late = Worker(broker, since=len(broker.registry))  # its registry replay does not reach a's marker
    b = late.open()
    everything(late)
    assert b.started
    everything(a_worker, late)
    assert b.written == [unwritten]


def test_a_repeated_marker_left_or_notice_changes_nothing(broker):
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    first = broker.event()
    b = b_worker.open()
    second = broker.event()
    everything(a_worker, b_worker)
    # After a broker reconnect: markers published again, unacked messages read again.
    broker.registry += [record for record in broker.registry if record[0] in ("connected", "left")]
    for worker in (a_worker, b_worker):
        broker.bound["rider", "r1"].add(worker)
        worker.queue += [("marker", "rider", "r1", a.session), ("marker", "rider", "r1", b.session)]
    b_worker.queue.append(("notice", "r1", Notice(CREATED, second, b"{}", {})))
    everything(a_worker, b_worker)
    third = broker.event()
    everything(a_worker, b_worker)
    assert a.written == [first] and b.written == [second, third] and not b.cut_off
    broker.clock.now += HANDOVER_WAIT + 1
    assert a_worker.expire() == b_worker.expire() == []  # nothing awaited
    c = a_worker.open()  # and the next hand-over goes as ever
    fourth = broker.event()
    everything(a_worker, b_worker)
    assert b.cut_off and c.written == [fourth]


def test_what_is_kept_for_an_away_user_is_bounded_dropping_the_oldest(broker, caplog):
    a_worker, b_worker, _a = away(broker)
    with caplog.at_level(logging.WARNING):
        owed = [broker.event() for _ in range(MAX_OWED + 3)]
        everything(a_worker)
    b = b_worker.open()
    everything(a_worker, b_worker)
    assert b.written == owed[3:]
    assert caplog.text.count("dropping the oldest") == 1


def test_a_reconnecting_socket_gets_no_driver_location_first_but_those_that_come_after(broker):
    a_worker, b_worker, _a = away(broker)
    _location, created = broker.event(kind=LOCATION), broker.event()
    b = b_worker.open()
    everything(a_worker, b_worker)
    location = broker.event(kind=LOCATION)
    everything(a_worker, b_worker)
    assert b.written == [created, location]


def test_an_idle_users_entry_and_socket_hold_no_lists(broker):
    """Memory per idle rider (bench/RESULTS.md): a list only once needed."""
    here, elsewhere = Worker(broker), Worker(broker)
    here.open()
    everything(here, elsewhere)
    entries = [here.ledger._entries["rider", "r1"], elsewhere.ledger._entries["rider", "r1"]]
    held = next(iter(here.ledger._here.values()))
    for kept in [*entries, held]:
        slots = _Entry.__slots__ if isinstance(kept, _Entry) else _Held.__slots__
        assert [name for name in slots if isinstance(getattr(kept, name), (list, set, dict))] == []


def test_a_worker_taking_a_user_back_before_it_read_past_its_cut_writes_nothing_twice(broker):
    """A cut a at M(b) and unbound the user, but had not yet read the events
    routed to its queue meanwhile (b had them) when c opened there: b wrote
    over SEEN_IDS more since, so its `left` names none of them, nor any of
    c's buffer (c's marker came before what followed)."""
    a_worker, b_worker = Worker(broker), Worker(broker)
    a = a_worker.open()
    everything(a_worker, b_worker)
    b = b_worker.open()
    meanwhile = [broker.event(), broker.event()]  # in both queues, behind M(b) in A's
    a_worker.apply(a_worker.ledger.marker(*a_worker.queue.pop(0)[1:]))  # A reads M(b) only: cuts a, unbinds
    everything(b_worker)
    assert a.cut_off and b.written == meanwhile
    later = [broker.event() for _ in range(SEEN_IDS + 1)]  # more than b's `left` will name
    everything(b_worker)
    c = a_worker.open()  # A's queue still holds `meanwhile`
    after = broker.event()
    everything(a_worker, b_worker)
    assert b.cut_off and c.started
    assert a.written + b.written + c.written == [*meanwhile, *later, after]


def test_a_socket_starts_once_its_worker_read_its_own_marker_and_writes_nothing_the_socket_before_had(broker):
    """A keeps r1 bound after a's cut, and c opens there. b writes what came
    in front of M(c), more than a `left` names, and is cut at M(c). A reads
    left(b) in the registry having read only the front of that in its
    queue: c starts once A's queue reaches M(c), its buffer whole."""
    a_worker, b_worker = Worker(broker), Worker(broker)
    a_worker.open()
    everything(a_worker, b_worker)
    b = b_worker.open()
    everything(a_worker, b_worker)  # a cut; A keeps r1 bound for the window
    c = a_worker.open(marked=False)
    had = [broker.event() for _ in range(SEEN_IDS + 5)]  # in both queues, in front of M(c)
    a_worker.mark(c)
    after = broker.event()
    everything(b_worker)
    assert b.written[-len(had):] == had and b.cut_off
    for _ in range(3):  # A reads the front of its queue only
        a_worker.apply(a_worker.ledger.notice(*a_worker.queue.pop(0)[1:]))
    a_worker.read_registry()  # left(b)
    assert not c.started
    everything(a_worker, b_worker)
    assert c.written == [after]
