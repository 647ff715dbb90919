"""State changes and what they publish, across crashes and replicas: a
message handled once whichever replica gets it, and what a process
committed published even when it is killed before it could publish."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pika
import pytest
from psycopg import pq
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError

from ridesync import contract
from ridesync.database import Database, Prebuilt
from ridesync.driver.pool import new_driver
from ridesync.outbox import Outbox
from ridesync.rabbit import PublishFailed
from ridesync.tables import handled_messages, outbox
from ridesync.trip.planner import RoutePlanner
from ridesync.trip.service import TripService
from ridesync.trip.sql_store import SqlTripStore
from ridesync.trip.store import FareNotYours, FareUnavailable
from tests.databases import create_database, drop_database
from tests.service_support import (  # noqa: F401 (driver_service: a fixture)
    about_trip, driver_service, next_matching, publish_raw, purge_queues, register_at, trip_driver_json, unique,
)
from tests.support import DESTINATION, PICKUP, ROOT, start_trip_service, wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    url = create_database()
    yield url
    drop_database(url)


def test_of_replicas_given_one_message_at_once_one_handles_it(database_url):
    replicas = [Database(database_url) for _ in range(4)]
    ready, handled, ran = threading.Barrier(len(replicas)), [], []

    def handle(database):
        ready.wait()

        def work():
            ran.append(database)
            time.sleep(0.2)  # still in the transaction while the others try

        handled.append(database.handle_once("driver_trip_response", "message-1", work))

    threads = [threading.Thread(target=handle, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(handled) == [False, False, False, True] and len(ran) == 1  # the work too, not only its record
    assert replicas[0].handle_once("driver_trip_response", "message-1", lambda: ran.append("again")) is False
    assert replicas[0].handle_once("payment_trip_response", "message-1", lambda: ran.append("other queue")) is True
    assert ran[-1] == "other queue" and "again" not in ran
    for replica in replicas:
        replica.close()


def test_a_transaction_sent_as_one_statement_one_of_whose_parts_is_refused_commits_nothing(database_url):
    """On PostgreSQL its statements are parts of one (on SQLite a transaction as
    any other); what was refused commits nothing, and the pool's connection serves again."""
    database = Database(database_url)
    record = Prebuilt(insert(handled_messages).values(consumer="c", message_id=bindparam("id"), handled_at=0))
    try:
        with database.transaction() as conn:
            record.run(conn, id="m")
        with pytest.raises(IntegrityError), database.transaction(one_statement=True) as conn:
            record.run(conn, id="other")
            record.run(conn, id="m")  # a second copy: refused, and "other" with it
        with database.transaction(one_statement=True) as conn:
            record.run(conn, id="next")
        with database.transaction() as conn:
            assert sorted(conn.execute(select(handled_messages.c.message_id)).scalars()) == ["m", "next"]
    finally:
        database.close()


def test_a_trip_is_started_on_postgresql_in_one_exchange_with_the_server_two_if_priced_elsewhere(tmp_path):
    """The start's one statement (fare taken, trip, current trip, outbox
    row) goes in one exchange when this process priced the fare; one priced
    by another replica is read first (what the libpq traces of the pools'
    connections show)."""
    url = create_database()
    database, elsewhere = Database(url), Database(url)
    try:
        trips = TripService(RoutePlanner(None, enabled=False), SqlTripStore(database),
                            Outbox(database, Broker(), "trip"), transaction=database.transaction)
        other_replica = TripService(RoutePlanner(None, enabled=False), SqlTripStore(elsewhere), Broker())
        rider = unique("rider")
        servers = []
        for engine in (database._at_once, database._durable_at_once):  # the read's pool, the start's
            with engine.connect() as conn:  # the pool's one connection, which the start takes next
                servers.append(conn.connection.driver_connection.pgconn)
        for replica, exchanges in ((trips, "F+B+"), (other_replica, "F+B+F+B+")):
            fare = _fare(replica, rider)
            paths = [tmp_path / f"trace-{n}" for n in range(len(servers))]
            traces = [open(path, "w") for path in paths]
            for server, trace in zip(servers, traces):
                server.trace(trace.fileno())
                server.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            trips.create_trip(fare.id, rider)
            for server, trace in zip(servers, traces):
                server.untrace()
                trace.close()
            senders = "".join(line[0] for path in paths for line in path.read_text().splitlines()
                              if line[:2] in ("F\t", "B\t"))  # F(rontend), B(ackend); not a statement's next line
            assert re.fullmatch(exchanges, senders), f"exchanges: {re.findall('F+B+', senders)}"
    finally:
        database.close()
        elsewhere.close()
        drop_database(url)


# A trip service's accept, in a process killed with SIGKILL right after the
# commit: the outbox rows are committed, the relay never ran.
KILLED_AFTER_COMMIT = """
import os, signal, sys
from ridesync.settings import Settings
from ridesync.trip.server import build
from ridesync.driver.pool import new_driver
from ridesync.trip.intake import trip_driver
from tests.support import DESTINATION, PICKUP

trips, database, outbox, _offers, publisher = build(Settings.from_env())
rider, driver = sys.argv[1], sys.argv[2]
_route, fares = trips.preview(rider, PICKUP, DESTINATION)
trip = trips.create_trip(fares[0].id, rider)
trips.record_offer(trip.id, driver)
accepted = trip_driver(new_driver(driver, "sedan").to_json())
database.handle_once("driver_trip_response", "accept-" + trip.id, lambda: trips.accept(trip.id, accepted))
print(trip.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_a_killed_process_committed_is_published_by_the_next_one(database_url, tmp_path, osrm, amqp_tap):
    purge_queues(contract.DRIVER_TRIP_RESPONSE)
    rider, driver = unique("rider"), unique("driver")
    tap = amqp_tap(contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_CREATE_SESSION)
    env = {"DATABASE_URL": database_url, "OSRM_ENABLED": "false", "OUTBOX_HOLD": "1"}
    victim = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, rider, driver], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    trip_id = victim.stdout.strip()
    database = Database(database_url)
    # The accept's three, never published, and the start's, published but
    # left for the relay to delete: the next one sends it again after the hold.
    assert _rows(database) == 4
    assert tap.empty()

    service = start_trip_service(osrm, tmp_path, name="trip-after", **env)
    try:
        sent = {(key, message["ownerId"]): message["data"]
                for key, _, message in (next_matching(tap, about_trip(trip_id)) for _ in range(3))}
        for owner in (rider, driver):
            assert sent[(contract.TRIP_DRIVER_ASSIGNED, owner)]["driver"] == trip_driver_json(driver)
        assert sent[(contract.PAYMENT_CREATE_SESSION, rider)]["tripID"] == trip_id
        wait_until(lambda: _rows(database) == 0, message="the outbox to be emptied")

        # The same accept delivered again (the broker never got its ack): handled once.
        body = contract.envelope(driver, {"tripID": trip_id, "riderID": rider,
                                          "driver": new_driver(driver, "sedan").to_json()})
        publish_raw(contract.DRIVER_TRIP_ACCEPT, body, pika.BasicProperties(message_id="accept-" + trip_id))
        wait_until(lambda: f"drops a second copy of {contract.DRIVER_TRIP_ACCEPT} accept-{trip_id}" in service.output(),
                   message="the second copy to be dropped")
        assert tap.empty()
    finally:
        service.stop()
        database.close()


# A driver's answer taken by TripService itself, not inside the consumer's
# transaction (handle_once), in a process killed at the first publish to the
# broker after the answer: what the answer publishes must commit with it.
KILLED_AFTER_ANSWER = """
import os, signal, sys
from ridesync.settings import Settings
from ridesync.trip.server import build
from ridesync.driver.pool import new_driver
from ridesync.trip.intake import trip_driver
from tests.support import DESTINATION, PICKUP

def killed(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

trips, database, outbox, _offers, publisher = build(Settings.from_env())
rider, driver, answer = sys.argv[1:]
_route, fares = trips.preview(rider, PICKUP, DESTINATION)
trip = trips.create_trip(fares[0].id, rider)
trips.record_offer(trip.id, driver)
print(trip.id, flush=True)
publisher.publish = publisher.notify = killed
if answer == "accept":
    trips.accept(trip.id, trip_driver(new_driver(driver, "sedan").to_json()))
else:
    trips.decline(trip.id, driver)
killed()
"""


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_a_drivers_answer_whose_process_died_before_publishing_is_published_by_the_next_one(
        database_url, tmp_path, osrm, amqp_tap, answer):
    purge_queues(contract.DRIVER_TRIP_RESPONSE)
    rider, driver = unique("rider"), unique("driver")
    expected = {"accept": {(contract.PAYMENT_CREATE_SESSION, rider), (contract.TRIP_DRIVER_ASSIGNED, rider),
                           (contract.TRIP_DRIVER_ASSIGNED, driver)},
                "decline": {(contract.TRIP_DRIVER_NOT_INTERESTED, rider)}}[answer]
    tap = amqp_tap(*{key for key, _ in expected})
    env = {"DATABASE_URL": database_url, "OSRM_ENABLED": "false", "OUTBOX_HOLD": "1"}
    victim = subprocess.run([sys.executable, "-c", KILLED_AFTER_ANSWER, rider, driver, answer], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    trip_id = victim.stdout.strip()
    database = Database(database_url)
    assert _rows(database) == 1 + len(expected)  # the start's, left for the relay to delete, and the answer's
    assert tap.empty()

    service = start_trip_service(osrm, tmp_path, name="trip-after", **env)
    try:
        sent = {(key, message["ownerId"]): message["data"]
                for key, _, message in (next_matching(tap, about_trip(trip_id)) for _ in expected)}
        assert set(sent) == expected
        if answer == "accept":
            assert sent[(contract.TRIP_DRIVER_ASSIGNED, rider)]["driver"] == trip_driver_json(driver)
        else:
            assert sent[(contract.TRIP_DRIVER_NOT_INTERESTED, rider)]["declinedDriverIDs"] == [driver]
        wait_until(lambda: _rows(database) == 0, message="the outbox to be emptied")
    finally:
        service.stop()
        database.close()


# A trip service's CreateTrip, in a process killed with SIGKILL between the
# commit and the publish: the trip and its trip.event.created row are
# committed, held back from the relay, and nothing was published.
KILLED_BEFORE_PUBLISH = """
import os, signal, sys
from ridesync.settings import Settings
from ridesync.trip.server import build
from tests.support import DESTINATION, PICKUP

def killed(routing_key, owner_id, data, **_):
    print(data["id"], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

trips, database, outbox, _offers, publisher = build(Settings.from_env())
rider = sys.argv[1]
_route, fares = trips.preview(rider, PICKUP, DESTINATION)
publisher.publish = killed
trips.create_trip(next(f for f in fares if f.package_slug == "sedan").id, rider)
"""


def test_a_trip_whose_process_died_before_announcing_it_is_dispatched_all_the_same(
        database_url, tmp_path, osrm, amqp_tap, driver_service):
    purge_queues(contract.DRIVER_TRIP_RESPONSE)
    rider, driver = unique("rider"), unique("driver")
    register_at(driver_service.stub, driver, "sedan", 100)
    tap = amqp_tap(contract.TRIP_CREATED, contract.DRIVER_TRIP_REQUEST)
    env = {"DATABASE_URL": database_url, "OSRM_ENABLED": "false", "OUTBOX_HOLD": "2"}
    victim = subprocess.run([sys.executable, "-c", KILLED_BEFORE_PUBLISH, rider], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    trip_id = victim.stdout.strip()
    database = Database(database_url)
    assert _rows(database) == 1 and tap.empty()

    service = start_trip_service(osrm, tmp_path, name="trip-after", **env)
    try:
        key, _, message = next_matching(tap, about_trip(trip_id))
        assert (key, message["ownerId"], message["data"]["status"]) == (contract.TRIP_CREATED, rider, "pending")
        key, _, message = next_matching(tap, about_trip(trip_id))
        assert (key, message["ownerId"]) == (contract.DRIVER_TRIP_REQUEST, driver)
        wait_until(lambda: _rows(database) == 0, message="the outbox to be emptied")
    finally:
        service.stop()
        database.close()


class Broker:
    """Stands in for rabbit.Publisher: what it was given, with message ids;
    `answer(message_id)` is called before each publish and may raise."""

    def __init__(self):
        self.answer = lambda message_id: None
        self.published = []

    def publish(self, routing_key, owner_id, data, headers=None, message_id=None):
        self.answer(message_id)
        self.published.append((routing_key, data["id"], message_id))


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
def sql_trips(database_url):
    """A TripService on the SQL store in this process; .outbox, .broker, .clock to move, .database."""
    database = Database(database_url)
    clock, broker = Clock(), Broker()
    box = Outbox(database, broker, "trip", hold=30, clock=clock)
    trips = TripService(RoutePlanner(None, enabled=False), SqlTripStore(database), box,
                        transaction=database.transaction)
    trips.outbox, trips.broker, trips.clock, trips.database = box, broker, clock, database
    yield trips
    database.close()


def _fare(trips, rider):
    return trips.preview(rider, PICKUP, DESTINATION)[1][0]


def test_a_trip_is_announced_at_once_and_its_row_deleted_by_the_relay_not_sent_again(sql_trips):
    rider = unique("rider")
    trip = sql_trips.create_trip(_fare(sql_trips, rider).id, rider)
    [(key, trip_id, message_id)] = sql_trips.broker.published
    assert (key, trip_id) == (contract.TRIP_CREATED, trip.id) and message_id
    sql_trips.clock.now += 31  # past the hold: only the deletion keeps the relay from sending it again
    sql_trips.outbox.relay()
    assert _rows(sql_trips.database) == 0 and len(sql_trips.broker.published) == 1


def test_a_fare_started_again_or_by_another_rider_is_refused_and_commits_nothing(sql_trips):
    """On PostgreSQL the refusal comes with the COMMIT, the outbox row's INSERT sent after the start's."""
    rider = unique("rider")
    fare = _fare(sql_trips, rider)
    sql_trips.create_trip(fare.id, rider)
    with pytest.raises(FareUnavailable, match="already used"):
        sql_trips.create_trip(fare.id, rider)
    with pytest.raises(FareNotYours):
        sql_trips.create_trip(_fare(sql_trips, rider).id, unique("rider"))
    assert _rows(sql_trips.database) == 1 and len(sql_trips.broker.published) == 1


def test_a_trip_the_broker_did_not_take_is_forgotten_and_its_fare_usable_again(sql_trips):
    rider = unique("rider")
    fare = _fare(sql_trips, rider)
    sql_trips.broker.answer = lambda message_id: _raise(PublishFailed("broker away"))
    with pytest.raises(PublishFailed):
        sql_trips.create_trip(fare.id, rider)
    assert sql_trips.current_trip(rider) is None and _rows(sql_trips.database) == 0
    sql_trips.broker.answer = lambda message_id: None
    assert sql_trips.create_trip(fare.id, rider).fare == fare


def test_a_trip_the_relay_announced_while_its_own_publish_waited_for_the_broker_stands(sql_trips):
    rider = unique("rider")
    fare = _fare(sql_trips, rider)
    relayed = []

    def slow_then_failed(message_id):
        sql_trips.broker.answer = relayed.append
        sql_trips.outbox.relay()
        assert relayed == []  # held: the relay leaves it to this publish
        sql_trips.clock.now += 31  # this publish took longer than the hold: the relay sends it
        sql_trips.outbox.relay()
        raise PublishFailed("no confirm in time")

    sql_trips.broker.answer = slow_then_failed
    trip = sql_trips.create_trip(fare.id, rider)
    assert sql_trips.broker.published == [(contract.TRIP_CREATED, trip.id, relayed[0])]
    assert sql_trips.current_trip(rider) == trip and _rows(sql_trips.database) == 0
    with pytest.raises(FareUnavailable):
        sql_trips.create_trip(fare.id, rider)


def test_what_was_committed_while_the_relay_was_busy_is_published_before_it_stops(database_url):
    database, broker = Database(database_url), Broker()
    box = Outbox(database, broker, "payment").start()
    busy, release = threading.Event(), threading.Event()
    broker.answer = lambda message_id: (busy.set(), release.wait(10))
    try:
        with database.transaction():
            box.publish(contract.PAYMENT_SESSION_CREATED, "r1", {"id": "first"})
        wait_until(busy.is_set, message="the relay to publish the first row")
        with database.transaction():  # the last consumer's commit, after the relay looked at the table
            box.publish(contract.PAYMENT_SESSION_CREATED, "r1", {"id": "last"})
        stopped = []
        stopping = threading.Thread(target=lambda: stopped.append(box.stop(10)))
        stopping.start()
        wait_until(box._stopped.is_set, message="the stop to begin")
        release.set()
        stopping.join(15)
        assert stopped == ["outbox of payment: relayed"]
        assert [trip_id for _, trip_id, _ in broker.published] == ["first", "last"]
        assert _rows(database) == 0
    finally:
        release.set()
        box.stop(5)
        database.close()


def test_outbox_rows_are_relayed_by_one_replica_at_a_time_in_order():
    url = create_database()
    replicas = [Database(url), Database(url)]
    broker = Broker()
    boxes = [Outbox(database, broker, "payment") for database in replicas]
    first, second = boxes
    busy, release = threading.Event(), threading.Event()
    broker.answer = lambda message_id: (busy.set(), release.wait(10))
    relaying = threading.Thread(target=first.relay)
    try:
        for n in range(3):
            with replicas[n % 2].transaction():  # committed by either replica
                boxes[n % 2].publish(contract.PAYMENT_SESSION_CREATED, "r1", {"id": f"row-{n}"})
        relaying.start()
        wait_until(busy.is_set, message="the first replica to publish its first row")
        second.relay()  # returns at once: the first holds the lock
        release.set()
        relaying.join(15)
        assert [row for _, row, _ in broker.published] == ["row-0", "row-1", "row-2"]
        assert _rows(replicas[1]) == 0
    finally:
        release.set()
        if relaying.is_alive():
            relaying.join(15)
        for database in replicas:
            database.close()
        drop_database(url)


def _raise(exc):
    raise exc


def _rows(database):
    with database.transaction() as conn:
        return conn.execute(select(func.count()).select_from(outbox)).scalar()
