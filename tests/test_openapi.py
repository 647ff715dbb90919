"""/openapi.json is true of the running gateway: schemathesis sends what the
document allows (and some of what it does not) to gunicorn with the three
services and RabbitMQ behind it, as a rider with a token, and checks every answer: no
5xx, each status documented, each body of its documented shape. The number of
examples per operation is SCHEMA_EXAMPLES (default 20): CI stays quick, a
longer hunt is one variable away."""
import json
import os
import sys

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from ridesync import contract
from tests.service_support import purge_queues
from tests.support import AMQP_URL, ROOT, FakeOsrm, bearer, Process, free_port, start_gateway, start_service

EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "20"))
RIDER = bearer("openapi-rider")
with open(os.path.join(ROOT, "ridesync", "gateway", "openapi.json")) as document:
    PATHS = json.load(document)["paths"]
# A request outside the document needs something to send: a parameter or a body.
CASES = [(path, method, mode) for path, item in PATHS.items() for method, operation in item.items()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation]
# What the gateway does with a request of the right shape depends on more
# than its shape (a trip longer than MAX_TRIP_KM, a fare that is not the
# rider's), and it ignores what it does not read (a stray field): a 4xx for
# the one and a 2xx for the other are no disagreement with the document.
EXCLUDED = [negative_data_rejection, positive_data_acceptance]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The gateway's base URL, every process of a ride behind it, for the module."""
    purge_queues(*contract.WORK_QUEUES)
    tmp_path, osrm = tmp_path_factory.mktemp("openapi"), FakeOsrm()
    trip_addr, driver_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {"TRIP_SERVICE_ADDR": trip_addr, "DRIVER_SERVICE_ADDR": driver_addr, "OSRM_URL": osrm.url,
           "AMQP_URL": AMQP_URL, "PREVIEW_RATE": "1000", "PREVIEW_BURST": "1000"}
    processes = [start_service("ridesync.trip", trip_addr, env, tmp_path),
                 start_service("ridesync.driver", driver_addr, env, tmp_path),
                 Process("payment", [sys.executable, "-m", "ridesync.payment"], env, tmp_path)]
    gateway, base = start_gateway(env, tmp_path, workers=2)
    processes.append(gateway)
    yield base
    for process in reversed(processes):
        process.stop()
    osrm.close()


@pytest.fixture(scope="module")
def api(gateway):
    return schemathesis.openapi.from_url(f"{gateway}/openapi.json", timeout=10)


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_every_answer_is_documented_and_none_is_a_server_error(api, gateway, path, method, mode):
    """Requests the document allows (positive) and requests it does not
    (negative: each must still get a documented answer, not a 5xx)."""
    @given(case=api[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_as_documented(case):
        case.call_and_validate(base_url=gateway, timeout=15, excluded_checks=EXCLUDED, headers=RIDER)

    answers_as_documented()


def test_the_document_is_openapi_3_1_and_names_every_route_of_the_gateway(gateway):
    from ridesync.gateway import create_app
    from ridesync.settings import Settings

    document = requests.get(f"{gateway}/openapi.json", timeout=10).json()
    assert document["openapi"] == "3.1.0"
    app = create_app(Settings.from_env({"AUTH_MODE": "open"}))
    routes = {rule.rule.replace("<trip_id>", "{tripID}") for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and "<path:filename>" not in rule.rule}
    assert routes - {"/console/"} == set(document["paths"])
