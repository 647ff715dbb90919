"""Operators' endpoints and where sockets may be opened from, through real
gunicorn, RabbitMQ and the services."""
import time
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from ridesync.settings import Settings
from tests.ride import assert_a_ride_completes, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import (AMQP_URL, SilentProxy, bearer, closed_port_address, gunicorn_worker_pids, start_gateway,
                           wait_until)
from tests.test_live import our_connections


def test_metrics_and_live_stats_answer_only_the_networks_of_metrics_allow(ride):
    for path in ("/metrics", "/live/stats"):  # loopback, by default
        assert requests.get(f"{ride.url}{path}", timeout=5).status_code == 200
    url = ride.another_gateway(workers=1, METRICS_ALLOW="10.0.0.0/8, 192.168.0.0/16")
    for path in ("/metrics", "/live/stats"):
        answer = requests.get(f"{url}{path}", timeout=5)
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "permission_denied")
    assert_a_ride_completes(ride, url)


def test_sockets_from_an_origin_outside_a_cors_origins_list_are_refused(ride):
    url = ride.another_gateway(workers=1, CORS_ORIGINS="https://app.example")
    rider_id = new_id("rider")
    ws_url = url.replace("http", "ws") + f"/ws/riders?userID={rider_id}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url, timeout=5, header=bearer(rider_id), origin="https://evil.example").close()
    assert refused.value.status_code == 403
    websocket.create_connection(ws_url, timeout=5, header=bearer(rider_id), origin="https://app.example").close()
    websocket.create_connection(ws_url, timeout=5, header=bearer(rider_id), suppress_origin=True).close()  # an app
    assert_a_ride_completes(ride, url)


def test_readyz_asks_the_broker_over_one_kept_connection(ride):
    gateway, url = ride.replica(workers=1)
    for _ in range(5):
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    # Its worker's alone: gateways of earlier tests in the run's vhost may still be listed.
    name = f"gateway-{gunicorn_worker_pids(gateway)[0]}-readyz"
    probes = wait_until(lambda: [probe for probe, *_ in our_connections() if probe == name],
                        message="the readyz connection to be listed")
    assert len(probes) == 1


def test_a_readyz_probe_that_times_out_closes_its_broker_connection(tmp_path):
    """Without waiting for it: the probe answers within its deadline, and the
    connection is closed once the broker answers again (it would otherwise
    stay open on the broker until its heartbeats lapse)."""
    broker = urlsplit(AMQP_URL)
    proxy = SilentProxy((broker.hostname, broker.port or 5672))
    gateway, base = start_gateway({"AMQP_URL": AMQP_URL.replace(broker.netloc, f"{broker.username}:{broker.password}@"
                                                                f"127.0.0.1:{urlsplit(proxy.url).port}"),
                                   "TRIP_SERVICE_ADDR": closed_port_address(),
                                   "DRIVER_SERVICE_ADDR": closed_port_address()}, tmp_path)
    try:
        readyz = lambda: requests.get(f"{base}/readyz", timeout=10).json()["error"]["message"]  # noqa: E731
        assert "rabbitmq" not in readyz()  # the gRPC services are down; the broker answers
        probe, = wait_until(lambda: [name for name, *_ in our_connections()
                                     if name == f"gateway-{gunicorn_worker_pids(gateway)[0]}-readyz"],
                            message="the readyz connection to be listed")
        proxy.stall()
        began = time.monotonic()
        assert "rabbitmq" in readyz() and time.monotonic() - began < Settings().readyz_timeout + 2
        proxy.resume()
        wait_until(lambda: probe not in [name for name, *_ in our_connections()], timeout=15,
                   message="the timed-out probe's connection to be closed")
    finally:
        gateway.stop()
        proxy.close()
