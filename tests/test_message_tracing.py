"""In one process, with the SDK's in-memory exporter: a message published
inside a span is handled, on the consumer's thread, in a child of its
publish span and with the publisher's request id."""
import queue

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ridesync import contract, logs, telemetry
from ridesync.rabbit import WorkQueueConsumer
from tests.service_support import publisher, purge_queues  # noqa: F401 (publisher is a fixture)
from tests.support import AMQP_URL, new_rider, wait_until

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans():
    """The test process's spans. The global provider can be set once per process."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    return EXPORTER


def test_a_message_carries_its_trace_and_request_id_to_its_consumer(spans, publisher):  # noqa: F811
    purge_queues(contract.PAYMENT_TRIP_RESPONSE)
    handled = queue.Queue()
    consumer = WorkQueueConsumer(
        AMQP_URL, contract.PAYMENT_TRIP_RESPONSE,
        lambda *_: handled.put((logs.ride_field("request_id"), logs.ride_field("trip"))), "test-payments",
    ).start()
    try:
        with logs.bound(request_id="ride-42"), telemetry.TRACER.start_as_current_span("ride"):
            publisher.publish(contract.PAYMENT_CREATE_SESSION, new_rider(), {"tripID": "trip-42"})
        assert handled.get(timeout=10) == ("ride-42", "trip-42")
    finally:
        consumer.stop()
    names = ("ride", f"{contract.PAYMENT_CREATE_SESSION} publish", f"{contract.PAYMENT_CREATE_SESSION} process")

    def finished():
        spans_by_name = {span.name: span for span in spans.get_finished_spans()}
        return [spans_by_name[name] for name in names] if set(names) <= set(spans_by_name) else None

    ride, sent, taken = wait_until(finished, message="the ride's three spans to end")
    assert sent.parent.span_id == ride.context.span_id
    assert taken.parent.span_id == sent.context.span_id
    assert taken.context.trace_id == ride.context.trace_id
