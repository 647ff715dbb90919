"""DriverService over gRPC."""
import logging

from ridesync import grpc_server, logs
from ridesync.pb import driver_pb2_grpc
from ridesync.settings import Settings

log = logging.getLogger(__name__)


def main():
    logs.configure("driver")
    settings = Settings.from_env()
    server = grpc_server.start(
        settings.driver_service_addr,
        lambda s: driver_pb2_grpc.add_DriverServiceServicer_to_server(driver_pb2_grpc.DriverServiceServicer(), s),
        ["driver.DriverService"],
    )
    log.info("DriverService listening on %s", settings.driver_service_addr)
    log.info("DriverService stopping on %s", grpc_server.wait_for_stop_signal())
    server.stop(grpc_server.GRACE_SECONDS).wait()
