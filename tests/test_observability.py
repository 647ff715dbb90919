"""What an operator sees of a ride: one trace and one request id across the
four processes, metrics summed over gunicorn workers, and log lines."""
import json
import re
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ridesync import contract
from ridesync.gateway import create_app
from ridesync.settings import Settings
from tests.otlp_collector import OtlpCollector
from tests.ride import answer, new_id, ride  # noqa: F401,F811 (ride is a fixture)
from tests.support import (
    AMQP_URL, DESTINATION_JSON, PICKUP_JSON, new_rider, start_gateway, start_trip_service, wait_until,
)
from tests.phone import Phone

PROCESSES = {"ridesync-gateway", "ridesync-trip", "ridesync-driver", "ridesync-payment"}


@pytest.fixture
def collector(monkeypatch):
    """Every process started after it exports its spans to it."""
    collector = OtlpCollector()
    for name, value in collector.env().items():
        monkeypatch.setenv(name, value)
    yield collector
    collector.close()


def test_one_ride_is_one_trace_and_one_request_id_across_the_four_processes(collector, ride, tmp_path):
    # The rider's phone starts the ride's trace and names its requests, as a traced client does.
    trace_id, phone_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    request_id = f"ride-{uuid.uuid4().hex[:12]}"
    headers = {"traceparent": f"00-{trace_id}-{phone_span}-01", "X-Request-ID": request_id}
    rider_id = new_id("rider")
    rider, driver = ride.rider(rider_id), ride.driver("sedan")
    trip = ride.start_trip(rider_id, "sedan", headers=headers)
    answer(driver, contract.DRIVER_TRIP_ACCEPT, driver.next(contract.DRIVER_TRIP_REQUEST)["data"])
    rider.next(contract.PAYMENT_SESSION_CREATED)

    def whole_ride():
        spans = collector.trace(trace_id)
        last = ("ridesync-gateway", f"{contract.PAYMENT_SESSION_CREATED} process")
        seen = {(s.service, s.name) for s in spans}
        ids = {s.span_id for s in spans} | {phone_span}
        connected = all(s.parent_id in ids for s in spans)  # a parent ends, and is exported, after its children
        return spans if last in seen and {service for service, _ in seen} == PROCESSES and connected else None

    spans = wait_until(whole_ride, timeout=15,
                       message="spans of the four processes, to the ride's last delivery, each with its parent")
    names = {s.name for s in spans}
    for step in ("POST /trip/preview", "POST /trip/start", "/trip.TripService/PreviewTrip", "GET",
                 f"{contract.TRIP_CREATED} process", f"{contract.DRIVER_TRIP_REQUEST} process",
                 f"{contract.DRIVER_TRIP_ACCEPT} publish", f"{contract.PAYMENT_CREATE_SESSION} process"):
        assert step in names, f"no {step!r} span in the ride's trace: {sorted(names)}"
    ids = {s.span_id for s in spans} | {phone_span}
    assert [s for s in spans if s.parent_id not in ids] == [], "every span hangs from the phone's"
    about_trip = [s for s in collector.spans if s.attributes.get("ridesync.trip") == trip["id"]]
    assert {s.trace_id for s in about_trip} == {trace_id}

    for process in ("trip", "driver", "payment"):
        log = (tmp_path / f"{process}.log").read_text()
        assert f"request_id={request_id}" in log, f"{process} never logged the ride's request id:\n{log}"


def test_sockets_on_every_gunicorn_worker_are_summed_at_metrics(tmp_path):
    gateway, base = start_gateway({"AMQP_URL": AMQP_URL}, tmp_path, workers=2)
    phones = []
    try:
        while len(_workers_with_riders(gateway)) < 2:
            assert len(phones) < 40, "the sockets should spread over both workers"
            phones.append(Phone(base, f"/ws/riders?userID={new_id('rider')}"))
        wait_until(lambda: _open_sockets(base) == len(phones), message=f"{len(phones)} open rider sockets")
        phones.pop().close()
        wait_until(lambda: _open_sockets(base) == len(phones), message="a closed socket to be counted out")
    finally:
        for phone in phones:
            phone.close()
        gateway.stop()


def _workers_with_riders(gateway):
    return set(re.findall(r"gateway\[(\d+)\] ridesync.gateway.sockets.connection: rider \S+ connected", gateway.output()))


def _open_sockets(base):
    families = text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=5).text)
    samples = [s for f in families if f.name == "ridesync_gateway_open_sockets" for s in f.samples]
    return sum(s.value for s in samples if s.labels["role"] == "rider")


def test_a_previews_request_id_is_in_the_trip_services_json_log_lines(osrm, tmp_path):
    trip = start_trip_service(osrm, tmp_path, LOG_FORMAT="json")
    gateway = create_app(Settings.from_env({"AMQP_URL": AMQP_URL, "TRIP_SERVICE_ADDR": trip.address, "AUTH_MODE": "open"}))
    try:
        rider_id, request_id = new_rider(), f"preview-{uuid.uuid4().hex[:12]}"
        answer = gateway.test_client().post(
            "/trip/preview", headers={"X-Request-ID": request_id},
            data=json.dumps({"userID": rider_id, "pickup": PICKUP_JSON, "destination": DESTINATION_JSON}),
        )
        assert answer.status_code == 201 and answer.headers["X-Request-ID"] == request_id

        def preview_line():
            lines = [json.loads(line) for line in trip.output().splitlines() if line.strip()]
            return next((line for line in lines if "previewed" in line["message"]), None)

        line = wait_until(preview_line, message="the trip service to log the preview")
        assert (line["request_id"], line["user"], line["process"]) == (request_id, rider_id, "trip")
    finally:
        gateway.extensions["ridesync.upstream"].close()
        trip.stop()
