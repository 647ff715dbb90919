"""The one read of the record that serves every catch-up (feed._Catchups),
alone, with no broker: what it keeps of the records it reads, and when a
catch-up must begin the read again."""
from types import SimpleNamespace

from ridesync.contract import CONNECTED
from ridesync.gateway.sockets.feed import _Catchups

KEEP = 60.0  # RECONNECT_WINDOW
KIND = "trip.event.created"


def notification(owner, n, at):
    return {"type": KIND, "owner": owner}, f"{owner}-{n}", b"{}", at


def connected(owner, session, at):
    return {"type": CONNECTED, "role": "rider", "owner": owner, "session": session}, f"m-{session}", b"", at


def ids(ended):
    """The message ids a read gave the one catch-up it ended (r1's, s1)."""
    [(wanted, records)] = ended
    assert wanted == ("rider", "r1", "s1")
    return [message_id for _headers, message_id, _body in records]


def reading(clock, since):
    """A read begun for one catch-up from since, which has ended."""
    catchups = _Catchups(KEEP, lambda: clock.now)
    assert catchups.add(("rider", "r0", "s0"), since, ("rider", "r0", "s0"))
    catchups.begin()
    assert catchups.read(*connected("r0", "s0", int(since))) == [(("rider", "r0", "s0"), [])]
    return catchups


def test_records_read_longer_ago_than_the_window_are_dropped_and_a_catch_up_from_before_them_reads_again():
    clock = SimpleNamespace(now=10_000.0)  # moved on by hand
    catchups = reading(clock, clock.now)
    old = [notification("r1", n, int(clock.now)) for n in range(3)]
    for record in old:
        catchups.read(*record)
    clock.now += KEEP + 1
    later = notification("r1", 3, int(clock.now))
    catchups.read(*later)  # drops what was read a window ago

    assert catchups.add(("rider", "r1", "s1"), clock.now - KEEP - 1, ("rider", "r1", "s1"))  # wants the dropped ones
    assert not catchups.add(("rider", "r2", "s2"), clock.now, ("rider", "r2", "s2"))
    assert ids(catchups.read(*connected("r1", "s1", int(clock.now)))) == [later[1]]  # all that is kept


def test_what_a_waiting_catch_up_takes_is_kept_however_long_it_waits():
    clock = SimpleNamespace(now=10_000.0)  # moved on by hand
    catchups = reading(clock, clock.now)
    assert not catchups.add(("rider", "r1", "s1"), clock.now, ("rider", "r1", "s1"))
    records = [notification("r1", n, int(clock.now)) for n in range(3)]
    for record in records:
        catchups.read(*record)
    clock.now += 3 * KEEP
    assert ids(catchups.read(*connected("r1", "s1", int(clock.now)))) == [r[1] for r in records]
    assert not catchups.add(("rider", "r2", "s2"), clock.now, ("rider", "r2", "s2"))


def test_a_record_with_no_time_is_kept():
    clock = SimpleNamespace(now=10_000.0)  # moved on by hand
    catchups = reading(clock, clock.now)
    untimed = notification("r1", 0, None)
    catchups.read(*untimed)
    clock.now += KEEP + 1
    catchups.read(*notification("r1", 1, int(clock.now)))
    clock.now += KEEP + 1
    catchups.read(*notification("r1", 2, int(clock.now)))

    assert not catchups.add(("rider", "r1", "s1"), clock.now, ("rider", "r1", "s1"))
    assert ids(catchups.read(*connected("r1", "s1", int(clock.now)))) == ["r1-0", "r1-2"]
