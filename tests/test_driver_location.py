"""The rider sees the driver coming (issue 15, part 1), end to end: real
gunicorn with gevent workers, the three services, RabbitMQ, real sockets,
OSRM a loopback HTTP server that answers or fails."""
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ridesync import contract
from tests.phone import Phone
from tests.ride import answer, new_id, ride, start_trip  # noqa: F401
from tests.test_replicas import cluster  # noqa: F401 (a fixture: two replicas of each service, on Redis)
from tests.service_support import purge_queues
from tests.support import DESTINATION_JSON, PICKUP_JSON, wait_until

pytestmark = pytest.mark.ride_env(OFFER_TIMEOUT="60")
LOCATION = contract.TRIP_DRIVER_LOCATION


def north(metres):
    return {"latitude": PICKUP_JSON["latitude"] + metres / 111_195, "longitude": PICKUP_JSON["longitude"]}


def on_a_trip(ride, rider_v2=True):
    """(rider phone, driver phone, trip): a v2 driver has accepted the rider's trip."""
    rider_id = new_id("rider")
    rider = ride.rider(rider_id, v2=rider_v2)
    driver = ride.driver(v2=True)
    trip = ride.start_trip(rider_id)
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    rider.next(contract.TRIP_DRIVER_ASSIGNED)
    driver.next(contract.TRIP_DRIVER_ASSIGNED)
    followed(ride, trip, "accepted")
    return rider, driver, trip


def followed(ride, trip, status):
    """Waits until DriverService knows the trip is in this status: the
    phones hear of a step from the gateway's feed, DriverService from its
    own queue, and a fix sent in between would still count for the step before."""
    line = f"trip {trip['id']} of rider {trip['userID']} is {status}"
    wait_until(lambda: line in ride.process("driver").output(), timeout=10, message=line)


def drive(driver, where):
    driver.send(contract.DRIVER_LOCATION, {"location": where})


def step(ride, driver, rider, trip, kind, event):
    driver.send(kind, {"tripID": trip["id"]})
    driver.next(event)
    rider.next(event)
    followed(ride, trip, {contract.TRIP_DRIVER_ARRIVED: "arrived", contract.TRIP_STARTED: "in_progress"}[event])


def osrm_target(osrm):
    """The point the last OSRM request asked a route to."""
    lon, lat = osrm.requests[-1].split("/route/v1/driving/")[1].split("?")[0].split(";")[1].split(",")
    return {"latitude": float(lat), "longitude": float(lon)}


def test_the_rider_sees_the_car_come_to_the_pickup_then_drive_to_the_destination(ride, osrm):
    rider, driver, trip = on_a_trip(ride)
    drive(driver, north(1000))
    first = rider.next(LOCATION)["data"]
    assert (first["tripID"], first["heading"], first["location"]) == (trip["id"], None, north(1000))
    assert (first["etaSeconds"], first["distanceMeters"]) == (600, 4200)  # what OSRM answered
    assert "estimated" not in first and osrm_target(osrm) == PICKUP_JSON

    drive(driver, north(900))  # within ETA_REFRESH: OSRM's answer, less the 100 m driven
    second = rider.next(LOCATION)["data"]
    assert (second["distanceMeters"], second["etaSeconds"], second["heading"]) == (4100, 586, 180.0)
    assert second["at"] > first["at"]

    step(ride, driver, rider, trip, contract.DRIVER_TRIP_ARRIVED, contract.TRIP_DRIVER_ARRIVED)
    drive(driver, PICKUP_JSON)
    at_pickup = rider.next(LOCATION)["data"]
    assert (at_pickup["etaSeconds"], at_pickup["distanceMeters"]) == (0, 0)

    step(ride, driver, rider, trip, contract.DRIVER_TRIP_STARTED, contract.TRIP_STARTED)
    drive(driver, north(-50))
    riding = rider.next(LOCATION)["data"]
    assert (riding["etaSeconds"], riding["distanceMeters"]) == (600, 4200)
    assert osrm_target(osrm) == DESTINATION_JSON

    driver.send(contract.DRIVER_TRIP_COMPLETED, {"tripID": trip["id"]})
    rider.next(contract.TRIP_COMPLETED)
    wait_until(lambda: f"trip {trip['id']} is completed: its driver's locations go to no one"
               in ride.process("driver").output(), timeout=10, message="DriverService to know the trip ended")
    drive(driver, north(-100))
    assert rider.poll(LOCATION, timeout=2) is None
    assert driver.poll("error", timeout=0.1) is None and LOCATION not in driver.seen


@pytest.mark.ride_env(OFFER_TIMEOUT="60", LOCATION_PUSH_INTERVAL="2")
def test_at_most_one_frame_per_push_interval_and_the_newest_fix_wins(ride):
    rider, driver, _trip = on_a_trip(ride)
    for metres in (1000, 990, 980, 970, 960):
        drive(driver, north(metres))
    first = rider.next(LOCATION)["data"]
    last = rider.next(LOCATION)["data"]
    assert last["location"] == north(960) and last["at"] > first["at"]
    assert rider.poll(LOCATION, timeout=3) is None  # nothing newer to send


def test_when_osrm_fails_the_eta_is_estimated(ride, osrm):
    osrm.mode = "503"
    rider, driver, _trip = on_a_trip(ride)
    drive(driver, north(1000))
    frame = rider.next(LOCATION)["data"]
    assert frame["estimated"] is True
    assert 1000 < frame["distanceMeters"] < 2000 and frame["etaSeconds"] > 0  # 1.3 x the straight line


def test_a_rider_who_reconnects_gets_the_last_fix_in_trip_state_and_no_backlog_of_fixes(ride):
    rider, driver, trip = on_a_trip(ride)
    drive(driver, north(1000))
    rider.next(LOCATION)
    rider.close()
    for metres in (800, 600):
        drive(driver, north(metres))
        wait_until(lambda: ride.get("/trip/current", trip["userID"])[1]["data"].get("driverLocation", {}).get(
            "location") == north(metres), timeout=10, message=f"the fix {metres} m north to be the trip's last")

    again = ride.rider(trip["userID"], v2=True)
    assert again.state["driverLocation"]["location"] == north(600)
    assert again.state["driverLocation"]["tripID"] == trip["id"]
    assert again.poll(LOCATION, timeout=2) is None
    status, current = ride.get("/trip/current", trip["userID"])
    assert status == 200 and current["data"]["driverLocation"] == again.state["driverLocation"]


def test_no_one_but_the_trips_v2_rider_gets_the_location(ride, amqp_tap):
    tap = amqp_tap(LOCATION)
    v1_rider, driver, trip = on_a_trip(ride, rider_v2=False)
    bystander = ride.rider(v2=True)
    other_driver = ride.driver(v2=True)
    drive(driver, north(500))
    _key, _headers, message = tap.next(timeout=10)
    assert (message["ownerId"], message["data"]["tripID"]) == (trip["userID"], trip["id"])
    drive(driver, north(400))
    tap.next(timeout=10)
    for phone in (v1_rider, bystander, other_driver, driver):
        assert phone.poll(LOCATION, timeout=0.5) is None and LOCATION not in phone.seen
    assert v1_rider.poll("error", timeout=0.1) is None


def dropped(ride):
    text = requests.get(f"{ride.url}/metrics", timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "ridesync_gateway_locations_dropped" for sample in family.samples
               if sample.name.endswith("_total"))


@pytest.mark.ride_env(OFFER_TIMEOUT="60", LOCATION_MAX_RATE="5")
def test_a_driver_sending_too_many_locations_is_dropped_and_counted_never_answered(ride):
    rider, driver, trip = on_a_trip(ride)
    before = dropped(ride)
    for metres in range(40):
        drive(driver, north(1000 - metres))
    wait_until(lambda: dropped(ride) - before >= 30, timeout=10, message="the excess to be counted")
    assert driver.poll("error", timeout=1) is None
    step(ride, driver, rider, trip, contract.DRIVER_TRIP_ARRIVED, contract.TRIP_DRIVER_ARRIVED)  # the socket still works
    assert "sends locations faster than 5 a second" in ride.gateway_log()


def test_a_driver_service_killed_mid_ride_learns_the_trip_again_when_the_driver_registers(ride):
    rider, driver, trip = on_a_trip(ride)
    # Its pool and trips were in its memory; what it had in hand of the trip's events is gone too.
    ride.restart("driver", kill=True, meanwhile=lambda: purge_queues(contract.DRIVER_AVAILABILITY))
    followed(ride, trip, "accepted")  # the gateway registers the driver again; TripService names their trip
    drive(driver, north(700))
    assert rider.next(LOCATION, timeout=20)["data"]["location"] == north(700)


# Each batch is sent once the frame of the one before came: a push interval
# later, less the jitter of deliveries, or at once when a batch's first push
# had its last fix already; the default bucket (5 a second) would then drop
# a batch's last fixes, the frame the test waits for.
@pytest.mark.ride_env(LOCATION_MAX_RATE="100")
def test_on_two_driver_service_replicas_sharing_redis_a_trip_gets_one_frame_per_interval_newest_last(cluster):
    """Fixes of one driver go round-robin to both DriverService replicas
    (OSRM off: every ETA is estimated); the throttle and the order hold per trip."""
    rider_id = new_id("rider")
    rider = Phone(cluster.url, f"/ws/riders?userID={rider_id}", v2=True)
    driver = Phone(cluster.url, f"/ws/drivers?userID={new_id('driver')}&packageSlug=sedan", v2=True)
    try:
        driver.driver = driver.next(contract.DRIVER_REGISTER)["data"]
        trip = start_trip(cluster.url, rider_id)
        answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST, timeout=20)["data"])
        rider.next(contract.TRIP_DRIVER_ASSIGNED, timeout=20)
        line = f"trip {trip['id']} of rider {rider_id} is accepted"
        wait_until(lambda: any(line in p.output() for p in cluster.replicas["driver"]), timeout=10, message=line)
        frames = []
        for batch in range(3):
            sent = [north(1000 - 100 * batch - 10 * i) for i in range(5)]
            for where in sent:
                drive(driver, where)
            batch_frames = [rider.next(LOCATION, timeout=10)["data"]]
            while batch_frames[-1]["location"] != sent[-1]:
                batch_frames.append(rider.next(LOCATION, timeout=10)["data"])
            assert len(batch_frames) <= 2  # the first fix at once, the newest once the interval is over
            frames += batch_frames
        assert all(frame["estimated"] for frame in frames)
        assert [f["at"] for f in frames] == sorted({f["at"] for f in frames})  # each newer than the one before
        assert rider.poll(LOCATION, timeout=2) is None
    finally:
        rider.close()
        driver.close()
