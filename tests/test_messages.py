"""ridesync/messages.py is the one definition of what crosses an edge: the
HTTP bodies the OpenAPI document describes, and the frames and the broker's
messages about a trip docs/asyncapi.yaml does, are its Structs (the same fields, the same required ones, every
documented example read), and what it refuses is said naming the field.
Plain checks, no I/O."""
import json
import os

import msgspec
import pytest

from ridesync import contract, messages
from ridesync.driver.pool import new_driver
from ridesync.gateway import frames
from ridesync.trip.intake import trip_driver
from tests.service_support import trip_json
from tests.support import ROOT
from tests.test_asyncapi import ASYNCAPI, frame, resolved

with open(os.path.join(ROOT, "ridesync", "gateway", "openapi.json")) as document:
    OPENAPI = json.load(document)
ON_THE_BROKER = {  # the messages about a trip by its id; the rest carry a Trip (OpenAPI's)
    contract.DRIVER_TRIP_WITHDRAWN: messages.Withdrawal, contract.DISPATCH_NO_DRIVERS_LEFT: messages.AboutTrip,
    contract.TRIP_DRIVER_LOCATION: messages.DriverLocation, contract.DRIVER_TRIP_ACCEPT: messages.DriverAnswer,
    contract.DRIVER_TRIP_DECLINE: messages.DriverAnswer, contract.DRIVER_ANSWER_REFUSED: messages.AnswerRefused,
    contract.PAYMENT_CREATE_SESSION: messages.SessionOrder, contract.PAYMENT_VOID_SESSION: messages.SessionVoid,
    contract.PAYMENT_SESSION_CREATED: messages.SessionCreated,
}
BODIES = {"/trip/preview": messages.FarePreview, "/trip/start": messages.TripStart,
          "/trip/cancel": messages.RiderCancellation}


def fields(schema):
    """{field: required} of an object schema."""
    return {name: name in schema.get("required", ()) for name in schema["properties"]}


def struct_schema(kind):
    schema = msgspec.json.schema(kind)
    return schema["$defs"][kind.__name__]


@pytest.mark.parametrize("path", sorted(BODIES))
def test_a_documented_body_is_its_struct(path):
    for content in OPENAPI["paths"][path]["post"]["requestBody"]["content"].values():
        assert fields(content["schema"]) == fields(struct_schema(BODIES[path]))
        assert messages.decode(json.dumps(content["example"]), BODIES[path])


@pytest.mark.parametrize("kind", sorted(frames.DRIVER_FRAME_TYPES))
def test_a_documented_frame_is_its_struct(kind):
    documented = frame(kind)["payload"]["properties"]["data"]
    assert fields(documented) == fields(struct_schema(frames.READERS[kind]))


@pytest.mark.parametrize("routing_key", sorted(ON_THE_BROKER))
def test_a_documented_broker_message_is_its_struct(routing_key):
    message = next(resolved(m) for name, m in ASYNCAPI["components"]["messages"].items()
                   if name.startswith("amqp_") and m["name"] == routing_key)
    assert fields(message["payload"]["properties"]["data"]) == fields(struct_schema(ON_THE_BROKER[routing_key]))
    example = message["examples"][0]["payload"]
    assert messages.as_json(messages.decode(json.dumps(example["data"]), ON_THE_BROKER[routing_key])) == example["data"]


@pytest.mark.parametrize("kind, raw, says", [
    (messages.FarePreview, {"pickup": {"latitude": 1, "longitude": "2"}}, "pickup.longitude must be a number"),
    (messages.FarePreview, {"pickup": {"latitude": 1, "longitude": 2}}, "destination is required"),
    (messages.TripStart, {"rideFareID": "f 1"}, "rideFareID may hold only"),
    (messages.RiderCancellation, {"tripID": "t1", "userID": 7}, "userID is required and must be a non-empty string"),
    (messages.Envelope, {"ownerId": "r1", "data": [1]}, "data must be a JSON object"),
    (messages.Envelope, [1], "the message must be a JSON object"),
])
def test_what_is_refused_is_said_naming_the_field(kind, raw, says):
    with pytest.raises(messages.Refused, match=says):
        messages.decode(json.dumps(raw), kind)


def test_a_lone_surrogate_is_refused_naming_its_field_and_a_stray_one_ignored():
    with pytest.raises(messages.Refused, match=r"reason must be text"):
        messages.decode('{"tripID": "t1", "reason": "flat \\ud800"}', messages.RiderCancellation)
    kept = messages.decode('{"tripID": "t1", "note": "\\ud800"}', messages.RiderCancellation)
    assert messages.as_json(kept) == {"tripID": "t1", "reason": "", "userID": None}


TRIP_PARTS = {"Trip": messages.Trip, "Route": messages.Route, "RideFare": messages.RideFare,
              "TripDriver": messages.TripDriver, "TripPayment": messages.TripPayment,
              "DriverLocation": messages.DriverLocation}
CARRYING_A_TRIP = {contract.DRIVER_TRIP_REQUEST: messages.Trip, contract.TRIP_CREATED: messages.Trip,
                   contract.TRIP_DRIVER_ASSIGNED: messages.Trip, contract.TRIP_COMPLETED: messages.Trip,
                   contract.TRIP_DRIVER_NOT_INTERESTED: messages.NotInterested}


def test_asyncapis_trip_is_the_trip_struct_and_its_parts_too():
    trip = resolved(ASYNCAPI["components"]["schemas"]["Trip"])
    assert fields(trip) == fields(struct_schema(messages.Trip))
    for name, kind in TRIP_PARTS.items():
        assert fields(OPENAPI["components"]["schemas"][name]) == fields(struct_schema(kind)), name


def test_the_driver_a_trip_shows_is_all_the_document_promises_and_an_answer_without_it_is_refused():
    """DriverService registers every driver with a name, a picture and a
    plate, and the gateway answers with that driver, whatever the phone says."""
    answer = {"tripID": "t1", "riderID": "r1", "driver": new_driver("d1", "sedan").to_json()}
    shown = messages.as_json(trip_driver(messages.decode(json.dumps(answer), messages.DriverAnswer, "data").driver))
    assert set(shown) == set(OPENAPI["components"]["schemas"]["TripDriver"]["required"])
    assert shown == {key: answer["driver"][key] for key in shown}
    for lacking in ("name", "profilePicture", "carPlate"):
        partial = {**answer, "driver": {k: v for k, v in answer["driver"].items() if k != lacking}}
        with pytest.raises(messages.Refused, match=f"data.driver.{lacking} is required"):
            messages.decode(json.dumps(partial), messages.DriverAnswer, "data")


@pytest.mark.parametrize("routing_key", sorted(CARRYING_A_TRIP))
def test_a_documented_message_carrying_a_trip_is_read_as_one(routing_key):
    documented = [resolved(m) for m in ASYNCAPI["components"]["messages"].values() if m.get("name") == routing_key]
    examples = [example["payload"]["data"] for message in documented for example in message.get("examples", ())
                if "data" in example["payload"]]
    assert examples
    for data in examples:
        assert messages.decode(json.dumps(data), CARRYING_A_TRIP[routing_key], "data")


def trip_with(**changed):
    return json.dumps({**trip_json(), **changed})


@pytest.mark.parametrize("raw, says", [
    (trip_with(status="lost"), "data.status must be one of pending, accepted"),
    (trip_with(route={"geometry": [], "distance": 1, "duration": 1, "estimated": False}),
     "data.route.geometry must be a non-empty list"),
    (trip_with(route={"geometry": [{"coordinates": [{"latitude": 91, "longitude": 0}]}], "distance": 1,
                      "duration": 1, "estimated": False}),
     r"data.route.geometry\[0\].coordinates\[0\].latitude must be a number between -90 and 90"),
    (trip_with(driver={"name": "Ann"}), "data.driver.id is required"),
    (trip_with(selectedFare={}), "data.selectedFare.id is required"),
    (trip_with(cancelledBy="dispatch"), "data.cancelledBy must be rider or driver"),
])
def test_a_trip_that_is_not_one_is_refused_naming_the_field(raw, says):
    with pytest.raises(messages.Refused, match=says):
        messages.decode(raw, messages.Trip, "data")


def test_a_trip_without_its_driver_is_refused_where_one_is_needed():
    trip = messages.decode(trip_with(), messages.Trip, "data")
    assert trip.driver_id is None
    with pytest.raises(messages.Refused, match="data.driver.id is required"):
        trip.assigned_driver_id()
