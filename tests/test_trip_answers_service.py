"""TripService as a real process taking drivers' answers from
driver_trip_response on a real RabbitMQ, for a trip started over gRPC."""
import pytest

from ridesync import contract
from tests.service_support import (about_trip, answer, assert_dead_lettered, next_matching,  # noqa: F401
                                   publisher, start_trip, trip_answers, unique)
from tests.support import wait_until


def test_decline_then_accept_then_a_late_accept(trip_answers, amqp_tap, publisher):
    rider = unique("rider")
    tap = amqp_tap(contract.TRIP_DRIVER_NOT_INTERESTED, contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_CREATE_SESSION)
    trip, fare = start_trip(trip_answers.stub, rider)

    answer(publisher, contract.DRIVER_TRIP_DECLINE, "d-no", trip.id, rider)
    key, headers, message = next_matching(tap, about_trip(trip.id))
    assert (key, headers["owner"], message["data"]["declinedDriverIDs"], message["data"]["trip"]["status"]) == (
        contract.TRIP_DRIVER_NOT_INTERESTED, rider, ["d-no"], "pending")

    driver = answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d-yes", trip.id, rider)
    sent = {key: (headers, message) for key, headers, message in
            (next_matching(tap, about_trip(trip.id)) for _ in range(2))}
    headers, message = sent[contract.TRIP_DRIVER_ASSIGNED]
    assert (headers["owner"], message["data"]["status"]) == (rider, "accepted")
    assert message["data"]["driver"] == {k: driver[k] for k in ("id", "name", "profilePicture", "carPlate")}
    headers, message = sent[contract.PAYMENT_CREATE_SESSION]
    assert (headers["owner"], message["data"]) == (
        rider, {"tripID": trip.id, "userID": rider, "amount": round(fare.totalPriceInCents), "currency": "USD"})

    answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d-late", trip.id, rider)
    answer(publisher, contract.DRIVER_TRIP_DECLINE, "d-late", trip.id, rider)
    wait_until(lambda: "driver d-late declined a trip no longer pending" in trip_answers.output(),
               message="the late answers to be handled")
    assert "driver d-late accepted too late" in trip_answers.output()
    assert tap.empty()


def test_an_answer_about_an_unknown_trip_is_dropped(trip_answers, publisher):
    trip_id = unique("trip")
    answer(publisher, contract.DRIVER_TRIP_ACCEPT, "d1", trip_id, "r1")
    wait_until(lambda: f"unknown trip {trip_id}: dropped" in trip_answers.output(), message="the answer to be dropped")
    trip_answers.assert_running()


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"ownerId": "d1", "data": {"tripID": "t1"}}',
    b'{"ownerId": "d1", "data": {"tripID": "t1", "driver": {"id": "someone-else"}}}',
])
def test_unreadable_or_incomplete_answers_are_dead_lettered(trip_answers, body):
    assert_dead_lettered(contract.DRIVER_TRIP_ACCEPT, body, trip_answers)
