"""The gateway as it runs: real gunicorn with gevent workers, in front of a
real TripService and the OSRM stand-in."""
import http.client
import itertools
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from ridesync.settings import Settings
from tests.support import (
    AMQP_URL, DESTINATION_JSON, PICKUP_JSON, HangingTripService, assert_route_follows_osrm,
    assert_trip_created_published, bearer, closed_port_address, made_by, new_rider, start_gateway, wait_until,
)

CORS_WARNING = "CORS allows every origin"


@pytest.fixture
def gateway(tmp_path):
    """gateway(trip_service, workers=1, **env) -> (process, base URL) of a
    real gunicorn; stopped afterwards."""
    names = itertools.count()

    def start(trip_service, workers=1, **env):
        env = {"TRIP_SERVICE_ADDR": trip_service.address, "DRIVER_SERVICE_ADDR": closed_port_address(),
               "AMQP_URL": AMQP_URL, "OSRM_TIMEOUT": "2", **env}
        return start_gateway(env, tmp_path, workers=workers, name=f"gateway-{next(names)}")

    yield from made_by(start, lambda started: started[0].stop())


def request(base, method, path, body=None, headers=None):
    """(status, headers, JSON body) of one HTTP request, with the token of the body's userID."""
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        payload = json.dumps(body) if body is not None else None
        auth = bearer(body["userID"]) if body and "userID" in body else {}
        connection.request(method, path, body=payload, headers={"Content-Type": "text/plain", **auth, **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, response.headers, json.loads(raw) if raw else None
    finally:
        connection.close()


def preview_body(rider):
    return {"userID": rider, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}


def test_a_rider_previews_and_starts_a_trip_through_gunicorn(gateway, trip_service, osrm, amqp_tap):
    tap = amqp_tap("trip.event.created")
    process, base = gateway(trip_service, workers=2)
    rider = new_rider()
    status, _, answer = request(base, "POST", "/trip/preview", preview_body(rider), {"X-RideSync-Dialect": "v2"})
    assert status == 201
    assert_route_follows_osrm(answer["data"]["route"], osrm)
    assert len(answer["data"]["rideFares"]) == 4
    fare = answer["data"]["rideFares"][0]

    status, _, answer = request(base, "POST", "/trip/start", {"rideFareID": fare["id"], "userID": rider})
    assert status == 201
    assert_trip_created_published(tap, answer["data"]["trip"])

    status, _, answer = request(base, "GET", "/healthz")
    assert (status, answer) == (200, {"status": "ok"})
    status, _, answer = request(base, "GET", "/readyz")  # RabbitMQ and gRPC probes inside a gevent worker
    assert (status, answer["error"]["message"]) == (503, "not ready: driver service not answering")
    assert process.output().count(CORS_WARNING) == 1, process.output()


def test_with_a_list_of_origins_there_is_no_warning_and_others_are_refused(gateway, trip_service):
    process, base = gateway(trip_service, CORS_ORIGINS="https://app.example")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Content-Type"}
    status, headers, _ = request(base, "OPTIONS", "/trip/preview", headers={"Origin": "https://app.example", **preflight})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    _, headers, _ = request(base, "OPTIONS", "/trip/preview", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in headers
    assert CORS_WARNING not in process.output()


def test_a_rider_who_hangs_up_lets_osrm_go(gateway, start_trip, osrm):
    osrm.mode = "hang"
    trip_service = start_trip(OSRM_TIMEOUT="30")
    _, base = gateway(trip_service, OSRM_TIMEOUT="30")
    url = urlsplit(base)
    rider_id = new_rider()
    body = json.dumps(preview_body(rider_id)).encode()
    with socket.create_connection((url.hostname, url.port), timeout=5) as rider:
        rider.sendall(
            b"POST /trip/preview HTTP/1.1\r\nHost: gateway\r\nContent-Type: text/plain\r\n"
            + f"Authorization: {bearer(rider_id)['Authorization']}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_until(lambda: osrm.requests, timeout=5, message="OSRM to be asked")
    wait_until(lambda: osrm.abandoned, timeout=3, message="the OSRM call to be let go after the rider hung up")


def test_one_gevent_worker_runs_five_slow_grpc_calls_at_once(gateway, trip_service, osrm):
    # OSRM answers no one until five previews are waiting on it together: a
    # worker that blocked on a gRPC call would get estimates after OSRM_TIMEOUT.
    osrm.mode, osrm.gather_size = "gather", 5
    _, base = gateway(trip_service, workers=1)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: request(base, "POST", "/trip/preview", preview_body(new_rider())), range(5)))
    assert [status for status, _, _ in answers] == [201] * 5
    assert [answer["data"]["route"]["estimated"] for _, _, answer in answers] == [False] * 5
    assert osrm.max_in_flight == 5


def test_calls_stuck_upstream_leave_a_worker_free_to_make_others(gateway):
    # gRPC under gevent waits for each call in a thread of the worker's gevent
    # pool: twenty starts hanging on TripService must not hold up /readyz's probes.
    stuck = 20
    hanging = HangingTripService(max_workers=stuck + 5)
    try:
        _, base = gateway(hanging)
        with ThreadPoolExecutor(stuck) as pool:
            starts = [pool.submit(request, base, "POST", "/trip/start", {"rideFareID": "f1", "userID": new_rider()})
                      for _ in range(stuck)]
            wait_until(lambda: len(hanging.calls) == stuck, timeout=10, message="every start to reach TripService")
            began = time.monotonic()
            status, _, answer = request(base, "GET", "/readyz")
            took = time.monotonic() - began
            hanging.release.set()
            ended = {start.result()[0] for start in starts}
    finally:
        hanging.close()
    assert (status, answer["error"]["message"]) == (503, "not ready: driver service not answering")
    assert took < Settings().readyz_timeout
    assert ended == {503}  # released, not past their deadline (504)


def post_chunked(base, body):
    """(status, JSON body) of a POST whose body is sent in chunks, with no Content-Length."""
    url = urlsplit(base)
    raw = json.dumps(body).encode()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request("POST", "/trip/preview", body=(raw[i:i + 4096] for i in range(0, len(raw), 4096)),
                           headers={"Content-Type": "text/plain", **bearer(body["userID"])}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_is_read_whole_and_refused_over_16_kib(gateway, trip_service):
    _, base = gateway(trip_service)
    status, answer = post_chunked(base, preview_body("r1") | {"padding": "x" * (16 * 1024)})
    assert (status, answer["error"]["code"]) == (413, "request_entity_too_large")
    status, answer = post_chunked(base, preview_body(new_rider()) | {"padding": "x" * 8000})
    assert status == 201 and len(answer["data"]["rideFares"]) == 4


def test_a_body_over_16_kib_is_refused_before_the_rest_arrives_and_its_connection_closed(gateway, trip_service):
    _, base = gateway(trip_service)
    url = urlsplit(base)
    head = (b"POST /trip/preview HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n"
            + f"Authorization: {bearer('r1')['Authorization']}\r\n\r\n".encode())
    with socket.create_connection((url.hostname, url.port), timeout=3) as conn:  # well within BODY_TIMEOUT (10 s)
        conn.sendall(head + b"x" * (16 * 1024 + 1))  # all the gateway reads of it: the rest never comes
        answer = b""
        while received := conn.recv(4096):  # until the gateway closes: the connection is not reused
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1 ") == 1, answer
