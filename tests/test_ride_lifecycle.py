"""The trip's lifecycle end to end: gunicorn with 2 gevent workers, the
three services, real RabbitMQ, phones on real WebSockets (v2 unless a test
says v1), HTTP for the rider's reads and cancel."""
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ridesync import contract
from tests.ride import answer, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import SilentProxy, wait_until

WITHDRAWN = contract.DRIVER_TRIP_WITHDRAWN
# No offer here expires on its own (the fixture's 2 s would, on a loaded machine).
pytestmark = pytest.mark.ride_env(OFFER_TIMEOUT="60")
# The types the original web client knows (its contracts.ts, TripEvents), the
# commands it sends included: any other type replaces its page with an error.
ORIGINAL_TYPES = {
    "trip.event.no_drivers_found", "trip.event.driver_assigned", "trip.event.completed", "trip.event.cancelled",
    "trip.event.created", "driver.cmd.location", "driver.cmd.trip_request", "driver.cmd.trip_accept",
    "driver.cmd.trip_decline", "driver.cmd.register", "payment.event.session_created",
}


def step(driver, kind, trip, **data):
    driver.send(kind, {"tripID": trip["id"], **data})


def started_once_free(ride, rider_id, rider, driver):
    """A trip started, again while it finds no driver (DriverService hears
    that the driver's last trip ended shortly after the phones do), until
    it is offered to this driver: the trip."""
    for _ in range(5):
        trip = ride.start_trip(rider_id)
        frame = wait_until(lambda: driver.poll(contract.DRIVER_TRIP_REQUEST)
                           or rider.poll(contract.TRIP_NO_DRIVERS_FOUND), timeout=20, message="an answer to the start")
        if frame["type"] == contract.DRIVER_TRIP_REQUEST:
            assert frame["data"]["id"] == trip["id"]
            return trip
    raise AssertionError("the driver was not free again after 5 starts")


def assert_back_to_waiting(driver):
    """The original driver page's own state after a decline: `data?.trip ?? data` of this frame is null."""
    assert driver.next(contract.DRIVER_TRIP_REQUEST)["data"] is None


def offered_and_accepted(ride, rider_id, driver, package="sedan", **start):
    """A trip started by the rider, offered to this driver and accepted: the Trip the rider was told of."""
    trip = ride.start_trip(rider_id, package, **start)
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    assert request["id"] == trip["id"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)
    assert driver.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
    return trip


def test_a_whole_ride_to_completed_then_a_second_ride_on_the_same_socket(ride):
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id, v2=True), ride.driver(v2=True)
    assert rider.state is None and driver.state is None
    trip = offered_and_accepted(ride, rider_id, driver)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["driver"]["id"] == driver.driver["id"]
    session = rider.next(contract.PAYMENT_SESSION_CREATED)["data"]

    for kind, event, status in [(contract.DRIVER_TRIP_ARRIVED, contract.TRIP_DRIVER_ARRIVED, "arrived"),
                                (contract.DRIVER_TRIP_STARTED, contract.TRIP_STARTED, "in_progress"),
                                (contract.DRIVER_TRIP_COMPLETED, contract.TRIP_COMPLETED, "completed")]:
        step(driver, kind, trip)
        for phone in (rider, driver):
            told = phone.next(event)["data"]
            assert (told["id"], told["status"]) == (trip["id"], status)
    status, read = ride.get(f"/trip/{trip['id']}", rider_id)
    assert (status, read["data"]["status"]) == (200, "completed")
    assert read["data"]["payment"] == {k: session[k] for k in ("sessionID", "amount", "currency")}
    assert ride.get("/trip/current", driver.driver["id"])[0] == 404
    status, refused = ride.post("/trip/cancel", {"tripID": trip["id"], "userID": rider_id})
    assert (status, refused["error"]["code"]) == (409, "failed_precondition")
    assert ride.get("/trip/no-such-trip", rider_id)[0] == 404

    second = offered_and_accepted(ride, new_id("rider"), driver)
    assert second["id"] != trip["id"]
    assert "error" not in rider.seen + driver.seen


def test_a_rider_cancels_a_pending_trip_and_may_start_again_with_its_fare(ride):
    ride.process("driver").stop()  # nobody dispatches: the trip stays pending
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, v2=True)
    trip = ride.start_trip(rider_id)
    status, cancelled = ride.post("/trip/cancel", {"tripID": trip["id"], "userID": rider_id, "reason": "no hurry"})
    assert status == 200
    assert {k: cancelled["data"][k] for k in ("status", "cancelledBy", "reason")} == {
        "status": "cancelled", "cancelledBy": "rider", "reason": "no hurry"}
    assert rider.next(contract.TRIP_CANCELLED)["data"]["id"] == trip["id"]
    assert ride.post("/trip/cancel", {"tripID": trip["id"], "userID": rider_id})[0] == 200  # a repeat: no-op
    status, refused = ride.post("/trip/cancel", {"tripID": trip["id"], "userID": new_id("rider")})
    assert (status, refused["error"]["code"]) == (403, "permission_denied")
    again = ride.start_trip(rider_id, fare_id=trip["selectedFare"]["id"])
    assert again["id"] != trip["id"] and again["status"] == "pending"


def test_a_rider_cancelling_while_the_trip_is_offered_withdraws_the_offer(ride):
    rider_id, driver_id = new_id("rider"), new_id("driver")
    rider, driver = ride.rider(rider_id, v2=True), ride.driver("van", driver_id, v2=True)
    trip = ride.start_trip(rider_id, "van")
    assert driver.next(contract.DRIVER_TRIP_REQUEST)["data"]["id"] == trip["id"]
    # TripService records the offer as the driver is sent it: once it has, a
    # reconnecting app finds the offer in its trip.state.
    wait_until(lambda: ride.get("/trip/current", driver_id)[0] == 200, message="the offer in the driver's record")
    driver = ride.driver("van", driver_id, v2=True)
    assert (driver.state["id"], driver.state["status"]) == (trip["id"], "pending")
    assert ride.post("/trip/cancel", {"tripID": trip["id"], "userID": rider_id})[0] == 200
    assert driver.next(WITHDRAWN)["data"] == {"tripID": trip["id"], "reason": "cancelled"}
    assert rider.next(contract.TRIP_CANCELLED)["data"]["status"] == "cancelled"
    answer(driver, contract.DRIVER_TRIP_ACCEPT, trip)  # too late: the offer is gone
    assert driver.next("error")["data"]["code"] == "permission_denied"
    offered_and_accepted(ride, new_id("rider"), driver, "van")  # free again


def test_a_rider_cancelling_after_the_accept_tells_the_driver_voids_the_session_and_frees_the_driver(ride):
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id, v2=True), ride.driver("suv", v2=True)
    trip = offered_and_accepted(ride, rider_id, driver, "suv")
    session = rider.next(contract.PAYMENT_SESSION_CREATED)["data"]
    assert ride.post("/trip/cancel", {"tripID": trip["id"], "userID": rider_id})[0] == 200
    told = driver.next(contract.TRIP_CANCELLED)["data"]
    assert (told["id"], told["cancelledBy"]) == (trip["id"], "rider")
    wait_until(lambda: f"payment session {session['sessionID']} for trip {trip['id']} of rider {rider_id} voided"
               in ride.process("payment").output(), message="the session to be voided")
    offered_and_accepted(ride, new_id("rider"), driver, "suv")


def test_a_driver_cancelling_after_the_accept_tells_the_rider_and_the_fare_and_driver_are_free_again(ride):
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id, v2=True), ride.driver("luxury", v2=True)
    trip = offered_and_accepted(ride, rider_id, driver, "luxury")
    step(driver, contract.DRIVER_TRIP_ARRIVED, trip)
    step(driver, contract.DRIVER_TRIP_CANCEL, trip, reason="rider not at the pickup")
    told = rider.next(contract.TRIP_CANCELLED)["data"]
    assert (told["id"], told["cancelledBy"], told["reason"]) == (trip["id"], "driver", "rider not at the pickup")
    assert driver.next(contract.TRIP_CANCELLED)["data"]["id"] == trip["id"]
    # The rider starts again with the same fare, and the same driver is asked.
    offered_and_accepted(ride, rider_id, driver, "luxury", fare_id=trip["selectedFare"]["id"])


def test_no_drivers_found_ends_the_trip_and_gives_the_fare_back(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, v2=True)
    trip = ride.start_trip(rider_id, "luxury")
    told = rider.next(contract.TRIP_NO_DRIVERS_FOUND)["data"]
    assert (told["id"], told["status"]) == (trip["id"], "no_drivers_found")
    assert ride.get(f"/trip/{trip['id']}", rider_id)[1]["data"]["status"] == "no_drivers_found"
    assert ride.get("/trip/current", rider_id)[0] == 404
    ride.start_trip(rider_id, fare_id=trip["selectedFare"]["id"])


def test_steps_and_answers_by_a_driver_the_trip_is_not_for_are_refused(ride):
    rider_id = new_id("rider")
    rider, driver, other = ride.rider(rider_id, v2=True), ride.driver("van", v2=True), ride.driver("suv", v2=True)
    trip = ride.start_trip(rider_id, "van")
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    for _ in range(20):  # one socket declining a trip offered to someone else
        answer(other, contract.DRIVER_TRIP_DECLINE, request)
    answer(other, contract.DRIVER_TRIP_ACCEPT, request)
    refusals = [other.next("error")["data"] for _ in range(21)]
    assert {r["code"] for r in refusals} == {"permission_denied"}
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["driver"]["id"] == driver.driver["id"]

    step(other, contract.DRIVER_TRIP_ARRIVED, trip)
    assert other.next("error")["data"]["code"] == "permission_denied"
    step(driver, contract.DRIVER_TRIP_COMPLETED, trip)  # out of order
    assert driver.next("error")["data"]["code"] == "failed_precondition"
    assert ride.get(f"/trip/{trip['id']}", other.driver["id"])[0] == 403
    assert ride.get(f"/trip/{trip['id']}", rider_id)[1]["data"]["status"] == "accepted"
    step(driver, contract.DRIVER_TRIP_ARRIVED, trip)
    assert driver.next(contract.TRIP_DRIVER_ARRIVED)["data"]["status"] == "arrived"
    assert driver.seen.count(contract.DRIVER_TRIP_REQUEST) == 1


def test_a_driver_who_reconnects_mid_trip_stays_busy_and_gets_the_trip_state(ride):
    rider_id, driver_id = new_id("rider"), new_id("driver")
    driver = ride.driver("suv", driver_id, v2=True)
    trip = offered_and_accepted(ride, rider_id, driver, "suv")
    driver.close()
    back = ride.driver("suv", driver_id, v2=True)
    assert (back.state["id"], back.state["status"]) == (trip["id"], "accepted")
    other_rider = new_id("rider")
    rider = ride.rider(other_rider, v2=True)
    busy = ride.start_trip(other_rider, "suv")
    assert rider.next(contract.TRIP_NO_DRIVERS_FOUND)["data"]["id"] == busy["id"]
    step(back, contract.DRIVER_TRIP_ARRIVED, trip)
    assert back.next(contract.TRIP_DRIVER_ARRIVED)["data"]["id"] == trip["id"]
    assert contract.DRIVER_TRIP_REQUEST not in back.seen


def test_a_rider_whose_socket_died_silently_learns_the_trip_from_trip_state(ride):
    gateway = urlsplit(ride.url)
    proxy = SilentProxy((gateway.hostname, gateway.port))
    try:
        rider_id = new_id("rider")
        ride.rider(rider_id, url=proxy.url)  # the original client, through a network that will die
        driver = ride.driver("van", v2=True)
        proxy.stall()
        trip = ride.start_trip(rider_id, "van")
        wait_until(lambda: f"{contract.TRIP_CREATED} -> rider {rider_id}" in ride.gateway_log(),
                   message="trip.event.created written to the dead socket")
        answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
        wait_until(lambda: f"{contract.TRIP_DRIVER_ASSIGNED} -> rider {rider_id}" in ride.gateway_log(),
                   message="driver_assigned written to the dead socket")

        back = ride.rider(rider_id, v2=True)
        assert (back.state["id"], back.state["status"]) == (trip["id"], "accepted")
        assert back.state["driver"]["id"] == driver.driver["id"]
    finally:
        proxy.close()


def test_the_original_clients_frames_through_whole_rides_get_only_types_it_knows(ride):
    """v1 sockets, sending exactly what the original web client sends."""
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan")
    rider.send(contract.DRIVER_LOCATION, {"location": {"latitude": 37.77, "longitude": -122.41}})
    driver.send(contract.DRIVER_LOCATION, {"location": {"latitude": 37.771, "longitude": -122.411},
                                           "geohash": "9q8yyk8yt"})

    declined = ride.start_trip(rider_id)  # the only driver declines: no drivers found
    assert rider.next(contract.TRIP_CREATED)["data"]["id"] == declined["id"]
    answer(driver, contract.DRIVER_TRIP_DECLINE, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    assert rider.next(contract.TRIP_NO_DRIVERS_FOUND)["data"]["id"] == declined["id"]

    trip = ride.start_trip(rider_id, fare_id=declined["selectedFare"]["id"])  # accepted and driven to the end
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)  # twice: no error frame either way
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED)["data"]["tripID"] == trip["id"]
    step(driver, contract.DRIVER_TRIP_COMPLETED, trip)  # out of order: refused, and v1 is not told
    for kind in (contract.DRIVER_TRIP_ARRIVED, contract.DRIVER_TRIP_STARTED, contract.DRIVER_TRIP_COMPLETED):
        step(driver, kind, trip)
    driver.send_raw("not json")
    assert rider.next(contract.TRIP_COMPLETED)["data"]["id"] == trip["id"]
    assert_back_to_waiting(driver)

    offered = started_once_free(ride, rider_id, rider, driver)  # cancelled while offered: back to waiting
    assert ride.post("/trip/cancel", {"tripID": offered["id"], "userID": rider_id})[0] == 200
    assert rider.next(contract.TRIP_CANCELLED)["data"]["id"] == offered["id"]
    assert_back_to_waiting(driver)

    cancelled = started_once_free(ride, rider_id, rider, driver)  # cancelled by the rider after the accept
    answer(driver, contract.DRIVER_TRIP_ACCEPT, cancelled)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == cancelled["id"]
    assert ride.post("/trip/cancel", {"tripID": cancelled["id"], "userID": rider_id})[0] == 200
    assert rider.next(contract.TRIP_CANCELLED)["data"]["id"] == cancelled["id"]
    assert_back_to_waiting(driver)

    for phone in (rider, driver):
        while phone.poll(timeout=0.5) is not None:
            pass
        assert set(phone.seen) <= ORIGINAL_TYPES, set(phone.seen) - ORIGINAL_TYPES
    assert driver.seen.count(contract.DRIVER_REGISTER) == 1
    # Not answered, but counted: the refused step and the frame that is not JSON.
    rejected = {s.labels["reason"]: s.value for f in text_string_to_metric_families(
        requests.get(f"{ride.url}/metrics", timeout=5).text) if f.name == "ridesync_gateway_frames_rejected"
        for s in f.samples if s.name.endswith("_total")}
    assert rejected.get("failed_precondition", 0) >= 1 and rejected.get("invalid_json", 0) >= 1
