"""DriverService as a real process: gRPC registration, and dispatch of trips
from find_available_drivers on a real RabbitMQ."""
import time

import grpc
import pytest

from ridesync import contract, rabbit
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.pb import driver_pb2, driver_pb2_grpc
from ridesync.settings import Settings
from tests.service_support import (PICKUP, about_trip, drain_queue, driver_service, next_matching,  # noqa: F401
                                   publish_raw, publisher, register_at, start_driver_service, trip_json, unique)
from tests.support import HangingTripService, closed_port_address, wait_until


def test_register_update_and_unregister_over_grpc(driver_service):
    stub = driver_service.stub
    driver = stub.RegisterDriver(driver_pb2.RegisterDriverRequest(driverID="d1", packageSlug="luxury"), timeout=5).driver
    assert (driver.id, driver.packageSlug) == ("d1", "luxury")
    assert driver.name and driver.carPlate and driver.profilePicture and driver.geohash.startswith("9q8")

    moved = stub.UpdateLocation(driver_pb2.UpdateLocationRequest(
        driverID="d1", location=driver_pb2.Location(latitude=57.64911, longitude=10.40744)), timeout=5).driver
    assert (moved.location.latitude, moved.geohash, moved.name) == (57.64911, "u4pruydqq", driver.name)

    assert stub.UnregisterDriver(driver_pb2.RegisterDriverRequest(driverID="d1"), timeout=5).driver.id == "d1"
    assert not stub.UnregisterDriver(driver_pb2.RegisterDriverRequest(driverID="d1"), timeout=5).HasField("driver")


def test_a_late_unregister_of_an_older_socket_leaves_the_newer_registration(driver_service):
    stub, driver_id = driver_service.stub, unique("driver")
    for session in ("old", "new"):
        stub.RegisterDriver(driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug="van", session=session),
                            timeout=5)
    stale = stub.UnregisterDriver(driver_pb2.RegisterDriverRequest(driverID=driver_id, session="old"), timeout=5)
    assert not stale.HasField("driver")
    still = stub.UpdateLocation(driver_pb2.UpdateLocationRequest(
        driverID=driver_id, location=driver_pb2.Location(latitude=37.78, longitude=-122.41)), timeout=5)
    assert still.driver.id == driver_id
    gone = stub.UnregisterDriver(driver_pb2.RegisterDriverRequest(driverID=driver_id, session="new"), timeout=5)
    assert gone.driver.id == driver_id


def test_a_driver_registers_free_when_the_trip_service_is_down(driver_service):
    driver_id = unique("driver")
    driver_service.stub.RegisterDriver(driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug="van"), timeout=5)
    lines = [line for line in driver_service.output().splitlines() if "could not be checked" in line]
    assert len(lines) == 1 and driver_id in lines[0] and "UNAVAILABLE" in lines[0]


def test_a_hanging_trip_service_holds_a_registration_for_its_deadline_only(tmp_path):
    """Within the gateway's deadline; TripService is asked as the driver."""
    hanging = HangingTripService()
    service = start_driver_service(tmp_path, TRIP_SERVICE_ADDR=hanging.address)
    try:
        with grpc.insecure_channel(service.address) as channel:
            driver_id, began = unique("driver"), time.monotonic()
            registered = driver_pb2_grpc.DriverServiceStub(channel).RegisterDriver(
                driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug="van"), timeout=CALL_DEADLINE)
            took = time.monotonic() - began
        assert registered.driver.id == driver_id and Settings().trip_check_deadline <= took < CALL_DEADLINE - 1
        assert [call.userID for call in hanging.calls] == [driver_id]
        assert (hanging.metadata[0]["x-user-id"], hanging.metadata[0]["x-user-role"]) == (driver_id, "driver")
        assert "DEADLINE_EXCEEDED" in service.output()
    finally:
        service.stop()
        hanging.close()


@pytest.mark.parametrize("call, request_, code, problem", [
    ("RegisterDriver", driver_pb2.RegisterDriverRequest(driverID="d1", packageSlug="bike"),
     grpc.StatusCode.INVALID_ARGUMENT, "packageSlug must be one of suv, sedan, van, luxury"),
    ("RegisterDriver", driver_pb2.RegisterDriverRequest(packageSlug="van"),
     grpc.StatusCode.INVALID_ARGUMENT, "driverID is required"),
    ("UpdateLocation", driver_pb2.UpdateLocationRequest(driverID="nobody", location=driver_pb2.Location(latitude=1)),
     grpc.StatusCode.NOT_FOUND, "driver 'nobody' is not registered"),
    ("UpdateLocation", driver_pb2.UpdateLocationRequest(driverID="d1", location=driver_pb2.Location(latitude=91)),
     grpc.StatusCode.INVALID_ARGUMENT, "location.latitude must be a number between -90 and 90"),
    ("UpdateLocation", driver_pb2.UpdateLocationRequest(driverID="d1"),
     grpc.StatusCode.INVALID_ARGUMENT, "location is required"),
])
def test_bad_requests_are_refused_with_a_reason(driver_service, call, request_, code, problem):
    with pytest.raises(grpc.RpcError) as refused:
        getattr(driver_service.stub, call)(request_, timeout=5)
    assert (refused.value.code(), refused.value.details()) == (code, problem)


def test_a_new_trip_goes_to_the_nearest_driver_and_on_to_the_next_after_declines(driver_service, amqp_tap, publisher):
    near, mid, suv = unique("near"), unique("mid"), unique("suv")
    register_at(driver_service.stub, near, "sedan", 100)
    register_at(driver_service.stub, mid, "sedan", 900)
    register_at(driver_service.stub, suv, "suv", 10)
    trip_id, rider = unique("trip"), unique("rider")
    trip = trip_json("sedan", trip_id=trip_id, rider=rider)
    tap = amqp_tap(contract.DRIVER_TRIP_REQUEST, contract.DISPATCH_NO_DRIVERS_LEFT)

    publisher.publish(contract.TRIP_CREATED, rider, trip)
    key, headers, message = next_matching(tap, about_trip(trip_id))
    assert (key, message["ownerId"], headers["owner"], message["data"]) == (contract.DRIVER_TRIP_REQUEST, near, near, trip)

    publisher.publish(contract.TRIP_DRIVER_NOT_INTERESTED, rider, {"trip": trip, "declinedDriverIDs": [near]})
    key, _, message = next_matching(tap, about_trip(trip_id))
    assert (key, message["ownerId"]) == (contract.DRIVER_TRIP_REQUEST, mid)

    publisher.publish(contract.TRIP_DRIVER_NOT_INTERESTED, rider, {"trip": trip, "declinedDriverIDs": [near, mid]})
    key, headers, message = next_matching(tap, about_trip(trip_id))
    assert (key, message["ownerId"], headers["owner"], message["data"]) == (
        contract.DISPATCH_NO_DRIVERS_LEFT, rider, rider, {"tripID": trip_id})


def test_an_unregistered_driver_is_not_asked(driver_service, amqp_tap, publisher):
    gone, rider, trip_id = unique("gone"), unique("rider"), unique("trip")
    register_at(driver_service.stub, gone, "van", 10)
    driver_service.stub.UnregisterDriver(driver_pb2.RegisterDriverRequest(driverID=gone), timeout=5)
    tap = amqp_tap(contract.DRIVER_TRIP_REQUEST, contract.DISPATCH_NO_DRIVERS_LEFT)

    publisher.publish(contract.TRIP_CREATED, rider, trip_json("van", trip_id=trip_id, rider=rider))
    key, _, message = next_matching(tap, about_trip(trip_id))
    assert (key, message["ownerId"]) == (contract.DISPATCH_NO_DRIVERS_LEFT, rider)


@pytest.mark.parametrize("body", [b"not json at all", b'{"ownerId": "r1", "data": {"id": "no route"}}'])
def test_unreadable_or_incomplete_trips_are_dead_lettered(driver_service, body):
    marker = unique("marker")
    body = body.replace(b"r1", marker.encode()) if b"r1" in body else body + marker.encode()
    publish_raw(contract.TRIP_CREATED, body)
    wait_until(lambda: body in drain_queue(rabbit.DEAD_LETTER_QUEUE), message="the message in dead_letters")
    driver_service.assert_running()


def test_a_trip_published_twice_with_one_message_id_is_dispatched_once(driver_service, amqp_tap):
    driver, rider, trip_id = unique("driver"), unique("rider"), unique("trip")
    register_at(driver_service.stub, driver, "van", 10)
    tap = amqp_tap(contract.DRIVER_TRIP_REQUEST, contract.DISPATCH_NO_DRIVERS_LEFT)
    copy = rabbit.message_properties(contract.TRIP_CREATED, rider)  # as a publisher retrying after a lost confirm
    body = contract.envelope(rider, trip_json("van", trip_id=trip_id, rider=rider))
    publish_raw(contract.TRIP_CREATED, body, copy)
    publish_raw(contract.TRIP_CREATED, body, copy)
    after, later_rider = unique("trip"), unique("rider")  # the driver is busy with the first: no one for this one
    publish_raw(contract.TRIP_CREATED, contract.envelope(later_rider, trip_json("van", trip_id=after, rider=later_rider)))

    ours = lambda *m: about_trip(trip_id)(*m) or about_trip(after)(*m)  # noqa: E731
    seen = [next_matching(tap, ours)[0] for _ in range(2)]
    assert seen == [contract.DRIVER_TRIP_REQUEST, contract.DISPATCH_NO_DRIVERS_LEFT]
    assert "drops a second copy of trip.event.created" in driver_service.output()


@pytest.mark.parametrize("call, request_", [
    ("RegisterDriver", driver_pb2.RegisterDriverRequest(driverID="d1", packageSlug="van")),
    ("UnregisterDriver", driver_pb2.RegisterDriverRequest(driverID="d1", session="s1")),
    ("UpdateLocation", driver_pb2.UpdateLocationRequest(driverID="d1", location=driver_pb2.Location(latitude=1))),
    ("Unregistered", driver_pb2.UnregisteredRequest(driverIDs=["d1"])),
])
def test_every_call_is_unavailable_while_the_pools_redis_is_down(tmp_path, call, request_):
    """UNAVAILABLE, which the gateway's channel tries again on another
    replica and answers 503, rather than UNKNOWN."""
    service = start_driver_service(tmp_path, TRIP_SERVICE_ADDR=closed_port_address(),
                                   REDIS_URL=f"redis://{closed_port_address()}/0")
    try:
        with grpc.insecure_channel(service.address) as channel, pytest.raises(grpc.RpcError) as refused:
            getattr(driver_pb2_grpc.DriverServiceStub(channel), call)(request_, timeout=CALL_DEADLINE)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
    finally:
        service.stop()
