"""TripService's steps of a trip, in-process with the in-memory store and a
recording publisher: who may take each step, what it changes in the record,
and what it announces. The store's own rules: tests/test_trip_store.py."""
import pytest

from ridesync import contract, messages
from ridesync.ride.lifecycle import NotYours, StepRefused
from ridesync.trip.intake import trip_driver
from ridesync.trip.service import TripService
from ridesync.trip.store import TripNotFound, TripStore
from tests.service_support import RecordingPublisher, trip

DRIVER = {"id": "d1", "name": "Sam Kim", "profilePicture": "https://p/1.jpg", "carPlate": "7ABC123",
          "packageSlug": "sedan", "geohash": "9q8yy", "location": {"latitude": 37.77, "longitude": -122.41}}
D1 = trip_driver(DRIVER)


# --- the service -------------------------------------------------------------------

@pytest.fixture
def published():
    return RecordingPublisher()


@pytest.fixture
def store():
    return TripStore()


@pytest.fixture
def trips(store, published):
    return TripService(planner=None, store=store, publisher=published)


def offered(store, trips, published, driver_id="d1", cents=1054.4):
    t = trip(trip_id="t1", rider="r1", cents=cents)
    store.save_fares([t.fare])
    store.take_fare(t.fare.id, "r1")
    store.save_trip(t)
    trips.record_offer("t1", driver_id)
    assert published.take() == []
    return t


def accepted(store, trips, published):
    offered(store, trips, published)
    trips.accept("t1", D1)
    published.take()
    return store.trip("t1")


def test_the_driver_offered_the_trip_accepts_it_rider_and_driver_told_payment_asked(store, trips, published):
    offered(store, trips, published)
    trips.accept("t1", D1)
    trip_json = store.trip("t1").to_json()
    assert trip_json["status"] == "accepted" and trip_json["driver"] == messages.as_json(D1)
    assert published.take() == [
        (contract.PAYMENT_CREATE_SESSION, "r1", {"tripID": "t1", "userID": "r1", "amount": 1054, "currency": "USD"}),
        (contract.TRIP_DRIVER_ASSIGNED, "r1", trip_json),
        (contract.TRIP_DRIVER_ASSIGNED, "d1", trip_json),
    ]
    trips.accept("t1", D1)
    assert published.take() == []


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_answers_from_a_driver_not_offered_the_trip_are_refused_and_change_nothing(store, trips, published, answer):
    offered(store, trips, published, driver_id="d1")
    before = store.trip("t1")
    for _ in range(20):
        getattr(trips, answer)("t1", trip_driver({**DRIVER, "id": "d2"}) if answer == "accept" else "d2")
    assert store.trip("t1") == before
    refusal = {"tripID": "t1", "code": "permission_denied", "message": "trip t1 is not offered to driver d2"}
    assert published.take() == [(contract.DRIVER_ANSWER_REFUSED, "d2", refusal)] * 20


def test_a_decline_sends_the_trip_back_once_and_the_decliner_cannot_accept_it_after(store, trips, published):
    t = offered(store, trips, published)
    for _ in range(20):
        trips.decline("t1", "d1")
    assert published.take() == [(contract.TRIP_DRIVER_NOT_INTERESTED, "r1",
                                 {"trip": t.to_json(), "declinedDriverIDs": ["d1"]})]
    trips.accept("t1", D1)
    assert [key for key, _, _ in published.take()] == [contract.DRIVER_ANSWER_REFUSED]
    assert store.trip("t1").status == "pending"


def test_when_the_broker_does_not_take_the_accept_it_is_offered_again(store, trips, published):
    offered(store, trips, published)
    published.fails = True
    with pytest.raises(RuntimeError):
        trips.accept("t1", D1)
    t = store.trip("t1")
    assert (t.status, t.driver, t.offered_to) == ("pending", None, "d1")


def test_the_drivers_steps_are_announced_to_rider_and_driver(store, trips, published):
    accepted(store, trips, published)
    for step, event, status in [("arrived", contract.TRIP_DRIVER_ARRIVED, "arrived"),
                                ("started", contract.TRIP_STARTED, "in_progress"),
                                ("completed", contract.TRIP_COMPLETED, "completed")]:
        assert trips.driver_step("t1", "d1", step).status == status
        trip_json = store.trip("t1").to_json()
        assert published.take() == [(event, "r1", trip_json), (event, "d1", trip_json)]
    assert trips.driver_step("t1", "d1", "arrived").status == "completed"
    assert published.take() == []
    assert trips.current_trip("d1") is None and trips.current_trip("r1") is None


def test_steps_by_others_or_out_of_order_are_refused_and_change_nothing(store, trips, published):
    t = accepted(store, trips, published)
    with pytest.raises(NotYours):
        trips.driver_step("t1", "d2", "arrived")
    with pytest.raises(StepRefused, match="is accepted: it cannot be completed"):
        trips.driver_step("t1", "d1", "completed")
    with pytest.raises(NotYours):
        trips.cancel("t1", "rider", "r2")
    with pytest.raises(TripNotFound):
        trips.driver_step("nope", "d1", "arrived")
    assert store.trip("t1") == t and published.take() == []


def test_a_rider_cancelling_while_the_trip_is_offered_stops_the_offer(store, trips, published):
    offered(store, trips, published)
    cancelled = trips.cancel("t1", "rider", "r1", "too slow")
    assert (cancelled.status, cancelled.cancelled_by, cancelled.reason) == ("cancelled", "rider", "too slow")
    assert published.take() == [
        (contract.DRIVER_TRIP_WITHDRAWN, "d1", {"tripID": "t1", "reason": "cancelled"}),
        (contract.TRIP_CANCELLED, "r1", cancelled.to_json()),
    ]
    trips.accept("t1", D1)
    assert [key for key, _, _ in published.take()] == [contract.DRIVER_ANSWER_REFUSED]
    assert store.take_fare(cancelled.fare.id, "r1") == cancelled.fare


def test_a_driver_cancelling_after_the_accept_voids_the_payment_and_tells_the_rider(store, trips, published):
    accepted(store, trips, published)
    trips.attach_payment("t1", {"sessionID": "cs_1", "amount": 1054, "currency": "USD"})
    cancelled = trips.cancel("t1", "driver", "d1", "flat tyre")
    assert cancelled.to_json()["cancelledBy"] == "driver"
    assert cancelled.to_json()["payment"] == {"sessionID": "cs_1", "amount": 1054, "currency": "USD"}
    assert published.take() == [
        (contract.PAYMENT_VOID_SESSION, "r1", {"tripID": "t1", "userID": "r1"}),
        (contract.TRIP_CANCELLED, "r1", cancelled.to_json()),
        (contract.TRIP_CANCELLED, "d1", cancelled.to_json()),
    ]
    assert trips.cancel("t1", "driver", "d1").status == "cancelled"
    assert published.take() == []
    assert store.take_fare(cancelled.fare.id, "r1") == cancelled.fare


def test_an_offer_of_a_trip_no_longer_pending_is_withdrawn(store, trips, published):
    accepted(store, trips, published)
    trips.record_offer("t1", "d2")
    assert published.take() == [(contract.DRIVER_TRIP_WITHDRAWN, "d2", {"tripID": "t1", "reason": "taken"})]


def test_no_driver_left_ends_a_pending_trip_only(store, trips, published):
    t = offered(store, trips, published)
    trips.no_drivers_left("t1")
    ended = store.trip("t1")
    assert ended.status == "no_drivers_found"
    assert published.take() == [(contract.TRIP_NO_DRIVERS_FOUND, "r1", ended.to_json())]
    assert store.take_fare(t.fare.id, "r1") == t.fare
    trips.no_drivers_left("t1")
    trips.record_offer("t1", "d2")
    assert published.take() == [(contract.DRIVER_TRIP_WITHDRAWN, "d2", {"tripID": "t1", "reason": "expired"})]


def test_a_trip_is_read_by_its_rider_and_driver(store, trips, published):
    t = accepted(store, trips, published)
    assert trips.trip_for("t1", "r1") == t == trips.trip_for("t1", "d1")
    with pytest.raises(NotYours):
        trips.trip_for("t1", "d2")
    assert trips.current_trip("d1") == t


def test_a_driver_asked_to_take_a_trip_has_it_as_current_until_they_decline(store, trips, published):
    offered(store, trips, published)
    assert trips.current_trip("d1") == store.trip("t1")
    trips.decline("t1", "d1")
    assert trips.current_trip("d1") is None and trips.current_trip("r1").id == "t1"


def test_without_replicas_to_wait_for_an_answer_between_offers_is_refused_at_once(store, published):
    store.save_trip(trip(trip_id="t1", rider="r1"))
    TripService(planner=None, store=store, publisher=published).decline("t1", "d1")
    assert store.trip("t1").declined == ()
    assert [key for key, _, _ in published.take()] == [contract.DRIVER_ANSWER_REFUSED]
