"""The gateway's gRPC channels (grpc_telemetry.channel) over two replicas of
a service, on loopback: calls go round both, a call that finds its replica
gone is served by the other, and a replica that comes back at its address
is dialled again within a second of the channel's last try, however long
it was away (gRPC's own backoff grows to 120 s)."""
import socket
import threading

import pytest

from ridesync import grpc_server, grpc_telemetry
from ridesync.pb import trip_pb2, trip_pb2_grpc
from tests.support import free_port, wait_until


class Replica:
    """A TripService answering CurrentTrip with no trip, counting its calls; restartable at its address."""

    def __init__(self):
        self.address = f"127.0.0.1:{free_port()}"
        self.calls = 0
        self._server = None
        self.start()

    def start(self):
        replica = self

        class Servicer(trip_pb2_grpc.TripServiceServicer):
            def CurrentTrip(self, request, context):
                replica.calls += 1
                return trip_pb2.TripResponse()

        self._server = grpc_server.start(self.address, lambda s: trip_pb2_grpc.add_TripServiceServicer_to_server(
            Servicer(), s), ["trip.TripService"], max_workers=4)

    def stop(self):
        self._server.stop(0).wait()


class Tries:
    """Connections to an address, each closed at once: a replica that is still away, counting who tries it."""

    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self._listener = socket.create_server((host, int(port)))
        self.count = 0
        self._thread = threading.Thread(target=self._refuse, daemon=True)
        self._thread.start()

    def _refuse(self):
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.count += 1
            connection.close()

    def close(self):
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def replicas():
    started = [Replica(), Replica()]
    yield started
    for replica in started:
        replica.stop()


def test_calls_go_round_the_replicas_skip_one_gone_and_reach_it_again_once_it_is_back(replicas):
    first, second = replicas
    channel = grpc_telemetry.channel("ipv4:" + ",".join(r.address for r in replicas))
    stub = trip_pb2_grpc.TripServiceStub(channel)

    def call():
        stub.CurrentTrip(trip_pb2.CurrentTripRequest(userID="r1"), timeout=5)
        return True

    try:
        wait_until(lambda: call() and first.calls and second.calls, message="calls on both replicas")
        first.stop()
        served_before = second.calls
        for _ in range(20):
            call()  # none fails
        assert second.calls == served_before + 20

        # Away long enough for gRPC's default backoff to have grown past 6 s
        # (tries at about 1, 2.6, 5.2 and 9.3 s): five tries seen at its address.
        tries = Tries(first.address)
        wait_until(lambda: tries.count >= 5, timeout=15, message="the channel to try the replica five times")
        tries.close()
        first.start()
        first.calls = 0
        wait_until(lambda: call() and first.calls, timeout=3, message="the replica back to be dialled again")
    finally:
        channel.close()
