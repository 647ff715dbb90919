"""The rider's view of the driver coming (ride/tracking.py), and DriverService's
pushes of it (driver/locations.py) on both stores, in the process and in
Redis (a real server, `make test` starts it), with a fake clock and the
route planner's answers given by the test."""
import math

import pytest

from ridesync import contract, messages
from ridesync.driver.locations import Locations, TripsUnderWay
from ridesync.driver.redis_locations import RedisTripsUnderWay
from ridesync.gateway.sockets.ledger import Notice
from ridesync.ride import tracking
from ridesync.ride.geo import great_circle_m
from ridesync.ride.model import Coordinate, Route
from tests.databases import in_redis
from tests.service_support import RecordingPublisher, trip_driver_json, trip_json
from tests.support import DESTINATION, PICKUP



def north(metres, of=PICKUP):
    return Coordinate(of.latitude + metres / 111_195, of.longitude)


def east(metres, of):
    return Coordinate(of.latitude, of.longitude + metres / (111_195 * math.cos(math.radians(of.latitude))))


def on_the_way(status="accepted", trip_id="t1", rider="r1", driver="d1"):
    """A trip event's data, decoded as DriverService's consumer does."""
    return messages.decode({**trip_json(trip_id=trip_id, rider=rider), "status": status,
                            "driver": trip_driver_json(driver)}, messages.Trip, "data")


def under_way(trip):
    """A trip (JSON, or read already) as tracking reads it."""
    return tracking.TripUnderWay.of(messages.decode(trip, messages.Trip, "data"))


# --- plain logic ------------------------------------------------------------------

def test_the_car_heads_for_the_pickup_until_arrived_then_for_the_destination():
    trip = under_way(on_the_way())
    assert trip.target == ("pickup", PICKUP)
    assert under_way(on_the_way("arrived")).target is None
    assert under_way(on_the_way("in_progress")).target == ("destination", DESTINATION)
    assert not under_way(on_the_way("completed")).tracked


def test_a_trip_event_without_its_driver_or_route_is_malformed():
    with pytest.raises(contract.MalformedMessage, match="data.driver.id"):
        under_way(trip_json())


def test_heading_follows_consecutive_fixes_and_is_kept_while_the_car_stands():
    first = tracking.next_fix(None, PICKUP, 10.0)
    assert (first.heading, first.odometer) == (None, 0.0)
    northward = tracking.next_fix(first, north(100), 11.0)
    assert northward.heading == 0.0 and northward.odometer == pytest.approx(100, abs=1)
    standing = tracking.next_fix(northward, north(100.5), 12.0)
    assert standing.heading == 0.0
    east = tracking.next_fix(standing, Coordinate(standing.location.latitude, standing.location.longitude + 0.001), 13)
    assert east.heading == pytest.approx(90, abs=0.1)
    assert tracking.bearing(north(100), PICKUP) == 180.0


def test_a_move_under_2_m_keeps_the_heading_and_one_of_2_m_turns_it():
    northward = tracking.next_fix(tracking.next_fix(None, PICKUP, 10.0), north(100), 11.0)
    for metres, heading in ((1.9, 0.0), (2.1, 90.0)):
        aside = east(metres, northward.location)
        assert great_circle_m(northward.location, aside) == pytest.approx(metres, abs=0.01)
        assert tracking.next_fix(northward, aside, 12.0).heading == pytest.approx(heading, abs=0.1)


def test_eta_is_the_route_less_the_distance_driven_since_it_was_asked():
    fix = tracking.Fix(PICKUP, 0.0, odometer=500.0)
    basis = tracking.basis_of(Route((PICKUP, north(1000)), 2000.0, 300.0), "pickup", fix, 0.0)
    assert tracking.eta(basis, fix) == (300, 2000)
    assert tracking.eta(basis, tracking.Fix(north(500), 5.0, odometer=1500.0)) == (150, 1000)
    assert tracking.eta(basis, tracking.Fix(north(500), 5.0, odometer=9000.0)) == (0, 0)


def test_a_route_is_asked_again_only_after_the_refresh_period_or_for_a_new_target():
    basis = tracking.EtaBasis("pickup", 0.0, 100.0, 10.0, False, asked_at=100.0)
    assert tracking.needs_route(None, "pickup", 100.0, 15)
    assert not tracking.needs_route(basis, "pickup", 114.9, 15)
    assert tracking.needs_route(basis, "pickup", 115.0, 15)
    assert tracking.needs_route(basis, "destination", 101.0, 15)


def test_the_frame_says_where_the_car_is_how_far_and_whether_the_eta_is_estimated():
    trip = under_way(on_the_way())
    fix = tracking.Fix(PICKUP, 1_700_000_000.0, heading=90.0)
    basis = tracking.EtaBasis("pickup", 0.0, 1200.4, 180.2, True, 0.0)
    assert tracking.location_frame(trip, fix, basis) == {
        "tripID": "t1", "location": {"latitude": PICKUP.latitude, "longitude": PICKUP.longitude},
        "heading": 90.0, "etaSeconds": 180, "distanceMeters": 1200, "at": "2023-11-14T22:13:20+00:00",
        "estimated": True}
    arrived = tracking.location_frame(under_way(on_the_way("arrived")), fix, None)
    assert (arrived["etaSeconds"], arrived["distanceMeters"], "estimated" in arrived) == (0, 0, False)


def test_a_reconnecting_socket_is_handed_its_backlog_without_locations():
    notices = [Notice(kind, f"m{i}", b"{}", {}) for i, kind in enumerate(
        (contract.TRIP_DRIVER_LOCATION, contract.TRIP_DRIVER_ARRIVED, contract.TRIP_DRIVER_LOCATION))]
    assert [n.type for n in tracking.without_locations(notices)] == [contract.TRIP_DRIVER_ARRIVED]


def test_a_later_status_is_further_along():
    assert tracking.progress("in_progress") > tracking.progress("arrived") > tracking.progress("accepted")
    assert tracking.progress("cancelled") == tracking.progress("completed")


# --- DriverService's pushes, on both stores -----------------------------------------

@pytest.fixture(params=["in process", "redis"])
def make_trips(request):
    if request.param == "in process":
        yield TripsUnderWay
        return
    yield from in_redis(RedisTripsUnderWay)


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


class Planner:
    """The route planner's answers: a road 1.5 times the straight line at 10 m/s, or the estimate."""

    def __init__(self):
        self.asked = []
        self.estimated = False

    def route(self, start, end):
        self.asked.append((start, end))
        distance = great_circle_m(start, end) * 1.5
        return Route((start, end), distance, distance / 10, self.estimated)


@pytest.fixture
def tracker(make_trips):
    clock, planner, publisher = Clock(), Planner(), RecordingPublisher()
    locations = Locations(make_trips(), planner, publisher, push_interval=1.0, eta_refresh=15.0, hold=30.0,
                          clock=clock)
    locations.clock, locations.planner, locations.publisher = clock, planner, publisher
    return locations


def push_due(locations):
    """What the pusher would do at this moment: every trip due pushed; the frames published."""
    for trip_id in locations.due():
        locations.push(trip_id)
    return [(owner, data) for _key, owner, data in locations.publisher.take()]


def test_the_rider_of_the_trip_gets_the_fix_with_the_eta_to_the_pickup(tracker):
    tracker.follow(on_the_way())
    tracker.fix("t1", north(1000))
    [(owner, frame)] = push_due(tracker)
    assert owner == "r1"
    assert (frame["tripID"], frame["heading"], frame["distanceMeters"]) == ("t1", None, 1500)
    assert frame["etaSeconds"] == 150 and "estimated" not in frame
    assert tracker.planner.asked == [(north(1000), PICKUP)]
    assert tracker.last("t1") == frame


def test_at_most_one_push_per_interval_and_the_newest_fix_wins(tracker):
    tracker.follow(on_the_way())
    tracker.fix("t1", north(1000))
    assert len(push_due(tracker)) == 1
    for metres in (900, 800, 700):
        tracker.clock.now += 0.2
        tracker.fix("t1", north(metres))
        assert push_due(tracker) == []
    tracker.clock.now += 0.4  # the interval is over: the newest of the three goes
    [(_, frame)] = push_due(tracker)
    assert frame["location"]["latitude"] == pytest.approx(north(700).latitude)
    assert frame["heading"] == 180.0 and frame["distanceMeters"] == 1500 - 300
    tracker.clock.now += 5
    assert push_due(tracker) == []  # nothing newer: nothing again


def test_osrm_is_asked_once_per_refresh_and_the_eta_advances_by_the_distance_driven(tracker):
    tracker.follow(on_the_way())
    for second in range(16):
        tracker.fix("t1", north(1000 - 10 * second))
        push_due(tracker)
        tracker.clock.now += 1
    assert len(tracker.planner.asked) == 2  # at 0 s, and 15 s later
    tracker.fix("t1", north(800))
    [(_, frame)] = push_due(tracker)
    assert frame["distanceMeters"] == round(850 * 1.5 - 50)  # the route asked at 850 m, less 50 m driven since


def test_once_in_progress_the_eta_is_to_the_destination_and_arrived_is_zero(tracker):
    tracker.follow(on_the_way())
    tracker.fix("t1", north(10))
    push_due(tracker)
    tracker.follow(on_the_way("arrived"))
    tracker.clock.now += 1
    tracker.fix("t1", PICKUP)
    [(_, arrived)] = push_due(tracker)
    assert (arrived["etaSeconds"], arrived["distanceMeters"]) == (0, 0)
    tracker.follow(on_the_way("in_progress"))
    tracker.follow(on_the_way("arrived"))  # a late copy of an earlier event changes nothing
    tracker.clock.now += 1
    tracker.fix("t1", north(5))
    [(_, riding)] = push_due(tracker)
    assert tracker.planner.asked[-1] == (north(5), Coordinate(37.79, -122.39))
    assert riding["distanceMeters"] > 2000


def test_when_osrm_fails_the_eta_is_the_estimate_and_says_so(tracker):
    tracker.planner.estimated = True
    tracker.follow(on_the_way())
    tracker.fix("t1", north(300))
    [(_, frame)] = push_due(tracker)
    assert frame["estimated"] is True


def test_no_fix_goes_anywhere_once_the_trip_ended_or_for_a_trip_not_followed(tracker):
    tracker.fix("unknown", north(10))
    tracker.follow(on_the_way())
    tracker.fix("t1", north(10))
    tracker.follow(on_the_way("completed"))
    tracker.follow(on_the_way())  # a late driver_assigned brings no ended trip back
    tracker.fix("t1", north(20))
    assert push_due(tracker) == []
    assert tracker.last("t1") is None


def test_a_push_held_by_another_pusher_is_done_after_it(make_trips):
    clock, publisher = Clock(), RecordingPublisher()
    trips = make_trips()
    one, other = (Locations(trips, Planner(), publisher, 1.0, 15.0, hold=30.0, clock=clock) for _ in range(2))
    one.follow(on_the_way())
    token, _ = trips.claim("t1", clock(), 30.0)  # `one` is publishing, slowly
    other.fix("t1", north(100))
    other.push("t1")
    assert publisher.take() == []
    clock.now += 10  # past the interval, but the earlier push is still out: nothing overtakes it
    other.push("t1")
    assert publisher.take() == []
    trips.settle("t1", token, clock.now - 9)
    for trip_id in trips.due(clock.now):
        other.push(trip_id)
    assert [owner for _, owner, _ in publisher.take()] == ["r1"]


def test_a_fix_that_comes_while_a_push_is_published_is_pushed_once_the_interval_is_over(tracker):
    tracker.follow(on_the_way())
    tracker.fix("t1", north(1000))
    publish = tracker.publisher.publish

    def slow_publish(*message):
        tracker.publisher.publish = publish
        tracker.clock.now += 0.5
        tracker.fix("t1", north(950))  # pushed by no one yet: the claim is held
        publish(*message)

    tracker.publisher.publish = slow_publish
    assert len(push_due(tracker)) == 1
    assert push_due(tracker) == []
    tracker.clock.now += 0.5
    [(_, frame)] = push_due(tracker)
    assert frame["location"]["latitude"] == pytest.approx(north(950).latitude)
