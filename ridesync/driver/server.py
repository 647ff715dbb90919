"""DriverService over gRPC, and its consumer of find_available_drivers:
thin edges over the pool and dispatch; a driver who registers is asked
about at TripService, which knows the trip they are on."""
import logging
import threading

import grpc
from google.protobuf import json_format

from ridesync import contract, grpc_server, grpc_telemetry, identity, logs, messages, shutdown, telemetry
from ridesync.driver.dispatch import Dispatcher
from ridesync.driver.locations import Locations, TripsUnderWay
from ridesync.driver.pool import DriverNotFound, DriverPool, new_driver
from ridesync.driver.redis_locations import RedisTripsUnderWay
from ridesync.driver.redis_pool import UNREACHABLE, RedisDriverPool
from ridesync.pb import driver_pb2, driver_pb2_grpc, trip_pb2, trip_pb2_grpc
from ridesync.ride import lifecycle
from ridesync.rabbit import Publisher, WorkQueueConsumer
from ridesync.trip.planner import RoutePlanner
from ridesync.ride.model import Coordinate, InvalidArgument
from ridesync.settings import process_settings

log = logging.getLogger(__name__)

ERROR_CODES = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    DriverNotFound: grpc.StatusCode.NOT_FOUND,
    **dict.fromkeys(UNREACHABLE, grpc.StatusCode.UNAVAILABLE),  # the pool's backend is down
}


class DriverServicer(driver_pb2_grpc.DriverServiceServicer):
    def __init__(self, pool, dispatcher, trips, locations):
        """trips: a TripsOfDrivers; locations: a locations.Locations."""
        self._pool = pool
        self._dispatcher = dispatcher
        self._trips = trips
        self._locations = locations

    def RegisterDriver(self, request, context):
        """A driver on a trip is busy with it, however they come: a new
        socket, or the gateway registering again those a restart of this
        process (its pool in memory) forgot."""
        with grpc_server.status_codes(context, ERROR_CODES):
            new_driver(request.driverID, request.packageSlug)  # a bad request is refused before TripService is asked
            trip = self._trips.trip_of(request.driverID)
            trip_id = trip["id"] if trip else None
            if trip:
                self._follow(trip)
            driver = self._pool.register(request.driverID, request.packageSlug, request.session, trip_id)
            log.info("driver %s registered for %s as %s (%s)%s", driver.id, driver.package_slug, driver.name,
                     driver.car_plate, f", on trip {trip_id}" if trip_id else "")
            return driver_pb2.RegisterDriverResponse(driver=_message(driver))

    def _follow(self, trip):
        """A restarted DriverService (its pool in memory) learns again where
        the car of a trip under way is heading; a trip it cannot read
        leaves the registration alone."""
        try:
            self._locations.follow(messages.decode(trip, messages.Trip, "data"))
        except contract.MalformedMessage as exc:
            log.warning("trip %s: its driver's locations are not followed: %s", trip.get("id"), exc)

    def UnregisterDriver(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            driver, unanswered = self._pool.unregister(request.driverID, request.session)
            if unanswered is not None:
                self._dispatcher.pass_on(request.driverID, unanswered, "the driver went offline")
            if driver is not None:
                log.info("driver %s unregistered", driver.id)
                return driver_pb2.RegisterDriverResponse(driver=_message(driver))
            log.info("driver %s not unregistered: not registered by session %r", request.driverID, request.session)
            return driver_pb2.RegisterDriverResponse()

    def UpdateLocation(self, request, context):
        """The driver's geohash is computed from the location."""
        with grpc_server.status_codes(context, ERROR_CODES):
            if not request.HasField("location"):
                raise InvalidArgument("location is required")
            location = Coordinate.checked("location", request.location.latitude, request.location.longitude)
            driver = self._pool.move(request.driverID, location)
            log.debug("driver %s is at %s", driver.id, driver.geohash)
            trip_id = self._pool.on_trip(driver.id)
            if trip_id is not None:
                self._locations.fix(trip_id, location)
            return driver_pb2.UpdateLocationResponse(driver=_message(driver))

    def TripLocation(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            frame = self._locations.last(request.tripID)
            if frame is None:
                return driver_pb2.TripLocationResponse()
            return driver_pb2.TripLocationResponse(
                location=json_format.ParseDict(frame, driver_pb2.DriverLocation()))

    def Unregistered(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            registered = self._pool.registered(request.driverIDs)
            return driver_pb2.UnregisteredResponse(driverIDs=[d for d in request.driverIDs if d not in registered])


def _message(driver):
    return json_format.ParseDict(driver.to_json(), driver_pb2.Driver())


class TripsOfDrivers:
    """Which trip a driver is on (accepted, not ended), as TripService says."""

    def __init__(self, channel):
        self._trips = trip_pb2_grpc.TripServiceStub(channel)

    def trip_of(self, driver_id):
        """The trip (JSON), or None; None too when TripService does not answer
        in time: the driver registers then, free (one line logged), rather
        than being kept off the road by a TripService outage."""
        try:
            with identity.acting_as(driver_id, "driver"):
                trip = self._trips.CurrentTrip(trip_pb2.CurrentTripRequest(userID=driver_id),
                                               timeout=process_settings().trip_check_deadline).trip
        except grpc.RpcError as exc:
            log.warning("driver %s: their trip could not be checked, so they register as free: TripService %s %s",
                        driver_id, exc.code().name, exc.details())
            return None
        if trip.status not in lifecycle.ON_TRIP or trip.driver.id != driver_id:
            return None
        return messages.proto_json(trip)


def main():
    settings = process_settings()
    logs.configure("driver")
    telemetry.start("driver", settings.driver_metrics_port)
    if settings.driver_listen_addr is None:
        raise SystemExit(f"DRIVER_SERVICE_ADDR {settings.driver_service_addr!r} names replicas: set DRIVER_LISTEN_ADDR")
    pool = RedisDriverPool(settings.redis_url, settings.redis_key_prefix) if settings.redis_url else DriverPool()
    publisher = Publisher(settings.amqp_url, "driver-service")
    dispatcher = Dispatcher(pool, publisher, settings.offer_timeout)
    trips = RedisTripsUnderWay(settings.redis_url, settings.redis_key_prefix) if settings.redis_url else TripsUnderWay()
    locations = Locations(trips, RoutePlanner.from_settings(settings), publisher, settings.location_push_interval,
                          settings.eta_refresh, hold=_push_hold(settings))
    server = grpc_server.start(
        settings.driver_listen_addr,
        lambda s: driver_pb2_grpc.add_DriverServiceServicer_to_server(
            DriverServicer(pool, dispatcher, TripsOfDrivers(grpc_telemetry.channel(settings.trip_service_addr)),
                           locations), s),
        ["driver.DriverService"],
    )
    handled = pool if settings.redis_url else None  # None: each consumer remembers what it handled itself
    intakes = [
        WorkQueueConsumer(settings.amqp_url, contract.FIND_AVAILABLE_DRIVERS, dispatcher.handle, "driver-dispatch",
                          handled=handled),
        WorkQueueConsumer(settings.amqp_url, contract.DRIVER_AVAILABILITY, availability(dispatcher, locations),
                          "driver-availability", handled=handled),
        Ticker("offer-clock", dispatcher.expire_offers),
        locations,
    ]
    for intake in intakes:
        intake.start()
    log.info("DriverService listening on %s (driver pool %s)", server.address,
             "in Redis" if settings.redis_url else "in this process")
    shutdown.serve_until_signal("DriverService", server, intakes, [publisher])


def _push_hold(settings):
    """Longer than a location push can take: OSRM's answer, then a publish
    (two connects of AMQP_CONNECT_TIMEOUT at most, a blocked connection as long)."""
    return settings.osrm_timeout + 3 * settings.amqp_connect_timeout


def availability(dispatcher, locations):
    """driver_availability's handler: who is busy (dispatch), and where each
    trip's car is heading (locations), from one reading of the trip."""
    def handle(routing_key, owner_id, data):
        if routing_key == contract.DRIVER_TRIP_WITHDRAWN:
            dispatcher.withdrawn(owner_id, messages.decode(data, messages.Withdrawal, "data"))
            return
        trip = messages.decode(data, messages.Trip, "data")
        dispatcher.handle_availability(routing_key, trip)
        locations.follow(trip)
    return handle


class Ticker:
    """Calls tick() every second in a thread of its own, until stopped."""

    def __init__(self, name, tick):
        self._name, self._tick = name, tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self, timeout):
        self._stopped.set()
        self._thread.join(timeout)
        return f"{self._name}: stopped"

    def _run(self):
        while not self._stopped.wait(1.0):
            try:
                self._tick()
            except Exception:  # the next tick tries again; a broker outage must not end the clock
                log.exception("%s: tick failed", self._name)
