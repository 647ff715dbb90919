"""Restarting make run's services mid-ride (SQLite, the driver pool in
process): the ride goes on, every step of it, and the driver is free and
registered at the end."""
from ridesync import contract
from tests.ride import answer, new_id, ride  # noqa: F401,F811 (ride is a fixture)
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
