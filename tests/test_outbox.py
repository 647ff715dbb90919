"""State changes and what they publish, across crashes and replicas: a
message handled once whichever replica gets it, and what a process
committed published even when it is killed before it could publish."""
import os
import signal
import subprocess
import sys
import threading
import time

import pika
import pytest
from sqlalchemy import func, select

from ridesync import contract
from ridesync.database import Database
from ridesync.tables import outbox
from tests.databases import create_database, drop_database
from tests.service_support import about_trip, next_matching, publish_raw, purge_queues, unique
from tests.support import ROOT, start_trip_service, wait_until


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


# A trip service's accept, in a process killed with SIGKILL right after the
# commit: the outbox rows are committed, the relay never ran.
KILLED_AFTER_COMMIT = """
import os, signal, sys
from ridesync.ride.model import Coordinate
from ridesync.settings import Settings
from ridesync.trip.server import build

trips, database, outbox, publisher = build(Settings.from_env())
rider, driver = sys.argv[1], sys.argv[2]
_route, fares = trips.preview(rider, Coordinate(37.77, -122.41), Coordinate(37.79, -122.39))
trip = trips.create_trip(fares[0].id, rider)
trips.record_offer(trip.id, driver)
database.handle_once("driver_trip_response", "accept-" + trip.id, lambda: trips.accept(trip.id, {"id": driver}))
print(trip.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_a_killed_process_committed_is_published_by_the_next_one(database_url, tmp_path, osrm, amqp_tap):
    purge_queues(contract.DRIVER_TRIP_RESPONSE)
    rider, driver = unique("rider"), unique("driver")
    tap = amqp_tap(contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_CREATE_SESSION)
    env = {"DATABASE_URL": database_url, "OSRM_ENABLED": "false"}
    victim = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, rider, driver], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    trip_id = victim.stdout.strip()
    database = Database(database_url)
    assert _rows(database) == 3  # committed with the accept, never published
    assert tap.empty()

    service = start_trip_service(osrm, tmp_path, name="trip-after", **env)
    try:
        sent = {(key, message["ownerId"]): message["data"]
                for key, _, message in (next_matching(tap, about_trip(trip_id)) for _ in range(3))}
        for owner in (rider, driver):
            assert sent[(contract.TRIP_DRIVER_ASSIGNED, owner)]["driver"] == {"id": driver}
        assert sent[(contract.PAYMENT_CREATE_SESSION, rider)]["tripID"] == trip_id
        wait_until(lambda: _rows(database) == 0, message="the outbox to be emptied")

        # The same accept delivered again (the broker never got its ack): handled once.
        body = contract.envelope(driver, {"tripID": trip_id, "riderID": rider, "driver": {"id": driver}})
        publish_raw(contract.DRIVER_TRIP_ACCEPT, body, pika.BasicProperties(message_id="accept-" + trip_id))
        wait_until(lambda: f"drops a second copy of {contract.DRIVER_TRIP_ACCEPT} accept-{trip_id}" in service.output(),
                   message="the second copy to be dropped")
        assert tap.empty()
    finally:
        service.stop()
        database.close()


def _rows(database):
    with database.transaction() as conn:
        return conn.execute(select(func.count()).select_from(outbox)).scalar()
