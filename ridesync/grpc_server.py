"""Running a gRPC service process: the server with its health service,
started on an address, counting its calls in flight so that a stop can say
what it drained."""
import logging
import threading
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ridesync import grpc_telemetry

log = logging.getLogger(__name__)


def start(address, add_servicers, service_names, max_workers=64):
    """A started Server; add_servicers(server) registers the services. An
    address with port 0 listens on a port the system picks: `.address` says which."""
    calls = CallsInFlight()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=[*grpc_telemetry.server_interceptors(), calls]
    )
    add_servicers(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"cannot listen on {address}")
    server.start()
    return Server(server, health_servicer, calls, f"{address.rpartition(':')[0]}:{port}")


class Server:
    """A started gRPC server and its health service."""

    def __init__(self, server, health_servicer, calls, address):
        self.address = address  # where it listens, with the port it was given
        self._server = server
        self._health = health_servicer
        self.calls = calls

    def stop(self, grace):
        """Health says NOT_SERVING and new calls are refused at once; the
        calls in flight get grace seconds to finish. Returns an Event set
        when they have (or were cut at the grace)."""
        self._health.enter_graceful_shutdown()
        return self._server.stop(grace)


class CallsInFlight(grpc.ServerInterceptor):
    """Counts the unary calls being handled."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0

    def __len__(self):
        return self._count

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return handler._replace(unary_unary=self._counted(handler.unary_unary))

    def _counted(self, behavior):
        def counted(request, context):
            with self._lock:
                self._count += 1
            try:
                return behavior(request, context)
            finally:
                with self._lock:
                    self._count -= 1

        return counted


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
