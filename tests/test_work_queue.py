"""A service's work-queue consumer (ridesync/rabbit.py) on a real RabbitMQ."""
import queue

from ridesync import contract
from ridesync.rabbit import PublishFailed, Retry, WorkQueueConsumer
from tests.service_support import publisher, purge_queues  # noqa: F401 (publisher is a fixture)
from tests.support import AMQP_URL, new_rider


def test_a_consumer_that_fails_unexpectedly_takes_the_message_again(publisher, monkeypatch):  # noqa: F811
    purge_queues(contract.PAYMENT_TRIP_RESPONSE)
    failures, read = [RuntimeError("a bug outside the handler")], contract.open_envelope

    def open_envelope(body):
        if failures:
            raise failures.pop()
        return read(body)

    monkeypatch.setattr(contract, "open_envelope", open_envelope)
    handled = queue.Queue()
    consumer = WorkQueueConsumer(AMQP_URL, contract.PAYMENT_TRIP_RESPONSE,
                                 lambda _key, _owner, data: handled.put(data["tripID"]), "test-payments").start()
    try:
        publisher.publish(contract.PAYMENT_CREATE_SESSION, new_rider(), {"tripID": "trip-1"})
        assert handled.get(timeout=10) == "trip-1" and not failures
    finally:
        consumer.stop()


def test_a_message_whose_publish_the_broker_did_not_confirm_is_taken_again(publisher):  # noqa: F811
    purge_queues(contract.PAYMENT_TRIP_RESPONSE)
    refusals, handled = [PublishFailed("no confirm"), Retry("the database is away")], queue.Queue()

    def handle(_key, _owner, data):
        handled.put(data["tripID"])
        if refusals:
            raise refusals.pop()

    consumer = WorkQueueConsumer(AMQP_URL, contract.PAYMENT_TRIP_RESPONSE, handle, "test-payments").start()
    try:
        publisher.publish(contract.PAYMENT_CREATE_SESSION, new_rider(), {"tripID": "trip-2"})
        assert [handled.get(timeout=10) for _ in range(3)] == ["trip-2"] * 3 and not refusals
    finally:
        consumer.stop()
