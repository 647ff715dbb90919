"""Every Prometheus metric of every process, and how each process shows them.

The gateway serves GET /metrics; under gunicorn its workers write their
values to PROMETHEUS_MULTIPROC_DIR (ridesync/multiproc.py) and /metrics adds
them up. A service serves its own on <PROCESS>_METRICS_PORT when set."""
import functools
import logging
import os
import re
import time

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

log = logging.getLogger(__name__)

OPEN_SOCKETS = Gauge(
    "ridesync_gateway_open_sockets", "WebSockets open, by role", ["role"], multiprocess_mode="livesum"
)
EVENTS_DELIVERED = Counter("ridesync_gateway_events_delivered_total", "Events written to a socket, by type", ["type"])
FRAMES_REJECTED = Counter(
    "ridesync_gateway_frames_rejected_total", "Frames from phones answered with an error, by reason", ["reason"]
)
LOCATIONS_DROPPED = Counter(
    "ridesync_gateway_locations_dropped_total", "Drivers' driver.cmd.location frames dropped, over LOCATION_MAX_RATE"
)
HTTP_LATENCY = Histogram(
    "ridesync_gateway_http_request_duration_seconds", "HTTP requests to the gateway, by endpoint",
    ["method", "endpoint", "status"],
)
GRPC_CALLS = Counter("ridesync_grpc_calls_total", "gRPC calls by side, method and outcome", ["side", "method", "code"])
OSRM_CALLS = Counter("ridesync_osrm_calls_total", "Calls to OSRM, by outcome", ["outcome"])
OSRM_BREAKER = Gauge(
    "ridesync_osrm_circuit_breaker_state", "1 for the OSRM circuit breaker's current state", ["state"]
)
BREAKER_STATES = ("closed", "open", "half_open")


def socket_opened(role):
    OPEN_SOCKETS.labels(role).inc()


def socket_closed(role):
    OPEN_SOCKETS.labels(role).dec()


def breaker_state(state):
    for name in BREAKER_STATES:
        OSRM_BREAKER.labels(name).set(1 if name == state else 0)


def osrm_call(fetch_route):
    """Counts each OSRM call by outcome: ok, or its error's name (no_route, route_unavailable, ...)."""
    @functools.wraps(fetch_route)
    def counted(*args, **kwargs):
        outcome = "ok"
        try:
            return fetch_route(*args, **kwargs)
        except Exception as exc:
            outcome = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
            raise
        finally:
            OSRM_CALLS.labels(outcome).inc()
    return counted


def grpc_call(side, method, code):
    GRPC_CALLS.labels(side, method, code.name.lower()).inc()


def http_request(method, endpoint, status, started):
    HTTP_LATENCY.labels(method, endpoint, str(status)).observe(time.perf_counter() - started)


def exposition():
    """(body, content type) of every metric of this process, or of every
    gunicorn worker when they share PROMETHEUS_MULTIPROC_DIR."""
    registry = prometheus_client.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST


def serve(port):
    """Serves this process's metrics on port (a service's); nothing when port is None."""
    if port is None:
        return
    prometheus_client.start_http_server(port)
    log.info("metrics on :%d/metrics", port)
