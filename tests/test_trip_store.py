"""One suite for every trip store: in memory (trip/store.py), SQLite and
PostgreSQL (trip/sql_store.py). What a store promises: fares taken once, by
their rider, before they expire; every change of a trip a compare-and-set,
so that of many replicas racing for one trip exactly one wins."""
import threading
import uuid
from contextlib import nullcontext

import pytest

from ridesync import messages
from ridesync.database import Database
from ridesync.ride.model import RideFare, Route, Trip
from ridesync.settings import Settings
from ridesync.trip.intake import trip_driver
from ridesync.trip.sql_store import SqlTripStore
from ridesync.trip.store import FareNotFound, FareNotYours, FareUnavailable, TripStore
from tests.databases import create_database, drop_database
from tests.service_support import trip
from tests.support import DESTINATION, PICKUP

ROUTE = Route(path=(PICKUP, DESTINATION), distance=4200.0, duration=600.0)
D1 = messages.as_json(trip_driver({"id": "d1", "name": "Sam Kim", "profilePicture": "https://p/1.jpg",
                                   "carPlate": "7ABC123"}))


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def stores(request, tmp_path):
    """make(clock) -> a store of this kind; the stores one test makes share
    one new database, as replicas do."""
    url = {"memory": None, "sqlite": f"sqlite:///{tmp_path}/trips.db",
           "postgresql": create_database() if request.param == "postgresql" else None}[request.param]
    databases = []

    def make(clock):
        if url is None:
            return TripStore(clock=clock)
        databases.append(Database(url))
        return SqlTripStore(databases[-1], clock=clock)

    yield make
    for database in databases:
        database.close()
    if request.param == "postgresql":
        drop_database(url)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(stores, clock):
    return stores(clock)


def store_with(store, *trips):
    for t in trips:
        store.save_trip(t)
    return store


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def a_fare(clock, rider, ttl=900):
    return RideFare(id=new_id("fare"), user_id=rider, package_slug="sedan", total_price_in_cents=1234,
                    expires_at=clock() + ttl, route=ROUTE)


def a_trip(store, clock):
    rider = new_id("rider")
    fare = a_fare(clock, rider)
    store.save_fares([fare])
    created = Trip(id=new_id("trip"), fare=store.take_fare(fare.id, rider), user_id=rider)
    store.save_trip(created)
    return created


def test_a_fare_is_taken_once_by_its_rider_before_it_expires(store, clock):
    fare, late = a_fare(clock, "r1"), a_fare(clock, "r1", ttl=10)
    store.save_fares([fare, late])
    with pytest.raises(FareNotFound):
        store.take_fare("nope", "r1")
    with pytest.raises(FareNotYours):
        store.take_fare(fare.id, "r2")
    taken = store.take_fare(fare.id, "r1")
    assert (taken, taken.route) == (fare, ROUTE)
    with pytest.raises(FareUnavailable, match="already used"):
        store.take_fare(fare.id, "r1")
    store.give_back_fare(fare.id)
    assert store.take_fare(fare.id, "r1") == fare
    clock.now += 10
    with pytest.raises(FareUnavailable, match="expired"):
        store.take_fare(late.id, "r1")


def start(store, fare_id, rider):
    """store.start_trip in a transaction as CreateTrip's (sent as one
    statement: on PostgreSQL a refusal comes at its end); in memory, as it is."""
    database = getattr(store, "_db", None)
    with nullcontext() if database is None else database.transaction(one_statement=True):
        return store.start_trip(new_id("trip"), fare_id, rider)


def test_a_trip_starts_on_a_fare_taken_once_by_its_rider_before_it_expires(store, clock):
    """take_fare's errors; a rider already on a trip starts another, which becomes their current one."""
    fare, late, next_one = a_fare(clock, "r1"), a_fare(clock, "r1", ttl=10), a_fare(clock, "r1")
    store.save_fares([fare, late, next_one])
    with pytest.raises(FareNotFound):
        start(store, "nope", "r1")
    with pytest.raises(FareNotYours):
        start(store, fare.id, "r2")
    started = start(store, fare.id, "r1")
    assert started == Trip(id=started.id, fare=fare, user_id="r1") == store.trip(started.id) == store.current_trip("r1")
    with pytest.raises(FareUnavailable, match="already used"):
        start(store, fare.id, "r1")
    assert store.current_trip("r1") == started
    clock.now += 10
    with pytest.raises(FareUnavailable, match="expired"):
        start(store, late.id, "r1")
    another = start(store, next_one.id, "r1")
    assert store.current_trip("r1") == another


def test_of_replicas_starting_one_fare_at_once_one_trip_starts(stores, clock, request):
    if request.node.callspec.params["stores"] == "memory":
        replicas = [stores(clock)] * 8
    else:
        replicas = [stores(clock) for _ in range(8)]  # the first priced the fare; the others read it
    fare = a_fare(clock, "r1")
    replicas[0].save_fares([fare])
    ready, started, refused = threading.Barrier(len(replicas)), [], []

    def start_at_once(store):
        ready.wait()
        try:
            started.append(start(store, fare.id, "r1"))
        except FareUnavailable as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start_at_once, args=(s,)) for s in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(started) == 1 and refused == [f"fare {fare.id!r} was already used for a trip"] * 7
    assert replicas[-1].current_trip("r1") == started[0]


def test_expired_fares_are_forgotten_but_a_used_one_is_still_known_as_used(store, clock):
    """Forgotten by a later preview's save, FARE_PRUNE_EVERY seconds after the last."""
    unused, used = a_fare(clock, "r1", ttl=5), a_fare(clock, "r1", ttl=5)
    store.save_fares([unused, used])
    store.take_fare(used.id, "r1")
    clock.now += Settings().fare_prune_every
    store.save_fares([a_fare(clock, "r1")])
    with pytest.raises(FareNotFound):
        store.take_fare(unused.id, "r1")
    with pytest.raises(FareUnavailable):
        store.take_fare(used.id, "r1")


def test_a_trip_is_kept_as_it_was_saved_and_forgotten_on_request(store, clock):
    saved = a_trip(store, clock)
    assert store.trip(saved.id) == saved
    assert store.trip(saved.id).fare.route == ROUTE
    store.forget_trip(saved.id)
    assert store.trip(saved.id) is None


def test_only_the_driver_a_pending_trip_is_offered_to_gets_it(store):
    store_with(store, trip(trip_id="t1"))
    assert store.assign_driver("t1", D1) is None  # offered to no one yet
    assert store.offer("t1", "d1").offered_to == "d1"
    assert store.assign_driver("t1", {**D1, "id": "d2"}) is None
    accepted = store.assign_driver("t1", D1)
    assert (accepted.status, accepted.driver, accepted.offered_to) == ("accepted", D1, None)
    assert store.offer("t1", "d2") is None
    assert store.current_trip("d1") == accepted == store.current_trip("r1")


def test_an_accept_is_undone_back_to_the_offer(store):
    store_with(store, trip(trip_id="t1"))
    store.offer("t1", "d1")
    store.assign_driver("t1", D1)
    assert store.unassign_driver("t1", "d2") is None
    undone = store.unassign_driver("t1", "d1")
    assert (undone.status, undone.driver, undone.offered_to) == ("pending", None, "d1")


def test_a_decline_counts_for_the_driver_offered_the_trip_only(store):
    store_with(store, trip(trip_id="t1"))
    store.offer("t1", "d1")
    assert store.decline("t1", "d2") is None
    declined = store.decline("t1", "d1")
    assert (declined.declined, declined.offered_to) == (("d1",), None)
    assert store.decline("t1", "d1") is None
    store.offer("t1", "d2")
    assert store.decline("t1", "d2").declined == ("d1", "d2")


def test_a_step_happens_only_from_the_status_it_expects(store):
    store_with(store, trip(trip_id="t1"))
    assert store.advance("t1", "accepted", "arrived") is None
    store.offer("t1", "d1")
    store.assign_driver("t1", D1)
    assert store.advance("t1", "accepted", "arrived").status == "arrived"
    assert store.advance("t1", "accepted", "arrived") is None


def test_cancelling_and_ending_unserved_give_the_fare_back(store):
    t = trip(trip_id="t1")
    store.save_fares([t.fare])
    store.take_fare(t.fare.id, "r1")
    store.save_trip(t)
    assert store.cancel("t1", "accepted", "rider", "") is None
    cancelled = store.cancel("t1", "pending", "rider", "changed my mind")
    assert (cancelled.status, cancelled.cancelled_by, cancelled.reason) == ("cancelled", "rider", "changed my mind")
    assert store.take_fare(t.fare.id, "r1") == t.fare

    t2 = trip(trip_id="t2")
    store.save_fares([t2.fare])
    store.take_fare(t2.fare.id, "r1")
    store.save_trip(t2)
    assert store.end_unserved("t2").status == "no_drivers_found"
    assert store.end_unserved("t2") is None
    assert store.take_fare(t2.fare.id, "r1") == t2.fare


def test_a_trip_gets_one_payment_session(store):
    store_with(store, trip(trip_id="t1"))
    session = {"sessionID": "cs_1", "amount": 1234, "currency": "USD"}
    assert store.attach_payment("t1", session).payment == session
    assert store.attach_payment("t1", {**session, "sessionID": "cs_2"}) is None
    assert store.attach_payment("nope", session) is None


def test_the_current_trip_is_the_latest_a_user_rides_drives_or_was_offered(store):
    store_with(store, trip(trip_id="t1"), trip(trip_id="t2"))
    assert store.current_trip("r1").id == "t2"
    assert store.current_trip("d1") is None
    store.offer("t1", "d1")
    assert store.current_trip("d1").id == "t1"
    store.forget_trip("t2")
    assert store.current_trip("r1") is None


def test_of_many_replicas_answering_one_offer_at_once_exactly_one_answer_counts(stores, clock, request):
    if request.node.callspec.params["stores"] == "memory":
        replicas = [stores(clock)] * 8  # one process: its threads race
    else:
        replicas = [stores(clock) for _ in range(8)]  # a connection pool each, one database
    offered = a_trip(replicas[0], clock)
    replicas[0].offer(offered.id, "d1")
    ready, counted = threading.Barrier(len(replicas)), []

    def answer(store, n):
        ready.wait()
        changed = store.assign_driver(offered.id, D1) if n % 2 else store.decline(offered.id, "d1")
        if changed is not None:
            counted.append(changed)

    threads = [threading.Thread(target=answer, args=(s, n)) for n, s in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(counted) == 1
    assert replicas[-1].trip(offered.id) == counted[0]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_replicas_starting_at_once_migrate_one_at_a_time(kind, tmp_path):
    url = create_database() if kind == "postgresql" else f"sqlite:///{tmp_path}/new.db"
    ready, opened, failed = threading.Barrier(4), [], []

    def start():
        ready.wait()
        try:
            opened.append(Database(url))
        except Exception as exc:  # what a replica would die of
            failed.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert failed == [] and len(opened) == 4
        clock = Clock()
        assert a_trip(SqlTripStore(opened[0], clock), clock).status == "pending"
    finally:
        for database in opened:
            database.close()
        if kind == "postgresql":
            drop_database(url)
