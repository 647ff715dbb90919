"""Dispatch and the driver pool: who is asked to take a trip. One suite for
both pools, in the process and in Redis (a real server, `make test` starts it)."""
import json
import threading

import pytest

from ridesync import contract, messages
from ridesync.contract import MalformedMessage
from ridesync.ride import geohash
from ridesync.driver.dispatch import Dispatcher, trip_to_dispatch
from ridesync.driver.pool import DriverNotFound, DriverPool
from ridesync.driver.redis_pool import RedisDriverPool
from ridesync.ride.model import Coordinate, InvalidArgument
from tests.databases import in_redis
from tests.service_support import PICKUP, trip_driver_json, trip_json


@pytest.fixture(params=["in process", "redis"])
def make_pool(request):
    """make_pool() -> an empty pool of this kind: DriverPool, or RedisDriverPool
    under a key prefix of this test's own (removed afterwards)."""
    if request.param == "in process":
        yield DriverPool
        return
    yield from in_redis(RedisDriverPool)


def pool_with(make_pool, *drivers):
    """drivers: (id, package, metres north of the pickup)"""
    pool = make_pool()
    for driver_id, package, north_m in drivers:
        pool.register(driver_id, package)
        pool.move(driver_id, Coordinate(PICKUP.latitude + north_m / 111_000, PICKUP.longitude))
    return pool


def ranked_ids(pool, routing_key, data):
    return [d.id for d in pool.candidates(trip_to_dispatch(routing_key, data))]


def test_the_nearest_driver_of_the_package_comes_first(make_pool):
    pool = pool_with(make_pool, ("far", "sedan", 2000), ("near", "sedan", 100), ("suv", "suv", 10), ("mid", "sedan", 800))
    assert ranked_ids(pool, contract.TRIP_CREATED, trip_json("sedan")) == ["near", "mid", "far"]


def test_drivers_who_declined_are_not_asked_again(make_pool):
    pool = pool_with(make_pool, ("far", "sedan", 2000), ("near", "sedan", 100), ("mid", "sedan", 800))
    data = {"trip": trip_json("sedan"), "declinedDriverIDs": ["near", "far"]}
    assert ranked_ids(pool, contract.TRIP_DRIVER_NOT_INTERESTED, data) == ["mid"]


def test_no_one_is_left_when_every_driver_of_the_package_declined(make_pool):
    pool = pool_with(make_pool, ("a", "sedan", 100), ("b", "van", 100))
    data = {"trip": trip_json("sedan"), "declinedDriverIDs": ["a"]}
    assert ranked_ids(pool, contract.TRIP_DRIVER_NOT_INTERESTED, data) == []


def test_the_trip_is_read_from_the_created_event():
    trip = trip_to_dispatch(contract.TRIP_CREATED, trip_json("van", trip_id="t9", rider="r9"))
    assert (trip.id, trip.rider_id, trip.package_slug, trip.pickup, trip.declined) == ("t9", "r9", "van", PICKUP, ())


@pytest.mark.parametrize("routing_key, data, problem", [
    (contract.TRIP_CREATED, {"id": "t1"}, "data.selectedFare is required"),
    (contract.TRIP_CREATED, {**trip_json(), "route": {**trip_json()["route"], "geometry": []}},
     "data.route.geometry must be a non-empty list"),
    (contract.TRIP_CREATED, {**trip_json(), "selectedFare": {**trip_json()["selectedFare"], "packageSlug": "bus"}},
     "data.selectedFare.packageSlug must be one of suv, sedan"),
    (contract.TRIP_CREATED, {**trip_json(), "userID": ""}, "data.userID is required and must be a non-empty string"),
    (contract.TRIP_DRIVER_NOT_INTERESTED, trip_json(), "data.trip is required"),
    (contract.TRIP_DRIVER_NOT_INTERESTED, {"trip": trip_json(), "declinedDriverIDs": [1]},
     r"data.declinedDriverIDs\[0\] is required and must be a non-empty string"),
])
def test_a_message_without_what_dispatch_needs_is_malformed(routing_key, data, problem):
    with pytest.raises(MalformedMessage, match=problem):
        trip_to_dispatch(routing_key, data)


def test_registering_again_replaces_and_gives_the_same_profile(make_pool):
    pool = make_pool()
    first = pool.register("d1", "sedan")
    pool.move("d1", PICKUP)
    again = pool.register("d1", "luxury")
    assert (again.name, again.car_plate, again.location) == (first.name, first.car_plate, first.location)
    assert [d.package_slug for d in pool.drivers()] == ["luxury"]


def test_a_new_driver_starts_in_san_francisco_with_a_profile(make_pool):
    driver = make_pool().register("d1", "suv").to_json()
    assert driver["name"] and driver["carPlate"] and driver["profilePicture"].startswith("https://")
    assert 37.7 < driver["location"]["latitude"] < 37.85 and -122.5 < driver["location"]["longitude"] < -122.35
    assert driver["geohash"] == geohash.encode(driver["location"]["latitude"], driver["location"]["longitude"])
    assert driver["geohash"].startswith("9q8")


@pytest.mark.parametrize("driver_id, package, problem", [
    ("", "sedan", "driverID is required"),
    ("d1", "bike", "packageSlug must be one of suv, sedan, van, luxury"),
])
def test_registration_is_validated(make_pool, driver_id, package, problem):
    with pytest.raises(InvalidArgument, match=problem):
        make_pool().register(driver_id, package)


def test_moving_updates_location_and_geohash_of_registered_drivers_only(make_pool):
    pool = make_pool()
    pool.register("d1", "van")
    moved = pool.move("d1", Coordinate(57.64911, 10.40744))
    assert moved.geohash == "u4pruydqq"  # the reference point of geohash.org
    with pytest.raises(DriverNotFound):
        pool.move("nobody", PICKUP)


def test_the_pool_says_which_drivers_are_registered(make_pool):
    pool = pool_with(make_pool, ("d1", "sedan", 100), ("d2", "van", 100))
    pool.unregister("d2")
    assert pool.registered(["d1", "d2", "d3"]) == {"d1"}


def test_unregistering_is_idempotent(make_pool):
    pool = make_pool()
    pool.register("d1", "van")
    assert pool.unregister("d1")[0].id == "d1"
    assert pool.unregister("d1") == (None, None)
    assert pool.drivers() == []


class Publisher:
    """Records what dispatch publishes, as ridesync.rabbit.Publisher would send it."""

    def __init__(self):
        self.sent, self.data = [], []

    def publish(self, routing_key, owner_id, data):
        self.sent.append((routing_key, owner_id, data.get("id") or data["tripID"]))
        self.data.append(data)

    def notify(self, routing_key, owner_id, data):
        self.sent.append((routing_key, owner_id, data["tripID"]))
        self.data.append(data)


def test_a_driver_asked_to_take_a_trip_is_not_asked_for_another_until_they_decline(make_pool):
    pool, publisher = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.handle(contract.TRIP_CREATED, "r2", trip_json("sedan", trip_id="t2", rider="r2"))
    dispatcher.handle(contract.TRIP_CREATED, "r3", trip_json("sedan", trip_id="t3", rider="r3"))
    assert publisher.sent == [
        (contract.DRIVER_TRIP_REQUEST, "near", "t1"),
        (contract.DRIVER_TRIP_REQUEST, "far", "t2"),
        (contract.DISPATCH_NO_DRIVERS_LEFT, "r3", "t3"),
    ]
    declined = {"trip": trip_json("sedan", trip_id="t1", rider="r1"), "declinedDriverIDs": ["near"]}
    dispatcher.handle(contract.TRIP_DRIVER_NOT_INTERESTED, "r1", declined)
    dispatcher.handle(contract.TRIP_CREATED, "r4", trip_json("sedan", trip_id="t4", rider="r4"))
    assert publisher.sent[3:] == [
        (contract.DISPATCH_NO_DRIVERS_LEFT, "r1", "t1"),  # far is busy with t2, near declined t1
        (contract.DRIVER_TRIP_REQUEST, "near", "t4"),  # near is free again
    ]


def test_a_redelivered_trip_goes_to_the_driver_already_asked(make_pool):
    pool, publisher = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    for _ in range(2):
        dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    assert [owner for _key, owner, _trip in publisher.sent] == ["near", "near"]


def assigned(trip_id, driver_id, rider="r1"):
    """A trip event's Trip, as DriverService's consumer reads it."""
    return messages.decode({**trip_json(trip_id=trip_id, rider=rider), "status": "accepted",
                            "driver": trip_driver_json(driver_id)}, messages.Trip, "data")


def test_a_driver_is_busy_from_the_accept_to_the_end_of_the_trip_whatever_their_socket_does(make_pool):
    pool, publisher = pool_with(make_pool, ("near", "sedan", 100)), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.handle_availability(contract.TRIP_DRIVER_ASSIGNED, assigned("t1", "near"))
    dispatcher.handle_availability(contract.TRIP_DRIVER_ASSIGNED, assigned("t1", "near"))
    dispatcher.handle(contract.TRIP_CREATED, "r2", trip_json("sedan", trip_id="t2", rider="r2"))
    pool.unregister("near")
    pool.register("near", "sedan", session="s2")  # the app reconnects mid-trip
    dispatcher.handle(contract.TRIP_CREATED, "r3", trip_json("sedan", trip_id="t3", rider="r3"))
    dispatcher.handle_availability(contract.TRIP_COMPLETED, assigned("t2", "near"))  # another trip's end
    dispatcher.handle(contract.TRIP_CREATED, "r4", trip_json("sedan", trip_id="t4", rider="r4"))
    dispatcher.handle_availability(contract.TRIP_COMPLETED, assigned("t1", "near"))
    dispatcher.handle(contract.TRIP_CREATED, "r5", trip_json("sedan", trip_id="t5", rider="r5"))
    assert [(key, owner, trip) for key, owner, trip in publisher.sent] == [
        (contract.DRIVER_TRIP_REQUEST, "near", "t1"), (contract.DISPATCH_NO_DRIVERS_LEFT, "r2", "t2"),
        (contract.DISPATCH_NO_DRIVERS_LEFT, "r3", "t3"), (contract.DISPATCH_NO_DRIVERS_LEFT, "r4", "t4"),
        (contract.DRIVER_TRIP_REQUEST, "near", "t5"),
    ]


def test_a_driver_registered_on_a_trip_is_busy_with_it_until_it_ends(make_pool):
    """What a DriverService restarted with its pool in memory relies on:
    registering names the trip TripService says the driver is on."""
    pool, publisher = make_pool(), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    pool.register("near", "sedan", session="s1", trip_id="t1")
    dispatcher.handle(contract.TRIP_CREATED, "r2", trip_json("sedan", trip_id="t2", rider="r2"))
    pool.register("near", "sedan", session="s2")  # a registration that read no trip leaves them on theirs
    assert pool.free_drivers("t3") == []
    dispatcher.handle_availability(contract.TRIP_COMPLETED, assigned("t1", "near"))
    dispatcher.handle(contract.TRIP_CREATED, "r4", trip_json("sedan", trip_id="t4", rider="r4"))
    assert publisher.sent == [(contract.DISPATCH_NO_DRIVERS_LEFT, "r2", "t2"), (contract.DRIVER_TRIP_REQUEST, "near", "t4")]


def test_a_registration_naming_a_trip_that_ended_since_it_was_read_leaves_the_driver_free(make_pool):
    pool = make_pool()
    Dispatcher(pool, Publisher()).handle_availability(contract.TRIP_CANCELLED, assigned("t1", "d1"))
    pool.register("d1", "sedan", trip_id="t1")
    assert [d.id for d in pool.free_drivers("t2")] == ["d1"]


def test_a_cancelled_trip_frees_its_driver_and_voids_its_offers(make_pool):
    pool, publisher = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.handle(contract.TRIP_CREATED, "r2", trip_json("sedan", trip_id="t2", rider="r2"))
    dispatcher.handle_availability(contract.TRIP_DRIVER_ASSIGNED, assigned("t1", "near"))
    dispatcher.handle_availability(contract.TRIP_CANCELLED, assigned("t1", "near"))
    dispatcher.handle_availability(contract.TRIP_CANCELLED, messages.decode(  # cancelled before any driver took it
        {**trip_json(trip_id="t2", rider="r2"), "status": "cancelled"}, messages.Trip))
    assert {d.id for d in pool.free_drivers("t3")} == {"near", "far"}


def test_a_withdrawn_offer_frees_its_driver_and_other_offers_of_a_taken_trip_are_withdrawn(make_pool):
    pool, publisher = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher()
    dispatcher = Dispatcher(pool, publisher)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.withdrawn("near", messages.Withdrawal(trip_id="t1", reason="cancelled"))
    assert {d.id for d in pool.free_drivers("t2")} == {"near", "far"}

    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.handle_availability(contract.TRIP_DRIVER_ASSIGNED, assigned("t1", "far"))
    assert publisher.sent[-1] == (contract.DRIVER_TRIP_WITHDRAWN, "near", "t1")
    assert publisher.data[-1] == {"tripID": "t1", "reason": "taken"}


def test_only_the_session_that_registered_a_driver_unregisters_them(make_pool):
    pool = make_pool()
    pool.register("d1", "sedan", session="old")
    pool.register("d1", "sedan", session="new")
    assert pool.unregister("d1", session="old") == (None, None)
    assert [d.id for d in pool.drivers()] == ["d1"]
    assert pool.unregister("d1", session="new")[0].id == "d1"
    assert pool.drivers() == []


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_offer_left_unanswered_is_declined_for_the_driver_and_frees_them(make_pool):
    pool, publisher, clock = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher(), Clock()
    dispatcher = Dispatcher(pool, publisher, offer_timeout=30, clock=clock)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    clock.now = 29
    dispatcher.expire_offers()
    assert len(publisher.sent) == 1
    clock.now = 30
    dispatcher.expire_offers()
    # Declined on the driver's behalf: TripService keeps the declines and sends the trip on.
    assert publisher.sent[1] == (contract.DRIVER_TRIP_DECLINE, "near", "t1")
    # It names the driver as the pool had them when asked, as the gateway names a driver who declines.
    near = next(d for d in pool.drivers() if d.id == "near")
    assert publisher.data[1] == {"tripID": "t1", "riderID": "r1", "driver": near.to_json()}
    assert (publisher.sent[2], publisher.data[2]) == (
        (contract.DRIVER_TRIP_WITHDRAWN, "near", "t1"), {"tripID": "t1", "reason": "expired"})
    dispatcher.handle(contract.TRIP_CREATED, "r2", trip_json("sedan", trip_id="t2", rider="r2"))
    assert publisher.sent[3] == (contract.DRIVER_TRIP_REQUEST, "near", "t2")


def test_an_assigned_trip_is_never_passed_on(make_pool):
    pool, publisher, clock = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000)), Publisher(), Clock()
    dispatcher = Dispatcher(pool, publisher, offer_timeout=30, clock=clock)
    dispatcher.handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    dispatcher.handle_availability(contract.TRIP_DRIVER_ASSIGNED, assigned("t1", "near"))
    clock.now = 60
    dispatcher.expire_offers()
    assert len(publisher.sent) == 1


def test_a_driver_who_goes_offline_leaves_their_offer_behind(make_pool):
    pool = pool_with(make_pool, ("near", "sedan", 100))
    Dispatcher(pool, Publisher()).handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    driver, unanswered = pool.unregister("near")
    assert driver.id == "near" and unanswered.trip.id == "t1"
    assert pool.unregister("near") == (None, None)


def test_a_driver_who_went_offline_since_the_search_is_passed_over(make_pool):
    pool = pool_with(make_pool, ("near", "sedan", 100), ("far", "sedan", 2000))
    search = pool.candidates

    def search_then_near_goes_offline(trip):
        found = list(search(trip))
        pool.unregister("near")
        return found

    pool.candidates = search_then_near_goes_offline
    publisher = Publisher()
    Dispatcher(pool, publisher).handle(contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
    assert [owner for _key, owner, _trip in publisher.sent] == ["far"]


def test_dispatchers_racing_for_drivers_never_ask_one_driver_to_take_two_trips(make_pool):
    drivers = [(f"d{n}", "sedan", 100 + 10 * n) for n in range(20)]
    pools = [pool_with(make_pool, *drivers)] + [make_pool() for _ in range(1)]
    if isinstance(pools[0], DriverPool):
        pools[1] = pools[0]  # in process: one pool, two dispatching threads
    publishers = [Publisher(), Publisher()]
    ready = threading.Barrier(2)

    def dispatch(n):
        dispatcher = Dispatcher(pools[n], publishers[n])
        ready.wait()
        for t in range(n, 40, 2):
            dispatcher.handle(contract.TRIP_CREATED, f"r{t}", trip_json("sedan", trip_id=f"t{t}", rider=f"r{t}"))

    threads = [threading.Thread(target=dispatch, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sent = publishers[0].sent + publishers[1].sent
    asked = [owner for key, owner, _trip in sent if key == contract.DRIVER_TRIP_REQUEST]
    assert sorted(asked) == sorted(d for d, _, _ in drivers)  # each driver once
    assert len([key for key, _, _ in sent if key == contract.DISPATCH_NO_DRIVERS_LEFT]) == 20


def test_replicas_registering_one_driver_for_two_packages_at_once_leave_them_in_one(make_pool):
    """Every driver ends up in the index of the package they are registered
    for, and no other: one in two would be asked to take the other's trips."""
    drivers = [f"d{n}" for n in range(200)]
    pools = [make_pool(), make_pool()]
    if isinstance(pools[0], DriverPool):
        pools[1] = pools[0]  # in process: one pool, two registering threads
    ready = threading.Barrier(2)

    def register(pool, package):
        ready.wait(timeout=10)
        for driver_id in drivers:
            pool.register(driver_id, package)

    threads = [threading.Thread(target=register, args=args) for args in ((pools[0], "sedan"), (pools[1], "van"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(d.id for d in pools[0].drivers()) == sorted(drivers)  # each once: in one index only


@pytest.mark.parametrize("make_pool", ["redis"], indirect=True)
def test_a_message_one_replica_handled_is_dropped_by_every_replica(make_pool):
    """A copy of trip.event.created (an outbox row relayed after its sender
    died, say) comes to another DriverService replica: no second dispatch."""
    replicas, ran = (make_pool(), make_pool()), []
    assert replicas[0].handle_once("find_available_drivers", "m1", lambda: ran.append("first")) is True
    assert replicas[1].handle_once("find_available_drivers", "m1", lambda: ran.append("copy")) is False
    assert replicas[1].handle_once("driver_availability", "m1", lambda: ran.append("other queue")) is True
    assert ran == ["first", "other queue"]


@pytest.mark.parametrize("make_pool", ["redis"], indirect=True)
def test_a_message_whose_handling_failed_is_handled_when_it_comes_again(make_pool):
    pool, ran = make_pool(), []

    def fails():
        raise RuntimeError("the replica failed halfway")

    with pytest.raises(RuntimeError):
        pool.handle_once("find_available_drivers", "m2", fails)
    assert pool.handle_once("find_available_drivers", "m2", lambda: ran.append("again")) is True
    assert ran == ["again"]


def test_an_offer_written_before_offers_named_their_driver_still_expires_and_names_them():
    """A rolling deploy: the expiry of a DriverService of today reads an
    offer an older one wrote without its driver."""
    making = in_redis(RedisDriverPool)
    make_pool = next(making)
    try:
        pool, publisher, clock = pool_with(make_pool, ("near", "sedan", 100)), Publisher(), Clock()
        Dispatcher(pool, publisher, offer_timeout=30, clock=clock).handle(
            contract.TRIP_CREATED, "r1", trip_json("sedan", trip_id="t1", rider="r1"))
        key = f"{pool._p}offer:near"
        older = json.loads(pool._redis.get(key))
        del older["driver"]
        pool._redis.set(key, json.dumps(older), keepttl=True)
        clock.now = 30
        Dispatcher(pool, publisher, offer_timeout=30, clock=clock).expire_offers()
        assert publisher.sent[1] == (contract.DRIVER_TRIP_DECLINE, "near", "t1")
        assert publisher.data[1]["driver"]["name"] == next(d for d in pool.drivers() if d.id == "near").name
    finally:
        next(making, None)
