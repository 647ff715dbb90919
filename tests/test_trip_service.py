"""The real TripService over gRPC on loopback, asking the OSRM stand-in."""
import grpc
import pytest

from ridesync.messages import proto_json
from ridesync.pb import trip_pb2, trip_pb2_grpc
from ridesync.ride.fares import price_in_cents
from tests.support import (
    DESTINATION_JSON, PICKUP_JSON, assert_route_follows_osrm, assert_trip_created_published, closed_port_address,
    made_by, new_rider, wait_until,
)


@pytest.fixture
def channels():
    yield from made_by(grpc.insecure_channel, lambda channel: channel.close())


@pytest.fixture
def connect(channels):
    """connect(service) -> a TripService stub on a channel closed afterwards."""
    return lambda service: trip_pb2_grpc.TripServiceStub(channels(service.address))


@pytest.fixture
def trips(trip_service, connect):
    return connect(trip_service)


def preview_request(user_id, pickup=PICKUP_JSON, destination=DESTINATION_JSON):
    return trip_pb2.PreviewTripRequest(
        userID=user_id,
        startLocation=trip_pb2.Coordinate(**pickup),
        endLocation=trip_pb2.Coordinate(**destination),
    )


def preview(stub, user_id, **kwargs):
    return proto_json(stub.PreviewTrip(preview_request(user_id), timeout=kwargs.pop("timeout", 10), **kwargs))


def fare_of(previewed, package="sedan"):
    return next(f for f in previewed["rideFares"] if f["packageSlug"] == package)


def rpc_error(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# --- previews ------------------------------------------------------------------------

def test_preview_gives_the_osrm_route_and_four_fares_owned_by_the_rider(trips, osrm):
    rider = new_rider()
    previewed = preview(trips, rider)
    (path,) = osrm.requests
    assert path.startswith("/route/v1/driving/-122.41,37.77;-122.39,37.79?")
    assert "overview=full" in path and "geometries=geojson" in path
    assert_route_follows_osrm(previewed["route"], osrm)
    assert sorted(f["packageSlug"] for f in previewed["rideFares"]) == ["luxury", "sedan", "suv", "van"]
    assert {f["userID"] for f in previewed["rideFares"]} == {rider}
    assert fare_of(previewed)["totalPriceInCents"] == price_in_cents("sedan", 4200.0, 600.0)


@pytest.mark.parametrize("bad", [
    {"userID": ""},
    {"startLocation": trip_pb2.Coordinate(latitude=91, longitude=0)},
    {"endLocation": trip_pb2.Coordinate(latitude=0, longitude=-181)},
])
def test_preview_refuses_invalid_input(trips, osrm, bad):
    request = preview_request(new_rider())
    for field, value in bad.items():
        if field == "userID":
            request.userID = value
        else:
            getattr(request, field).CopyFrom(value)
    error = rpc_error(lambda: trips.PreviewTrip(request, timeout=5))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert osrm.requests == []


@pytest.mark.parametrize("mode", ["503", "garbage", "no_route", "hang"])
def test_a_failing_osrm_still_gives_a_preview_with_an_estimated_route(trips, osrm, mode):
    osrm.mode = mode
    previewed = preview(trips, new_rider())
    assert previewed["route"]["estimated"] is True
    assert previewed["route"]["distance"] > 0 and len(previewed["rideFares"]) == 4
    assert len(osrm.requests) == 1
    if mode == "hang":
        wait_until(lambda: osrm.abandoned, timeout=5, message="the hanging OSRM call to be let go")


def test_switched_off_osrm_is_never_asked(start_trip, connect, osrm):
    trips = connect(start_trip(OSRM_ENABLED="false"))
    assert preview(trips, new_rider())["route"]["estimated"] is True
    assert osrm.requests == []


def test_the_breaker_stops_asking_osrm_after_five_failures_and_tries_again(trip_service, trips, osrm):
    osrm.mode = "503"
    for _ in range(8):
        assert preview(trips, new_rider())["route"]["estimated"] is True
    assert len(osrm.requests) == 5

    osrm.mode = "ok"

    def osrm_asked_again():
        return not preview(trips, new_rider())["route"]["estimated"]

    wait_until(osrm_asked_again, timeout=10, interval=0.1, message="OSRM to be tried again after the reset")
    assert len(osrm.requests) == 6
    log = trip_service.output()
    for change in ("closed -> open", "open -> half_open", "half_open -> closed"):
        assert log.count(f"OSRM circuit breaker {change}") == 1, log


def test_concurrent_previews_reach_osrm_concurrently(trips, osrm):
    osrm.mode, osrm.gather_size = "gather", 5
    calls = [trips.PreviewTrip.future(preview_request(new_rider()), timeout=10) for _ in range(5)]
    routes = [proto_json(call.result())["route"] for call in calls]
    assert [r.get("estimated", False) for r in routes] == [False] * 5
    assert osrm.max_in_flight == 5


# --- the caller going away ------------------------------------------------------------

def test_the_callers_deadline_bounds_the_osrm_call(start_trip, connect, osrm):
    trips = connect(start_trip(OSRM_TIMEOUT="30"))
    osrm.mode = "hang"
    previewed = preview(trips, new_rider(), timeout=2)  # answered in time, with an estimate
    assert previewed["route"]["estimated"] is True
    wait_until(lambda: osrm.abandoned, timeout=5, message="the OSRM call to be let go")


def test_a_cancelled_call_lets_osrm_go_at_once(start_trip, connect, osrm):
    trips = connect(start_trip(OSRM_TIMEOUT="30"))
    osrm.mode = "hang"
    call = trips.PreviewTrip.future(preview_request(new_rider()), timeout=30)
    wait_until(lambda: osrm.requests, timeout=5, message="OSRM to be asked")
    assert call.cancel()
    wait_until(lambda: osrm.abandoned, timeout=3, message="the OSRM call to be let go")


# --- trips -------------------------------------------------------------------------------

def test_starting_a_trip_publishes_trip_created(trips, amqp_tap):
    tap = amqp_tap("trip.event.created")
    rider = new_rider()
    fare = fare_of(preview(trips, rider))
    created = proto_json(trips.CreateTrip(trip_pb2.CreateTripRequest(rideFareID=fare["id"], userID=rider), timeout=5))
    trip = created["trip"]
    assert created["tripID"] == trip["id"] and trip["status"] == "pending" and trip["userID"] == rider
    assert trip["selectedFare"] == fare
    assert_trip_created_published(tap, trip)


def test_a_fare_must_exist_be_yours_and_be_unused(trips):
    rider = new_rider()
    fare_id = fare_of(preview(trips, rider))["id"]

    def start(fare, user):
        return rpc_error(lambda: trips.CreateTrip(trip_pb2.CreateTripRequest(rideFareID=fare, userID=user), timeout=5)).code()

    assert start("no-such-fare", rider) is grpc.StatusCode.NOT_FOUND
    assert start(fare_id, new_rider()) is grpc.StatusCode.PERMISSION_DENIED
    assert start("", rider) is grpc.StatusCode.INVALID_ARGUMENT
    trips.CreateTrip(trip_pb2.CreateTripRequest(rideFareID=fare_id, userID=rider), timeout=5)
    assert start(fare_id, rider) is grpc.StatusCode.FAILED_PRECONDITION


def test_when_the_broker_is_down_the_trip_fails_and_the_fare_stays_usable(start_trip, connect):
    trips = connect(start_trip(AMQP_URL=f"amqp://guest:guest@{closed_port_address()}/"))
    rider = new_rider()
    request = trip_pb2.CreateTripRequest(rideFareID=fare_of(preview(trips, rider))["id"], userID=rider)
    for _ in range(2):  # the second attempt is not told the fare was used
        assert rpc_error(lambda: trips.CreateTrip(request, timeout=10)).code() is grpc.StatusCode.UNAVAILABLE


def test_riders_who_go_away_do_not_open_the_breaker(start_trip, connect, osrm):
    service = start_trip(OSRM_TIMEOUT="30")
    trips = connect(service)
    osrm.mode = "hang"
    for n in range(1, 6):
        call = trips.PreviewTrip.future(preview_request(new_rider()), timeout=30)
        wait_until(lambda: len(osrm.requests) == n, timeout=5, message="OSRM to be asked")
        call.cancel()
        wait_until(lambda: len(osrm.abandoned) == n, timeout=3, message="the OSRM call to be let go")
    osrm.mode = "ok"
    assert preview(trips, new_rider())["route"].get("estimated", False) is False
    assert "circuit breaker" not in service.output()


def test_a_caller_with_no_time_to_wait_for_osrm_gets_an_estimate_and_osrm_is_not_blamed(trips, trip_service, osrm):
    for _ in range(6):
        try:
            assert preview(trips, new_rider(), timeout=0.3)["route"]["estimated"] is True
        except grpc.RpcError as exc:  # a busy machine may not answer within 0.3 s; that is the caller's choice
            assert exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert osrm.requests == []
    assert preview(trips, new_rider())["route"].get("estimated", False) is False
    assert "circuit breaker" not in trip_service.output()
