"""Helpers for the services' tests (issue 3). The services' work queues are
durable and shared by every test: a test purges the ones it uses before its
services start, and filters what it sees by its own fresh ids."""
import time

import pika
import pytest

from ridesync import contract, rabbit
from ridesync.trip.model import Coordinate, RideFare, Route, Trip
from tests.support import AMQP_URL, wait_until

PICKUP = Coordinate(37.7749, -122.4194)


@pytest.fixture
def publisher():
    """A Publisher onto the `trip` exchange, as the services have. A test
    module uses it by importing it."""
    publisher = rabbit.Publisher(AMQP_URL, "test")
    yield publisher
    publisher.close()


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


def publish_raw(routing_key, body):
    """A message on the `trip` exchange exactly as given: for bodies our Publisher would never send."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        rabbit.declare_topology(channel)
        channel.basic_publish(contract.TRIP_EXCHANGE, routing_key, body)
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
    route = Route(path=(pickup, Coordinate(37.79, -122.39)), distance=3000.0, duration=400.0)
    fare = RideFare(id=f"fare-{trip_id}", user_id=rider, package_slug=package, total_price_in_cents=cents,
                    expires_at=2e9, route=route)
    return Trip(id=trip_id, fare=fare, user_id=rider)


def trip_json(package="sedan", pickup=PICKUP, trip_id="t1", rider="r1"):
    """The JSON of trip(), as trip.event.created carries it."""
    return trip(package, pickup, trip_id, rider).to_json()
