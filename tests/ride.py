"""The `ride` fixture: every process of a ride (gunicorn with 2 gevent
workers, the three services, real RabbitMQ), and phones on real sockets."""
import json
import signal
import sys
import uuid
from contextlib import contextmanager

import pytest
import requests

from ridesync import contract
from tests.phone import Phone
from tests.service_support import purge_queues
from tests.support import (AMQP_URL, ANY_PORT, DESTINATION_JSON, PICKUP_JSON, Process, bearer, start_gateway,
                           start_service, stop_all)

AS_NAMED = {"X-RideSync-Dialect": "v2"}  # route points in HTTP answers as named, not in the original client's order


@pytest.fixture
def ride(osrm, tmp_path, request):
    """Every process of a ride, started for one test, on work queues emptied
    of what earlier tests left (a trip a stopped DriverService never took).
    A test marked ride_env(NAME="value") has those settings too."""
    settings = request.node.get_closest_marker("ride_env")
    with riding(osrm, tmp_path, settings.kwargs if settings else {}) as started:
        yield started


@contextmanager
def riding(osrm, tmp_path, settings):
    """The ride's processes, with these settings too; every one started is
    stopped at the end, also when one of them fails to start."""
    processes, phones = [], []
    try:
        yield _started(osrm, tmp_path, settings, processes, phones)
    finally:
        for phone in phones:
            phone.close()
        stop_all(processes)


def _started(osrm, tmp_path, settings, processes, phones):
    """Starts the ride's processes into processes: the Ride."""
    purge_queues(*contract.WORK_QUEUES)
    env = {"OSRM_URL": osrm.url, "RECONNECT_WINDOW": "3", "OFFER_TIMEOUT": "2", "AMQP_URL": AMQP_URL, **settings}
    for name in ("trip", "driver"):  # in this order: DriverService is told where TripService listens
        variable = f"{name.upper()}_SERVICE_ADDR"
        processes.append(start_service(f"ridesync.{name}", ANY_PORT, {**env, variable: ANY_PORT}, tmp_path))
        env[variable] = processes[-1].address
    trip_addr, driver_addr = env["TRIP_SERVICE_ADDR"], env["DRIVER_SERVICE_ADDR"]
    processes.append(Process("payment", [sys.executable, "-m", "ridesync.payment"], env, tmp_path))
    gateway, base = start_gateway(env, tmp_path, workers=2)
    processes.append(gateway)

    class Ride:
        url = base
        process_env = env

        def phone(self, path, url=base, v2=False, headers=None):
            phone = Phone(url, path, v2, headers)
            phones.append(phone)
            return phone

        def rider(self, user_id=None, url=base, v2=False):
            """A rider's phone; a v2 one has read its first frame, `trip.state`, into .state."""
            phone = self.phone(f"/ws/riders?userID={user_id or new_id('rider')}", url, v2)
            if v2:
                phone.state = phone.next("trip.state")["data"]
            return phone

        def another_gateway(self, workers=2, **settings):
            """A second gateway replica, with these settings too; its base URL."""
            return self.replica(workers, **settings)[1]

        def replica(self, workers=2, name="gateway-2", **settings):
            """Another gateway replica, with these settings too: (its process, its base URL)."""
            replica, replica_url = start_gateway({**env, **settings}, tmp_path, workers=workers, name=name)
            processes.append(replica)
            self.logs.append(replica)
            return replica, replica_url

        def driver(self, package="sedan", user_id=None, url=base, v2=False):
            """A driver's phone, its Driver in .driver; a v2 one has read `trip.state` into .state."""
            phone = self.phone(f"/ws/drivers?userID={user_id or new_id('driver')}&packageSlug={package}", url, v2)
            phone.driver = phone.next(contract.DRIVER_REGISTER)["data"]
            if v2:
                phone.state = phone.next("trip.state")["data"]
            return phone

        def start_trip(self, rider_id, package="sedan", headers=None, fare_id=None):
            return start_trip(base, rider_id, package, headers, fare_id)

        logs = [gateway]

        def process(self, name):
            """One of the ride's processes by name: trip, driver, payment, gateway."""
            return next(p for p in processes if p.name == name)

        def restart(self, name, kill=False, meanwhile=lambda: None):
            """The trip or driver service stopped (SIGTERM, or SIGKILL when
            kill), meanwhile() called, and started again at its address: the new process."""
            old = self.process(name)
            old.signal(signal.SIGKILL) if kill else old.stop()
            old.stop()
            meanwhile()
            address = trip_addr if name == "trip" else driver_addr
            new = start_service(f"ridesync.{name}", address, env, tmp_path, name=f"{name}-{len(processes)}")
            processes[processes.index(old)] = new
            new.name = name
            return new

        def get(self, path, user_id):
            """GET path of the gateway as user_id: (status, JSON body)."""
            answer = requests.get(f"{base}{path}", params={"userID": user_id}, headers={**bearer(user_id), **AS_NAMED},
                                  timeout=15)
            return answer.status_code, answer.json()

        def post(self, path, body):
            answer = requests.post(f"{base}{path}", data=json.dumps(body), headers={**bearer(body["userID"]), **AS_NAMED},
                                   timeout=15)
            return answer.status_code, answer.json()

        def gateway_log(self):
            return "".join(process.output() for process in self.logs)

    return Ride()


def start_trip(base, rider_id, package="sedan", headers=None, fare_id=None):
    """The trip started at the gateway at base with a new fare of this package, or with fare_id."""
    headers = {**bearer(rider_id), **AS_NAMED, **(headers or {})}
    if fare_id is None:
        preview = requests.post(f"{base}/trip/preview", timeout=15, headers=headers, data=json.dumps(
            {"userID": rider_id, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}))
        assert preview.status_code == 201, preview.text
        fare_id = next(f["id"] for f in preview.json()["data"]["rideFares"] if f["packageSlug"] == package)
    start = requests.post(f"{base}/trip/start", timeout=15, headers=headers,
                          data=json.dumps({"rideFareID": fare_id, "userID": rider_id}))
    assert start.status_code == 201, start.text
    return start.json()["data"]["trip"]


def new_id(role):
    return f"{role}-{uuid.uuid4().hex[:10]}"


def answer(driver, kind, trip):
    driver.send(kind, {"tripID": trip["id"], "riderID": trip["userID"], "driver": driver.driver})


def assert_a_ride_completes(ride, url=None):
    """A rider and a driver on their sockets: the trip started, offered,
    accepted, and the rider told of the driver and the payment session."""
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, url=url or ride.url)
    driver = ride.driver("van", url=url or ride.url)
    trip = ride.start_trip(rider_id, "van")
    assert rider.next(contract.TRIP_CREATED)["data"]["id"] == trip["id"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["driver"]["id"] == driver.driver["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED)["data"]["tripID"] == trip["id"]
