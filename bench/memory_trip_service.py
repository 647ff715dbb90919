"""TripService with the in-memory store, served over gRPC like the real one
(`python -m ridesync.trip`), only the store swapped: the baseline of
bench.state's gRPC rows. Environment as for ridesync.trip."""
from ridesync import grpc_server, logs, shutdown
from ridesync.pb import trip_pb2_grpc
from ridesync.rabbit import Publisher
from ridesync.settings import Settings
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.server import TripServicer
from ridesync.trip.service import TripService
from ridesync.trip.store import TripStore


def main():
    logs.configure("trip")
    settings = Settings.from_env()
    publisher = Publisher(settings.amqp_url, "bench-memory-trip")
    trips = TripService(RoutePlanner(None, enabled=False), TripStore(), publisher)
    server = grpc_server.start(
        settings.trip_listen_addr,
        lambda s: trip_pb2_grpc.add_TripServiceServicer_to_server(TripServicer(trips), s),
        ["trip.TripService"],
    )
    shutdown.serve_until_signal("TripService (in memory)", server, [], [publisher])


if __name__ == "__main__":
    main()
