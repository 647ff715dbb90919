"""What the gateway shows of itself: GET /metrics, each request's id (the
X-Request-ID header, or a new one) in its log lines, its answer and
whatever it causes, and its latency; and the trace and request id of each
trip request a driver was sent, which their answer continues."""
import time
from collections import OrderedDict
from contextlib import contextmanager

from flask import Blueprint, Response, g, request

from ridesync import contract, logs, metrics, telemetry
from ridesync.gateway.identity import operators_only
from ridesync.settings import process_settings

bp = Blueprint("observed", __name__)

_asked = OrderedDict()  # (driver id, trip id) -> message headers of the delivery


def register(app):
    app.before_request(_begin)
    app.after_request(_answer)
    app.teardown_request(_end)
    app.register_blueprint(bp)


@bp.get("/metrics")
def exposition():
    operators_only()
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _begin():
    g.started = time.perf_counter()
    # What the request set in context variables, undone at its end: tokens,
    # not context managers held open for a socket's life (~2.7 KiB each socket).
    g.request_context = [logs.bind(request_id=logs.request_id_from(request.headers.get(logs.REQUEST_ID_HEADER)))]


def _answer(response):
    response.headers[logs.REQUEST_ID_HEADER] = logs.ride_field("request_id")
    if not request.path.startswith("/ws/"):  # a socket's lifetime is no latency
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.http_request(request.method, endpoint, response.status_code, g.started)
    return response


def _end(_exc):
    for token in reversed(g.pop("request_context", ())):
        token.var.reset(token)


@contextmanager
def delivering(phone, kind, headers, data):
    """A notification on its way to a phone: traced and logged as the
    message's, counted once written."""
    with telemetry.received(kind, headers, phone.user_id, data):
        yield
        metrics.EVENTS_DELIVERED.labels(kind).inc()
        if kind == contract.DRIVER_TRIP_REQUEST:
            _asked[(phone.user_id, telemetry.trip_of(data))] = telemetry.message_headers()
            while len(_asked) > process_settings().asked_memory:
                _asked.popitem(last=False)


@contextmanager
def answering(driver_id, trip_id):
    """A driver's answer to a trip request: in the trace of that request."""
    with telemetry.resumed(_asked.get((driver_id, trip_id), {})):
        yield
