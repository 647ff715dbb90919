"""The trip service's plain logic: fares, routes, the planner and its
breaker, the store and the service, with a fake OSRM fetch and fake
publishers. No I/O."""
import logging
import threading

import pytest

from ridesync import contract
from ridesync.ride.fares import PACKAGES, price_in_cents
from ridesync.ride.geo import great_circle_m
from ridesync.ride.model import Coordinate, InvalidArgument, Route
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.routing import (
    CITY_SPEED_M_PER_S, ROAD_FACTOR, CallerGone, NoRoute, RouteUnavailable, estimate_route,
    parse_osrm_route,
)
from ridesync.trip.service import TripService
from ridesync.trip.store import FareNotFound, FareUnavailable, TripStore
from tests.service_support import RecordingPublisher
from tests.support import DESTINATION, PICKUP, osrm_route_payload, wait_until

OSRM_ROUTE = Route(path=(PICKUP, DESTINATION), distance=4200.0, duration=600.0)


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeFetch:
    """Stands in for OsrmClient.fetch_route: answers with `outcome` (a Route,
    or an exception to raise) and records its calls."""

    def __init__(self, outcome=OSRM_ROUTE):
        self.outcome = outcome
        self.calls = []

    def __call__(self, pickup, destination, **call):
        self.calls.append((pickup, destination, call))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def make_service(fetch=None, publisher=None, clock=None, fare_ttl=900):
    clock = clock or Clock()
    store = TripStore(clock=clock)
    planner = RoutePlanner(fetch or FakeFetch(), failure_threshold=5, recovery_timeout=30)
    service = TripService(planner, store, publisher or RecordingPublisher(), fare_ttl=fare_ttl, clock=clock)
    return service, store


# --- fares -------------------------------------------------------------------

def test_a_fare_prices_kilometres_and_minutes_not_metres_and_seconds():
    # sedan: 250 base + 120/km * 4.2 km + 30/min * 10 min
    assert price_in_cents("sedan", 4200, 600) == 250 + 504 + 300


def test_every_package_has_a_price_and_longer_rides_cost_more():
    assert set(PACKAGES) == {"suv", "sedan", "van", "luxury"}
    for package in PACKAGES:
        assert price_in_cents(package, 10_000, 1200) > price_in_cents(package, 1000, 120) > 0


# --- coordinates ---------------------------------------------------------------

@pytest.mark.parametrize("latitude, longitude, field", [
    (91, 0, "latitude"), (-90.5, 0, "latitude"), ("37.7", 0, "latitude"), (True, 0, "latitude"),
    (None, 0, "latitude"), (float("nan"), 0, "latitude"), (0, 180.1, "longitude"), (0, False, "longitude"),
])
def test_a_coordinate_out_of_range_or_not_a_number_is_refused_by_name(latitude, longitude, field):
    with pytest.raises(InvalidArgument, match=rf"pickup\.{field} must be a number"):
        Coordinate.checked("pickup", latitude, longitude)


def test_a_coordinate_on_the_edges_is_accepted():
    assert Coordinate.checked("pickup", -90, 180) == Coordinate(-90.0, 180.0)


# --- routes --------------------------------------------------------------------

def test_osrm_longitude_latitude_pairs_become_latitude_longitude():
    route = parse_osrm_route(osrm_route_payload([[-122.41, 37.77], [-122.40, 37.78], [-122.39, 37.79]]))
    assert (route.path[0], route.path[-1]) == (PICKUP, DESTINATION)
    assert (route.distance, route.duration, route.estimated) == (4200.0, 600.0, False)


@pytest.mark.parametrize("payload", [
    None,
    [],
    {"code": "NoSegment"},
    {"code": "Ok", "routes": []},
    {"code": "Ok", "routes": [{"distance": 1, "duration": 1}]},
    {"code": "Ok", "routes": [{"distance": "far", "duration": 1, "geometry": {"coordinates": []}}]},
    osrm_route_payload([[-122.41, 37.77]]),  # one point is no path
    osrm_route_payload([[10, 95], [10, 96]]),  # latitude 95 is not on Earth
    osrm_route_payload([[-122.41, 37.77], [-122.39, 37.79]], distance=-1),
    osrm_route_payload([[-122.41, 37.77], [-122.39, 37.79]], duration=float("inf")),
])
def test_an_unusable_osrm_answer_is_route_unavailable(payload):
    with pytest.raises(RouteUnavailable):
        parse_osrm_route(payload)


def test_the_estimate_is_the_great_circle_times_a_road_factor_at_city_speed():
    one_degree_north = Coordinate(1.0, 0.0)
    assert great_circle_m(Coordinate(0.0, 0.0), one_degree_north) == pytest.approx(111_195, rel=1e-3)
    route = estimate_route(Coordinate(0.0, 0.0), one_degree_north)
    assert route.estimated
    assert route.path == (Coordinate(0.0, 0.0), one_degree_north)
    assert route.distance == pytest.approx(111_195 * ROAD_FACTOR, rel=1e-3)
    assert route.duration == pytest.approx(route.distance / CITY_SPEED_M_PER_S, rel=1e-3)


def test_route_json_has_the_proto_field_names():
    assert estimate_route(PICKUP, DESTINATION).to_json()["geometry"][0]["coordinates"][0] == {
        "latitude": 37.77, "longitude": -122.41,
    }


# --- planner and breaker ----------------------------------------------------------

def test_the_planner_takes_osrm_route_when_it_answers():
    fetch = FakeFetch()
    route = RoutePlanner(fetch).route(PICKUP, DESTINATION, time_left=3.0)
    assert route == OSRM_ROUTE
    assert fetch.calls == [(PICKUP, DESTINATION, {"time_left": 3.0})]


def test_switched_off_osrm_is_never_asked(caplog):
    fetch = FakeFetch()
    with caplog.at_level(logging.WARNING):
        planner = RoutePlanner(fetch, enabled=False)
    assert planner.route(PICKUP, DESTINATION).estimated
    assert fetch.calls == []
    assert "OSRM_ENABLED=false" in caplog.text


@pytest.mark.parametrize("failure", [RouteUnavailable("503"), NoRoute("NoRoute")])
def test_a_failing_osrm_gives_an_estimate(failure):
    route = RoutePlanner(FakeFetch(failure)).route(PICKUP, DESTINATION)
    assert route == estimate_route(PICKUP, DESTINATION)


def test_no_route_is_an_answer_and_does_not_open_the_breaker():
    fetch = FakeFetch(NoRoute("NoRoute"))
    planner = RoutePlanner(fetch, failure_threshold=2)
    for _ in range(4):
        planner.route(PICKUP, DESTINATION)
    assert len(fetch.calls) == 4
    assert planner.breaker_state == "closed"


def breaker_lines(caplog):
    return [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]


def test_the_breaker_opens_after_consecutive_failures_and_tries_again_later(caplog):
    caplog.set_level(logging.WARNING, logger="ridesync.trip.planner")
    fetch = FakeFetch(RouteUnavailable("503"))
    planner = RoutePlanner(fetch, failure_threshold=5, recovery_timeout=0.2)
    for _ in range(8):
        assert planner.route(PICKUP, DESTINATION).estimated
    assert len(fetch.calls) == 5
    assert planner.breaker_state == "open"

    fetch.outcome = OSRM_ROUTE
    wait_until(lambda: planner.breaker_state == "half_open", timeout=5, message="the breaker to half-open")
    assert planner.route(PICKUP, DESTINATION) == OSRM_ROUTE
    assert planner.breaker_state == "closed"
    lines = breaker_lines(caplog)
    assert [line.split(" (")[0] for line in lines] == [
        "OSRM circuit breaker closed -> open",
        "OSRM circuit breaker open -> half_open",
        "OSRM circuit breaker half_open -> closed",
    ]


def test_a_success_resets_the_count_of_consecutive_failures():
    fetch = FakeFetch(RouteUnavailable("503"))
    planner = RoutePlanner(fetch, failure_threshold=3)
    for outcome in ("fail", "fail", "ok", "fail", "fail"):
        fetch.outcome = OSRM_ROUTE if outcome == "ok" else RouteUnavailable("503")
        planner.route(PICKUP, DESTINATION)
    assert planner.breaker_state == "closed"


def test_a_caller_who_went_away_neither_opens_nor_closes_the_breaker():
    fetch = FakeFetch(CallerGone("the caller went away"))
    planner = RoutePlanner(fetch, failure_threshold=2, recovery_timeout=30)
    for _ in range(3):
        assert planner.route(PICKUP, DESTINATION).estimated
    assert planner.breaker_state == "closed"
    fetch.outcome = RouteUnavailable("503")
    planner.route(PICKUP, DESTINATION)
    fetch.outcome = CallerGone("the caller went away")
    planner.route(PICKUP, DESTINATION)
    fetch.outcome = RouteUnavailable("503")
    planner.route(PICKUP, DESTINATION)  # the second failure in a row
    assert planner.breaker_state == "open"


def test_the_planner_holds_no_lock_across_the_osrm_call():
    together = threading.Barrier(5, timeout=5)

    def fetch(pickup, destination, **call):
        together.wait()  # breaks (and the route is estimated) unless all five are inside at once
        return OSRM_ROUTE

    planner = RoutePlanner(fetch)
    routes = []
    threads = [threading.Thread(target=lambda: routes.append(planner.route(PICKUP, DESTINATION))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert routes == [OSRM_ROUTE] * 5


# --- service -----------------------------------------------------------------------

def test_a_preview_saves_one_fare_per_package_for_the_rider():
    clock = Clock()
    service, store = make_service(clock=clock, fare_ttl=900)
    route, fares = service.preview("r1", PICKUP, DESTINATION)
    assert route == OSRM_ROUTE
    assert sorted(f.package_slug for f in fares) == sorted(PACKAGES)
    assert {f.user_id for f in fares} == {"r1"}
    assert {f.expires_at for f in fares} == {clock.now + 900}
    assert len({f.id for f in fares}) == 4
    sedan = next(f for f in fares if f.package_slug == "sedan")
    assert sedan.total_price_in_cents == price_in_cents("sedan", 4200, 600)
    assert store.take_fare(sedan.id, "r1") == sedan


def test_starting_a_trip_stores_it_pending_and_publishes_trip_created():
    publisher = RecordingPublisher()
    service, store = make_service(publisher=publisher)
    _, fares = service.preview("r1", PICKUP, DESTINATION)
    trip = service.create_trip(fares[0].id, "r1")
    assert store.trip(trip.id) == trip
    assert trip.status == "pending"
    assert publisher.published == [(contract.TRIP_CREATED, "r1", trip.to_json())]
    assert trip.to_json()["selectedFare"]["id"] == fares[0].id


def test_when_the_broker_refuses_the_event_no_trip_is_left_and_the_fare_is_usable_again():
    publisher = RecordingPublisher(fails=True)
    service, store = make_service(publisher=publisher)
    _, fares = service.preview("r1", PICKUP, DESTINATION)
    with pytest.raises(RuntimeError):
        service.create_trip(fares[0].id, "r1")
    (_, _, data), = publisher.published
    assert store.trip(data["id"]) is None
    publisher.fails = False
    assert service.create_trip(fares[0].id, "r1").fare == fares[0]


# --- limits ------------------------------------------------------------------------

def test_a_preview_longer_than_max_trip_km_is_refused_before_and_after_routing():
    fetch = FakeFetch()
    service, _ = make_service(fetch=fetch)
    with pytest.raises(InvalidArgument, match="trips are limited to 300 km"):
        service.preview("r1", Coordinate(0, 0), Coordinate(0, 179.9))
    assert fetch.calls == []  # OSRM is not asked for a route across the world
    fetch.outcome = Route(path=(PICKUP, DESTINATION), distance=301_000.0, duration=3600.0)
    with pytest.raises(InvalidArgument, match="the trip is 301 km long"):
        service.preview("r1", PICKUP, DESTINATION)


def test_expired_fares_are_dropped_and_a_used_one_is_still_known_as_used():
    clock = Clock()
    service, store = make_service(clock=clock, fare_ttl=900)
    old = [fare for _ in range(250) for fare in service.preview("r1", PICKUP, DESTINATION)[1]]
    used = service.create_trip(old[0].id, "r1")
    clock.now += 901
    service.preview("r1", PICKUP, DESTINATION)  # the next preview forgets what expired
    with pytest.raises(FareNotFound):
        store.take_fare(old[-1].id, "r1")
    with pytest.raises(FareUnavailable, match="already used"):
        store.take_fare(used.fare.id, "r1")
    assert len(store._fares) == len(PACKAGES)


def test_an_ended_trip_keeps_no_offer_nor_declines():
    service, store = make_service()
    trip = service.create_trip(service.preview("r1", PICKUP, DESTINATION)[1][0].id, "r1")
    store.offer(trip.id, "d1")
    store.decline(trip.id, "d1")
    store.offer(trip.id, "d2")
    ended = store.end_unserved(trip.id)
    assert (ended.status, ended.offered_to, ended.declined) == ("no_drivers_found", None, ())

