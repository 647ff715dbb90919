"""The payment service as a real process: payment.cmd.create_session in,
payment.event.session_created out, on a real RabbitMQ."""
import signal
from dataclasses import replace

import pytest

from ridesync import contract
from ridesync.database import Database
from ridesync.payment.providers import LocalProvider
from tests.service_support import (about_trip, assert_dead_lettered, next_matching, payment_service,  # noqa: F401
                                   publisher, unique)
from tests.support import wait_until


def create_session(publisher, trip_id, rider, amount=1054):
    publisher.publish(contract.PAYMENT_CREATE_SESSION, rider,
                      {"tripID": trip_id, "userID": rider, "amount": amount, "currency": "USD"})


def test_a_session_is_created_for_the_rider_once_per_trip(payment_service, publisher, amqp_tap):
    trip_id, rider = unique("trip"), unique("rider")
    tap = amqp_tap(contract.PAYMENT_SESSION_CREATED)

    create_session(publisher, trip_id, rider)
    key, headers, message = next_matching(tap, about_trip(trip_id))
    session = message["data"]
    assert (key, headers["owner"], message["ownerId"]) == (contract.PAYMENT_SESSION_CREATED, rider, rider)
    assert session["sessionID"].startswith("cs_local_")
    assert session == {"tripID": trip_id, "sessionID": session["sessionID"], "amount": 1054, "currency": "USD"}

    create_session(publisher, trip_id, rider)  # a redelivered command
    assert next_matching(tap, about_trip(trip_id))[2]["data"] == session


def test_a_cancelled_trips_session_is_voided(payment_service, publisher, amqp_tap):
    trip_id, rider = unique("trip"), unique("rider")
    tap = amqp_tap(contract.PAYMENT_SESSION_CREATED)
    create_session(publisher, trip_id, rider)
    session_id = next_matching(tap, about_trip(trip_id))[2]["data"]["sessionID"]
    publisher.publish(contract.PAYMENT_VOID_SESSION, rider, {"tripID": trip_id, "userID": rider})
    wait_until(lambda: f"payment session {session_id} for trip {trip_id} of rider {rider} voided"
               in payment_service.output(), message="the session to be voided")


@pytest.mark.parametrize("body", [
    b"\x00garbage",
    b'{"ownerId": "r1", "data": {"tripID": "t1", "userID": "r1", "currency": "USD"}}',
    b'{"ownerId": "r1", "data": {"tripID": "t1", "userID": "r1", "amount": 10.5, "currency": "USD"}}',
])
def test_unreadable_or_incomplete_commands_are_dead_lettered(payment_service, body):
    assert_dead_lettered(contract.PAYMENT_CREATE_SESSION, body, payment_service)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_it_stops_gracefully_on_a_signal(payment_service, sig):
    payment_service.signal(sig)
    assert payment_service.proc.wait(10) == 0
    assert f"payment service stopping on {sig.name}" in payment_service.output()


def test_the_local_provider_keeps_amount_and_currency_and_one_session_per_trip():
    provider = LocalProvider(Database("sqlite://"))
    first = provider.create_session("t1", "r1", 1054, "USD")
    assert (first.trip_id, first.user_id, first.amount, first.currency) == ("t1", "r1", 1054, "USD")
    assert provider.create_session("t1", "r1", 1054, "USD") == first
    assert provider.create_session("t2", "r1", 1054, "USD").id != first.id
    assert provider.void_session("t1") == replace(first, voided=True) == provider.void_session("t1")
    assert provider.void_session("t3") is None
