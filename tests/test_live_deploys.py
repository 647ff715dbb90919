"""The live side through deploys and rushes: a rider away while every
gateway worker is replaced gets, on their return within the reconnect
window, every event published meanwhile, once and in order; riders who
connect while events are published for them lose none; a new worker holds
its own queue before its first socket comes."""
import os
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from ridesync import contract
from ridesync.rabbit import Publisher
from tests.ride import new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import AMQP_URL, gunicorn_worker_pids, wait_until
from tests.test_live import rabbitmqctl

WINDOW = "20"  # seconds: room for a deploy on a loaded machine


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def publish(publisher, rider_id, names):
    for name in names:
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": name})


def rolling_restart(gateway):
    """gunicorn's HUP: new workers boot, then the old ones drain and exit."""
    old = gunicorn_worker_pids(gateway)
    gateway.signal(signal.SIGHUP)
    wait_until(lambda: len(gunicorn_worker_pids(gateway)) >= 2 * len(old) and not any(map(alive, old)),
               timeout=30, interval=0.2, message="every worker to be replaced")


def stop_and_start(ride, gateway, publisher, rider_id):
    gateway.stop()
    publish(publisher, rider_id, ["while-stopped"])  # no gateway runs at all
    return ride.replica(workers=2, name="gateway-started-again", RECONNECT_WINDOW=WINDOW)[1]


@pytest.mark.parametrize("deploy", ["rolling restart (HUP)", "full stop and start"])
def test_a_rider_away_during_a_deploy_gets_every_event_once_and_in_order(ride, deploy):
    gateway, url = ride.replica(workers=2, name="gateway-deployed", RECONNECT_WINDOW=WINDOW)
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, url)
    publisher = Publisher(AMQP_URL, "test")
    try:
        publish(publisher, rider_id, ["while-connected"])
        assert rider.next(contract.TRIP_CREATED)["data"]["id"] == "while-connected"
        rider.close()
        before = [f"before-deploy-{n}" for n in range(3)]
        publish(publisher, rider_id, before)
        if deploy == "rolling restart (HUP)":
            rolling_restart(gateway)
            during = []
        else:
            url = stop_and_start(ride, gateway, publisher, rider_id)
            during = ["while-stopped"]
        after = [f"after-deploy-{n}" for n in range(3)]
        publish(publisher, rider_id, after)

        back = ride.rider(rider_id, url)
        got = [back.next(contract.TRIP_CREATED, timeout=15)["data"]["id"] for _ in range(len(before + during + after))]
        assert got == before + during + after
        publish(publisher, rider_id, ["last"])
        assert back.next()["data"]["id"] == "last"  # nothing came twice before it
    finally:
        publisher.close()


def test_riders_connecting_in_a_rush_while_their_events_are_published_lose_none(ride):
    """Every event published for a rider once their socket is open reaches
    it, in order, once: no socket opens before its delivery path exists."""
    riders = [new_id("rider") for _ in range(int(os.environ.get("RUSH_RIDERS", "40")))]
    opened = {}  # rider id -> (phone, time its upgrade completed)
    publisher = Publisher(AMQP_URL, "test")
    published = []  # (time, rider id, n), in publish order
    rounds = []  # one entry per round of publishes finished
    stop = threading.Event()

    def publish_all_the_while():
        n = 0
        while not stop.is_set():
            for rider_id in riders:
                published.append((time.monotonic(), rider_id, n))
                publisher.publish(contract.TRIP_CREATED, rider_id, {"id": f"{rider_id}/{n}"})
            rounds.append(n)
            n += 1

    def connect(rider_id):
        phone = ride.rider(rider_id)
        opened[rider_id] = (phone, time.monotonic())

    feeder = threading.Thread(target=publish_all_the_while)
    feeder.start()
    try:
        connecting = [threading.Thread(target=connect, args=(rider_id,)) for rider_id in riders]
        for thread in connecting:
            thread.start()
        for thread in connecting:
            thread.join(30)
        after = len(rounds) + 2  # a whole round of publishes starts after the last socket opened
        wait_until(lambda: len(rounds) >= after, timeout=60, message="two more rounds of publishes")
    finally:
        stop.set()
        feeder.join(30)
        publisher.close()
    assert len(opened) == len(riders)

    for rider_id, (phone, upgraded) in opened.items():
        owed = [n for at, owner, n in published if owner == rider_id and at > upgraded]
        assert owed, "events were published after every socket opened"
        got = []
        while not got or got[-1] != owed[-1]:
            got.append(int(phone.next(contract.TRIP_CREATED, timeout=15)["data"]["id"].rsplit("/", 1)[1]))
        assert got == sorted(set(got)), f"{rider_id}: out of order or twice: {got}"
        assert set(owed) <= set(got), f"{rider_id} lost {sorted(set(owed) - set(got))}"


def test_a_new_worker_declares_its_queue_before_its_first_socket_or_request(ride):
    gateway, _url = ride.replica(workers=1, name="gateway-booted")
    [worker] = gunicorn_worker_pids(gateway)
    own = f"{contract.WORKER_QUEUE_PREFIX}{socket.gethostname()}.{worker}."
    vhost = urlsplit(AMQP_URL).path.lstrip("/") or "/"
    wait_until(lambda: any(row["name"].startswith(own) for row in rabbitmqctl("list_queues", "-p", vhost, "name")),
               timeout=20, interval=0.2, message="the booted worker's own queue, with nothing asked of it")
