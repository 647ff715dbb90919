"""A ride through the three services as real processes on a real RabbitMQ:
TripService, DriverService and payment. The test plays the gateway: it
starts the trip over gRPC and publishes the drivers' answers as the gateway
does, and watches the exchange for what phones would be sent."""
from ridesync import contract
from tests.service_support import (about_trip, answer, driver_service, next_matching, payment_service,  # noqa: F401
                                   publisher, register_at, start_trip, trip_answers, unique)

SEEN = (contract.DRIVER_TRIP_REQUEST, contract.TRIP_NO_DRIVERS_FOUND, contract.TRIP_DRIVER_ASSIGNED,
        contract.PAYMENT_SESSION_CREATED)


def test_a_decline_moves_the_request_to_the_next_driver_who_accepts_and_the_rider_gets_a_session(
        trip_answers, driver_service, payment_service, amqp_tap, publisher):
    near, far, rider = unique("near"), unique("far"), unique("rider")
    register_at(driver_service.stub, near, "sedan", 100)
    register_at(driver_service.stub, far, "sedan", 1500)
    tap = amqp_tap(*SEEN)
    trip, fare = start_trip(trip_answers.stub, rider)

    key, _, message = next_matching(tap, about_trip(trip.id))
    assert (key, message["ownerId"], message["data"]["id"]) == (contract.DRIVER_TRIP_REQUEST, near, trip.id)
    answer(publisher, contract.DRIVER_TRIP_DECLINE, near, trip.id, rider)

    key, _, message = next_matching(tap, about_trip(trip.id))
    assert (key, message["ownerId"]) == (contract.DRIVER_TRIP_REQUEST, far)
    driver = answer(publisher, contract.DRIVER_TRIP_ACCEPT, far, trip.id, rider)

    sent = {(key, message["ownerId"]): message["data"] for key, _, message in
            (next_matching(tap, about_trip(trip.id)) for _ in range(3))}
    for owner in (rider, far):
        assigned = sent[(contract.TRIP_DRIVER_ASSIGNED, owner)]
        assert (assigned["status"], assigned["driver"]["name"]) == ("accepted", driver["name"])
    session = sent[(contract.PAYMENT_SESSION_CREATED, rider)]
    assert (session["amount"], session["currency"]) == (round(fare.totalPriceInCents), "USD")


def test_when_every_driver_declines_the_rider_is_told_no_drivers_were_found(
        trip_answers, driver_service, amqp_tap, publisher):
    only, rider = unique("only"), unique("rider")
    register_at(driver_service.stub, only, "sedan", 100)
    register_at(driver_service.stub, unique("suv"), "suv", 10)
    tap = amqp_tap(*SEEN)
    trip, _ = start_trip(trip_answers.stub, rider)

    key, _, message = next_matching(tap, about_trip(trip.id))
    assert (key, message["ownerId"]) == (contract.DRIVER_TRIP_REQUEST, only)
    answer(publisher, contract.DRIVER_TRIP_DECLINE, only, trip.id, rider)

    key, _, message = next_matching(tap, about_trip(trip.id))
    assert (key, message["ownerId"], message["data"]["id"], message["data"]["status"]) == (
        contract.TRIP_NO_DRIVERS_FOUND, rider, trip.id, "no_drivers_found")
