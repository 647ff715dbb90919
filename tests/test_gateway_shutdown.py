"""Stopping the gateway with real gunicorn and real signals: in-flight HTTP
requests get their answers, sockets get 1001 at once, drivers are
unregistered, and the worker leaves nothing on the broker."""
import json
import signal
import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests

from ridesync import contract
from ridesync.rabbit import Publisher
from tests.ride import new_id, ride  # noqa: F401,F811 (ride is a fixture)
from tests.support import AMQP_URL, DESTINATION_JSON, PICKUP_JSON, bearer, gunicorn_worker_pids, start_gateway, wait_until
from tests.test_live import gateway_connections, rabbitmqctl

def worker_queues(pids):
    """The names of these gateway workers' own queues on the broker."""
    vhost = urlsplit(AMQP_URL).path.lstrip("/") or "/"
    return [row["name"] for row in rabbitmqctl("list_queues", "-p", vhost, "name")
            if row["name"].startswith(contract.WORKER_QUEUE_PREFIX) and int(row["name"].split(".")[-2]) in pids]


# "Promptly": far inside the 10 s graceful timeout, with room for a loaded CI machine.
PROMPTLY = 3.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopping_gateway_answers_in_flight_requests_and_closes_sockets_going_away(ride, osrm, tmp_path, signum):
    gateway, url = start_gateway(ride.process_env, tmp_path, workers=2, name=f"stopping-{signum.name}")
    rider = ride.rider(url=url)
    driver = ride.driver("luxury", url=url)
    pids = gunicorn_worker_pids(gateway)
    workers = {f"gateway-{pid}" for pid in pids}
    assert {name for name, *_ in gateway_connections()} & workers, "the sockets' worker is on the broker"
    assert len(worker_queues(pids)) == 2

    idle = requests.Session()  # a keep-alive connection between two requests, as a browser keeps one
    assert idle.get(f"{url}/healthz", timeout=5).headers.get("Connection") != "close"

    osrm.mode, osrm.delay = "slow", 3.0
    preview = {}
    rider_id = new_id("rider")
    in_flight = threading.Thread(target=lambda: preview.update(response=requests.post(
        f"{url}/trip/preview", timeout=15, headers=bearer(rider_id),
        data=json.dumps({"userID": rider_id, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}))))
    in_flight.start()
    wait_until(lambda: osrm.requests, message="the preview to reach OSRM")

    gateway.signal(signum)
    assert rider.closed_with(timeout=PROMPTLY) == (1001, "server shutting down; reconnect")
    assert driver.closed_with(timeout=PROMPTLY) == (1001, "server shutting down; reconnect")

    in_flight.join(15)
    if signum is signal.SIGTERM:  # a quick stop (SIGINT) does not wait for slow requests
        assert preview["response"].status_code == 201
    # Neither the answered request's connection nor the idle one holds a worker to the graceful timeout.
    assert gateway.proc.wait(PROMPTLY) == 0
    assert gateway.output().count("Worker exiting") == 2, "the master killed a worker at the graceful timeout"
    idle.close()
    assert not {name for name, *_ in gateway_connections()} & workers, "the worker left connections behind"
    assert worker_queues(pids) == [], "a drained worker deletes its queue"
    drain_log = gateway.output()
    assert "connecting again" not in drain_log and "reconnecting" not in drain_log, "its own delete is no lost queue"

    # The driver is gone from DriverService: a trip for their package finds no one.
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    osrm.mode = "ok"
    ride.start_trip(rider_id, "luxury")
    assert rider.next(contract.TRIP_NO_DRIVERS_FOUND)


def test_a_gateway_stopped_while_its_workers_boot_exits_without_waiting_out_the_grace(ride, tmp_path):
    # A SIGTERM that reaches a worker before it installed its own handlers
    # must still stop it, not leave it serving until the master's SIGKILL at 10 s.
    for attempt in range(3):
        gateway, _url = start_gateway(ride.process_env, tmp_path, workers=2, name=f"booting-{attempt}")
        gateway.signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=8) == 0
        assert "Worker exiting" in gateway.output()


def test_a_worker_stopped_while_its_broker_connections_open_exits_without_waiting_out_its_drain(ride, tmp_path):
    # A deploy stopping a worker just booted: here its broker never answers, so the feed is still connecting.
    with socket.create_server(("127.0.0.1", 0)) as silent_broker:
        silent_broker.settimeout(20)
        broker_url = f"amqp://guest:guest@127.0.0.1:{silent_broker.getsockname()[1]}/%2F"
        gateway, _url = start_gateway({**ride.process_env, "AMQP_URL": broker_url}, tmp_path, name="silent-broker")
        feed, _ = silent_broker.accept()
        with feed:
            gateway.signal(signal.SIGTERM)
            assert gateway.proc.wait(timeout=PROMPTLY + 2) == 0, "a 9 s drain waited for a queue it never read"
    assert "queue kept, broker connections closed" in gateway.output()


@pytest.mark.ride_env(RECONNECT_WINDOW="30")  # the reconnect is quick; the window is not what this test is about
def test_a_socket_closed_by_the_drain_gets_every_event_once_and_in_order_on_another_gateway(ride):
    # Published just before SIGTERM to a phone that reads nothing until then,
    # the events are in every state when the drain cuts the socket: written
    # (into full TCP buffers), handed to it and not written (its `left`
    # carries them), or not yet read (kept for the rider by every worker).
    gateway, url = ride.replica(workers=1, name="gateway-drained")
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, url=url)
    sent = [f"drained-{n}" for n in range(200)]
    publisher = Publisher(AMQP_URL, "test")
    try:
        for trip_id in sent:
            publisher.publish(contract.TRIP_CREATED, rider_id, {"id": trip_id, "padding": "x" * 65536})
        gateway.signal(signal.SIGTERM)
        frames, code = rider.frames_until_closed(timeout=PROMPTLY + 10)
        assert code == 1001
        got = [f["data"]["id"] for f in frames if f["type"] == contract.TRIP_CREATED]

        back = ride.rider(rider_id)  # the ride's own gateway
        got += [back.next(contract.TRIP_CREATED, timeout=15)["data"]["id"] for _ in range(len(sent) - len(got))]
        assert got == sent
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "last"})
        assert back.next()["data"]["id"] == "last"  # nothing came twice before it
    finally:
        publisher.close()
    assert gateway.proc.wait(10) == 0
