"""Limits (issue 7): what one user or connection may cost a gateway, through
real gunicorn, RabbitMQ and the services; each refused with its exact status
or close code, and a normal ride completing afterwards."""
import json
import socket
import time

import pytest
import requests
import websocket

from ridesync.gateway.limits import TokenBuckets
from tests.ride import assert_a_ride_completes, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import DESTINATION_JSON, PICKUP_JSON, bearer, wait_until


def preview(session, url, rider_id, destination=DESTINATION_JSON):
    body = {"userID": rider_id, "pickup": PICKUP_JSON, "destination": destination}
    return session.post(f"{url}/trip/preview", data=json.dumps(body), headers=bearer(rider_id), timeout=15)


def test_a_riders_bucket_holds_a_burst_and_refills_at_the_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=10, burst=20, clock=lambda: now[0])
    assert [buckets.take("r1") for _ in range(20)] == [0.0] * 20
    assert buckets.take("r1") == pytest.approx(0.1)
    assert buckets.take("r2") == 0.0
    now[0] += 0.1
    assert buckets.take("r1") == 0.0
    now[0] += 2.0  # full again: forgotten, so memory follows who is active
    buckets.take("r3")
    assert len(buckets) == 1


def test_a_frame_over_64_kib_closes_the_socket_1009_before_it_is_read_whole(ride):
    driver = ride.driver()
    frame = websocket.ABNF.create_frame("x" * (10 * 1024 * 1024), websocket.ABNF.OPCODE_TEXT).format()
    driver.ws.sock.sendall(frame[:65 * 1024])  # a 10 MiB frame's first 65 KiB: the rest never comes
    assert driver.closed_with()[0] == 1009
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    rider.send_raw("[" * 10_000 + "]" * 10_000)  # deep JSON is a bad frame, not a dead handler
    trip = ride.start_trip(rider_id)
    assert rider.next("trip.event.created")["data"]["id"] == trip["id"]
    assert_a_ride_completes(ride)


def test_previews_and_starts_over_the_rate_are_429_with_retry_after(ride):
    url = ride.another_gateway(workers=1, PREVIEW_RATE="0.5", PREVIEW_BURST="4")
    greedy, other = new_id("rider"), new_id("rider")
    with requests.Session() as session:
        answers = [preview(session, url, greedy) for _ in range(6)]
        assert [answer.status_code for answer in answers] == [201] * 4 + [429] * 2
        assert answers[-1].json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 2
        assert preview(session, url, other).status_code == 201  # another rider is not held back
    assert_a_ride_completes(ride, url)


def test_a_preview_longer_than_max_trip_km_is_400(ride):
    answer = preview(requests, ride.url, new_id("rider"), destination={"latitude": 0, "longitude": 179.9})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_argument")
    assert "trips are limited to 300 km" in answer.json()["error"]["message"]


def test_a_head_or_body_that_does_not_arrive_within_body_timeout_is_408(ride):
    url = ride.another_gateway(workers=1, BODY_TIMEOUT="1")
    port = int(url.rsplit(":", 1)[1])
    auth = bearer("r1")["Authorization"]
    slow_head = b"POST /trip/preview HTTP/1.1\r\nHost: h\r\n"
    slow_body = (b"POST /trip/preview HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                 + f"Authorization: {auth}\r\n\r\n".encode())
    for request in (slow_head, slow_body):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            started = time.monotonic()
            answer = b""
            while not answer:  # a slowloris: a little at a time, never the end
                assert time.monotonic() - started < 8, "the connection was held past BODY_TIMEOUT"
                conn.settimeout(0.3)
                try:
                    answer = conn.recv(4096)
                except TimeoutError:
                    conn.sendall(b"1\r\na\r\n" if request is slow_body else b"X")
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
            wait_until(lambda: conn.recv(4096) == b"", message="the connection to be closed")
    with socket.create_connection(("127.0.0.1", port), timeout=8) as conn:  # kept alive, then idle
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2:
            received = conn.recv(4096)
            assert received, f"closed without a 408 after {answers!r}"
            answers += received
        assert answers.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in answers, answers
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert_a_ride_completes(ride, url)
