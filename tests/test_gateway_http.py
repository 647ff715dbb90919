"""The gateway's HTTP contract, through the Flask test client, in front of a
real TripService on loopback (and the OSRM stand-in behind it)."""
import json
import os
from urllib.parse import urlsplit

import pytest

from ridesync import grpc_server, logs
from ridesync.gateway import create_app, trips as trips_module
from ridesync.identity import is_id, outgoing_headers
from ridesync.settings import Settings
from ridesync.ride.fares import price_in_cents
from tests.support import (
    AMQP_URL, AUTH_SECRET, DESTINATION_JSON, PICKUP_JSON, FakeOsrm, HangingTripService, assert_route_follows_osrm,
    assert_trip_created_published, bearer, closed_port_address, made_by, new_rider, sockets_of, start_trip_service,
    tcp_sockets, wait_until,
)

PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "Content-Type, X-RideSync-Dialect",
}
AS_NAMED = {"X-RideSync-Dialect": "v2"}


def gateway_app(**env):
    """The gateway made from these settings; every upstream down unless env says where."""
    return create_app(Settings.from_env({
        "AMQP_URL": AMQP_URL, "OSRM_TIMEOUT": "2", "AUTH_SECRET": AUTH_SECRET,
        "TRIP_SERVICE_ADDR": closed_port_address(), "DRIVER_SERVICE_ADDR": closed_port_address(), **env,
    }))


def closed(app):
    """What the app opened closed: its channels upstream, and its readyz's broker connection."""
    app.extensions["ridesync.upstream"].close()
    app.extensions["ridesync.broker_probe"].close()


def broker_connections():
    """The connections this process holds to the broker."""
    return tcp_sockets(remote_port=urlsplit(AMQP_URL).port or 5672) & sockets_of(os.getpid())


@pytest.fixture
def gateway_apps():
    """gateway_app, each app closed after the test, which leaves none of their broker connections open."""
    before = broker_connections()
    yield from made_by(gateway_app, closed)
    assert broker_connections() - before == set()


@pytest.fixture
def make_client(gateway_apps):
    """make_client(TRIP_SERVICE_ADDR=..., ...) -> a test client of gateway_app(...)."""
    return lambda **env: gateway_apps(**env).test_client()


@pytest.fixture
def client(make_client, trip_service):
    return make_client(TRIP_SERVICE_ADDR=trip_service.address)


@pytest.fixture(scope="module")
def unreached_upstream(tmp_path_factory):
    """(OSRM stand-in, TripService asking it), started once for the tests
    whose requests must reach neither: what they change there is what they fail on."""
    osrm = FakeOsrm()
    trip_service = start_trip_service(osrm, tmp_path_factory.mktemp("unreached"))
    yield osrm, trip_service
    trip_service.stop()
    osrm.close()


@pytest.fixture
def unreached(unreached_upstream, make_client):
    """(client, osrm): a test client in front of unreached_upstream's TripService, osrm asked nothing yet."""
    osrm, trip_service = unreached_upstream
    osrm.requests.clear()
    return make_client(TRIP_SERVICE_ADDR=trip_service.address), osrm


def post(client, path, body, **kwargs):
    """POST like the known web client: JSON sent as text/plain, with the
    token of the body's userID (when it is one)."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    user_id = body.get("userID") if isinstance(body, dict) else None
    headers = bearer(user_id) if is_id(user_id) else {}
    return client.post(path, data=data, content_type="text/plain", headers=headers | kwargs.pop("headers", {}), **kwargs)


def test_without_the_dialect_header_route_points_are_in_the_original_clients_order(client, osrm):
    """The original web client reads `[coord.longitude, coord.latitude]` as
    [lat, lng]: the Go original wrote OSRM's [lon, lat] as latitude, longitude."""
    v1, v2 = (post(client, "/trip/preview", preview_body(new_rider()), headers=headers).get_json()["data"]
              for headers in ({}, AS_NAMED))
    assert_route_follows_osrm(v2["route"], osrm)
    points = [[(p["latitude"], p["longitude"]) for p in answer["route"]["geometry"][0]["coordinates"]]
              for answer in (v1, v2)]
    assert points[0] == [(longitude, latitude) for latitude, longitude in points[1]]
    assert v1["route"]["distance"] == v2["route"]["distance"] and len(v1["rideFares"]) == 4


def preview_body(user_id, pickup=PICKUP_JSON, destination=DESTINATION_JSON):
    return {"userID": user_id, "pickup": pickup, "destination": destination}


def previewed_fare(client, rider, package="sedan"):
    response = post(client, "/trip/preview", preview_body(rider))
    assert response.status_code == 201, response.get_json()
    return next(f for f in response.get_json()["data"]["rideFares"] if f["packageSlug"] == package)


def assert_error(response, status, code, says=""):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert says in body["error"]["message"]
    return body["error"]["message"]


# --- the happy path ---------------------------------------------------------------

def test_a_preview_posted_as_text_plain_gets_the_route_and_four_fares(client, osrm):
    rider = new_rider()
    response = post(client, "/trip/preview", preview_body(rider), headers=AS_NAMED)
    assert response.status_code == 201
    assert "X-RideSync-Dialect" in response.headers["Vary"]
    data = response.get_json()["data"]
    assert_route_follows_osrm(data["route"], osrm)
    assert data["route"]["estimated"] is False
    assert sorted(f["packageSlug"] for f in data["rideFares"]) == ["luxury", "sedan", "suv", "van"]
    assert {f["userID"] for f in data["rideFares"]} == {rider}
    sedan = next(f for f in data["rideFares"] if f["packageSlug"] == "sedan")
    assert sedan["totalPriceInCents"] == price_in_cents("sedan", 4200.0, 600.0)


def test_starting_a_trip_gets_201_and_trip_created_on_rabbitmq(client, amqp_tap):
    tap = amqp_tap("trip.event.created")
    rider = new_rider()
    fare = previewed_fare(client, rider)
    response = post(client, "/trip/start", {"rideFareID": fare["id"], "userID": rider})
    assert response.status_code == 201
    data = response.get_json()["data"]
    assert data["tripID"] == data["trip"]["id"]
    assert (data["trip"]["status"], data["trip"]["userID"], data["trip"]["selectedFare"]) == ("pending", rider, fare)
    assert_trip_created_published(tap, data["trip"])


# --- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("body, says", [
    ("", "empty"),
    ("  \n", "empty"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"a string"', "must be a JSON object"),
    ({"userID": "", "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}, "userID is required"),
    ({"userID": 7, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}, "userID is required"),
    (preview_body("r1", pickup={"latitude": 91, "longitude": 0}), "pickup.latitude must be a number between -90 and 90"),
    (preview_body("r1", pickup={"latitude": "37.7", "longitude": 0}), "pickup.latitude must be a number"),
    (preview_body("r1", pickup={"latitude": True, "longitude": 0}), "pickup.latitude must be a number"),
    (preview_body("r1", destination={"latitude": 0, "longitude": -180.5}), "destination.longitude must be a number"),
    (preview_body("r1", destination=None), "destination is required"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("{" + '"a":{' * 2500 + "}" * 2501, "nested too deeply"),
])
def test_a_bad_preview_is_400_with_a_message_and_never_goes_upstream(unreached, body, says):
    client, osrm = unreached
    assert_error(post(client, "/trip/preview", body), 400, "invalid_argument", says)
    assert osrm.requests == []


def test_a_body_with_a_string_that_is_not_text_is_400_not_500(make_client):
    client = make_client(TRIP_SERVICE_ADDR=closed_port_address())  # never asked
    body = '{"tripID": "t1", "userID": "r1", "reason": "flat \\ud800"}'
    assert_error(client.post("/trip/cancel", data=body, headers=bearer("r1")), 400, "invalid_argument", "not text")


def test_a_request_leaves_neither_its_request_id_nor_its_user_behind(client):
    """What a request binds for its log lines and calls (logs.py, identity.py)
    is undone at its end: the next request of the same greenlet starts clean."""
    rider = new_rider()
    assert client.get("/trip/current", query_string={"userID": rider}, headers=bearer(rider)).status_code == 404
    assert (logs.ride_field("request_id"), logs.ride_field("user"), outgoing_headers()) == (None, None, {})


def test_a_body_over_16_kib_is_413_json(unreached):
    client, osrm = unreached
    body = preview_body("r1") | {"padding": "x" * (16 * 1024)}
    assert_error(post(client, "/trip/preview", body), 413, "request_entity_too_large")
    assert osrm.requests == []


@pytest.mark.parametrize("body, says", [
    ({"userID": "r1"}, "rideFareID is required"),
    ({"rideFareID": "f1", "userID": "r" * 129}, "userID must be at most 128 characters"),
])
def test_a_bad_start_is_400(unreached, body, says):
    client, _osrm = unreached
    assert_error(post(client, "/trip/start", body), 400, "invalid_argument", says)


# --- fares that cannot be used ---------------------------------------------------------

def test_a_fare_must_exist_be_yours_and_unused(client):
    rider = new_rider()
    fare_id = previewed_fare(client, rider)["id"]
    assert_error(post(client, "/trip/start", {"rideFareID": "no-such-fare", "userID": rider}), 404, "not_found")
    assert_error(post(client, "/trip/start", {"rideFareID": fare_id, "userID": new_rider()}), 403, "permission_denied")
    assert post(client, "/trip/start", {"rideFareID": fare_id, "userID": rider}).status_code == 201
    assert_error(post(client, "/trip/start", {"rideFareID": fare_id, "userID": rider}),
                 409, "failed_precondition", "already used")


def test_an_expired_fare_is_409(start_trip, make_client):
    client = make_client(TRIP_SERVICE_ADDR=start_trip(FARE_TTL="0").address)
    rider = new_rider()
    fare_id = previewed_fare(client, rider)["id"]
    assert_error(post(client, "/trip/start", {"rideFareID": fare_id, "userID": rider}),
                 409, "failed_precondition", "expired")


# --- upstream trouble ------------------------------------------------------------------

def test_the_trip_service_down_is_503_and_logged_with_the_endpoint(make_client, caplog):
    client = make_client(TRIP_SERVICE_ADDR=closed_port_address())
    assert_error(post(client, "/trip/preview", preview_body("r1")), 503, "unavailable")
    assert_error(post(client, "/trip/start", {"rideFareID": "f1", "userID": "r1"}), 503, "unavailable")
    assert "POST /trip/start: upstream call failed: UNAVAILABLE" in caplog.text


@pytest.fixture
def hanging_trip_service():
    service = HangingTripService()
    yield service
    service.close()


def test_a_hanging_trip_service_is_504_when_the_deadline_passes(make_client, hanging_trip_service, monkeypatch):
    # A preview's deadline is OSRM_TIMEOUT plus a margin; a start's is the call deadline.
    client = make_client(TRIP_SERVICE_ADDR=hanging_trip_service.address, OSRM_TIMEOUT="0.2")
    monkeypatch.setattr(trips_module, "PREVIEW_MARGIN", 0.3)
    monkeypatch.setattr(trips_module, "CALL_DEADLINE", 0.5)
    assert_error(post(client, "/trip/preview", preview_body("r1")), 504, "deadline_exceeded", "took too long")
    assert_error(post(client, "/trip/start", {"rideFareID": "f1", "userID": "r1"}), 504, "deadline_exceeded")
    assert len(hanging_trip_service.calls) == 2


def test_when_the_broker_does_not_confirm_the_start_is_503_and_the_fare_stays_usable(start_trip, make_client):
    service = start_trip(AMQP_URL=f"amqp://guest:guest@{closed_port_address()}/")
    client = make_client(TRIP_SERVICE_ADDR=service.address)
    rider = new_rider()
    fare_id = previewed_fare(client, rider)["id"]
    for _ in range(2):  # not "already used" the second time
        assert_error(post(client, "/trip/start", {"rideFareID": fare_id, "userID": rider}), 503, "unavailable")


@pytest.mark.parametrize("mode", ["503", "garbage", "no_route", "hang"])
def test_a_failing_osrm_still_gives_201_with_an_estimated_route(client, osrm, mode):
    osrm.mode = mode
    response = post(client, "/trip/preview", preview_body(new_rider()))
    assert response.status_code == 201
    assert response.get_json()["data"]["route"]["estimated"] is True
    if mode == "hang":
        wait_until(lambda: osrm.abandoned, timeout=5, message="the hanging OSRM call to be let go")


# --- routes and methods ------------------------------------------------------------------

def test_unknown_routes_and_methods_are_json(make_client):
    client = make_client()
    assert_error(client.get("/nowhere"), 404, "not_found")
    response = client.put("/trip/preview")  # GET /trip/preview reads the trip "preview" (GET /trip/<tripID>)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("Allow", "")


# --- CORS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/trip/preview", "/trip/start", "/readyz"])
def test_a_preflight_gets_200_with_the_allow_headers_and_never_reaches_the_handler(make_client, path):
    client = make_client()  # every upstream down: a handler would answer 4xx or 503
    response = client.options(path, headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", PREFLIGHT["Origin"])
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= set(response.headers["Access-Control-Allow-Methods"].split(", "))
    assert {"content-type", "x-ridesync-dialect"} <= set(response.headers["Access-Control-Allow-Headers"].lower().split(", "))
    assert b"error" not in response.data


def test_cors_origins_restricts_who_may_call(make_client):
    client = make_client(CORS_ORIGINS="https://app.example, https://admin.example")
    allowed = client.options("/trip/preview", headers=PREFLIGHT)
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    refused = client.options("/trip/preview", headers=PREFLIGHT | {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert client.get("/healthz", headers={"Origin": "https://admin.example"}).headers[
        "Access-Control-Allow-Origin"] == "https://admin.example"


def test_errors_carry_cors_headers_so_a_browser_can_read_them(make_client):
    response = post(make_client(), "/trip/preview", "", headers={"Origin": "https://app.example"})
    assert_error(response, 400, "invalid_argument")
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")


# --- health --------------------------------------------------------------------------------

def test_healthz_answers_while_the_process_serves(make_client):
    response = make_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


@pytest.fixture
def driver_service():
    """Any gRPC server with the health service stands in for DriverService."""
    server = grpc_server.start("127.0.0.1:0", lambda s: None, [], max_workers=4)
    yield server.address
    server.stop(0).wait()


def test_readyz_names_what_is_down(make_client, trip_service):
    client = make_client(TRIP_SERVICE_ADDR=trip_service.address)
    message = assert_error(client.get("/readyz"), 503, "unavailable", "driver service")
    assert "trip service" not in message and "rabbitmq" not in message
    nothing = make_client(AMQP_URL=f"amqp://guest:guest@{closed_port_address()}/")
    message = assert_error(nothing.get("/readyz"), 503, "unavailable")
    for name in ("rabbitmq", "trip service", "driver service"):
        assert name in message


def test_readyz_is_200_when_trip_driver_and_rabbitmq_answer(make_client, trip_service, driver_service):
    client = make_client(TRIP_SERVICE_ADDR=trip_service.address, DRIVER_SERVICE_ADDR=driver_service)
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ready"


def test_an_app_closed_leaves_none_of_its_broker_connections_open(trip_service, driver_service):
    """The readyz probe keeps its broker connection between probes; closing the app closes it."""
    before = broker_connections()
    app = gateway_app(TRIP_SERVICE_ADDR=trip_service.address, DRIVER_SERVICE_ADDR=driver_service)
    assert app.test_client().get("/readyz").status_code == 200
    assert broker_connections() - before, "the probe's connection, kept between probes"
    closed(app)
    assert broker_connections() - before == set()
