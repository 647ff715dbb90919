"""The original web client's pages (tests/original_pages.py), unmodified in
what they send and read, through whole rides: gunicorn with 2 gevent
workers, the three services, real RabbitMQ, open identity as the original.

ORIGINAL_CLIENT_RIDES (50) rides with a payment service that answers at
once (its session often published before the trip's driver_assigned), and
a fifth of that with one that takes 0.3 s; each ride reaching the rider's
payment step with the driver's "All set!" card kept."""
import os
import signal

import pytest
import requests

from ridesync import contract
from tests.original_pages import HOME, DriverPage, RiderPage
from tests.phone import Phone
from tests.ride import new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import bearer

RIDES = int(os.environ.get("ORIGINAL_CLIENT_RIDES", "50"))
AT_ONCE = 5  # rides under way together
DESTINATION = {"latitude": 37.7849, "longitude": -122.4094}
ON_THE_MAP = 0.02  # degrees: a point this far off the pickup-destination box is off the map drawn
QUIET = 1.0  # seconds the driver pages are watched after the last ride for a frame that would hide their card


def env(payment_latency="0"):
    return pytest.mark.ride_env(AUTH_MODE="open", OFFER_TIMEOUT="60", PAYMENT_LOCAL_LATENCY=payment_latency)


@pytest.mark.parametrize("rides", [
    pytest.param(RIDES, marks=env("0"), id="fast-payment"),
    pytest.param(max(1, RIDES // 5), marks=env("0.3"), id="slow-payment"),
])
def test_every_ride_of_the_original_pages_reaches_payment_with_the_drivers_card_kept(ride, rides):
    pages = []
    try:
        for start in range(0, rides, AT_ONCE):
            pages += rides_together(ride.url, min(AT_ONCE, rides - start))
        drivers = [driver for driver, _rider in pages]
        watch(drivers, QUIET)
        for driver in drivers:
            assert driver.seen == [contract.DRIVER_REGISTER, contract.DRIVER_TRIP_REQUEST], driver.seen
            assert driver.panel() == "All set!"
        for _driver, rider in pages:
            assert rider.panel() == "Payment Required" and rider.error is None
    finally:
        for page in (page for pair in pages for page in pair):
            page.close()


def rides_together(url, count):
    """count drivers online, count riders each choosing a sedan: every
    driver accepts what they are offered; each rider reaches payment with
    the driver who took their trip. [(driver page, rider page)]."""
    drivers = [DriverPage(url) for _ in range(count)]
    for driver in drivers:
        driver.wait_for(lambda driver=driver: driver.driver is not None)
    riders, trips = [RiderPage(url) for _ in range(count)], {}
    for rider in riders:
        fares = rider.click_map(DESTINATION)
        assert_on_the_map(rider.route)
        trips[rider.choose(next(f for f in fares if f["packageSlug"] == "sedan"))] = rider
    took = {}
    for driver in drivers:
        driver.wait_for(lambda driver=driver: driver.panel() == "Trip request received!")
        assert_on_the_map(driver.markers())
        driver.answer(contract.DRIVER_TRIP_ACCEPT)
        took[driver.trip["id"]] = driver
    assert set(took) == set(trips)
    for trip_id, rider in trips.items():
        rider.wait_for(lambda rider=rider: rider.panel() == "Payment Required")
        assert rider.payment_session["tripID"] == trip_id and rider.payment_session["amount"] > 0
        driver = took[trip_id]
        assert rider.assigned_driver is not None, "the payment step before driver_assigned: it will not last"
        assert {k: rider.assigned_driver[k] for k in ("id", "name", "carPlate")} == {
            k: driver.driver[k] for k in ("id", "name", "carPlate")}
        assert rider.seen.index(contract.TRIP_DRIVER_ASSIGNED) < rider.seen.index(contract.PAYMENT_SESSION_CREATED)
    return [(took[trip_id], rider) for trip_id, rider in trips.items()]


def assert_on_the_map(points):
    """[lat, lng] points as a page draws them, within the box of its pickup and destination."""
    assert points
    for lat, lng in points:
        assert min(HOME["latitude"], DESTINATION["latitude"]) - ON_THE_MAP <= lat \
            <= max(HOME["latitude"], DESTINATION["latitude"]) + ON_THE_MAP, (lat, lng)
        assert min(HOME["longitude"], DESTINATION["longitude"]) - ON_THE_MAP <= lng \
            <= max(HOME["longitude"], DESTINATION["longitude"]) + ON_THE_MAP, (lat, lng)


def watch(pages, seconds):
    """The pages left to their sockets a while: a frame that would change
    them has had the time to come (the issue's came within 90 ms)."""
    with pages[0].changed:
        pages[0].changed.wait(seconds)


@env()
def test_a_withdrawn_offer_and_a_decline_leave_the_original_driver_page_waiting_for_a_rider(ride):
    driver, riders = DriverPage(ride.url), []
    try:
        driver.wait_for(lambda: driver.driver is not None)
        rider = RiderPage(ride.url)  # its trip is cancelled from elsewhere (the page has no cancel of its own)
        riders.append(rider)
        trip_id = rider.choose(next(f for f in rider.click_map(DESTINATION) if f["packageSlug"] == "sedan"))
        driver.wait_for(lambda: driver.panel() == "Trip request received!")
        cancel = requests.post(f"{ride.url}/trip/cancel", json={"tripID": trip_id, "userID": rider.user_id}, timeout=15)
        assert cancel.status_code == 200, cancel.text
        driver.wait_for(lambda: driver.panel() == "Waiting for a rider...")

        rider = RiderPage(ride.url)  # the only driver declines: no drivers found
        riders.append(rider)
        rider.choose(next(f for f in rider.click_map(DESTINATION) if f["packageSlug"] == "sedan"))
        driver.wait_for(lambda: driver.panel() == "Trip request received!")
        driver.answer(contract.DRIVER_TRIP_DECLINE)
        rider.wait_for(lambda: rider.panel() == "No drivers found")
        assert driver.panel() == "Waiting for a rider..."

        rider = RiderPage(ride.url)  # and the page takes the next ride as its first
        riders.append(rider)
        trip_id = rider.choose(next(f for f in rider.click_map(DESTINATION) if f["packageSlug"] == "sedan"))
        driver.wait_for(lambda: driver.panel() == "Trip request received!" and driver.trip["id"] == trip_id)
        driver.answer(contract.DRIVER_TRIP_ACCEPT)
        rider.wait_for(lambda: rider.panel() == "Payment Required")
        assert driver.panel() == "All set!" and all(page.error is None for page in [driver, *riders])
    finally:
        for page in [driver, *riders]:
            page.close()


def test_a_v1_rider_that_reconnects_after_its_driver_is_assigned_gets_it_again_before_the_payment(ride):
    """On whichever worker the new socket lands, the payment session comes
    after a driver_assigned made from the trip read then. The payment
    service is held (SIGSTOP) until the new socket is open: a session
    written to the old socket is that socket's, and the new one is owed nothing."""
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan")
    trip = ride.start_trip(rider_id)
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    payment = ride.process("payment")
    payment.signal(signal.SIGSTOP)
    try:
        driver.send(contract.DRIVER_TRIP_ACCEPT, {"tripID": trip["id"], "riderID": rider_id, "driver": driver.driver})
        assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == request["id"]
        rider.close()
        again = Phone(ride.url, f"/ws/riders?userID={rider_id}", headers=bearer(rider_id))
    finally:
        payment.signal(signal.SIGCONT)
    try:
        assert again.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
        assert again.next(contract.PAYMENT_SESSION_CREATED)["data"]["tripID"] == trip["id"]
        assert again.seen == [contract.TRIP_DRIVER_ASSIGNED, contract.PAYMENT_SESSION_CREATED]
    finally:
        again.close()
