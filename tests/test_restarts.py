"""Restarting make run's services mid-ride (SQLite, the driver pool in
process): the ride goes on, every step of it, and the driver is free and
registered at the end."""
import pytest
import websocket

from ridesync import contract
from tests.ride import answer, new_id, ride  # noqa: F401,F811 (ride is a fixture)
from tests.service_support import purge_queues
from tests.support import wait_until

STEPS = {"driver.cmd.trip_arrived": "trip.event.driver_arrived", "driver.cmd.trip_started": "trip.event.started",
         "driver.cmd.trip_completed": contract.TRIP_COMPLETED}


def drive_to_the_end(rider, driver, trip):
    """Each step sent by the driver's (v2) app until it is done, again after
    an `error` frame, as an app would while a service restarts."""
    for step, event in STEPS.items():
        driver.send(step, {"tripID": trip["id"]})
        wait_until(lambda: driver.poll(event) or (driver.poll("error") and driver.send(step, {"tripID": trip["id"]})),
                   timeout=20, message=f"{event} after {step}")
    assert rider.next(contract.TRIP_COMPLETED, timeout=20)["data"]["id"] == trip["id"]


def assert_free_and_registered(ride, driver):
    """The driver gets the next rider's request on the same socket (the rider
    tries again while DriverService has not yet heard that the last trip ended)."""
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)

    trip = None
    for _ in range(5):
        trip = ride.start_trip(rider_id, "sedan")
        request = wait_until(lambda: driver.poll(contract.DRIVER_TRIP_REQUEST)
                             or rider.poll(contract.TRIP_NO_DRIVERS_FOUND), timeout=20, message="an answer to the start")
        if request["type"] == contract.DRIVER_TRIP_REQUEST:
            break
    assert request["data"]["id"] == trip["id"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, trip)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["driver"]["id"] == driver.driver["id"]


def test_the_driver_service_restarted_mid_ride(ride):
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan", v2=True)
    trip = ride.start_trip(rider_id, "sedan")
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]

    restarted = ride.restart("driver")  # its pool was in its memory: empty now
    wait_until(lambda: f"driver {driver.driver['id']} registered" in restarted.output(), timeout=15,
               message="the gateway to register the driver again")
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["id"] == trip["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED, timeout=20)["data"]["tripID"] == trip["id"]
    drive_to_the_end(rider, driver, trip)
    assert_free_and_registered(ride, driver)


def reconnected(ride, driver_id):
    """The driver's app on a new socket, or None while the gateway answers
    503 (DriverService not back within the call deadline): the app tries again."""
    try:
        return ride.driver("sedan", user_id=driver_id, v2=True)
    except websocket.WebSocketBadStatusException as exc:
        if exc.status_code != 503:
            raise
        return None


def registration(process, driver_id):
    """DriverService's latest log line registering the driver, or None."""
    lines = [line for line in process.output().splitlines() if f"driver {driver_id} registered for" in line]
    return lines[-1] if lines else None


@pytest.mark.parametrize("back", ["registered again by the gateway", "on a new socket"])
def test_a_driver_on_a_trip_is_offered_nothing_else_after_the_driver_service_is_killed(ride, back):
    """The restarted DriverService learns the driver's trip from TripService
    however they come back, and frees them when it ends."""
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan", v2=True)
    driver_id, trip = driver.driver["id"], ride.start_trip(rider_id, "sedan")
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["id"] == trip["id"]

    if back == "on a new socket":
        driver.close()
    # Its pool was in its memory: empty now. What it had in hand of who is
    # busy is gone too, as if handled (a crash mid-ride, not at the accept);
    # otherwise the accept, delivered again, would make the driver busy.
    restarted = ride.restart("driver", kill=True, meanwhile=lambda: purge_queues(contract.DRIVER_AVAILABILITY))
    if back == "on a new socket":
        driver = wait_until(lambda: reconnected(ride, driver_id), timeout=15, message=f"driver {driver_id} back")
        assert driver.state["id"] == trip["id"]
    line = wait_until(lambda: registration(restarted, driver_id), timeout=15, message=f"driver {driver_id} {back}")
    assert f"on trip {trip['id']}" in line

    unserved_rider = new_id("rider")  # no other sedan driver: no one
    unserved_phone = ride.rider(unserved_rider)
    unserved = ride.start_trip(unserved_rider, "sedan")
    assert unserved_phone.next(contract.TRIP_NO_DRIVERS_FOUND, timeout=20)["data"]["id"] == unserved["id"]
    assert f"no sedan driver left for trip {unserved['id']} of rider {unserved_rider} (0 declined it)" in restarted.output()

    served_id, other = new_id("rider"), ride.driver("sedan", v2=True)  # another sedan driver, free: them
    served_rider = ride.rider(served_id)
    served = ride.start_trip(served_id, "sedan")
    assert other.next(contract.DRIVER_TRIP_REQUEST, timeout=20)["data"]["id"] == served["id"]
    answer(other, contract.DRIVER_TRIP_ACCEPT, served)
    assert served_rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["driver"]["id"] == other.driver["id"]
    assert f"asked driver {driver_id}" not in restarted.output()

    drive_to_the_end(rider, driver, trip)
    assert_free_and_registered(ride, driver)


def test_the_trip_service_killed_mid_ride(ride):
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan", v2=True)
    trip = ride.start_trip(rider_id, "sedan")
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]

    # Its trips are in the SQLite file; the accept waits on the broker meanwhile.
    ride.restart("trip", kill=True, meanwhile=lambda: answer(driver, contract.DRIVER_TRIP_ACCEPT, request))
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)["data"]["id"] == trip["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED, timeout=20)["data"]["tripID"] == trip["id"]
    drive_to_the_end(rider, driver, trip)
    assert_free_and_registered(ride, driver)
