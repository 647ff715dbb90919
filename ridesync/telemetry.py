"""Tracing with OpenTelemetry, and what every AMQP message carries.

Off unless OTEL_TRACES_EXPORTER names an exporter: `console`, or `otlp`
(OTLP over HTTP/protobuf, to OTEL_EXPORTER_OTLP_ENDPOINT). The other OTEL_*
variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*,
OTEL_EXPORTER_OTLP_*) work as the SDK documents them. Each process calls
start() once, in the gateway after gunicorn's fork.

A message's headers carry the W3C trace context of the span that published
it and the request id that caused it (logs.REQUEST_ID_HEADER); whoever takes
it from the broker continues both."""
import functools
import logging
from contextlib import contextmanager
from importlib.metadata import entry_points

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from ridesync import contract, identity, logs, messages, metrics
from ridesync.settings import process_settings

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("ridesync")  # follows the provider start() sets
EXPORTER_ENTRY_POINTS = {"otlp": "otlp_proto_http"}  # OTLP's default protocol, and the one installed
UNTRACED_PATHS = "/ws/,/metrics,/healthz"  # a socket's lifetime is no request; probes are noise


def tracing_on():
    return bool(_exporter_names())


def start(process, metrics_port=None):
    """This process's metrics port (when given) and tracing (when switched on)."""
    metrics.serve(metrics_port)
    if not tracing_on():
        return False
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = process_settings().otel_service_name or f"ridesync-{process}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for name in _exporter_names():
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument()  # the OSRM calls
    log.info("tracing as %s to %s", service, ", ".join(_exporter_names()))
    return True


def start_gateway(app):
    """start() for a gateway worker, with a span for each HTTP request."""
    if start("gateway"):
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, excluded_urls=UNTRACED_PATHS)


def _exporter_names():
    return [name for name in process_settings().otel_traces_exporter if name != "none"]


def _exporter(name):
    found = entry_points(group="opentelemetry_traces_exporter", name=EXPORTER_ENTRY_POINTS.get(name, name))
    if not found:
        raise SystemExit(f"OTEL_TRACES_EXPORTER={name}: no such span exporter is installed (console, otlp)")
    return next(iter(found)).load()()


def message_headers():
    """The trace context, request id and acting user a message published now carries."""
    headers = identity.outgoing_headers()
    propagate.inject(headers)
    request_id = logs.ride_field("request_id")
    if request_id:
        headers[logs.REQUEST_ID_HEADER] = request_id
    return headers


def published(publish):
    """Decorates Publisher.publish(routing_key, owner_id, data, ...): a
    producer span around it, whose context message_headers() then carries."""
    @functools.wraps(publish)
    def traced(publisher, routing_key, owner_id, data, *args, **kwargs):
        with TRACER.start_as_current_span(
            f"{routing_key} publish", kind=SpanKind.PRODUCER, attributes=_attributes(routing_key, owner_id, data)
        ):
            return publish(publisher, routing_key, owner_id, data, *args, **kwargs)
    return traced


def consumed(on_message):
    """Decorates a pika on_message(channel, method, properties, body) callback: see received()."""
    @functools.wraps(on_message)
    def traced(consumer, channel, method, properties, body):
        owner_id, data = _peek(body)
        with received(method.routing_key, properties.headers, owner_id, data):
            return on_message(consumer, channel, method, properties, body)
    return traced


@contextmanager
def received(routing_key, headers, owner_id, data):
    """Handling a message from the broker: a consumer span, child of the
    span that published it, and log lines with its request id, user and trip."""
    headers = text_only(headers)
    with logs.bound(request_id=headers.get(logs.REQUEST_ID_HEADER), user=owner_id, trip=trip_of(data)):
        with TRACER.start_as_current_span(
            f"{routing_key} process", context=propagate.extract(headers), kind=SpanKind.CONSUMER,
            attributes=_attributes(routing_key, owner_id, data),
        ):
            yield


@contextmanager
def resumed(headers):
    """Continues the trace and request id that message_headers() saved."""
    headers = text_only(headers)
    with logs.bound(request_id=headers.get(logs.REQUEST_ID_HEADER)):
        with trace.use_span(trace.get_current_span(propagate.extract(headers))):
            yield


def text_only(headers):
    """A message's headers whose values are text: what its context is read
    from (any publisher may put any type in a header, and OpenTelemetry's
    extract raises on a number), and what a notice carried in a `left` keeps."""
    return {name: value for name, value in (headers or {}).items() if isinstance(value, str)}


def trip_of(data):
    """The trip a message's data is about: a messages.AboutTrip, a Trip, or {"trip": Trip}."""
    if not isinstance(data, dict):
        return None
    trip = data.get("trip")
    return data.get(messages.TRIP_ID) or data.get("id") or (trip.get("id") if isinstance(trip, dict) else None)


def _peek(body):
    try:
        return contract.open_envelope(body)
    except ValueError:
        return None, {}


def _attributes(routing_key, owner_id, data):
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": contract.TRIP_EXCHANGE,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    for name, value in (("ridesync.user", owner_id), ("ridesync.trip", trip_of(data))):
        if isinstance(value, str):
            attributes[name] = value
    return attributes
