"""A gateway worker killed with SIGKILL (real gunicorn, 2 gevent workers),
seen from the phone, through real sockets only: what its rider gets on
reconnecting, on whichever worker, when the trip moved on meanwhile, and
what its driver gets when the request died with it; the same for the
original web client's pages (v1, no `trip.state`), and what they get back
within the reconnect window when no worker died."""
import os
import signal
from urllib.parse import urlsplit

import pytest
import requests

from ridesync import contract
from tests.original_pages import DriverPage, RiderPage
from tests.ride import answer, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import gunicorn_worker_pids, sockets_of, tcp_sockets, wait_until

DESTINATION = {"latitude": 37.7849, "longitude": -122.4094}
PAGES = pytest.mark.ride_env(AUTH_MODE="open", OFFER_TIMEOUT="30")  # the pages send no token

def worker_holding(gateway, url, phone):
    """The pid of the gunicorn worker holding the server end of phone's socket."""
    client_port = phone.ws.sock.getsockname()[1]
    server_end = tcp_sockets(local_port=urlsplit(url).port, remote_port=client_port)
    for pid in gunicorn_worker_pids(gateway):
        if server_end & sockets_of(pid):
            return pid
    raise AssertionError(f"no worker of the gateway holds the socket from port {client_port}")


def killed_under(ride, phone, ended=None):
    """The worker holding phone's socket killed with SIGKILL; once the phone
    sees its socket end (ended(timeout), of a page reading it, or the phone's own)."""
    os.kill(worker_holding(ride.process("gateway"), ride.url, phone), signal.SIGKILL)
    assert (ended or phone.closed_or_reset)(timeout=10)


def killed_under_page(ride, page):
    killed_under(ride, page.phone, page.ended)


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


@pytest.fixture
def pages():
    """Pages to open; closed after the test."""
    opened = []
    yield lambda page: opened.append(page) or page
    for page in opened:
        page.close()


def sedan_chosen(rider):
    return rider.choose(next(f for f in rider.click_map(DESTINATION) if f["packageSlug"] == "sedan"))


def paid(ride, trip_id, rider):
    """Once the trip record has its payment session: the driver_assigned and session_created published before."""
    wait_until(lambda: "payment" in ride.get(f"/trip/{trip_id}", rider.user_id)[1]["data"], timeout=15,
               message=f"trip {trip_id}'s payment session")


def rides_to_the_end(driver, trip_id, rider):
    """The driver's steps to the end (the rider page takes only the last one's frame, and ignores it)."""
    for step in ("arrived", "started", "completed"):
        driver.send(f"driver.cmd.trip_{step}", {"tripID": trip_id})
    rider.wait_for(lambda: rider.seen[-1] == contract.TRIP_COMPLETED)


def away_while_assigned(ride, pages, away):
    """A rider page on the ride's gateway and a driver page on one of their
    own: the rider's socket ended by away(rider), then the driver accepts and
    the payment session is made; the rider page's socket opened again. Every
    frame the rider page got from then on, once the ride ended."""
    rider = pages(RiderPage(ride.url))
    driver = pages(DriverPage(ride.another_gateway(workers=1)))
    driver.wait_for(lambda: driver.driver is not None)
    trip_id = sedan_chosen(rider)
    rider.wait_for(lambda: rider.panel() == "Looking for a driver")
    driver.wait_for(lambda: driver.panel() == "Trip request received!")
    away(rider)
    driver.answer(contract.DRIVER_TRIP_ACCEPT)
    paid(ride, trip_id, rider)

    before = len(rider.seen)
    rider.reconnect()
    rider.wait_for(lambda: rider.panel() == "Payment Required", timeout=20)
    assert rider.assigned_driver["id"] == driver.driver["id"] and rider.payment_session["tripID"] == trip_id
    rides_to_the_end(driver, trip_id, rider)
    return rider.seen[before:]


BACK_AT_PAYMENT = [contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_SESSION_CREATED, contract.TRIP_COMPLETED]


@PAGES
def test_a_v1_rider_page_whose_worker_was_killed_before_its_driver_came_is_brought_to_the_payment_once(ride, pages):
    # driver_assigned and session_created died with the worker: the page is
    # written them from the trip record, once, then what comes.
    assert away_while_assigned(ride, pages, lambda rider: killed_under_page(ride, rider)) == BACK_AT_PAYMENT


@PAGES
def test_a_v1_rider_page_back_within_the_reconnect_window_is_handed_what_it_missed_once(ride, pages):
    def closed(rider):
        rider.close()
        assert rider.ended()
    assert away_while_assigned(ride, pages, closed) == BACK_AT_PAYMENT


@PAGES
def test_a_v1_driver_page_whose_worker_was_killed_while_its_trip_was_cancelled_waits_for_a_rider_again(ride, pages):
    rider_url = ride.another_gateway(workers=1)  # the rider out of the kill's way
    rider, driver = pages(RiderPage(rider_url)), pages(DriverPage(ride.url))
    driver.wait_for(lambda: driver.driver is not None)
    trip_id = sedan_chosen(rider)
    driver.wait_for(lambda: driver.panel() == "Trip request received!")
    driver.answer(contract.DRIVER_TRIP_ACCEPT)
    rider.wait_for(lambda: rider.panel() == "Payment Required")
    killed_under_page(ride, driver)
    cancel = requests.post(f"{rider_url}/trip/cancel", json={"tripID": trip_id, "userID": rider.user_id}, timeout=15)
    assert cancel.status_code == 200, cancel.text

    before = len(driver.seen)
    driver.reconnect()
    driver.wait_for(lambda: driver.panel() == "Waiting for a rider...", timeout=20)
    assert driver.seen[before:] == [contract.DRIVER_REGISTER, contract.DRIVER_TRIP_REQUEST]


@PAGES
def test_a_v1_driver_page_whose_worker_was_killed_before_its_request_came_is_shown_it_and_takes_it(ride, pages):
    rider_url = ride.another_gateway(workers=1)
    rider, driver = pages(RiderPage(rider_url)), pages(DriverPage(ride.url))
    driver.wait_for(lambda: driver.driver is not None)
    killed_under_page(ride, driver)  # still registered: the offer goes to the socket that died
    trip_id = sedan_chosen(rider)
    wait_until(lambda: ride.get("/trip/current", driver.user_id)[0] == 200, timeout=15, message="the offer")

    driver.reconnect()
    driver.wait_for(lambda: driver.panel() == "Trip request received!", timeout=20)
    assert driver.trip["id"] == trip_id
    driver.answer(contract.DRIVER_TRIP_ACCEPT)
    rider.wait_for(lambda: rider.panel() == "Payment Required")
    assert rider.assigned_driver["id"] == driver.user_id
