"""The live side end to end: gunicorn with 2 gevent workers, the three
services, real RabbitMQ, phones on real WebSockets."""
import json
import re
import subprocess
from urllib.parse import unquote, urlsplit

import pika
import pytest
import requests

from ridesync import contract
from ridesync.rabbit import Publisher
from tests import vhost
from tests.ride import answer, assert_a_ride_completes, new_id, ride  # noqa: F401,F811 (ride is a fixture)
from tests.support import AMQP_URL, bearer, wait_until

VHOST = unquote(urlsplit(AMQP_URL).path.lstrip("/")) or "/"


def test_a_whole_ride(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    driver = ride.driver("sedan")
    assert driver.driver["packageSlug"] == "sedan" and driver.driver["name"]

    trip = ride.start_trip(rider_id, "sedan")
    created = rider.next(contract.TRIP_CREATED)["data"]
    assert created["id"] == trip["id"] and created["status"] == "pending"

    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    assert request["id"] == trip["id"] and request["userID"] == rider_id
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)

    assigned = rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]
    assert assigned["id"] == trip["id"]
    assert assigned["driver"]["id"] == driver.driver["id"]
    session = rider.next(contract.PAYMENT_SESSION_CREATED)["data"]
    assert session["tripID"] == trip["id"] and session["sessionID"]
    assert session["amount"] == trip["selectedFare"]["totalPriceInCents"]


def test_a_decline_moves_the_request_to_the_next_driver(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    drivers = {ride.driver("van"), ride.driver("van")}
    trip = ride.start_trip(rider_id, "van")

    asked = []
    while len(asked) < 2:
        phone, request = wait_until(lambda: next_request(drivers - set(asked)), message="a driver to be asked")
        assert request["id"] == trip["id"]
        asked.append(phone)
        answer(phone, contract.DRIVER_TRIP_DECLINE, request)
    unserved = rider.next(contract.TRIP_NO_DRIVERS_FOUND)["data"]
    assert (unserved["id"], unserved["status"]) == (trip["id"], "no_drivers_found")


def test_no_drivers_found(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    ride.driver("sedan")  # of another package
    trip = ride.start_trip(rider_id, "luxury")
    unserved = rider.next(contract.TRIP_NO_DRIVERS_FOUND)["data"]
    assert (unserved["id"], unserved["status"]) == (trip["id"], "no_drivers_found")


def next_request(phones):
    for phone in phones:
        frame = phone.poll(contract.DRIVER_TRIP_REQUEST)
        if frame is not None:
            return phone, frame["data"]
    return None


def test_many_riders_over_several_gateway_processes_each_get_exactly_their_own_events(ride):
    urls = [ride.url, ride.another_gateway()]
    riders = {new_id("rider"): None for _ in range(40)}
    for n, rider_id in enumerate(riders):
        riders[rider_id] = ride.rider(rider_id, urls[n % 2])
    workers = set(re.findall(r"gateway\[(\d+)\] ridesync.gateway.sockets.connection: rider rider-\w+ connected", ride.gateway_log()))
    assert len(workers) >= 2, "the riders should be spread over several gateway processes"

    publisher = Publisher(AMQP_URL, "test")
    try:
        for n in range(3):
            for rider_id in riders:
                publisher.publish(contract.TRIP_CREATED, rider_id, {"id": f"{rider_id}/{n}"})
        for rider_id, phone in riders.items():
            got = [phone.next(contract.TRIP_CREATED)["data"]["id"] for _ in range(3)]
            assert got == [f"{rider_id}/{n}" for n in range(3)]
        # Exactly once: the next frame each rider sees is the last event, no copy before it.
        for rider_id in riders:
            publisher.publish(contract.TRIP_NO_DRIVERS_FOUND, rider_id, {"tripID": f"{rider_id}/last"})
        for rider_id, phone in riders.items():
            assert phone.next()["data"] == {"tripID": f"{rider_id}/last"}
    finally:
        publisher.close()


def test_a_rider_who_reconnects_within_the_window_gets_what_was_missed_in_order(ride):
    rider_id = new_id("rider")
    ride.rider(rider_id).close()
    publisher = Publisher(AMQP_URL, "test")
    try:
        for n in range(5):
            publisher.publish(contract.TRIP_CREATED, rider_id, {"id": f"missed-{n}"})
    finally:
        publisher.close()
    rider = ride.rider(rider_id)
    assert [rider.next(contract.TRIP_CREATED)["data"]["id"] for _ in range(5)] == [f"missed-{n}" for n in range(5)]


def test_a_newer_socket_replaces_the_older_one(ride):
    rider_id = new_id("rider")
    old = ride.rider(rider_id)
    new = ride.rider(rider_id)
    assert old.closed_with() == (4000, "replaced by a newer connection")
    publish_one(rider_id, {"id": "after-replacement"})
    assert new.next(contract.TRIP_CREATED)["data"]["id"] == "after-replacement"


def test_a_rider_and_a_driver_with_the_same_id_are_two_users(ride):
    user_id = new_id("user")
    rider = ride.rider(user_id)
    driver = ride.driver("sedan", v2=True)  # a v1 driver is not sent driver_assigned (the original was not)
    trip = ride.start_trip(user_id, "sedan")
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
    assert driver.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]

    namesake = ride.driver("van", user_id=user_id, v2=True)  # not the rider's driver: the rider's events are not theirs
    publish_one(user_id, {"tripID": "for-the-driver", "reason": "expired"}, contract.DRIVER_TRIP_WITHDRAWN)
    assert namesake.next()["data"]["tripID"] == "for-the-driver"


def publish_one(rider_id, data, kind=contract.TRIP_CREATED):
    publisher = Publisher(AMQP_URL, "test")
    try:
        publisher.publish(kind, rider_id, data)
    finally:
        publisher.close()


@pytest.mark.parametrize("path, headers, status, problem", [
    ("/ws/riders", {}, 401, "a token is required"),
    ("/ws/drivers?userID=d1", bearer("d1", "driver"), 400, "packageSlug is required"),
    ("/ws/drivers?userID=d1&packageSlug=rocket", bearer("d1", "driver"), 400, "packageSlug is required"),
])
def test_a_socket_without_identity_is_refused_before_the_upgrade(ride, path, headers, status, problem):
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ride.url.replace("http", "ws") + path, timeout=5, header=headers)
    assert refused.value.status_code == status
    assert problem in json.loads(refused.value.resp_body)["error"]["message"]


@pytest.mark.parametrize("raw, code", [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_frame"),
    (json.dumps({"type": "driver.cmd.teleport", "data": {}}), "unknown_type"),
    (json.dumps({"type": contract.DRIVER_TRIP_ACCEPT, "data": {"tripID": "t"}}), "invalid_argument"),
    (json.dumps({"type": contract.DRIVER_LOCATION, "data": {"location": {"latitude": 91, "longitude": 0}}}),
     "invalid_argument"),
])
def test_a_bad_frame_gets_an_error_on_v2_and_the_socket_stays_open(ride, raw, code):
    driver = ride.driver(v2=True)
    driver.send_raw(raw)
    error = driver.next("error")["data"]
    assert error["code"] == code and error["message"]
    driver.send(contract.DRIVER_LOCATION, {"location": {"latitude": 37.7, "longitude": -122.4}, "geohash": "9q8yy"})
    driver.send_raw("still here?")
    assert driver.next("error")["data"]["code"] == "invalid_json"


def test_a_driver_who_leaves_is_unregistered(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    ride.driver("suv").close()
    wait_until(lambda: "unregistered" in ride.gateway_log(), message="the driver to be unregistered")
    ride.start_trip(rider_id, "suv")
    rider.next(contract.TRIP_NO_DRIVERS_FOUND)


def rabbitmqctl(*args):
    out = subprocess.run(["rabbitmqctl", "-q", *args, "--formatter", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def gateway_connections():
    """[(process name, channels, connection)] of the gateway processes' broker connections."""
    return [row for row in our_connections() if row[0].startswith("gateway-")]


def our_connections():
    """[(process name, channels, connection)] of every connection to this test run's vhost."""
    rows = rabbitmqctl("list_connections", "name", "vhost", "client_properties", "channels")
    return sorted((_connection_name(row["client_properties"]) or "", row["channels"], row["name"])
                  for row in rows if row["vhost"] == VHOST)


def close_connections(names):
    """Closes these connections from the broker's side, as a broker restart would."""
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "name", "pid"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    pids = dict(line.rsplit("\t", 1) for line in listing.splitlines() if "\t" in line)
    for name in names:
        if name in pids:  # one that closed meanwhile needs no closing
            subprocess.run(["rabbitmqctl", "-q", "close_connection", pids[name], "test drops the connection"],
                           capture_output=True, timeout=60)


def drop_every_connection():
    """Closes every connection to this run's vhost (the gateways', the
    services', the test's own) from the broker's side, as a broker restart
    would: in one rabbitmqctl call, which never reaches another vhost."""
    assert VHOST.startswith(vhost.PREFIX), f"{VHOST!r} is not this test run's own vhost"
    subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "--vhost", VHOST, "test drops the connection"],
                   capture_output=True, timeout=60, check=True)


def _connection_name(client_properties):
    # rabbitmqctl renders the AMQP table as [[key, type, value], ...]
    return next((value for key, _type, value in client_properties if key == "connection_name"), None)


def broker_objects(worker_queue=None):
    """What users could cost the broker in this test run's vhost: its queues
    (but the gateway workers' own, each named by its process and coming and
    going with it), the bindings of users' keys to worker_queue (every
    worker's when None), and every consumer."""
    queues = sorted(row["name"] for row in rabbitmqctl("list_queues", "-p", VHOST, "name")
                    if not row["name"].startswith(contract.WORKER_QUEUE_PREFIX))
    bindings = len([row for row in rabbitmqctl("list_bindings", "-p", VHOST, "source_name", "destination_name")
                    if row["source_name"] == contract.LIVE_EXCHANGE
                    and row["destination_name"] == (worker_queue or row["destination_name"])])
    consumers = len(rabbitmqctl("list_consumers", "-p", VHOST))
    return queues, bindings, consumers


def live_stats(url):
    return requests.get(f"{url}/live/stats?greenlets=1", timeout=5).json()


def test_a_user_who_leaves_leaves_nothing_behind(ride):
    """Nothing but a binding of their key to the worker's queue while it
    holds them: while their socket is open, and the reconnect window after."""
    url = ride.another_gateway(workers=1, RECONNECT_WINDOW="1")  # waited out twice: 1 s, not the ride's 3
    stats = lambda: live_stats(url)  # noqa: E731
    # The worker's broker connection and gRPC channel, and their greenlets, exist from here on.
    ride.rider(url=url).close()
    ride.driver(url=url).close()
    idle = wait_until(lambda: (s := stats())["inboxes"] == 0 and s["bound"] == 0 and s, timeout=20,
                      message="an idle worker (its users' window over)")
    worker_connections = lambda: [c for c in gateway_connections() if c[0] == f"gateway-{idle['pid']}"]  # noqa: E731
    connections_before = worker_connections()
    assert connections_before, "the worker holds its broker connection"
    queues, bindings, consumers = objects_before = broker_objects(idle["queue"])
    assert bindings == 0

    user_ids = {new_id("rider") for _ in range(30)} | {new_id("driver") for _ in range(5)}
    riders = [ride.rider(user_id, url=url) for user_id in user_ids if user_id.startswith("rider")]
    drivers = [ride.driver(user_id=user_id, url=url) for user_id in user_ids if user_id.startswith("driver")]
    busy = wait_until(lambda: (s := stats())["consuming"] == 35 and s, message="every socket to be served")
    assert busy["sockets"] == {"rider": 30, "driver": 5} and busy["bound"] == 35
    assert worker_connections() == connections_before, "sockets share their worker's connections and channels"
    assert broker_objects(idle["queue"]) == (queues, bindings + 35, consumers), \
        "a user has no queue or consumer of their own, and one binding while held"

    for phone in riders + drivers:
        phone.close()
    after = wait_until(lambda: (s := stats())["inboxes"] == 0 and s["bound"] == 0
                       and s["greenlets"] <= idle["greenlets"] and s, timeout=20,
                       message="every socket's inbox, binding and greenlets to be gone after the window")
    assert after["sockets"] == {"rider": 0, "driver": 0} and after["consuming"] == 0
    assert worker_connections() == connections_before
    assert wait_until(lambda: broker_objects(idle["queue"]) == objects_before, message="the bindings to go")


@pytest.mark.ride_env(RECONNECT_WINDOW="1")  # waited out twice: 1 s, not the ride's 3
def test_reconnecting_over_and_over_multiplies_nothing_on_the_broker(ride):
    rider_id = new_id("rider")
    ride.rider(rider_id).close()
    both_up(ride.url)
    before = wait_until(lambda: (objects := broker_objects())[1] == 0 and objects, timeout=20,
                        message="the rider's binding to go once the window is over")
    for _ in range(50):
        ride.rider(rider_id).close()
    wait_until(lambda: broker_objects() == before, timeout=20, message="as many objects as before, the window over")
    rider = ride.rider(rider_id)
    publish_one(rider_id, {"id": "after-50-reconnects"})
    assert rider.next(contract.TRIP_CREATED)["data"]["id"] == "after-50-reconnects"


def both_up(url):
    """Until both workers of the gateway at url read their queue: their broker objects are made."""
    up = set()
    wait_until(lambda: up.add(live_stats(url)["queue"]) or len(up - {None}) == 2, timeout=20,
               message="both workers of the gateway to read their queue")


def test_the_broker_dropping_every_connection_loses_nothing_and_keeps_sockets_open(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    driver = ride.driver("luxury")
    publisher = Publisher(AMQP_URL, "test")
    try:
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "before"})
        assert rider.next(contract.TRIP_CREATED)["data"]["id"] == "before"

        dropped = gateway_connections()
        drop_every_connection()
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "during"})
        wait_until(lambda: len(now := gateway_connections()) >= len(dropped) and
                   not {c for *_, c in now} & {c for *_, c in dropped},
                   timeout=20, interval=0.5, message="the gateway to reconnect")
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "after"})
    finally:
        publisher.close()
    assert [rider.next(contract.TRIP_CREATED)["data"]["id"] for _ in range(2)] == ["during", "after"]

    # The sockets stayed open, and every service's consumers and publishers came back.
    trip = ride.start_trip(rider_id, "luxury")
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    answer(driver, contract.DRIVER_TRIP_ACCEPT, request)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["id"] == trip["id"]
    assert rider.next(contract.PAYMENT_SESSION_CREATED)["data"]["tripID"] == trip["id"]


def test_a_phone_that_stops_answering_pings_is_dropped(ride):
    url = ride.another_gateway(workers=1, WS_PING_INTERVAL="0.5")
    riders = lambda: requests.get(f"{url}/live/stats", timeout=5).json()["sockets"]["rider"]  # noqa: E731
    ride.rider(url=url)  # never reads, so never answers a ping
    answering = ride.rider(url=url)
    assert riders() == 2

    def answering_reads_and_silent_is_gone():
        assert answering.poll(timeout=0.1) is None  # reading answers the server's pings
        return riders() == 1

    wait_until(answering_reads_and_silent_is_gone, message="the silent phone to be dropped")
    for _ in range(10):  # a few ping intervals on, the phone that answers is still there
        assert answering_reads_and_silent_is_gone()


def test_a_broker_that_refuses_new_queues_stops_no_socket_from_opening_or_getting_its_events(ride):
    """A vhost at its queue limit refuses every declare: no socket's
    delivery depends on one, so those opened before, under and after the
    limit all get their events (a delivery that needed a declare would never come)."""
    before_id, under_id, after_id = new_id("rider"), new_id("rider"), new_id("rider")
    both_up(ride.url)  # each worker declares its queue once, when it starts: not per socket
    before = ride.rider(before_id)
    queues = len(broker_objects()[0])
    subprocess.run(["rabbitmqctl", "-q", "set_vhost_limits", "-p", VHOST, json.dumps({"max-queues": queues})],
                   check=True, capture_output=True, timeout=60)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # the limit is in force
            with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
                connection.channel().queue_declare("", exclusive=True)
        under = ride.rider(under_id)
        after = ride.rider(after_id)
        publisher = Publisher(AMQP_URL, "test")
        try:
            for rider_id in (before_id, under_id, after_id):
                publisher.publish(contract.TRIP_CREATED, rider_id, {"id": f"for-{rider_id}"})
        finally:
            publisher.close()
        for rider_id, phone in ((before_id, before), (under_id, under), (after_id, after)):
            assert phone.next(contract.TRIP_CREATED)["data"]["id"] == f"for-{rider_id}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_vhost_limits", "-p", VHOST], capture_output=True, timeout=60)


def test_riders_see_the_driver_as_registered_not_as_the_phone_claims(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    driver = ride.driver("suv")
    ride.start_trip(rider_id, "suv")
    request = driver.next(contract.DRIVER_TRIP_REQUEST)["data"]
    driver.send(contract.DRIVER_TRIP_ACCEPT, {"tripID": request["id"], "riderID": rider_id,
                                              "driver": {"id": driver.driver["id"], "name": "Not Me", "carPlate": "FAKE"}})
    assigned = rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["driver"]
    assert (assigned["name"], assigned["carPlate"]) == (driver.driver["name"], driver.driver["carPlate"])


@pytest.mark.parametrize("how", ["goes offline", "does not answer"])
def test_a_driver_who_leaves_a_request_unanswered_passes_it_on(ride, how):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    drivers = {ride.driver("van"), ride.driver("van")}
    trip = ride.start_trip(rider_id, "van")
    silent, request = wait_until(lambda: next_request(drivers), message="a driver to be asked")
    if how == "goes offline":
        silent.close()
    # OFFER_TIMEOUT is 2 s in the ride: a driver who says nothing is passed over.
    other = (drivers - {silent}).pop()
    request = other.next(contract.DRIVER_TRIP_REQUEST)["data"]
    assert request["id"] == trip["id"]
    answer(other, contract.DRIVER_TRIP_ACCEPT, request)
    assert rider.next(contract.TRIP_DRIVER_ASSIGNED)["data"]["driver"]["id"] == other.driver["id"]


def test_messages_whose_trace_header_is_not_text_are_delivered_and_stop_no_consumer(ride):
    """Anything on the broker may send any header type: a traceparent that
    is a number once stuck the rider's socket on it and ended the consumers'
    threads (OpenTelemetry's extract raised)."""
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    publisher = Publisher(AMQP_URL, "test")
    try:
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "odd-1"}, headers={"traceparent": 5})
        publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "plain-2"})
        publisher.publish(contract.DRIVER_TRIP_ACCEPT, "d-odd", {"tripID": "no-such-trip", "driver": {"id": "d-odd"}},
                          headers={"traceparent": 5})
    finally:
        publisher.close()
    assert [rider.next(contract.TRIP_CREATED)["data"]["id"] for _ in range(2)] == ["odd-1", "plain-2"]
    assert_a_ride_completes(ride)  # dispatch and TripService's intake still consume
