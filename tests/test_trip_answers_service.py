"""TripService as a real process taking drivers' answers from
driver_trip_response on a real RabbitMQ, for a trip started over gRPC."""
import grpc
import pytest

from ridesync import contract
from ridesync.messages import proto_json
from ridesync.pb import trip_pb2
from tests.service_support import (about_trip, answer, assert_dead_lettered, next_matching,  # noqa: F401
                                   publisher, start_trip, trip_answers, unique)
from tests.support import wait_until


def test_offered_drivers_decline_and_accept_and_anyone_else_is_refused(trip_answers, amqp_tap, publisher):
    rider = unique("rider")
    tap = amqp_tap(contract.TRIP_DRIVER_NOT_INTERESTED, contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_CREATE_SESSION)
    trip, fare = start_trip(trip_answers.stub, rider)

    offer(publisher, "d-no", trip)
    answer(publisher, contract.DRIVER_TRIP_DECLINE, "d-no", trip.id, rider)
    key, headers, message = next_matching(tap, about_trip(trip.id))
    assert (key, headers["owner"], message["data"]["declinedDriverIDs"], message["data"]["trip"]["status"]) == (
        contract.TRIP_DRIVER_NOT_INTERESTED, rider, ["d-no"], "pending")

    offer(publisher, "d-yes", trip)
    driver = answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d-yes", trip.id, rider)
    sent = {(key, headers["owner"]): message for key, headers, message in
            (next_matching(tap, about_trip(trip.id)) for _ in range(3))}
    for owner in (rider, "d-yes"):
        message = sent[(contract.TRIP_DRIVER_ASSIGNED, owner)]
        assert message["data"]["status"] == "accepted"
        assert message["data"]["driver"] == {k: driver[k] for k in ("id", "name", "profilePicture", "carPlate")}
    assert sent[(contract.PAYMENT_CREATE_SESSION, rider)]["data"] == {
        "tripID": trip.id, "userID": rider, "amount": round(fare.totalPriceInCents), "currency": "USD"}

    answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d-late", trip.id, rider)
    answer(publisher, contract.DRIVER_TRIP_DECLINE, "d-late", trip.id, rider)
    wait_until(lambda: trip_answers.output().count(f"driver d-late answered trip {trip.id}: refused") == 2,
               message="the late answers to be refused")
    assert tap.empty()


def test_the_trip_is_read_stepped_and_cancelled_over_grpc(trip_answers, publisher, amqp_tap):
    rider = unique("rider")
    tap = amqp_tap(contract.TRIP_DRIVER_ARRIVED, contract.TRIP_CANCELLED, contract.PAYMENT_VOID_SESSION)
    trip, _ = start_trip(trip_answers.stub, rider)
    stub = trip_answers.stub
    assert stub.CurrentTrip(trip_pb2.CurrentTripRequest(userID=rider), timeout=5).trip.status == "pending"
    offer(publisher, "d1", trip)
    answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d1", trip.id, rider)
    wait_until(lambda: stub.CurrentTrip(trip_pb2.CurrentTripRequest(userID="d1"), timeout=5).trip.status == "accepted",
               message="the driver's current trip, accepted")

    arrived = stub.DriverStep(trip_pb2.DriverStepRequest(tripID=trip.id, driverID="d1", step="arrived"), timeout=5)
    assert arrived.trip.status == "arrived"
    with pytest.raises(grpc.RpcError) as refused:
        stub.DriverStep(trip_pb2.DriverStepRequest(tripID=trip.id, driverID="d2", step="started"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        stub.DriverStep(trip_pb2.DriverStepRequest(tripID=trip.id, driverID="d1", step="completed"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetTrip(trip_pb2.GetTripRequest(tripID=trip.id, userID="d2"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    cancelled = stub.CancelTrip(trip_pb2.CancelTripRequest(tripID=trip.id, userID=rider, reason="plans changed"),
                                timeout=5).trip
    assert (cancelled.status, cancelled.cancelledBy, cancelled.reason) == ("cancelled", "rider", "plans changed")
    assert stub.GetTrip(trip_pb2.GetTripRequest(tripID=trip.id, userID="d1"), timeout=5).trip == cancelled
    assert not stub.CurrentTrip(trip_pb2.CurrentTripRequest(userID=rider), timeout=5).HasField("trip")
    seen = [next_matching(tap, about_trip(trip.id))[0] for _ in range(5)]
    assert sorted(seen) == sorted([contract.TRIP_DRIVER_ARRIVED] * 2 + [contract.PAYMENT_VOID_SESSION]
                                  + [contract.TRIP_CANCELLED] * 2)


def offer(publisher, driver_id, trip):
    """What dispatch publishes when it asks a driver to take the trip."""
    publisher.publish(contract.DRIVER_TRIP_REQUEST, driver_id, proto_json(trip))  # every field, as messages.Trip reads it


def test_an_answer_about_an_unknown_trip_is_dropped(trip_answers, publisher):
    trip_id = unique("trip")
    answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d1", trip_id, "r1")
    wait_until(lambda: f"of d1 dropped: no trip '{trip_id}'" in trip_answers.output(), message="the answer to be dropped")
    trip_answers.assert_running()


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"ownerId": "d1", "data": {"tripID": "t1"}}',
    b'{"ownerId": "d1", "data": {"tripID": "t1", "driver": {"id": "someone-else"}}}',
])
def test_unreadable_or_incomplete_answers_are_dead_lettered(trip_answers, body):
    assert_dead_lettered(contract.DRIVER_TRIP_ACCEPT, body, trip_answers)
