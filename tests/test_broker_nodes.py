"""AMQP_URL naming several broker nodes, and quorum work queues
(ridesync/rabbit.py): every process connects to a node that answers, and to
another when its node dies. A node here is a forwarder on a port of its own
to this run's RabbitMQ, so that it can die (its listener and every
connection through it closed at once) while the broker goes on."""
import queue
import socket
import subprocess
import threading
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from ridesync import contract, rabbit
from ridesync.settings import BadSetting, Settings, process_settings
from tests.ride import answer, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import AMQP_URL, forward_connections, free_port, wait_until


class BrokerNode:
    """A broker node on a port of its own: down until up(), gone again at die()."""

    def __init__(self):
        broker = urlsplit(AMQP_URL)
        self._broker = (broker.hostname, broker.port or 5672)
        self._port = free_port()
        self.url = urlunsplit(broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{self._port}"))
        self._listener = None
        self._sockets = []
        self._answering = threading.Event()

    def up(self):
        self._answering.set()
        self._sockets = []
        self._listener = socket.create_server(("127.0.0.1", self._port))
        threading.Thread(target=forward_connections, args=(self._listener, self._broker, self._pipe),
                         daemon=True).start()

    def stall(self):
        """The node takes what it is sent and answers nothing more, connections open."""
        self._answering.clear()

    def die(self):
        self._answering.set()
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                _shut(sock)


    @property
    def connections(self):
        return len(self._sockets) // 2

    def _pipe(self, source, sink):
        self._sockets.append(source)
        try:
            while data := source.recv(65536):
                if source.getpeername()[1] == self._broker[1]:
                    self._answering.wait()  # from the broker to its client: held while stalled
                sink.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            sink.close()


def _shut(sock):
    """Closes a socket another thread waits on: close() alone would wake
    neither its accept() nor its recv(), and leave it open."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


FIRST, SECOND = BrokerNode(), BrokerNode()


@pytest.fixture
def nodes():
    """The first node up, the second down."""
    FIRST.up()
    yield FIRST, SECOND
    FIRST.die()
    SECOND.die()


def test_amqp_url_names_every_node_and_each_is_tried_in_turn():
    url = " amqp://a:1/v , amqp://b:2/v,,amqp://c:3/v "
    assert rabbit.node_urls(url) == ("amqp://a:1/v", "amqp://b:2/v", "amqp://c:3/v")
    for _ in range(20):  # from a node picked at random, every other one after it
        hosts = [params.host for params in rabbit.connection_parameters(url, "test")]
        assert sorted(hosts) == ["a", "b", "c"] and "".join(hosts) in "abcab" + "cab"
    with pytest.raises(ValueError, match="names no broker"):
        rabbit.node_urls(" , ")


def test_work_queue_type_is_classic_unless_set_to_quorum():
    assert Settings.from_env({}).work_queue_type == "classic"
    assert Settings.from_env({"WORK_QUEUE_TYPE": " Quorum "}).work_queue_type == "quorum"
    with pytest.raises(BadSetting, match="WORK_QUEUE_TYPE='mirrored' is not one of classic, quorum"):
        Settings.from_env({"WORK_QUEUE_TYPE": "mirrored"})


def test_a_publisher_and_a_consumer_whose_first_node_is_dead_use_the_next(nodes):
    alive, dead = nodes
    url = f"{dead.url},{alive.url}"
    for _ in range(5):  # whichever node each starts with
        rabbit.connect(url, "test-nodes").close()
    handled = queue.Queue()
    consumer = rabbit.WorkQueueConsumer(url, contract.PAYMENT_TRIP_RESPONSE,
                                        lambda _key, _owner, data: handled.put(data["tripID"]), "test-nodes").start()
    publisher = rabbit.Publisher(url, "test-nodes")
    try:
        trip_id = new_id("trip")
        publisher.publish(contract.PAYMENT_CREATE_SESSION, new_id("rider"), {"tripID": trip_id})
        assert handled.get(timeout=10) == trip_id
    finally:
        publisher.close()
        consumer.stop()


def test_a_publish_the_broker_never_confirms_is_given_up_and_made_on_another_node(nodes, amqp_tap, monkeypatch):
    first, second = nodes
    impatient = replace(process_settings(), amqp_confirm_timeout=1.0)
    monkeypatch.setattr(rabbit, "process_settings", lambda: impatient)
    publisher = rabbit.Publisher(f"{first.url},{second.url}", "test-nodes")
    tap = amqp_tap(contract.PAYMENT_CREATE_SESSION)
    try:
        publisher.publish(contract.PAYMENT_CREATE_SESSION, new_id("rider"), {"tripID": "on-the-first"})
        first.stall()
        second.up()
        publisher.publish(contract.PAYMENT_CREATE_SESSION, new_id("rider"), {"tripID": "on-the-second"})
    finally:
        publisher.close()
    # The stalled node passed the second on to the broker too: a second copy, with the same message_id, may follow.
    assert [tap.next()[2]["data"]["tripID"] for _ in range(2)] == ["on-the-first", "on-the-second"]


def test_a_publish_the_broker_refuses_is_tried_once_more_on_a_new_connection(nodes):
    first, _ = nodes
    refusing = new_id("test.refusing")  # a queue that takes nothing: every message to it is nacked
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        channel.queue_declare(refusing, exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        channel.queue_bind(refusing, contract.TRIP_EXCHANGE, routing_key=refusing)
        publisher = rabbit.Publisher(first.url, "test-nodes")
        try:
            with pytest.raises(rabbit.PublishFailed, match=f"broker refused {refusing}"):
                publisher.publish(refusing, new_id("rider"), {})
        finally:
            publisher.close()
    assert first.connections == 2


@pytest.mark.ride_env(AMQP_URL=f"{FIRST.url},{SECOND.url}", OFFER_TIMEOUT="60")
def test_a_ride_goes_on_when_the_node_every_process_was_on_dies(nodes, ride):  # noqa: F811
    first, second = nodes
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    driver = ride.driver("van")
    wait_until(lambda: first.connections >= 5, message="every process on the first node")

    second.up()
    first.die()
    trip = ride.start_trip(rider_id, "van")
    assert rider.next(contract.TRIP_CREATED, timeout=20)["data"]["id"] == trip["id"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST, timeout=20)["data"])
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["driver"]["id"] == driver.driver["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED, timeout=20)["data"]["tripID"] == trip["id"]
    assert second.connections >= 5  # the services' consumers and publishers, the gateway's feed


def test_quorum_work_queues_are_declared_as_quorum_queues_and_consumed(monkeypatch):
    vhost = f"ridesync-quorum-{new_id('run')}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, urlsplit(AMQP_URL).username or "guest", ".*", ".*", ".*")
        url = urlunsplit(urlsplit(AMQP_URL)._replace(path=f"/{vhost}"))
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            rabbit.declare_topology(connection.channel(), "quorum")
        types = dict(line.split("\t") for line in _ctl("list_queues", "--no-table-headers", "-p", vhost, "name", "type").splitlines())
        assert {types[name] for name in [*contract.WORK_QUEUES, rabbit.DEAD_LETTER_QUEUE]} == {"quorum"}
        assert types[contract.NOTIFICATIONS_STREAM] == "stream"

        handled = queue.Queue()
        consumer = rabbit.WorkQueueConsumer(url, contract.PAYMENT_TRIP_RESPONSE,
                                            lambda _key, _owner, data: handled.put(data["tripID"]), "test-quorum")
        publisher = rabbit.Publisher(url, "test-quorum")
        quorum = Settings.from_env({"WORK_QUEUE_TYPE": "quorum"})
        monkeypatch.setattr(rabbit, "process_settings", lambda: quorum)  # what both declare the topology with
        consumer.start()
        try:
            publisher.publish(contract.PAYMENT_CREATE_SESSION, new_id("rider"), {"tripID": "trip-q"})
            assert handled.get(timeout=10) == "trip-q"
        finally:
            publisher.close()
            consumer.stop()
    finally:
        _ctl("delete_vhost", vhost)


def _ctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout
