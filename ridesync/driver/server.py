"""DriverService over gRPC, and its consumer of find_available_drivers:
thin edges over the pool and dispatch."""
import logging

import grpc
from google.protobuf import json_format

from ridesync import contract, grpc_server, logs, shutdown, telemetry
from ridesync.driver.dispatch import Dispatcher
from ridesync.driver.pool import DriverNotFound, DriverPool
from ridesync.pb import driver_pb2, driver_pb2_grpc
from ridesync.rabbit import Publisher, WorkQueueConsumer
from ridesync.settings import Settings
from ridesync.trip.model import Coordinate, InvalidArgument

log = logging.getLogger(__name__)

ERROR_CODES = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    DriverNotFound: grpc.StatusCode.NOT_FOUND,
}


class DriverServicer(driver_pb2_grpc.DriverServiceServicer):
    def __init__(self, pool):
        self._pool = pool

    def RegisterDriver(self, request, context):
        with grpc_server.status_codes(context, ERROR_CODES):
            driver = self._pool.register(request.driverID, request.packageSlug)
            log.info("driver %s registered for %s as %s (%s)", driver.id, driver.package_slug, driver.name, driver.car_plate)
            return driver_pb2.RegisterDriverResponse(driver=_message(driver))

    def UnregisterDriver(self, request, context):
        driver = self._pool.unregister(request.driverID)
        if driver is not None:
            log.info("driver %s unregistered", driver.id)
            return driver_pb2.RegisterDriverResponse(driver=_message(driver))
        return driver_pb2.RegisterDriverResponse()

    def UpdateLocation(self, request, context):
        """The geohash is computed from the location; the one sent is not used."""
        with grpc_server.status_codes(context, ERROR_CODES):
            if not request.HasField("location"):
                raise InvalidArgument("location is required")
            location = Coordinate.checked("location", request.location.latitude, request.location.longitude)
            driver = self._pool.move(request.driverID, location)
            log.debug("driver %s is at %s", driver.id, driver.geohash)
            return driver_pb2.UpdateLocationResponse(driver=_message(driver))


def _message(driver):
    return json_format.ParseDict(driver.to_json(), driver_pb2.Driver())


def main():
    logs.configure("driver")
    settings = Settings.from_env()
    telemetry.start("driver", settings.driver_metrics_port)
    pool = DriverPool()
    publisher = Publisher(settings.amqp_url, "driver-service")
    server = grpc_server.start(
        settings.driver_service_addr,
        lambda s: driver_pb2_grpc.add_DriverServiceServicer_to_server(DriverServicer(pool), s),
        ["driver.DriverService"],
    )
    dispatch = WorkQueueConsumer(
        settings.amqp_url, contract.FIND_AVAILABLE_DRIVERS, Dispatcher(pool, publisher).handle, "driver-dispatch"
    ).start()
    log.info("DriverService listening on %s", settings.driver_service_addr)
    shutdown.serve_until_signal("DriverService", server, [dispatch], [publisher])
