"""The gRPC channels of this worker process: one per service, made on first
use (never before gunicorn forks), shared by every request."""
import os

from ridesync import grpc_telemetry
from ridesync.pb import driver_pb2_grpc, trip_pb2_grpc

CALL_DEADLINE = 5.0  # seconds, for every call that does not say otherwise


class Upstream:
    def __init__(self, settings):
        self._settings = settings
        self._pid = None
        self._channels = {}
        self._stubs = {}

    @property
    def trips(self):
        return self._stub(trip_pb2_grpc.TripServiceStub, self._settings.trip_service_addr)

    @property
    def drivers(self):
        return self._stub(driver_pb2_grpc.DriverServiceStub, self._settings.driver_service_addr)

    def channel(self, address):
        if self._pid != os.getpid():  # a forked child never reuses its parent's channels
            self._pid, self._channels, self._stubs = os.getpid(), {}, {}
        if address not in self._channels:
            self._channels[address] = grpc_telemetry.channel(address)
        return self._channels[address]

    def _stub(self, stub_class, address):
        """One stub per channel: making one per request was 2% of a busy worker (bench.rush, py-spy)."""
        channel = self.channel(address)
        key = (stub_class, address)
        if key not in self._stubs:
            self._stubs[key] = stub_class(channel)
        return self._stubs[key]

    def close(self):
        for channel in self._channels.values():
            channel.close()
        self._channels, self._stubs = {}, {}
