"""TripService with the in-memory store, served over gRPC like the real one
(`python -m ridesync.trip`), only the store swapped: the baseline of
bench.state's gRPC rows and of bench.rush. It takes drivers' answers and
offers from its queue too, so dispatch runs as it does with the real one.
Environment as for ridesync.trip."""
from ridesync import contract, grpc_server, logs, shutdown
from ridesync.pb import trip_pb2_grpc
from ridesync.rabbit import PublisherPool, WorkQueueConsumer
from ridesync.settings import process_settings
from ridesync.trip.intake import Intake
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.server import TripServicer
from ridesync.trip.service import TripService
from ridesync.trip.store import TripStore


def main():
    settings = process_settings()
    logs.configure("trip")
    publisher = PublisherPool(settings.amqp_url, "bench-memory-trip", settings.trip_publishers)
    trips = TripService(RoutePlanner(None, enabled=False), TripStore(), publisher)
    server = grpc_server.start(
        settings.trip_listen_addr,
        lambda s: trip_pb2_grpc.add_TripServiceServicer_to_server(TripServicer(trips), s),
        ["trip.TripService"],
    )
    answers = WorkQueueConsumer(settings.amqp_url, contract.DRIVER_TRIP_RESPONSE, Intake(trips).handle,
                                "trip-intake").start()
    shutdown.serve_until_signal("TripService (in memory)", server, [answers], [publisher])


if __name__ == "__main__":
    main()
