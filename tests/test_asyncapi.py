"""docs/asyncapi.yaml says what the code does: which frames each dialect is
sent and may send (ridesync/gateway/frames.py), which routing keys the
processes publish and which queues take them (ridesync/contract.py), and
every frame a phone may send that the document allows is one frames.py
reads, while one that lacks a field the document requires is refused by both.
The document itself is checked against AsyncAPI 3.0.0's JSON Schema (tests/schemas/)."""
import json
from pathlib import Path

import jsonschema_rs
import pytest
import yaml

from ridesync import contract
from ridesync.gateway import frames
from tests.support import ROOT

DOCUMENT = Path(ROOT) / "docs" / "asyncapi.yaml"
SPECIFICATION = Path(ROOT) / "tests" / "schemas" / "asyncapi-specs-6.11.1" / "asyncapi-3.0.0.json"
ASYNCAPI = yaml.safe_load(DOCUMENT.read_text())
# Agreed for this session (TEAM.md): the rider's view of their driver, v2 only.
DRIVER_LOCATION_FRAME = "trip.event.driver_location"


def resolved(node, document=ASYNCAPI, path=DOCUMENT):
    """node with every $ref replaced by what it points at, in this document
    or another beside it (the OpenAPI document's schemas)."""
    if isinstance(node, list):
        return [resolved(item, document, path) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        where, _, pointer = node["$ref"].partition("#")
        if where:
            path = (path.parent / where).resolve()
            document = json.loads(path.read_text())
        target = document
        for step in pointer.strip("/").split("/"):
            target = target[step]
        return resolved(target, document, path)
    return {key: resolved(value, document, path) for key, value in node.items()}


def message_names(operation):
    return {resolved(message)["name"] for message in ASYNCAPI["operations"][operation]["messages"]}


def frame(name):
    """The socket frame message of this type."""
    return resolved(ASYNCAPI["components"]["messages"]["frame_" + name.replace(".", "_")])


def fits(message, payload):
    return jsonschema_rs.validator_for(message["payload"]).is_valid(payload)


def test_the_document_is_valid_asyncapi_3():
    specification = jsonschema_rs.validator_for(json.loads(SPECIFICATION.read_text()))
    assert [f"{list(e.instance_path)}: {e.message}" for e in specification.iter_errors(ASYNCAPI)] == []


def test_a_v1_socket_is_documented_to_get_only_the_types_frames_py_lets_it_have():
    assert message_names("sendToRiderV1") | message_names("sendToDriverV1") == frames.V1_TYPES
    assert message_names("sendToRiderV1") <= contract.RIDER_NOTIFICATION_KEYS
    assert message_names("sendToDriverV1") == {contract.DRIVER_REGISTER, contract.DRIVER_TRIP_REQUEST}


def test_a_v2_socket_is_documented_to_get_its_notifications_trip_state_and_errors():
    assert message_names("sendToRiderV2") == (
        contract.RIDER_NOTIFICATION_KEYS | {frames.TRIP_STATE, "error", DRIVER_LOCATION_FRAME})
    # A driver's refused answer reaches a v2 socket as an `error` frame.
    assert message_names("sendToDriverV2") == (
        contract.DRIVER_NOTIFICATION_KEYS - {contract.DRIVER_ANSWER_REFUSED}
        | {contract.DRIVER_REGISTER, frames.TRIP_STATE, "error"})


def test_what_a_phone_may_send_is_what_frames_py_reads():
    assert message_names("receiveFromDriver") == frames.DRIVER_FRAME_TYPES
    assert message_names("receiveFromRider") == frames.RIDER_FRAME_TYPES


@pytest.mark.parametrize("kind", sorted(frames.DRIVER_FRAME_TYPES))
def test_a_frame_the_document_allows_is_read_and_one_lacking_a_required_field_refused_by_both(kind):
    message = frame(kind)
    example = message["examples"][0]["payload"]
    assert fits(message, example)
    assert frames.read_frame(json.dumps(example), frames.DRIVER_FRAME_TYPES)[0] == kind
    data_schema = message["payload"]["properties"]["data"]
    for required in data_schema["required"]:
        lacking = {"type": kind, "data": {k: v for k, v in example["data"].items() if k != required}}
        assert not fits(message, lacking)
        with pytest.raises(frames.BadFrame):
            frames.read_frame(json.dumps(lacking), frames.DRIVER_FRAME_TYPES)


def test_every_documented_example_fits_its_schema():
    for name, message in ASYNCAPI["components"]["messages"].items():
        for example in resolved(message).get("examples", []):
            assert fits(resolved(message), example["payload"]), name


def test_the_broker_messages_are_the_contracts_routing_keys_on_its_exchanges_and_queues():
    messages = ASYNCAPI["components"]["messages"]
    published = {message["name"] for id_, message in messages.items() if id_.startswith("amqp_")}
    bound = {key for keys in contract.WORK_QUEUES.values() for key in keys}
    assert published == bound | contract.NOTIFICATION_KEYS
    markers = {contract.CONNECTED, contract.LEAVING, contract.LEFT}
    assert {message["name"] for id_, message in messages.items() if id_.startswith("marker_")} == markers | {
        contract.REFILLED}
    channels = [resolved(channel) for channel in ASYNCAPI["channels"].values() if "amqp" in channel.get("bindings", {})]
    exchanges = {c["bindings"]["amqp"]["exchange"]["name"]: c["address"]
                 for c in channels if c["bindings"]["amqp"]["is"] == "routingKey"}
    assert exchanges.keys() == {contract.TRIP_EXCHANGE, contract.LIVE_EXCHANGE}
    assert exchanges[contract.LIVE_EXCHANGE] == "live.{role}.{userKey}" and contract.live_key("rider", "r1").startswith(
        "live.rider.")
    queues = {c["address"]: {m["name"] for m in c["messages"].values()}
              for c in channels if c["bindings"]["amqp"]["is"] == "queue"}
    live = contract.NOTIFICATION_KEYS | {contract.CONNECTED}
    assert queues == {**{queue: set(keys) for queue, keys in contract.WORK_QUEUES.items()},
                      contract.SOCKETS_STREAM: markers, contract.NOTIFICATIONS_STREAM: live | {contract.REFILLED},
                      contract.WORKER_QUEUE_PREFIX + "{worker}": live}


def test_an_envelope_as_contract_py_makes_it_fits_the_documented_message():
    for name, message in ASYNCAPI["components"]["messages"].items():
        if name.startswith("amqp_"):
            message = resolved(message)
            data = message["examples"][0]["payload"]["data"]
            assert fits(message, json.loads(contract.envelope("r1", data))), name
            assert not fits(message, {"data": data}), name  # no ownerId: not an envelope
