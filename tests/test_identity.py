"""Identity (DESIGN.md, "Identity"): every request and socket acts for the
user of its token, or in open mode for a well-formed userID; through real
gunicorn, RabbitMQ and the services. Each attack is refused with its exact
status, and a normal ride on the same gateway completes afterwards."""
import json
import os
import socket
import subprocess
import sys

import pytest
import requests
import websocket

from ridesync import contract
from ridesync.gateway.upstream import CALL_DEADLINE
from ridesync.rabbit import Publisher
from tests.ride import answer, assert_a_ride_completes, new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import (AMQP_URL, AUTH_SECRET, DESTINATION_JSON, PICKUP_JSON, ROOT, bearer, free_port, next_message_for,
                           token, wait_until)
from tests.test_tokens import KeySet

BAD_USER_IDS = ["a\nb", "a\rb", "é" * 128, "r" * 129, "a b", "a/b", "a*", "a#", "\ud800", ""]


def ws_refusal(url, path, headers=None):
    """(status, JSON body) of an upgrade the gateway refuses before it happens
    (a driver's only after waiting out the gRPC call deadline for a DriverService that is down)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url.replace("http", "ws") + path, timeout=CALL_DEADLINE + 5, header=headers or {}).close()
    return refused.value.status_code, json.loads(refused.value.resp_body), refused.value.resp_headers


def preview(url, body, headers=None):
    return requests.post(f"{url}/trip/preview", data=json.dumps(body), headers=headers, timeout=15)


def preview_body(user_id=None):
    body = {"pickup": PICKUP_JSON, "destination": DESTINATION_JSON}
    return body if user_id is None else {"userID": user_id, **body}


def test_a_second_socket_in_a_riders_name_is_refused_and_theirs_keeps_its_events(ride):
    rider_id = new_id("rider")
    rider = ride.rider(rider_id)
    path = f"/ws/riders?userID={rider_id}"
    status, body, headers = ws_refusal(ride.url, path)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    assert headers["www-authenticate"] == "Bearer"
    assert ws_refusal(ride.url, path, bearer(new_id("rider")))[:2] == (
        403, {"error": {"code": "permission_denied", "message": "userID is not the token's user"}})
    assert ws_refusal(ride.url, path, bearer(rider_id, "driver"))[0] == 403
    status, body, headers = ws_refusal(ride.url, f"{path}&token=not-a-jwt")
    assert (status, headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')
    # The rider's own socket was never replaced, and still gets their trip's events.
    trip = ride.start_trip(rider_id)
    assert rider.next(contract.TRIP_CREATED)["data"]["id"] == trip["id"]
    assert_a_ride_completes(ride)


def test_a_drivers_socket_takes_a_driver_token_of_that_driver(ride):
    driver_id = new_id("driver")
    path = f"/ws/drivers?userID={driver_id}&packageSlug=sedan"
    assert ws_refusal(ride.url, path)[0] == 401
    assert ws_refusal(ride.url, path, bearer(driver_id, "rider"))[1]["error"] == {
        "code": "permission_denied", "message": "this is for drivers; the token is a rider's"}
    assert ws_refusal(ride.url, path, bearer(new_id("driver"), "driver"))[0] == 403
    # A browser cannot set headers: ?token= does, and the userID may be left out.
    phone = ride.phone(f"/ws/drivers?packageSlug=sedan&token={token(driver_id, 'driver')}", headers={})
    assert phone.next(contract.DRIVER_REGISTER)["data"]["id"] == driver_id
    assert_a_ride_completes(ride)


def test_a_token_refused_in_a_query_is_not_written_to_the_access_log(ride):
    riders_token = token(new_id("rider"), "rider")
    assert ws_refusal(ride.url, f"/ws/drivers?packageSlug=sedan&token={riders_token}")[0] == 403
    wait_until(lambda: '"GET /ws/drivers' in ride.gateway_log(), message="the refusal's access log line")
    assert riders_token not in ride.gateway_log()


def test_previews_and_starts_are_a_riders_own(ride):
    rider_id = new_id("rider")
    answer = preview(ride.url, preview_body(rider_id))
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthenticated")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert preview(ride.url, preview_body(rider_id), bearer(new_id("rider"))).status_code == 403
    assert preview(ride.url, preview_body(rider_id), bearer(rider_id, "driver")).status_code == 403
    expired = {"Authorization": f"Bearer {token(rider_id, ttl=-31)}"}
    assert preview(ride.url, preview_body(rider_id), expired).status_code == 401
    within_leeway = {"Authorization": f"Bearer {token(rider_id, ttl=-5)}"}
    assert preview(ride.url, preview_body(rider_id), within_leeway).status_code == 201
    # With a token the userID may be left out: the fares are the token's user's.
    fares = preview(ride.url, preview_body(), bearer(rider_id)).json()["data"]["rideFares"]
    assert {fare["userID"] for fare in fares} == {rider_id}
    start = lambda headers: requests.post(  # noqa: E731
        f"{ride.url}/trip/start", data=json.dumps({"rideFareID": fares[0]["id"]}), headers=headers, timeout=15)
    assert start({}).status_code == 401
    assert start(bearer(rider_id, "driver")).status_code == 403
    assert start(bearer(new_id("rider"))).status_code == 403  # the fare is not theirs
    assert start(bearer(rider_id)).status_code == 201
    assert_a_ride_completes(ride)


@pytest.mark.parametrize("mode", ["token", "open"])
def test_no_malformed_user_id_reaches_the_broker_or_a_log(ride, mode):
    url = ride.url if mode == "token" else ride.another_gateway(workers=1, AUTH_MODE="open")
    for user_id in BAD_USER_IDS:
        quoted = requests.utils.quote(user_id.encode("utf-8", "surrogatepass"), safe="")
        status, body, _ = ws_refusal(url, f"/ws/riders?userID={quoted}", bearer("r1"))
        assert (status, body["error"]["code"]) == (400, "invalid_argument"), user_id
        raw = json.dumps(preview_body(user_id))  # a lone surrogate travels as \\ud800
        answer = requests.post(f"{url}/trip/preview", data=raw, headers=bearer("r1"), timeout=15)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_argument"), user_id
    for forged in (b"x\nINFO forged", b"x\rINFO forged", b"\xff\xfe"):
        assert raw_status(url, b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-Request-ID: " + forged + b"\r\n\r\n") in (200, 400)
    assert_a_ride_completes(ride, url)
    log = ride.gateway_log()
    assert "Traceback" not in log and '" 500 ' not in log
    assert not [line for line in log.splitlines() if line == "b" or line.startswith(("b [", "INFO forged", "é"))]


def raw_status(url, request):
    """The status a raw HTTP/1.1 request gets."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        return int(conn.recv(4096).split(b" ", 2)[1])


def test_the_services_are_told_who_the_gateway_authenticated(ride, amqp_tap):
    rider_id = new_id("rider")
    preview(ride.url, preview_body(), bearer(rider_id))
    trip_log = ride.process("trip").output()
    assert f"user={rider_id}" in next(line for line in trip_log.splitlines() if "previewed" in line)
    tap = amqp_tap(contract.DRIVER_TRIP_ACCEPT)
    driver = ride.driver("suv")
    trip = ride.start_trip(rider_id, "suv")
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    _key, headers, message = next_message_for(tap, driver.driver["id"])
    assert message["data"]["tripID"] == trip["id"]
    assert (headers["x-user-id"], headers["x-user-role"]) == (driver.driver["id"], "driver")


def test_a_gateway_in_token_mode_without_a_key_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("AUTH_SECRET", "AUTH_JWKS_URL", "AUTH_MODE")}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{free_port()}", "app:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "AUTH_MODE=token (the default) needs a key to check tokens: set AUTH_SECRET" in result.stderr


def test_tokens_are_minted_on_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ridesync.tokens", "--user", "r1", "--role", "rider", "--ttl", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    )
    from ridesync.tokens import Identity, Verifier

    assert Verifier(AUTH_SECRET).verify(result.stdout.strip()) == Identity("r1", "rider")


def test_a_gateway_checks_tokens_with_the_keys_of_a_jwks_url(ride):
    key_set = KeySet()
    try:
        url = ride.another_gateway(workers=1, AUTH_SECRET="", AUTH_JWKS_URL=key_set.url)
        driver_id, rider_id = new_id("driver"), new_id("rider")
        driver = ride.phone(f"/ws/drivers?packageSlug=van&token={key_set.token(driver_id, 'driver')}", url, headers={})
        assert driver.next(contract.DRIVER_REGISTER)["data"]["id"] == driver_id
        rider = ride.phone(f"/ws/riders?token={key_set.token(rider_id, 'rider', kid='ec-1')}", url, headers={})
        publisher = Publisher(AMQP_URL, "test")
        try:
            publisher.publish(contract.TRIP_CREATED, rider_id, {"id": "t-jwks"})
        finally:
            publisher.close()
        assert rider.next(contract.TRIP_CREATED)["data"]["id"] == "t-jwks"  # the socket is the rider's, and live
        assert ws_refusal(url, f"/ws/riders?userID={rider_id}", bearer(rider_id))[0] == 401  # not signed by those keys
    finally:
        key_set.close()


def test_while_its_jwks_url_fails_a_gateway_answers_503_and_checks_tokens_with_the_keys_it_has(ride):
    key_set = KeySet()
    try:
        key_set.failing = True
        url = ride.another_gateway(workers=1, AUTH_SECRET="", AUTH_JWKS_URL=key_set.url)

        def current(token):
            return requests.get(f"{url}/trip/current", headers={"Authorization": f"Bearer {token}"}, timeout=10)

        refused = current(key_set.token(new_id("rider"), "rider"))
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
        wait_until(lambda: "tokens cannot be checked: the key set could not be fetched" in ride.gateway_log(),
                   message="the gateway's log line")
        key_set.failing = False
        assert current(key_set.token(new_id("rider"), "rider")).status_code == 404  # let in (no trip): keys fetched
        key_set.failing = True
        assert current(key_set.token(new_id("rider"), "rider")).status_code == 404  # with the keys it has
    finally:
        key_set.close()
