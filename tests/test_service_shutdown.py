"""The services stopped by real signals: nothing in hand is lost, calls in
flight get their answers, and each process exits 0 within the grace. Also
each service alone: up without a broker, publishing once one is there."""
import re
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import grpc
import pika
import pytest

from ridesync import contract
from ridesync.pb import driver_pb2, driver_pb2_grpc, trip_pb2, trip_pb2_grpc
from ridesync.settings import Settings
from tests.service_support import about_trip, next_matching, publisher, purge_queues, start_payment, unique  # noqa: F401
from tests.support import AMQP_URL, forward_connections, free_port, start_service, wait_until
from tests.test_trip_service import preview_request

GRACE_SECONDS = Settings().shutdown_grace
EXIT_DEADLINE = GRACE_SECONDS + 3


def ready_messages(queue):
    """How many messages wait on queue, not yet delivered to anyone."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def ask_for_session(publisher, trip_id, rider):
    publisher.publish(contract.PAYMENT_CREATE_SESSION, rider,
                      {"tripID": trip_id, "userID": rider, "amount": 1054, "currency": "USD"})


@pytest.fixture
def payments(tmp_path):
    """Starts payment services with env (start_payment); stops them afterwards."""
    purge_queues(contract.PAYMENT_TRIP_RESPONSE)
    started = []
    yield lambda **env: started.append(start_payment(tmp_path, name=f"payment-{len(started)}", **env)) or started[-1]
    for process in started:
        process.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_payment_in_hand_at_the_signal_is_finished_and_acked(payments, publisher, amqp_tap, sig):
    payment = payments(PAYMENT_LOCAL_LATENCY="2")
    trip_id, rider = unique("trip"), unique("rider")
    tap = amqp_tap(contract.PAYMENT_SESSION_CREATED)
    ask_for_session(publisher, trip_id, rider)
    # In hand, not only delivered: a delivery still in pika's buffer at the stop is rightly put back.
    wait_until(lambda: f"making the session for trip {trip_id}" in payment.output(), message="the payment in hand")

    payment.signal(sig)
    assert payment.proc.wait(EXIT_DEADLINE) == 0
    assert next_matching(tap, about_trip(trip_id))[2]["data"]["tripID"] == trip_id
    assert ready_messages(contract.PAYMENT_TRIP_RESPONSE) == 0  # acked: not back on the queue
    assert f"stopping on {sig.name}" in payment.output()  # the signal, then what it drained
    assert f"finished {contract.PAYMENT_CREATE_SESSION} of {rider}" in payment.output()


def test_a_payment_still_in_hand_at_the_grace_goes_to_the_next_payment_service(payments, publisher, amqp_tap):
    grace = 2  # seconds: the default's 10 are waited out whole
    slow = payments(SHUTDOWN_GRACE=str(grace), PAYMENT_LOCAL_LATENCY=str(grace + 5))
    trip_id, rider = unique("trip"), unique("rider")
    tap = amqp_tap(contract.PAYMENT_SESSION_CREATED)
    ask_for_session(publisher, trip_id, rider)
    wait_until(lambda: f"making the session for trip {trip_id}" in slow.output(), message="the payment in hand")

    slow.signal(signal.SIGTERM)
    assert slow.proc.wait(grace + 3) == 0
    assert "left for redelivery" in slow.output()
    payments()
    assert next_matching(tap, about_trip(trip_id))[2]["data"]["tripID"] == trip_id


def test_a_preview_in_flight_at_the_signal_gets_its_answer_and_new_calls_are_refused(osrm, start_trip):
    osrm.mode = "hang"
    trip = start_trip(OSRM_TIMEOUT="8")
    with grpc.insecure_channel(trip.address) as channel, ThreadPoolExecutor(1) as pool:
        stub = trip_pb2_grpc.TripServiceStub(channel)
        in_flight = pool.submit(stub.PreviewTrip, preview_request(unique("rider")), timeout=GRACE_SECONDS)
        wait_until(lambda: osrm.requests, message="the preview to ask OSRM")

        trip.signal(signal.SIGTERM)
        wait_until(lambda: _refused(stub), message="a new call to be refused")
        osrm.release()
        assert in_flight.result().rideFares
    assert trip.proc.wait(EXIT_DEADLINE) == 0
    assert re.search(r"gRPC calls in flight: [1-9]\d*, all finished", trip.output())  # ours, and a probe that beat the stop


def _refused(stub):
    """Is a new preview refused? Gone, or cancelled unheard, as the race with the stop falls."""
    try:
        stub.PreviewTrip(preview_request(unique("rider")), timeout=1)
    except grpc.RpcError as error:
        return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    return False


class BrokerLater:
    """A port that refuses connections until open(), then forwards each to
    this run's RabbitMQ: a broker that is not there yet. `.url` leads to it."""

    def __init__(self):
        broker = urlsplit(AMQP_URL)
        self._broker = (broker.hostname, broker.port or 5672)
        self._listener = None
        port = free_port()
        self.url = urlunsplit(broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{port}"))
        self._port = port

    def open(self):
        self._listener = socket.create_server(("127.0.0.1", self._port))
        threading.Thread(target=forward_connections, args=(self._listener, self._broker, _pipe), daemon=True).start()

    def close(self):
        if self._listener is not None:
            self._listener.close()


def _pipe(source, sink):
    with source, sink:  # the other direction may close them first
        while data := _receive(source):
            try:
                sink.sendall(data)
            except OSError:
                return


def _receive(sock):
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def broker_later():
    broker = BrokerLater()
    yield broker
    broker.close()


def test_the_trip_service_previews_without_a_broker_and_publishes_once_it_is_there(
        start_trip, broker_later, amqp_tap):
    trip = start_trip(AMQP_URL=broker_later.url)
    rider = unique("rider")
    with grpc.insecure_channel(trip.address) as channel:
        stub = trip_pb2_grpc.TripServiceStub(channel)
        assert stub.PreviewTrip(preview_request(rider), timeout=10).rideFares
        tap = amqp_tap(contract.TRIP_CREATED)
        broker_later.open()
        created = wait_until(lambda: _start_trip(stub, rider), timeout=15, message="a trip to start")
    assert next_matching(tap, about_trip(created.tripID))[2]["ownerId"] == rider
    trip.signal(signal.SIGTERM)
    assert trip.proc.wait(EXIT_DEADLINE) == 0


def _start_trip(stub, rider):
    """The CreateTripResponse of a new preview's first fare; None while the broker is not there."""
    fare = stub.PreviewTrip(preview_request(rider), timeout=10).rideFares[0]
    try:
        return stub.CreateTrip(trip_pb2.CreateTripRequest(rideFareID=fare.id, userID=rider), timeout=10)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error
        return None


@pytest.fixture
def lone_driver_service(tmp_path):
    """A DriverService whose broker is nowhere: nothing listens at its AMQP_URL."""
    address, nowhere = "127.0.0.1:0", f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    process = start_service("ridesync.driver", address, {"DRIVER_SERVICE_ADDR": address, "AMQP_URL": nowhere}, tmp_path)
    yield process
    process.stop()


def test_the_driver_service_registers_drivers_without_a_broker_and_stops_on_sigterm(lone_driver_service):
    driver = lone_driver_service
    with grpc.insecure_channel(driver.address) as channel:
        stub = driver_pb2_grpc.DriverServiceStub(channel)
        request = driver_pb2.RegisterDriverRequest(driverID=unique("driver"), packageSlug="van")
        assert stub.RegisterDriver(request, timeout=5).driver.packageSlug == "van"
    driver.signal(signal.SIGTERM)
    assert driver.proc.wait(EXIT_DEADLINE) == 0
    assert "find_available_drivers: nothing in hand" in driver.output()
