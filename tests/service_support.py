"""Helpers for the services' tests (issue 3). The services' work queues are
durable and shared by every test: a test purges the ones it uses before its
services start, and filters what it sees by its own fresh ids."""
import sys
import time
import uuid

import grpc
import pika
import pytest

from ridesync import contract, messages, rabbit
from ridesync.driver.pool import new_driver
from ridesync.pb import driver_pb2, driver_pb2_grpc, trip_pb2, trip_pb2_grpc
from ridesync.ride.model import RideFare, Route, Trip
from ridesync.trip.intake import trip_driver
from tests.support import AMQP_URL, DESTINATION, PICKUP, Process, closed_port_address, start_service, wait_until



@pytest.fixture
def publisher():
    """A Publisher onto the `trip` exchange, as the services have. A test
    module uses it by importing it."""
    publisher = rabbit.Publisher(AMQP_URL, "test")
    yield publisher
    publisher.close()


@pytest.fixture
def driver_service(tmp_path):
    """A real DriverService whose TripService is nowhere (nothing listens
    there: every driver registers free); `.stub` calls it."""
    purge_queues(contract.FIND_AVAILABLE_DRIVERS)
    process = start_driver_service(tmp_path, TRIP_SERVICE_ADDR=closed_port_address())
    channel = grpc.insecure_channel(process.address)
    process.stub = driver_pb2_grpc.DriverServiceStub(channel)
    yield process
    channel.close()
    process.stop()


def start_driver_service(tmp_path, name="driver", **env):
    """`python -m ridesync.driver` with env, on a port of its own."""
    return start_service("ridesync.driver", "127.0.0.1:0", {"DRIVER_SERVICE_ADDR": "127.0.0.1:0", **env},
                         tmp_path, name=name)


@pytest.fixture
def payment_service(tmp_path):
    """A real payment service, once it consumes."""
    purge_queues(contract.PAYMENT_TRIP_RESPONSE)
    process = start_payment(tmp_path)
    yield process
    process.stop()


def start_payment(tmp_path, name="payment", **env):
    """`python -m ridesync.payment` with env, once it consumes."""
    process = Process(name, [sys.executable, "-m", "ridesync.payment"], env, tmp_path)
    wait_until(lambda: process.assert_running() or "taking messages from payment_trip_response" in process.output(),
               timeout=20, message="the payment service to consume")
    return process


@pytest.fixture
def trip_answers(osrm, tmp_path, request):
    """The trip_service fixture, with driver_trip_response purged before it starts."""
    purge_queues(contract.DRIVER_TRIP_RESPONSE)
    service = request.getfixturevalue("trip_service")
    channel = grpc.insecure_channel(service.address)
    service.stub = trip_pb2_grpc.TripServiceStub(channel)
    yield service
    channel.close()


class RecordingPublisher:
    """Stands in for rabbit.Publisher where only what is published matters:
    (routing key, owner, data) in order; `fails` makes every publish raise."""

    def __init__(self, fails=False):
        self.fails = fails
        self.published = []

    def publish(self, routing_key, owner_id, data, headers=None):
        self.published.append((routing_key, owner_id, data))
        if self.fails:
            raise RuntimeError("the broker did not confirm")

    notify = publish
    publish_or_undo = rabbit.Publisher.publish_or_undo

    def take(self):
        """What was published since the last take."""
        published, self.published = self.published, []
        return published


def register_at(stub, driver_id, package, north_m):
    """The Driver registered over gRPC and moved north_m metres north of PICKUP."""
    stub.RegisterDriver(driver_pb2.RegisterDriverRequest(driverID=driver_id, packageSlug=package), timeout=5)
    location = driver_pb2.Location(latitude=PICKUP.latitude + north_m / 111_000, longitude=PICKUP.longitude)
    return stub.UpdateLocation(driver_pb2.UpdateLocationRequest(driverID=driver_id, location=location), timeout=5)


def start_trip(stub, rider):
    """(Trip, its sedan RideFare): a rider's preview and trip start over gRPC."""
    pickup = trip_pb2.Coordinate(latitude=PICKUP.latitude, longitude=PICKUP.longitude)
    destination = trip_pb2.Coordinate(latitude=DESTINATION.latitude, longitude=DESTINATION.longitude)
    preview = stub.PreviewTrip(trip_pb2.PreviewTripRequest(userID=rider, startLocation=pickup, endLocation=destination), timeout=10)
    sedan = next(f for f in preview.rideFares if f.packageSlug == "sedan")
    return stub.CreateTrip(trip_pb2.CreateTripRequest(rideFareID=sedan.id, userID=rider), timeout=10).trip, sedan


def answer(publisher, routing_key, driver_id, trip_id, rider):
    """What the gateway publishes for a driver's answer."""
    driver = new_driver(driver_id, "sedan").to_json()
    publisher.publish(routing_key, driver_id, {"tripID": trip_id, "riderID": rider, "driver": driver})
    return driver


def trip_driver_json(driver_id):
    """What a trip shows of driver_id once they accepted it: the TripDriver of the driver registered."""
    return messages.as_json(trip_driver(new_driver(driver_id, "sedan").to_json()))


def unique(name):
    """A fresh id, so that a test sees only its own messages."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def about_trip(trip_id):
    """A predicate for next_matching: is the message about this trip?"""
    return lambda key, headers, message: trip_id in (
        message["data"].get("id"), message["data"].get("tripID"), message["data"].get("trip", {}).get("id"))


def purge_queues(*queues):
    """Empties work queues for a test, once no one consumes them: a consumer
    left from elsewhere (another test run, a service started by hand) would
    take the test's messages."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        rabbit.declare_topology(channel)
        for queue in queues:
            wait_until(lambda: channel.queue_declare(queue, passive=True).method.consumer_count == 0, timeout=5,
                       message=f"no other process to consume {queue} (see `rabbitmqctl list_consumers`)")
            channel.queue_purge(queue)
    finally:
        connection.close()


def drain_queue(queue):
    """The bodies of every message on queue now, taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        rabbit.declare_topology(channel)
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


def publish_raw(routing_key, body, properties=None):
    """A message on the `trip` exchange exactly as given: for bodies, or
    copies, our Publisher would never send."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        rabbit.declare_topology(channel)
        channel.basic_publish(contract.TRIP_EXCHANGE, routing_key, body, properties)
    finally:
        connection.close()


def next_matching(tap, predicate, timeout=10.0):
    """The first (routing_key, headers, envelope) on tap that predicate
    accepts; the others before it are skipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = tap.next(timeout=max(0.05, deadline - time.monotonic()))
        if predicate(*message):
            return message
    raise AssertionError(f"no matching message on the exchange within {timeout}s")


def trip(package="sedan", pickup=PICKUP, trip_id="t1", rider="r1", cents=1234):
    """A pending Trip as TripService makes them."""
    route = Route(path=(pickup, DESTINATION), distance=3000.0, duration=400.0)
    fare = RideFare(id=f"fare-{trip_id}", user_id=rider, package_slug=package, total_price_in_cents=cents,
                    expires_at=2e9, route=route)
    return Trip(id=trip_id, fare=fare, user_id=rider)


def trip_json(package="sedan", pickup=PICKUP, trip_id="t1", rider="r1"):
    """The JSON of trip(), as trip.event.created carries it."""
    return trip(package, pickup, trip_id, rider).to_json()


def assert_dead_lettered(routing_key, body, service):
    """A copy of body made unique to this test, published raw, ends up in
    dead_letters, and the service that refused it is still running."""
    body = body.replace(b"t1", unique("trip").encode()) if b"t1" in body else body + unique("x").encode()
    publish_raw(routing_key, body)
    wait_until(lambda: body in drain_queue(rabbit.DEAD_LETTER_QUEUE), message=f"the {routing_key} in dead_letters")
    service.assert_running()
