"""RabbitMQ plumbing shared by every process: connecting, the topology, and a
publisher whose every publish is confirmed by the broker.

pika is not thread-safe: a Publisher serialises its users behind a lock, and
nothing else touches its connection; a PublisherPool lets several confirms
be awaited at once."""
import logging
import queue
import random
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager

import pika
from pika.exceptions import AMQPConnectionError, AMQPChannelError, NackError, UnroutableError

from ridesync import contract, telemetry
from ridesync.settings import process_settings

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "trip.dead"
DEAD_LETTER_QUEUE = "dead_letters"


class PublishFailed(Exception):
    """The broker did not take a message: it is not on any queue."""


class Unroutable(PublishFailed):
    """No queue is bound for the message: no one is listening for it."""


class ConfirmTimeout(AMQPConnectionError):
    """The broker took a message and did not confirm it in AMQP_CONFIRM_TIMEOUT:
    its connection is given up. A cluster whose queue leader died while the
    message was on its way may never confirm it (bench.node_kill)."""


def node_urls(url):
    """The broker nodes AMQP_URL names: one URL, or several separated by
    commas (the nodes of one cluster). ValueError when it names none."""
    urls = tuple(part.strip() for part in url.split(",") if part.strip())
    if not urls:
        raise ValueError(f"AMQP_URL names no broker: {url!r}")
    return urls


def connection_parameters(url, name):
    """One pika Parameters per node of url, each tried in turn (pika's
    BlockingConnection takes the list as it is): starting at a node picked at
    random, so a cluster's clients spread over its nodes, and every other
    node after it, so a process whose node died connects to another."""
    urls = node_urls(url)
    first = random.randrange(len(urls))
    return [_parameters(node, name) for node in urls[first:] + urls[:first]]


def _parameters(url, name):
    settings = process_settings()
    params = pika.URLParameters(url)
    params.heartbeat = settings.amqp_heartbeat
    params.blocked_connection_timeout = settings.amqp_connect_timeout
    params.socket_timeout = settings.amqp_socket_timeout
    params.stack_timeout = settings.amqp_connect_timeout
    params.connection_attempts = 1
    params.client_properties = {"connection_name": name}
    return params


def connect(url, name):
    return pika.BlockingConnection(connection_parameters(url, name))


def broker_answers(url, timeout=2.0):
    """True when a node of url takes a connection within timeout seconds."""
    nodes = [pika.URLParameters(node) for node in node_urls(url)]
    for params in nodes:
        params.socket_timeout = params.stack_timeout = timeout
        params.connection_attempts = 1
    try:
        pika.BlockingConnection(nodes).close()
        return True
    except pika.exceptions.AMQPError:
        return False


def declare_topology(channel, work_queue_type=None):
    """The exchange, the service work queues and their dead-letter queue, and
    the gateway's live side: the record of notifications, the registry of
    sockets, and the exchange the workers' own queues are bound to. Every process declares it, so none
    depends on which one started first; and all alike, for the broker refuses
    a queue declared again with other arguments. work_queue_type: classic or
    quorum (replicated over a cluster's nodes); the WORK_QUEUE_TYPE setting
    when None."""
    queue_arguments = work_queue_arguments(work_queue_type or process_settings().work_queue_type)
    channel.exchange_declare(contract.TRIP_EXCHANGE, "topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments=queue_arguments)
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    for queue, keys in contract.WORK_QUEUES.items():
        channel.queue_declare(
            queue, durable=True, arguments={**queue_arguments, "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
        )
        for key in keys:
            channel.queue_bind(queue, contract.TRIP_EXCHANGE, routing_key=key)
    channel.queue_declare(contract.NOTIFICATIONS_STREAM, durable=True,
                          arguments=contract.NOTIFICATIONS_STREAM_ARGUMENTS)
    for key in (*contract.NOTIFICATION_KEYS, contract.CONNECTED):
        channel.queue_bind(contract.NOTIFICATIONS_STREAM, contract.TRIP_EXCHANGE, routing_key=key)
    channel.queue_declare(contract.SOCKETS_STREAM, durable=True, arguments=contract.SOCKETS_STREAM_ARGUMENTS)
    channel.queue_bind(contract.SOCKETS_STREAM, contract.TRIP_EXCHANGE, routing_key=contract.MARKER_KEYS)
    channel.exchange_declare(contract.LIVE_EXCHANGE, "topic", durable=True)
    channel.exchange_bind(contract.LIVE_EXCHANGE, contract.TRIP_EXCHANGE, routing_key=contract.LIVE_KEYS)


def work_queue_arguments(work_queue_type):
    """A classic queue is declared as before, with no type, so that the queues
    of a broker that predates the setting are declared as they were."""
    return {"x-queue-type": "quorum"} if work_queue_type == "quorum" else {}


def message_properties(routing_key, owner_id, headers=None, message_id=None):
    """Persistent JSON with the owner and type as headers (the gateway's
    feed sorts notifications by them); a notification also goes, by its CC,
    to the gateway worker holding its user (contract.live_keys)."""
    headers = {"owner": owner_id, "type": routing_key, **telemetry.message_headers(), **(headers or {})}
    live = contract.live_keys(routing_key, headers)
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message_id or uuid.uuid4().hex,  # lets a socket or consumer drop a redelivered copy
        timestamp=int(time.time()),  # where a catch-up reading the notifications stream back begins
        headers={**headers, "CC": live} if live else headers,
    )


class Publisher:
    """Publishes envelopes to the `trip` exchange with publisher confirms.

    One connection, opened on first use and again after it is lost; a
    background thread keeps its heartbeats going while it is idle."""

    def __init__(self, url, name):
        self._url = url
        self._name = name
        self._lock = threading.Lock()
        self._connection = None
        self._channel = None
        self._stopped = threading.Event()
        self._heartbeat = None

    @telemetry.published
    def publish(self, routing_key, owner_id, data, headers=None, message_id=None):
        """Returns once the broker has confirmed the message; raises
        PublishFailed when it was refused, unroutable, or the broker is down."""
        body = contract.envelope(owner_id, data)
        props = message_properties(routing_key, owner_id, headers, message_id)
        with self._lock:
            for attempt in (1, 2):
                try:
                    channel = self._open_channel()
                    with _confirm_deadline(self._connection, routing_key):
                        channel.basic_publish(contract.TRIP_EXCHANGE, routing_key, body, props, mandatory=True)
                    return
                except UnroutableError as exc:
                    raise Unroutable(f"no queue takes {routing_key} for {owner_id}") from exc
                except NackError as exc:
                    # A channel may go on refusing what another takes (a cluster's stream leader died: bench.node_kill).
                    self._drop()
                    if attempt == 2:
                        raise PublishFailed(f"broker refused {routing_key}: {exc!r}") from exc
                    log.warning("publisher %s: the broker refused %s (%r); trying a new connection",
                                self._name, routing_key, exc)
                except (AMQPConnectionError, AMQPChannelError, OSError) as exc:
                    self._drop()
                    if attempt == 2:
                        raise PublishFailed(f"broker unreachable for {routing_key}: {exc!r}") from exc
                    log.warning("publisher %s lost its connection (%r); reconnecting", self._name, exc)

    def publish_or_undo(self, routing_key, owner_id, data, undo):
        """publish(), and undo() before the error is raised when it fails:
        for a change that must not stand unannounced (Outbox has the same)."""
        try:
            self.publish(routing_key, owner_id, data)
        except Exception:
            undo()
            raise

    def notify(self, routing_key, owner_id, data, headers=None, message_id=None):
        """Publishes an event for one user's socket. The gateway's record
        takes every notification type, whoever is connected; should no queue take
        it (a broker without the topology) it is logged and dropped."""
        try:
            self.publish(routing_key, owner_id, data, headers, message_id)
        except Unroutable:
            log.info("nobody listens for %s of %s: dropped", routing_key, owner_id)

    def close(self):
        self._stopped.set()
        with self._lock:
            self._drop()

    def _open_channel(self):
        if self._channel is None or not self._channel.is_open:
            self._drop()
            self._connection = connect(self._url, self._name)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            declare_topology(self._channel)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._keep_alive, name=f"{self._name}-heartbeat", daemon=True
                )
                self._heartbeat.start()
        return self._channel

    def _keep_alive(self):
        while not self._stopped.wait(process_settings().amqp_heartbeat / 3):
            with self._lock:
                if self._connection is None or not self._connection.is_open:
                    continue
                try:
                    self._connection.process_data_events(0)
                except (AMQPConnectionError, AMQPChannelError, OSError) as exc:
                    log.warning("publisher %s lost its connection while idle (%r)", self._name, exc)
                    self._drop()

    def _drop(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # the connection is being thrown away either way
                log.debug("closing a broken connection failed", exc_info=True)


@contextmanager
def _confirm_deadline(connection, routing_key):
    """Raises ConfirmTimeout in a publish whose confirm takes longer than
    AMQP_CONFIRM_TIMEOUT. pika's BlockingConnection waits for a confirm with no
    deadline, and runs the timers of its own call_later only between calls:
    this one is a timer of its I/O loop, which runs while it waits."""
    timeout = process_settings().amqp_confirm_timeout

    def no_confirm():
        connection._impl._transport.abort()  # closed at once: a broker that stopped answering answers no close either
        raise ConfirmTimeout(f"no confirm for {routing_key} within {timeout:.0f}s")

    ioloop = connection._impl.ioloop
    timer = ioloop.call_later(timeout, no_confirm)
    try:
        yield
    finally:
        ioloop.remove_timeout(timer)


class PublisherPool:
    """Publishers used in turn, shaped like one: a Publisher waits for each
    confirm under its lock, so a service whose threads shared one published
    one message per broker round trip (bench.rush: TripService's starts
    queued behind it). A connection is opened only when every one opened
    before is busy. Each publish is confirmed before it returns, so what a
    caller publishes after a confirm still comes after it, whichever
    connection carries it."""

    def __init__(self, url, name, size):
        self._publishers = [Publisher(url, f"{name}-{n}") for n in range(size)]
        self._idle = queue.LifoQueue()  # the connection used last is used first
        for publisher in reversed(self._publishers):
            self._idle.put(publisher)

    def publish(self, routing_key, owner_id, data, headers=None, message_id=None):
        with self._one() as publisher:
            publisher.publish(routing_key, owner_id, data, headers, message_id)

    def publish_or_undo(self, routing_key, owner_id, data, undo):
        with self._one() as publisher:
            publisher.publish_or_undo(routing_key, owner_id, data, undo)

    def notify(self, routing_key, owner_id, data, headers=None, message_id=None):
        with self._one() as publisher:
            publisher.notify(routing_key, owner_id, data, headers, message_id)

    def close(self):
        for publisher in self._publishers:
            publisher.close()

    @contextmanager
    def _one(self):
        publisher = self._idle.get()
        try:
            yield publisher
        finally:
            self._idle.put(publisher)


class Retry(Exception):
    """The message could not be handled now; the broker should deliver it again."""


class HandledInMemory:
    """The message ids this process handled lately: enough for one replica
    (a publisher that lost its connection before the confirm publishes
    again, with the same message_id). Database.handle_once is the same for
    replicas sharing a database."""

    def __init__(self):
        self._ids = deque(maxlen=process_settings().handled_memory)

    def handle_once(self, _consumer, message_id, work):
        if message_id in self._ids:
            return False
        work()
        self._ids.append(message_id)
        return True


class WorkQueueConsumer:
    """Consumes one service work queue in a thread of its own, reconnecting
    when the broker goes away. handle(routing_key, owner_id, data) does the
    work; the message is acked only after it returns. A message that is not an
    envelope, whose data lacks a field (MalformedMessage), whose handling
    publishes what no queue takes (Unroutable), or whose handling fails for
    good, goes to the dead-letter queue; Retry, or a publish the broker did
    not confirm (PublishFailed), puts it back on the queue."""

    CLOSE_WAIT = 1.0  # seconds stop() gives the thread to close its connection cleanly

    def __init__(self, url, queue, handle, name, handled=None):
        self._url = url
        self._queue = queue
        self._handle = handle
        self._name = name
        self._stopped = threading.Event()
        self._handling = threading.Lock()  # held from delivery to ack
        self._handled = handled or HandledInMemory()  # handle_once(queue, message_id, work)
        self._in_hand = None  # "routing key of owner" while a message is handled
        self._drained = None  # the message that was in hand when stop() came, once finished
        self._broker_lost = False  # warned once; quiet until connected again
        self._reconnect_pause = process_settings().reconnect_pause
        self._connection = None
        self._channel = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=10):
        """Stops taking messages at once. The message in hand, if any, is
        finished and acked within timeout, or else left unacked for the
        broker to redeliver. Returns promptly when nothing is in hand, even
        while the broker is unreachable. Returns what became of it."""
        self._stopped.set()
        self._cancel_consuming()
        if not self._handling.acquire(timeout=timeout):
            return f"{self._queue}: {self._in_hand} still in hand after {timeout:.0f}s, left for redelivery"
        self._handling.release()  # a delivery already buffered may still come; it is requeued, not held
        self._thread.join(self.CLOSE_WAIT)
        return f"{self._queue}: finished {self._drained}" if self._drained else f"{self._queue}: nothing in hand"

    def _cancel_consuming(self):
        connection, channel = self._connection, self._channel
        if connection is not None and channel is not None:
            try:
                connection.add_callback_threadsafe(channel.stop_consuming)
            except Exception:
                log.debug("consumer %s already disconnected", self._name, exc_info=True)

    def _run(self):
        while not self._stopped.is_set():
            try:
                self._consume()
            except (AMQPConnectionError, AMQPChannelError, OSError) as exc:
                if not self._broker_lost:
                    log.warning("consumer %s lost the broker (%r); reconnecting every %ss",
                                self._name, exc, self._reconnect_pause)
                self._broker_lost = True
                self._stopped.wait(self._reconnect_pause)
            except Exception:  # a bug of ours must not end the thread: the service would take no message again
                log.exception("consumer %s failed unexpectedly; the message in hand is redelivered, reconnecting in %ss",
                              self._name, self._reconnect_pause)
                self._stopped.wait(self._reconnect_pause)
            finally:
                self._close()

    def _consume(self):
        self._connection = connect(self._url, self._name)
        channel = self._channel = self._connection.channel()
        declare_topology(channel)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(self._queue, self._on_message)
        if self._stopped.is_set():
            return
        log.info("consumer %s taking messages from %s", self._name, self._queue)
        self._broker_lost = False
        channel.start_consuming()

    @telemetry.consumed
    def _on_message(self, channel, method, properties, body):
        with self._handling:
            if self._stopped.is_set():
                channel.basic_nack(method.delivery_tag, requeue=True)  # stopped: for another consumer
                return
            self._in_hand = f"{method.routing_key} of {(properties.headers or {}).get('owner', 'unknown')}"
            self._settle(channel, method, properties, body)
            if self._stopped.is_set():
                self._drained = self._in_hand
            self._in_hand = None

    def _settle(self, channel, method, properties, body):
        """Handles the message (once per message_id) and acks, rejects or requeues it."""
        try:
            owner_id, data = contract.open_envelope(body)
        except ValueError as exc:
            log.error("consumer %s dead-letters an unreadable %s message: %s", self._name, method.routing_key, exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        try:
            if not self._handled.handle_once(self._queue, properties.message_id or uuid.uuid4().hex,
                                             lambda: self._handle(method.routing_key, owner_id, data)):
                log.info("consumer %s drops a second copy of %s %s",
                         self._name, method.routing_key, properties.message_id)
        except (contract.MalformedMessage, Unroutable) as exc:
            log.error("consumer %s dead-letters %s for %s: %s", self._name, method.routing_key, owner_id, exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
        except (Retry, PublishFailed) as exc:
            log.warning("consumer %s will retry %s for %s: %s", self._name, method.routing_key, owner_id, exc)
            self._stopped.wait(self._reconnect_pause)
            channel.basic_nack(method.delivery_tag, requeue=True)
        except Exception:
            log.exception("consumer %s dead-letters %s for %s: handling failed", self._name, method.routing_key, owner_id)
            channel.basic_reject(method.delivery_tag, requeue=False)
        else:
            channel.basic_ack(method.delivery_tag)

    def _close(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                log.debug("closing consumer %s connection failed", self._name, exc_info=True)
