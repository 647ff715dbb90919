"""A gateway worker killed with SIGKILL (real gunicorn, 2 gevent workers),
seen from the phone, through real sockets only: what its rider gets on
reconnecting, on whichever worker, when the trip moved on meanwhile, and
what its driver gets when the request died with it."""
import os
import signal
from urllib.parse import urlsplit

import pytest

from ridesync import contract
from tests.ride import answer, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import gunicorn_worker_pids

def worker_holding(gateway, url, phone):
    """The pid of the gunicorn worker holding the server end of phone's socket."""
    client_port, server_port = phone.ws.sock.getsockname()[1], urlsplit(url).port
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                if (local, remote) == (server_port, client_port):
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in gunicorn_worker_pids(gateway):
        fds = f"/proc/{pid}/fd"
        try:
            if inodes & {os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)}:
                return pid
        except FileNotFoundError:  # a worker that died before
            continue
    raise AssertionError(f"no worker of the gateway holds the socket from port {client_port}")


def killed_under(ride, phone):
    """The worker holding phone's socket killed with SIGKILL; once the phone sees its socket end."""
    os.kill(worker_holding(ride.process("gateway"), ride.url, phone), signal.SIGKILL)
    assert phone.closed_or_reset(timeout=10)


def on_a_trip(ride):
    """A v2 rider on the ride's gateway and a v2 driver on a gateway of their
    own (out of the kill's way), the driver assigned: (rider id, rider, driver, trip)."""
    driver_url = ride.another_gateway(workers=1)
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, v2=True)
    driver = ride.driver("sedan", url=driver_url, v2=True)
    trip = ride.start_trip(rider_id, "sedan")
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
    return rider_id, rider, driver, trip


def step(driver, trip, command, event):
    driver.send(command, {"tripID": trip["id"]})
    assert driver.next(event)["data"]["status"]


def test_a_rider_whose_worker_was_killed_gets_the_trip_as_it_is_now_on_reconnecting(ride):
    rider_id, rider, driver, trip = on_a_trip(ride)
    killed_under(ride, rider)
    step(driver, trip, "driver.cmd.trip_arrived", "trip.event.driver_arrived")  # while the rider has no socket

    again = ride.rider(rider_id, v2=True)
    assert (again.state["id"], again.state["status"]) == (trip["id"], "arrived")
    step(driver, trip, "driver.cmd.trip_started", "trip.event.started")
    assert again.next("trip.event.started", timeout=15)["data"]["status"] == "in_progress"


def test_a_rider_whose_trip_ended_while_their_worker_was_dead_is_told_no_trip_is_current_and_reads_it(ride):
    rider_id, rider, driver, trip = on_a_trip(ride)
    killed_under(ride, rider)
    for command, event in (("driver.cmd.trip_arrived", "trip.event.driver_arrived"),
                           ("driver.cmd.trip_started", "trip.event.started"),
                           ("driver.cmd.trip_completed", contract.TRIP_COMPLETED)):
        step(driver, trip, command, event)

    # trip.event.completed died with the worker: no worker kept it, since the
    # rider's socket was on the dead one. What the trip is, the phone still learns.
    assert ride.rider(rider_id, v2=True).state is None
    status, body = ride.get(f"/trip/{trip['id']}", rider_id)
    assert status == 200 and body["data"]["status"] == "completed"


@pytest.mark.ride_env(OFFER_TIMEOUT="30")  # the offer stands while the driver reconnects
def test_a_driver_whose_worker_was_killed_while_asked_gets_the_request_in_trip_state_and_can_take_it(ride):
    rider_url = ride.another_gateway(workers=1)  # the rider out of the kill's way
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, url=rider_url, v2=True)
    driver = ride.driver("van", v2=True)
    trip = ride.start_trip(rider_id, "van")
    assert driver.next(contract.DRIVER_TRIP_REQUEST)["data"]["id"] == trip["id"]
    killed_under(ride, driver)

    again = ride.driver("van", user_id=driver.driver["id"], v2=True)
    assert (again.state["id"], again.state["status"]) == (trip["id"], "pending")
    answer(again, contract.DRIVER_TRIP_ACCEPT, again.state)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=15)["data"]["driver"]["id"] == driver.driver["id"]
