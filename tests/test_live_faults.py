"""Sockets when what the gateway needs fails, through real sockets: a
socket whose user the broker does not bind within 5 s (the gateway's
broker connection stalls: a SilentProxy between them) opens anyway, and
what lands in the feed for its user before its bind and its `connected`
marker is delivered to it, not dropped; a driver's socket that DriverService cannot
register is refused with 503 before the upgrade, and riders' sockets open."""
from urllib.parse import urlsplit

import pytest

from ridesync import contract
from ridesync.rabbit import Publisher
from tests.phone import Phone
from tests.ride import new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import AMQP_URL, SilentProxy, bearer, closed_port_address, wait_until
from tests.test_identity import ws_refusal


@pytest.fixture
def broker_proxy():
    broker = urlsplit(AMQP_URL)
    proxy = SilentProxy((broker.hostname, broker.port or 5672))
    proxied = broker._replace(netloc=f"{broker.username}:{broker.password}@{urlsplit(proxy.url).netloc}").geturl()
    yield proxy, proxied
    proxy.close()


def test_a_socket_whose_user_the_broker_does_not_bind_in_time_opens_and_gets_what_landed_before_it(ride, broker_proxy):
    proxy, proxied_amqp_url = broker_proxy
    _gateway, url = ride.replica(workers=1, name="gateway-stalled", AMQP_URL=proxied_amqp_url)
    rider_id = new_id("rider")
    proxy.stall()
    try:
        rider = Phone(url, f"/ws/riders?userID={rider_id}")  # the upgrade answers after MARKER_WAIT
        wait_until(lambda: "has not bound the user within MARKER_WAIT; opening the socket anyway" in ride.gateway_log(),
                   message="the gateway's log line")
        publisher = Publisher(AMQP_URL, "test")  # straight to the broker: ahead of the stalled marker
        try:
            publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "before-the-marker"})
        finally:
            publisher.close()
    finally:
        proxy.resume()
    try:
        assert rider.next(contract.TRIP_CREATED, timeout=15)["data"]["id"] == "before-the-marker"
    finally:
        rider.close()


def test_a_driver_whose_registration_fails_is_refused_with_503_before_the_upgrade(ride):
    url = ride.another_gateway(workers=1, DRIVER_SERVICE_ADDR=closed_port_address())
    driver_id = new_id("driver")
    status, body, _headers = ws_refusal(url, f"/ws/drivers?userID={driver_id}&packageSlug=sedan",
                                        bearer(driver_id, "driver"))
    assert (status, body["error"]["code"]) == (503, "unavailable")
    rider = ride.rider(url=url, v2=True)  # riders need no DriverService
    assert rider.state is None
