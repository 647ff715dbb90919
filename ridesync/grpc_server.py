"""Running a gRPC service process: the server with its health service,
started on an address and stopped gracefully on SIGTERM or SIGINT."""
import logging
import signal
import threading
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ridesync import grpc_telemetry

log = logging.getLogger(__name__)
GRACE_SECONDS = 10


def start(address, add_servicers, service_names, max_workers=64):
    """A started server; add_servicers(server) registers the services."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=grpc_telemetry.server_interceptors()
    )
    add_servicers(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    server.start()
    return server


def wait_for_stop_signal():
    """Blocks until SIGTERM or SIGINT; returns the signal's name."""
    received = []
    stop = threading.Event()

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    return received[0]


@contextmanager
def status_codes(context, error_codes):
    """Ends the call with the status error_codes ({exception class: code})
    gives the exception raised inside, and its message."""
    try:
        yield
    except tuple(error_codes) as exc:
        code = next(c for e, c in error_codes.items() if isinstance(exc, e))
        if code is grpc.StatusCode.UNAVAILABLE:
            log.error("call failed: %s", exc)
        context.abort(code, str(exc))
