"""TripService over gRPC, and its consumer of drivers' answers: thin edges
that translate to TripService."""
import logging

import grpc
from google.protobuf import json_format

from ridesync import contract, grpc_server, logs, messages, shutdown, telemetry
from ridesync.database import Database
from ridesync.outbox import Outbox
from ridesync.pb import trip_pb2, trip_pb2_grpc
from ridesync.rabbit import PublisherPool, PublishFailed, WorkQueueConsumer
from ridesync.ride import lifecycle
from ridesync.ride.model import Coordinate, InvalidArgument
from ridesync.settings import process_settings
from ridesync.trip.awaited_offers import AwaitedOffers
from ridesync.trip.intake import Intake
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.service import TripService
from ridesync.trip.sql_store import SqlTripStore
from ridesync.trip.store import FareNotFound, FareNotYours, FareUnavailable, TripNotFound

log = logging.getLogger(__name__)

ERROR_CODES = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FareNotFound: grpc.StatusCode.NOT_FOUND,
    FareNotYours: grpc.StatusCode.PERMISSION_DENIED,
    FareUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    PublishFailed: grpc.StatusCode.UNAVAILABLE,
    TripNotFound: grpc.StatusCode.NOT_FOUND,
    lifecycle.NotYours: grpc.StatusCode.PERMISSION_DENIED,
    lifecycle.StepRefused: grpc.StatusCode.FAILED_PRECONDITION,
}
DRIVER_STEPS = (*lifecycle.DRIVER_STEPS, lifecycle.CANCELLED)


class TripServicer(trip_pb2_grpc.TripServiceServicer):
    def __init__(self, trips):
        self._trips = trips

    def PreviewTrip(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.userID, "userID")
            route, fares = self._trips.preview(
                request.userID,
                Coordinate.checked("startLocation", request.startLocation.latitude, request.startLocation.longitude),
                Coordinate.checked("endLocation", request.endLocation.latitude, request.endLocation.longitude),
                time_left=_time_left(context),
                on_caller_gone=context.add_callback,
            )
            return trip_pb2.PreviewTripResponse(route=_route_message(route),
                                                rideFares=[trip_pb2.RideFare(**f.to_json()) for f in fares])

    def CreateTrip(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.userID, "userID")
            _require(request.rideFareID, "rideFareID")
            trip = self._trips.create_trip(request.rideFareID, request.userID)
            return json_format.ParseDict(
                {messages.TRIP_ID: trip.id, "trip": trip.to_json()}, trip_pb2.CreateTripResponse()
            )

    def GetTrip(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.tripID, messages.TRIP_ID)
            _require(request.userID, "userID")
            return _trip_response(self._trips.trip_for(request.tripID, request.userID))

    def CurrentTrip(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.userID, "userID")
            return _trip_response(self._trips.current_trip(request.userID))

    def CancelTrip(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.tripID, messages.TRIP_ID)
            _require(request.userID, "userID")
            return _trip_response(self._trips.cancel(request.tripID, "rider", request.userID, request.reason))

    def DriverStep(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            _require(request.tripID, messages.TRIP_ID)
            _require(request.driverID, "driverID")
            if request.step not in DRIVER_STEPS:
                raise InvalidArgument(f"step must be one of {', '.join(DRIVER_STEPS)}")
            if request.step == lifecycle.CANCELLED:
                trip = self._trips.cancel(request.tripID, "driver", request.driverID, request.reason)
            else:
                trip = self._trips.driver_step(request.tripID, request.driverID, request.step)
            return _trip_response(trip)


def _route_message(route):
    """Built field by field: json_format.ParseDict took a tenth of a preview."""
    path = [trip_pb2.Coordinate(latitude=c.latitude, longitude=c.longitude) for c in route.path]
    return trip_pb2.Route(geometry=[trip_pb2.Geometry(coordinates=path)], distance=route.distance,
                          duration=route.duration, estimated=route.estimated)


def _trip_response(trip):
    if trip is None:
        return trip_pb2.TripResponse()
    return trip_pb2.TripResponse(trip=json_format.ParseDict(trip.to_json(), trip_pb2.Trip()))


def _require(value, name):
    if not value:
        raise InvalidArgument(f"{name} is required")


def _time_left(context):
    remaining = context.time_remaining()
    return None if remaining is None else remaining - process_settings().trip_reply_margin


def build(settings):
    """(the TripService, its database, its outbox, its awaited offers, its
    publisher to close at the end), from settings."""
    publisher = PublisherPool(settings.amqp_url, "trip-service", settings.trip_publishers)
    database = Database(settings.database_url)
    outbox = Outbox(database, publisher, "trip", hold=settings.outbox_hold)
    offers = AwaitedOffers(database)
    trips = TripService(RoutePlanner.from_settings(settings), SqlTripStore(database), outbox, fare_ttl=settings.fare_ttl,
                        max_trip_km=settings.max_trip_km, transaction=database.transaction, offers=offers)
    return trips, database, outbox, offers, publisher


def main():
    settings = process_settings()
    logs.configure("trip")
    telemetry.start("trip", settings.trip_metrics_port)
    if settings.trip_listen_addr is None:
        raise SystemExit(f"TRIP_SERVICE_ADDR {settings.trip_service_addr!r} names replicas: set TRIP_LISTEN_ADDR")
    trips, database, outbox, offers, publisher = build(settings)
    server = grpc_server.start(
        settings.trip_listen_addr,
        lambda s: trip_pb2_grpc.add_TripServiceServicer_to_server(TripServicer(trips), s),
        ["trip.TripService"],
    )
    answers = WorkQueueConsumer(
        settings.amqp_url, contract.DRIVER_TRIP_RESPONSE, Intake(trips).handle, "trip-intake", handled=offers.start(),
    ).start()
    outbox.start()
    log.info("TripService listening on %s (OSRM %s, database %s)",
             server.address, settings.osrm_url, database.engine.url.render_as_string())
    shutdown.serve_until_signal("TripService", server, [answers, outbox, offers], [publisher])
    database.close()
