"""A driver's answer that overtook its offer, on two TripService replicas
sharing a PostgreSQL database: it waits for the offer with no transaction
open, and wakes when the other replica commits the offer (NOTIFY), not
after a poll; an offer that never comes has the answer refused."""
import threading

import psycopg
import pytest

from ridesync import contract
from ridesync.database import Database
from ridesync.driver.pool import new_driver
from ridesync.trip.awaited_offers import AwaitedOffers
from ridesync.trip.intake import Intake
from ridesync.trip.service import TripService
from ridesync.trip.sql_store import SqlTripStore
from tests.databases import create_database, drop_database
from tests.service_support import RecordingPublisher, trip
from tests.support import wait_until
from tests.private_servers import postgres  # noqa: F401 (a fixture: a PostgreSQL cluster of the test's own)

DRIVER = new_driver("d1", "sedan").to_json()  # as the gateway sends an answer on
LONG_WAIT = 60.0  # seconds: an answer woken by a poll or its deadline would not finish within the tests' deadlines


class Replica:
    """A TripService as trip/server.py builds it, minus gRPC and AMQP: its intake
    handles a message as the consumer would (AwaitedOffers.handle_once)."""

    def __init__(self, url, wait):
        self.database = Database(url)
        self.offers = AwaitedOffers(self.database, wait=wait).start()
        self.store = SqlTripStore(self.database)
        self.published = RecordingPublisher()
        self._intake = Intake(TripService(None, self.store, self.published, transaction=self.database.transaction,
                                          offers=self.offers))

    def take(self, routing_key, owner_id, data, message_id):
        return self.offers.handle_once(contract.DRIVER_TRIP_RESPONSE, message_id,
                                       lambda: self._intake.handle(routing_key, owner_id, data))

    def close(self):
        self.offers.stop(5)
        self.database.close()


@pytest.fixture
def database_url():
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
def replicas(database_url):
    made = []

    def make(wait=LONG_WAIT):
        made.append(Replica(database_url, wait))
        return made[-1]

    yield make
    for replica in made:
        replica.close()


def open_transactions(url):
    """The other sessions of the database that are inside a transaction."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()").fetchone()[0]


def answering(replica, trip_id):
    """The driver's accept, taken by replica in a thread of its own (its consumer's)."""
    done = threading.Thread(target=replica.take, args=(
        contract.DRIVER_TRIP_ACCEPT, "d1", {"tripID": trip_id, "riderID": "r1", "driver": DRIVER}, f"accept-{trip_id}"))
    done.start()
    return done


def test_an_answer_that_overtook_its_offer_waits_without_a_transaction_and_wakes_at_its_commit(replicas, database_url):
    recording, answering_replica = replicas(), replicas()
    recording.store.save_trip(pending := trip(trip_id="t-overtaken"))

    answer = answering(answering_replica, pending.id)
    wait_until(lambda: pending.id in answering_replica.offers.waiting(), message="the answer to wait for its offer")
    assert open_transactions(database_url) == 0

    recording.take(contract.DRIVER_TRIP_REQUEST, "d1", pending.to_json(), "offer-t-overtaken")
    answer.join(15)
    assert not answer.is_alive(), "the answer was not woken by the offer's commit"
    assert recording.store.trip(pending.id).driver_id == "d1"
    assert [key for key, _, _ in answering_replica.published.take()] == [
        contract.PAYMENT_CREATE_SESSION, contract.TRIP_DRIVER_ASSIGNED, contract.TRIP_DRIVER_ASSIGNED]


def test_an_answer_whose_offer_never_comes_is_refused_after_its_wait(replicas, database_url):
    answering_replica = replicas(wait=0.2)
    answering_replica.store.save_trip(pending := trip(trip_id="t-never-offered"))

    answer = answering(answering_replica, pending.id)
    wait_until(lambda: pending.id in answering_replica.offers.waiting() or not answer.is_alive(),
               message="the answer to wait for its offer")
    assert open_transactions(database_url) == 0
    answer.join(15)
    assert not answer.is_alive()
    assert answering_replica.store.trip(pending.id).driver_id is None
    assert [key for key, _, _ in answering_replica.published.take()] == [contract.DRIVER_ANSWER_REFUSED]


def test_after_a_postgresql_restart_an_answer_still_wakes_at_its_offers_commit(postgres):  # noqa: F811
    recording, answering_replica = Replica(postgres.url, LONG_WAIT), Replica(postgres.url, LONG_WAIT)
    try:
        wait_until(lambda: answering_replica.offers.listens == 1, message="the replica to listen")
        postgres.restart()
        wait_until(lambda: answering_replica.offers.listens == 2, message="the replica to listen again")
        recording.store.save_trip(pending := trip(trip_id="t-after-restart"))

        answer = answering(answering_replica, pending.id)
        wait_until(lambda: pending.id in answering_replica.offers.waiting(), message="the answer to wait")
        recording.take(contract.DRIVER_TRIP_REQUEST, "d1", pending.to_json(), "offer-t-after-restart")
        answer.join(15)
        assert not answer.is_alive(), "the answer was not woken by the offer's commit"
        assert recording.store.trip(pending.id).driver_id == "d1"
    finally:
        for replica in (recording, answering_replica):
            replica.close()
