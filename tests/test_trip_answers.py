"""Drivers' answers in TripService, in-process: the store's rules as plain
Python, and what TripService publishes, seen on a real RabbitMQ."""
import pytest

from ridesync import contract, rabbit
from ridesync.trip.answers import trip_driver
from ridesync.trip.service import TripService
from ridesync.trip.store import TripNotFound, TripStore, TripTaken
from tests.service_support import about_trip, next_matching, publisher, trip, unique  # noqa: F401

DRIVER = {"id": "d1", "name": "Sam Kim", "profilePicture": "https://p/1.jpg", "carPlate": "7ABC123",
          "packageSlug": "sedan", "geohash": "9q8yy", "location": {"latitude": 37.77, "longitude": -122.41}}


def store_with(*trips):
    store = TripStore()
    for t in trips:
        store.save_trip(t)
    return store


def test_the_first_driver_to_accept_gets_the_trip():
    store = store_with(trip(trip_id="t1"))
    accepted = store.assign_driver("t1", {"id": "d1"})
    assert (accepted.status, accepted.driver) == ("accepted", {"id": "d1"})
    with pytest.raises(TripTaken, match="trip t1 already has driver d1"):
        store.assign_driver("t1", {"id": "d2"})
    assert store.trip("t1").driver == {"id": "d1"}


def test_an_assignment_can_be_undone():
    store = store_with(trip(trip_id="t1"))
    store.assign_driver("t1", {"id": "d1"})
    store.unassign_driver("t1")
    assert (store.trip("t1").status, store.trip("t1").driver) == ("pending", None)


def test_declines_are_kept_per_trip_in_order_and_once():
    store = store_with(trip(trip_id="t1"), trip(trip_id="t2"))
    store.decline("t1", "d1")
    store.decline("t1", "d2")
    _, declined = store.decline("t1", "d1")
    assert declined == ("d1", "d2")
    assert store.decline("t2", "d3")[1] == ("d3",)


def test_a_trip_with_a_driver_cannot_be_declined():
    store = store_with(trip(trip_id="t1"))
    store.assign_driver("t1", {"id": "d1"})
    with pytest.raises(TripTaken):
        store.decline("t1", "d2")


@pytest.mark.parametrize("answer", ["assign_driver", "decline"])
def test_answers_about_unknown_trips_are_refused(answer):
    with pytest.raises(TripNotFound, match="no trip 'nope'"):
        getattr(TripStore(), answer)("nope", {"id": "d1"} if answer == "assign_driver" else "d1")


def test_the_rider_sees_the_driver_as_a_trip_driver():
    assert trip_driver(DRIVER) == {"id": "d1", "name": "Sam Kim", "profilePicture": "https://p/1.jpg", "carPlate": "7ABC123"}
    assert trip_driver({"id": "d1"}) == {"id": "d1"}


@pytest.fixture
def store():
    return TripStore()


@pytest.fixture
def trips(store, publisher):
    return TripService(planner=None, store=store, publisher=publisher)


def new_trip(store):
    t = trip(trip_id=unique("trip"), rider=unique("rider"), cents=1054.4)
    store.save_trip(t)
    return t


def test_accept_tells_the_rider_and_asks_for_payment_once(trips, store, amqp_tap):
    t = new_trip(store)
    tap = amqp_tap(contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_CREATE_SESSION)

    trips.accept(t.id, trip_driver(DRIVER))
    sent = {key: (headers, message) for key, headers, message in
            (next_matching(tap, about_trip(t.id)) for _ in range(2))}
    headers, message = sent[contract.TRIP_DRIVER_ASSIGNED]
    assert (headers["owner"], message["ownerId"]) == (t.user_id, t.user_id)
    assert message["data"]["status"] == "accepted"
    assert message["data"]["driver"] == {"id": "d1", "name": "Sam Kim", "profilePicture": "https://p/1.jpg",
                                         "carPlate": "7ABC123"}
    _, message = sent[contract.PAYMENT_CREATE_SESSION]
    assert (message["ownerId"], message["data"]) == (
        t.user_id, {"tripID": t.id, "userID": t.user_id, "amount": 1054, "currency": "USD"})

    trips.accept(t.id, {"id": "d2"})
    trips.decline(t.id, "d3")
    assert tap.empty()


def test_decline_sends_the_trip_back_with_everyone_who_declined(trips, store, amqp_tap):
    t = new_trip(store)
    tap = amqp_tap(contract.TRIP_DRIVER_NOT_INTERESTED)
    trips.decline(t.id, "d1")
    trips.decline(t.id, "d2")
    seen = [next_matching(tap, about_trip(t.id)) for _ in range(2)]
    assert [(m["ownerId"], m["data"]["declinedDriverIDs"]) for _, _, m in seen] == [
        (t.user_id, ["d1"]), (t.user_id, ["d1", "d2"])]
    assert seen[1][2]["data"]["trip"] == t.to_json()


def test_when_the_broker_does_not_take_the_accept_the_trip_stays_pending(store):
    unreachable = rabbit.Publisher("amqp://guest:guest@127.0.0.1:1/", "test-unreachable")
    t = new_trip(store)
    with pytest.raises(rabbit.PublishFailed):
        TripService(planner=None, store=store, publisher=unreachable).accept(t.id, {"id": "d1"})
    assert (store.trip(t.id).status, store.trip(t.id).driver) == ("pending", None)
