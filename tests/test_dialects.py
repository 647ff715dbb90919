"""What each dialect's socket is written, as plain logic (ridesync/gateway/dialects.py)."""
import itertools

import pytest

from ridesync import contract
from ridesync.gateway import dialects
from ridesync.gateway.sockets.ledger import Notice

ROUTE = {"geometry": [{"coordinates": [{"latitude": 37.77, "longitude": -122.41},
                                       {"latitude": 37.79, "longitude": -122.39}]}], "distance": 4200.0}
DRIVER = {"id": "d1", "name": "Ana", "location": {"latitude": 37.77, "longitude": -122.41}, "packageSlug": "sedan"}
_offsets = itertools.count()


def trip(trip_id="t1", **fields):
    return {"id": trip_id, "userID": "r1", "status": "pending", "route": ROUTE, **fields}


def payment(trip_id="t1"):
    return {"tripID": trip_id, "sessionID": f"cs_{trip_id}", "amount": 1234, "currency": "USD"}


def notice(kind, data):
    offset = next(_offsets)
    return Notice(kind, f"m{offset}", contract.envelope("r1", data), {})


class Socket:
    """What a socket of this role and dialect was written, as (type, data).
    current: what reading the user's trip gives (a trip, None or UNREAD)."""

    def __init__(self, role, v2=False, driver=None, current=None, fails_after=None):
        self.dialect = dialects.for_socket(role, v2)
        self.written = list(self.dialect.opening(driver, current))
        self.current, self.reads = current, 0
        self.fails_after = fails_after

    def give(self, kind, data):
        return self.dialect.deliver(kind, data, notice(kind, data), self._send, self._read_trip)

    def _read_trip(self):
        self.reads += 1
        return self.current

    def _send(self, write):
        if self.fails_after is not None and len(self.written) >= self.fails_after:
            return False
        self.written.append((write.kind, write.data))
        return True

    @property
    def kinds(self):
        return [kind for kind, _ in self.written]


def original(data):
    return dialects.original_order(data)


def test_route_points_are_written_with_latitude_and_longitude_exchanged_and_nothing_else():
    data = {"trip": trip(driver=DRIVER), "location": {"latitude": 1.0, "longitude": 2.0}}
    swapped = original(data)
    assert swapped["trip"]["route"]["geometry"][0]["coordinates"] == [
        {"latitude": -122.41, "longitude": 37.77}, {"latitude": -122.39, "longitude": 37.79}]
    assert swapped["trip"]["route"]["distance"] == 4200.0
    assert swapped["trip"]["driver"] == DRIVER and swapped["location"] == data["location"]
    assert data["trip"]["route"] == ROUTE  # left alone
    assert original(swapped) == data


@pytest.mark.parametrize("header, as_named", [(None, False), ("", False), ("v1", False), ("v2", True),
                                              (" V2 ", True), ("v3", False)])
def test_only_the_v2_header_asks_for_coordinates_as_named(header, as_named):
    assert dialects.http_as_named(header) is as_named


def test_v2_is_written_everything_in_arrival_order_after_register_and_trip_state():
    socket = Socket("rider", v2=True, current=None)
    for kind, data in ((contract.PAYMENT_SESSION_CREATED, payment()), (contract.TRIP_DRIVER_ASSIGNED, trip()),
                       (contract.TRIP_DRIVER_ARRIVED, trip())):
        assert socket.give(kind, data)
    assert socket.written == [("trip.state", None), (contract.PAYMENT_SESSION_CREATED, payment()),
                              (contract.TRIP_DRIVER_ASSIGNED, trip()), (contract.TRIP_DRIVER_ARRIVED, trip())]
    driver = Socket("driver", v2=True, driver=DRIVER, current=trip())
    assert driver.written == [(contract.DRIVER_REGISTER, DRIVER), ("trip.state", trip())]


ACCEPTED = trip(status="accepted", driver=DRIVER)


def test_a_v1_riders_payment_session_before_its_driver_assigned_comes_after_one_made_from_the_trip_read():
    socket = Socket("rider", current=ACCEPTED)
    assert socket.written == []
    socket.give(contract.TRIP_CREATED, trip())
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    socket.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))  # a copy: it would undo the payment step
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    assert socket.written == [(contract.TRIP_CREATED, original(trip())),
                              (contract.TRIP_DRIVER_ASSIGNED, original(ACCEPTED)),
                              (contract.PAYMENT_SESSION_CREATED, payment())]
    assert socket.reads == 1


def test_a_v1_rider_after_its_driver_assigned_gets_the_payment_at_once_and_nothing_it_does_not_know():
    socket = Socket("rider", current=ACCEPTED)
    socket.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))
    for kind in (contract.TRIP_DRIVER_ARRIVED, contract.TRIP_STARTED):
        socket.give(kind, trip())
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    assert socket.kinds == [contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_SESSION_CREATED]
    assert socket.reads == 0


def test_when_the_trip_cannot_be_read_the_payment_waits_for_its_driver_assigned():
    socket = Socket("rider", current=dialects.UNREAD)
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    socket.give(contract.PAYMENT_SESSION_CREATED, payment("t2"))  # another trip's: held apart
    assert socket.written == [] and len(socket.dialect.held) == 2
    socket.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))
    assert socket.written == [(contract.TRIP_DRIVER_ASSIGNED, original(trip(driver=DRIVER))),
                              (contract.PAYMENT_SESSION_CREATED, payment())]
    assert [dialects._payment_trip(n) for n in socket.dialect.held] == ["t2"]


def test_a_payment_of_a_trip_that_is_over_is_never_written():
    ended = Socket("rider", current=dialects.UNREAD)
    ended.give(contract.PAYMENT_SESSION_CREATED, payment())
    ended.give(contract.TRIP_CANCELLED, trip(status="cancelled"))
    ended.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))
    assert ended.kinds == [contract.TRIP_CANCELLED] and ended.dialect.held == []
    for current in (None, trip("t2", driver=DRIVER)):  # no trip now, or another one
        socket = Socket("rider", current=current)
        socket.give(contract.PAYMENT_SESSION_CREATED, payment())
        socket.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))
        assert socket.written == [] and socket.dialect.held == []


def test_a_payment_released_on_a_socket_that_closes_stays_held_for_the_next():
    socket = Socket("rider", current=dialects.UNREAD, fails_after=1)
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    assert not socket.give(contract.TRIP_DRIVER_ASSIGNED, trip(driver=DRIVER))
    assert [n.type for n in socket.dialect.held] == [contract.PAYMENT_SESSION_CREATED]


def test_a_v1_driver_is_written_only_register_and_trip_requests_with_route_points_exchanged():
    socket = Socket("driver", driver=DRIVER)
    socket.give(contract.DRIVER_TRIP_REQUEST, trip())
    for kind in (contract.TRIP_DRIVER_ASSIGNED, contract.TRIP_DRIVER_ARRIVED, contract.TRIP_STARTED, "error"):
        socket.give(kind, trip(status="accepted"))
    assert socket.written == [(contract.DRIVER_REGISTER, DRIVER), (contract.DRIVER_TRIP_REQUEST, original(trip()))]


@pytest.mark.parametrize("kind, data", [(contract.DRIVER_TRIP_WITHDRAWN, {"tripID": "t1", "reason": "taken"}),
                                        (contract.TRIP_CANCELLED, trip(status="cancelled")),
                                        (contract.TRIP_COMPLETED, trip(status="completed"))])
def test_the_end_of_the_trip_a_v1_driver_page_shows_takes_it_back_to_waiting(kind, data):
    """`data?.trip ?? data` of a null data is null: the page's "Waiting for a rider..."."""
    socket = Socket("driver", driver=DRIVER)
    socket.give(contract.DRIVER_TRIP_REQUEST, trip())
    socket.give(kind, data)
    assert socket.written[-1] == (contract.DRIVER_TRIP_REQUEST, None)
    socket.give(contract.DRIVER_TRIP_REQUEST, trip("t2"))
    socket.give(kind, {**data, "tripID": "t1", "id": "t1"})  # the page shows t2 now: left alone
    assert socket.written[-1] == (contract.DRIVER_TRIP_REQUEST, original(trip("t2")))


PAID = {**ACCEPTED, "payment": {"sessionID": "cs_t1", "amount": 1234, "currency": "USD"}}


@pytest.mark.parametrize("current, caught_up", [
    (None, []),  # no ride to show: the page ignores an end anyway
    (trip(), [(contract.TRIP_CREATED, original(trip()))]),
    (ACCEPTED, [(contract.TRIP_DRIVER_ASSIGNED, original(ACCEPTED))]),
    (PAID, [(contract.TRIP_DRIVER_ASSIGNED, original(PAID)), (contract.PAYMENT_SESSION_CREATED, payment())]),
])
def test_a_v1_rider_whose_handover_was_lost_is_brought_to_its_current_trip(current, caught_up):
    socket = Socket("rider", current=current)
    socket.give(dialects.LOST_HANDOVER, {})
    assert socket.written == caught_up and socket.reads == 1
    # What was kept for the socket follows, older than the trip read: nothing of it undoes the page's state.
    for kind, data in ((contract.TRIP_CREATED, trip()), (contract.TRIP_DRIVER_ASSIGNED, ACCEPTED),
                       (contract.PAYMENT_SESSION_CREATED, payment())):
        socket.give(kind, data)
    assert socket.kinds[-2:] == [contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_SESSION_CREATED]


def test_a_v1_rider_whose_held_payment_comes_first_is_not_written_its_trip_again():
    socket = Socket("rider", current=dialects.UNREAD)
    socket.give(contract.PAYMENT_SESSION_CREATED, payment())
    socket.give(dialects.LOST_HANDOVER, {})  # the trip still unread: the page stays as it is
    socket.current = PAID
    socket.give(dialects.LOST_HANDOVER, {})
    socket.give(contract.TRIP_DRIVER_ASSIGNED, ACCEPTED)
    assert socket.kinds == [contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_SESSION_CREATED]
    assert socket.dialect.held == []
    socket.give(dialects.LOST_HANDOVER, {})  # shown already
    assert len(socket.written) == 2


@pytest.mark.parametrize("current, caught_up", [
    (trip(), [(contract.DRIVER_TRIP_REQUEST, original(trip()))]),  # offered: it can take it
    (ACCEPTED, [(contract.DRIVER_TRIP_REQUEST, original(ACCEPTED))]),
    (None, [(contract.DRIVER_TRIP_REQUEST, None)]),  # its trip ended: "Waiting for a rider..."
])
def test_a_v1_driver_whose_handover_was_lost_is_shown_its_current_trip_or_none(current, caught_up):
    socket = Socket("driver", driver=DRIVER, current=current)
    socket.give(dialects.LOST_HANDOVER, {})
    assert socket.written[1:] == caught_up
    if current is not None:
        socket.give(dialects.LOST_HANDOVER, {})
        assert socket.written[1:] == caught_up


def test_v2_is_written_nothing_for_a_lost_handover_its_trip_state_said_it():
    socket = Socket("rider", v2=True, current=ACCEPTED)
    socket.give(dialects.LOST_HANDOVER, {})
    assert socket.written == [("trip.state", ACCEPTED)] and socket.reads == 0
