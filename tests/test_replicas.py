"""Two replicas each of trip, driver and payment on PostgreSQL and Redis,
behind one gateway with two workers: many rides at once, each with one
driver, one assignment and one payment session; and the same while a
replica of each service is killed (SIGKILL) at a random moment.
REPLICA_RIDES (50) says how many rides. Each run draws new kill moments and
prints their seed, also in a failure's report; REPLICA_KILL_SEED=<seed>
repeats them."""
import json
import os
import random
import signal
import sys
import threading
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from ridesync import contract
from ridesync.driver.redis_pool import RedisDriverPool
from tests.databases import REDIS_URL, RUN, create_database, drop_database
from tests.phone import Phone
from tests.ride import answer, new_id
from tests.service_support import purge_queues
from tests.support import (ANY_PORT, DESTINATION_JSON, PICKUP_JSON, Process, bearer, start_gateway, start_service,
                           stop_all, wait_until)

RIDES = int(os.environ.get("REPLICA_RIDES", "50"))
RIDE_DEADLINE = 180  # seconds for all the rides, on a busy machine
NEXT_STEP = {contract.TRIP_DRIVER_ASSIGNED: "driver.cmd.trip_arrived",
             contract.TRIP_DRIVER_ARRIVED: "driver.cmd.trip_started",
             contract.TRIP_STARTED: "driver.cmd.trip_completed"}


@pytest.fixture
def cluster(tmp_path, request):
    """Every process, two of each service; .replicas[name] are the two. A
    test marked ride_env(NAME="value") has those settings too."""
    settings = request.node.get_closest_marker("ride_env")
    purge_queues(*contract.WORK_QUEUES)
    database, prefix = create_database(), f"ridesync-test:{RUN}:replicas:{os.getpid()}:{time.time_ns()}:"
    env = {"DATABASE_URL": database, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, "OSRM_ENABLED": "false",
           "OFFER_TIMEOUT": "15", "RECONNECT_WINDOW": "30", **(settings.kwargs if settings else {})}
    replicas = {}
    for name in ("trip", "driver"):  # in this order: DriverService is told where TripService listens
        replicas[name] = [start_service(f"ridesync.{name}", ANY_PORT, {**env, f"{name.upper()}_LISTEN_ADDR": ANY_PORT},
                                        tmp_path, name=f"{name}-{n}") for n in range(2)]
        env[f"{name.upper()}_SERVICE_ADDR"] = "ipv4:" + ",".join(p.address for p in replicas[name])
    replicas["payment"] = [Process(f"payment-{n}", [sys.executable, "-m", "ridesync.payment"], env, tmp_path)
                           for n in range(2)]
    gateway, base = start_gateway(env, tmp_path, workers=2)

    class Cluster:
        url = base
        pool = RedisDriverPool(REDIS_URL, prefix)
        db = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))

    Cluster.replicas = replicas
    yield Cluster
    stop_all([gateway, *(p for group in replicas.values() for p in group)])
    Cluster.pool.close()
    Cluster.db.dispose()
    drop_database(database)
    client = RedisDriverPool(REDIS_URL, prefix)._redis
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


class Driver(threading.Thread):
    """A driver's app (v2): accepts every request and drives each trip it
    gets to the end, sending a step again when it is answered with an error.
    It ends a ride once its payment session is made, as a ride on the road
    does (minutes against a second): a session that comes after its ride
    ended is dropped on a v1 rider's socket (dialects.py), and a loaded
    machine made some sessions later than three steps of a bot."""

    def __init__(self, url, stop):
        super().__init__(daemon=True)
        self.id, self.url = new_id("driver"), url
        self.phone = Phone(url, f"/ws/drivers?userID={self.id}&packageSlug=sedan", v2=True)
        self.phone.driver = self.phone.next(contract.DRIVER_REGISTER)["data"]
        self.assigned = []  # trip ids this driver was told it drives
        self.stop, self.last = stop, None

    def run(self):
        while not self.stop.is_set():
            frame = self.phone.poll(timeout=0.2)
            if frame is None:
                continue
            kind, data = frame["type"], frame["data"]
            if kind == contract.DRIVER_TRIP_REQUEST:
                self._send(lambda: answer(self.phone, contract.DRIVER_TRIP_ACCEPT, data))
            elif kind == contract.TRIP_DRIVER_ASSIGNED and data["driver"]["id"] == self.id:
                self.assigned.append(data["id"])
            if kind in NEXT_STEP and (data.get("driver") or {}).get("id") == self.id:
                if kind == contract.TRIP_STARTED and not data.get("payment"):
                    wait_until(lambda: self._paid(data["id"]), timeout=RIDE_DEADLINE, interval=0.2,
                               message=f"trip {data['id']}'s payment session")
                self._send(lambda: self.phone.send(NEXT_STEP[kind], {"tripID": data["id"]}))
            elif kind == "error" and data["code"] in ("unavailable", "deadline_exceeded") and self.last:
                time.sleep(0.2)
                self.last()

    def _send(self, send):
        self.last = send
        send()

    def _paid(self, trip_id):
        """Whether the trip has its payment session; False while it cannot be read (a replica killed)."""
        try:
            read = requests.get(f"{self.url}/trip/{trip_id}", params={"userID": self.id},
                                headers=bearer(self.id, "driver"), timeout=15)
        except requests.RequestException:
            return False
        return read.status_code == 200 and "payment" in read.json()["data"]


class Rider(threading.Thread):
    """A rider's app (v1): previews, starts, and waits for the ride's end;
    starts again when no driver was found; reads its current trip when a
    start failed (the trip may exist all the same)."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.id, self.url = new_id("rider"), url
        self.phone = Phone(url, f"/ws/riders?userID={self.id}")
        self.trip, self.events, self.failure = None, [], None

    def run(self):
        try:
            self._ride()
        except Exception as exc:  # the test reports it
            self.failure = exc

    def _ride(self):
        deadline = time.monotonic() + RIDE_DEADLINE
        self.trip = self._start()
        while time.monotonic() < deadline:
            frame = self.phone.poll(timeout=0.5)
            if frame is None:
                continue
            self.events.append((frame["type"], frame["data"].get("id") or frame["data"].get("tripID")))
            if frame["type"] == contract.TRIP_NO_DRIVERS_FOUND and frame["data"]["id"] == self.trip:
                self.trip = self._start()
            if (contract.TRIP_COMPLETED, self.trip) in self.events and self._sessions(self.trip):
                return
        raise AssertionError(f"rider {self.id}'s trip {self.trip} did not complete: {self.events}")

    def _start(self):
        headers = bearer(self.id)
        for _ in range(20):
            preview = requests.post(f"{self.url}/trip/preview", timeout=15, headers=headers, data=json.dumps(
                {"userID": self.id, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}))
            if preview.status_code == 201:
                fare = next(f["id"] for f in preview.json()["data"]["rideFares"] if f["packageSlug"] == "sedan")
                start = requests.post(f"{self.url}/trip/start", timeout=15, headers=headers,
                                      data=json.dumps({"rideFareID": fare, "userID": self.id}))
                if start.status_code == 201:
                    return start.json()["data"]["trip"]["id"]
            current = requests.get(f"{self.url}/trip/current", params={"userID": self.id}, headers=headers, timeout=15)
            if current.status_code == 200:
                return current.json()["data"]["id"]
            time.sleep(0.5)
        raise AssertionError(f"rider {self.id} could not start a trip")

    def _sessions(self, trip_id):
        return [e for e in self.events if e == (contract.PAYMENT_SESSION_CREATED, trip_id)]


def ride_all(cluster, during=lambda: None):
    stop = threading.Event()
    drivers = [Driver(cluster.url, stop) for _ in range(RIDES)]
    riders = [Rider(cluster.url) for _ in range(RIDES)]
    for thread in drivers + riders:
        thread.start()
    during()
    for rider in riders:
        rider.join(RIDE_DEADLINE + 30)
    stop.set()
    for driver in drivers:
        driver.join(5)
    try:
        assert_every_ride_complete_once(cluster, riders, drivers)
    finally:
        for phone in [t.phone for t in riders + drivers]:
            phone.close()


def assert_every_ride_complete_once(cluster, riders, drivers):
    assert [r.failure for r in riders if r.failure] == []
    trips = {r.trip: r for r in riders}
    for rider in riders:
        assigned = [e for e in rider.events if e == (contract.TRIP_DRIVER_ASSIGNED, rider.trip)]
        assert len(assigned) == 1 and len(rider._sessions(rider.trip)) == 1, (rider.id, rider.events)
    driven = [trip for d in drivers for trip in d.assigned if trip in trips]
    assert sorted(driven) == sorted(trips)  # each trip assigned to one driver, once
    with cluster.db.connect() as conn:
        rows = conn.execute(text("SELECT id, status, driver_id FROM trips WHERE id = ANY(:ids)"),
                            {"ids": list(trips)}).all()
        assert {(row.status, row.driver_id is not None) for row in rows} == {("completed", True)}
        sessions = conn.execute(text("SELECT trip_id, count(*) FROM payment_sessions WHERE trip_id = ANY(:ids) "
                                     "GROUP BY trip_id"), {"ids": list(trips)}).all()
        assert sorted(trip for trip, count in sessions if count == 1) == sorted(trips)
    ids = [d.id for d in drivers]
    assert cluster.pool.registered(ids) == set(ids)  # no driver left unregistered
    wait_until(lambda: {d.id for d in cluster.pool.free_drivers("any")} >= set(ids), timeout=30,
               message="every driver free again")


def test_many_rides_at_once_over_two_replicas_of_each_service(cluster):
    ride_all(cluster)


def test_rides_go_on_while_a_replica_of_each_service_is_killed(cluster):
    chosen = os.environ.get("REPLICA_KILL_SEED")
    seed = random.randrange(1_000_000) if chosen in (None, "", "random") else int(chosen)
    pick = random.Random(seed)
    print(f"kill moments from seed {seed}")

    def kill_one_of_each():
        for name in ("trip", "driver", "payment"):
            time.sleep(pick.uniform(0.5, 4))
            victim = cluster.replicas[name][pick.randrange(2)]
            victim.signal(signal.SIGKILL)
            print(f"killed {victim.name}")

    try:
        ride_all(cluster, during=kill_one_of_each)
    except Exception as exc:
        exc.add_note(f"kill moments from seed {seed}: REPLICA_KILL_SEED={seed} repeats them")
        raise

